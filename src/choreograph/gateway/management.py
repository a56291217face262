"""The management API: topics, keys, subscriptions and dead letters as Azure-style resources.

    GET    /management/topics
    PUT    /management/topics/{topic}                     {"properties": {"inputSchema": ...}}
    GET    /management/topics/{topic}
    DELETE /management/topics/{topic}
    POST   /management/topics/{topic}/listKeys            → {"key1", "key2"}
    POST   /management/topics/{topic}/regenerateKey       {"keyName": "key1"} → {"key1", "key2"}
    GET    /management/topics/{topic}/eventSubscriptions
    PUT    /management/topics/{topic}/eventSubscriptions/{name}   {"properties": {...}}
    GET    /management/topics/{topic}/eventSubscriptions/{name}
    DELETE /management/topics/{topic}/eventSubscriptions/{name}
    POST   /management/topics/{topic}/eventSubscriptions/{name}/getFullUrl → {"endpointUrl"}
    GET    …/eventSubscriptions/{name}/deadLetters?limit=&after=   → {"value", "nextLink"?}
    DELETE …/eventSubscriptions/{name}/deadLetters                 purge all → {"purged"}
    POST   …/eventSubscriptions/{name}/deadLetters/redrive         {"ids": [...]} or {} → {"redriven"}
    GET    …/eventSubscriptions/{name}/deadLetters/{id}
    DELETE …/eventSubscriptions/{name}/deadLetters/{id}            → {"purged": 1}

Every route requires ``Authorization: Bearer <admin token>`` (checked before routing). Resources
look like Azure's (``{"id", "name", "type", "properties"}``, lists as ``{"value": [...]}``); a
``PUT`` answers 201 when it created the resource and 200 when it updated it. As in Azure, a
subscription shows its webhook as ``endpointBaseUrl`` (the URL without its query, which often
carries a secret); ``getFullUrl`` reveals the whole URL.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlencode, urlsplit, urlunsplit

import msgspec
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from choreograph.bus.bus import Bus
from choreograph.bus.deadletter import DeadLetter
from choreograph.bus.subscription import SubscriptionRecord, SubscriptionSpec, WebHookDestination
from choreograph.bus.topic import TopicRecord, TopicSpec
from choreograph.errors import DeadLetterNotFoundError, NotFoundError
from choreograph.gateway.auth import AdminAuthMiddleware
from choreograph.gateway.errors import HTTPProblem
from choreograph.gateway.publish import read_body
from choreograph.gateway.settings import GatewaySettings

__all__ = ["TOPIC_TYPE", "WebhookSubscriptionHook", "management_routes"]

logger = logging.getLogger(__name__)

TOPIC_TYPE: Final = "Microsoft.EventGrid/topics"
SUBSCRIPTION_TYPE: Final = "Microsoft.EventGrid/eventSubscriptions"
MAX_BODY_BYTES: Final = 1_048_576
DEFAULT_DEAD_LETTER_PAGE: Final = 100

WebhookSubscriptionHook = Callable[[SubscriptionRecord], Awaitable[object]]
"""Called after a webhook subscription was created or its endpoint changed (its provisioning
state is then ``Creating``): validates the endpoint and records the outcome on the bus (e.g.
``choreograph.gateway.validation.validation_hook``). The ``PUT`` answers once it returns, with
the state it left."""

_RESOURCE_KEYS: Final = frozenset({"id", "name", "type", "properties"})
_TOPIC_READ_ONLY: Final = frozenset({"endpoint", "provisioningState"})
_SUBSCRIPTION_READ_ONLY: Final = frozenset({"topic", "provisioningState"})


# bodies -----------------------------------------------------------------------------------------
async def _json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is ``{}``."""
    body = await read_body(request, MAX_BODY_BYTES)
    if not body.strip():
        return {}
    try:
        document = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise HTTPProblem(400, f"the body is not valid JSON: {exc}", code="InvalidJson") from exc
    if not isinstance(document, dict):
        raise HTTPProblem(400, "the body must be a JSON object", code="InvalidJson")
    return document


def _resource_properties(
    document: dict[str, Any], name: str, kind: str, read_only: frozenset[str]
) -> dict[str, Any]:
    """The ``properties`` of a resource body, without the read-only ones a GET returned."""
    unknown = sorted(set(document) - _RESOURCE_KEYS)
    if unknown:
        raise HTTPProblem(
            400,
            f"`{unknown[0][:60]}` is not a property of a {kind} resource; put its settings "
            "under `properties`",
            code="InvalidResource",
            target=unknown[0][:60],
        )
    if "name" in document and document["name"] != name:
        raise HTTPProblem(
            400, f"`name` must be {name!r} (the name in the URL)", code="InvalidResource"
        )
    properties = document.get("properties")
    if properties is None:
        return {}
    if not isinstance(properties, dict):
        raise HTTPProblem(400, "`properties` must be a JSON object", code="InvalidResource")
    return {key: value for key, value in properties.items() if key not in read_only}


def _subscription_properties(document: dict[str, Any], name: str) -> dict[str, Any]:
    properties = _resource_properties(document, name, "subscription", _SUBSCRIPTION_READ_ONLY)
    destination = properties.get("destination")
    if isinstance(destination, dict) and isinstance(destination.get("properties"), dict):
        endpoint = {k: v for k, v in destination["properties"].items() if k != "endpointBaseUrl"}
        properties["destination"] = {**destination, "properties": endpoint}
    return properties


# resources --------------------------------------------------------------------------------------
def _base_url(request: Request, settings: GatewaySettings) -> str:
    if settings.public_url is not None:
        return settings.public_url
    return f"{request.url.scheme}://{request.url.netloc}"


def topic_resource(record: TopicRecord, base_url: str) -> dict[str, Any]:
    return {
        "id": record.resource_id,
        "name": record.name,
        "type": TOPIC_TYPE,
        "properties": {
            **record.spec.to_dict(),
            "endpoint": f"{base_url}/topics/{record.name}/api/events",
            "provisioningState": "Succeeded",
        },
    }


def _endpoint_base_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def subscription_resource(record: SubscriptionRecord) -> dict[str, Any]:
    properties = record.spec.to_dict()
    if isinstance(record.spec.destination, WebHookDestination):
        endpoint = dict(properties["destination"]["properties"])
        endpoint["endpointBaseUrl"] = _endpoint_base_url(endpoint.pop("endpointUrl"))
        properties["destination"] = {**properties["destination"], "properties": endpoint}
    return {
        "id": f"/topics/{record.topic}/eventSubscriptions/{record.name}",
        "name": record.name,
        "type": SUBSCRIPTION_TYPE,
        "properties": {
            "topic": f"/topics/{record.topic}",
            **properties,
            "provisioningState": record.provisioning_state,
        },
    }


def dead_letter_resource(record: DeadLetter, subscription: SubscriptionRecord) -> dict[str, Any]:
    """The record in the subscription's delivery schema, plus its id (``deadLetterId``, or
    ``deadletterid`` in the lower-case CloudEvents form)."""
    schema = subscription.spec.event_delivery_schema
    key = "deadLetterId" if schema == "EventGridSchema" else "deadletterid"
    return {**record.to_record(schema), key: record.id}


def _limit(request: Request) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return DEFAULT_DEAD_LETTER_PAGE
    stripped = text.strip()
    if not stripped.isascii() or not stripped.lstrip("-").isdigit() or len(stripped) > 9:
        raise HTTPProblem(
            400,
            f"`limit` must be an integer from 1 to 10000, got {text[:40]!r}",
            code="InvalidDeadLetterQuery",
            target="limit",
        )
    return int(stripped)


# routes -----------------------------------------------------------------------------------------
def management_routes(
    bus: Bus,
    settings: GatewaySettings,
    on_webhook_subscription: WebhookSubscriptionHook | None = None,
) -> Mount:
    """The management API over ``bus``, mounted at ``/management`` behind the admin token."""

    async def list_topics(request: Request) -> Response:
        base = _base_url(request, settings)
        return JSONResponse(
            {"value": [topic_resource(record, base) for record in await bus.list_topics()]}
        )

    async def put_topic(request: Request) -> Response:
        name = request.path_params["topic"]
        properties = _resource_properties(
            await _json_object(request), name, "topic", _TOPIC_READ_ONLY
        )
        spec = TopicSpec.from_dict(properties)
        existed = await _exists(bus.get_topic(name))
        record = await bus.put_topic(name, spec)
        logger.info("topic %s %s", name, "updated" if existed else "created")
        return JSONResponse(
            topic_resource(record, _base_url(request, settings)),
            status_code=200 if existed else 201,
        )

    async def get_topic(request: Request) -> Response:
        record = await bus.get_topic(request.path_params["topic"])
        return JSONResponse(topic_resource(record, _base_url(request, settings)))

    async def delete_topic(request: Request) -> Response:
        name = request.path_params["topic"]
        await bus.delete_topic(name)
        logger.info("topic %s deleted", name)
        return Response(status_code=200)

    async def list_keys(request: Request) -> Response:
        record = await bus.get_topic(request.path_params["topic"])
        return JSONResponse({"key1": record.key1, "key2": record.key2})

    async def regenerate_key(request: Request) -> Response:
        name = request.path_params["topic"]
        await bus.get_topic(name)
        document = await _json_object(request)
        unknown = sorted(set(document) - {"keyName"})
        if unknown or "keyName" not in document:
            raise HTTPProblem(
                400,
                'the body must be {"keyName": "key1"} or {"keyName": "key2"}',
                code="InvalidTopic",
                target="keyName",
            )
        record = await bus.regenerate_key(name, document["keyName"])
        logger.info("topic %s: %s regenerated", name, document["keyName"])
        return JSONResponse({"key1": record.key1, "key2": record.key2})

    async def list_subscriptions(request: Request) -> Response:
        records = await bus.list_subscriptions(request.path_params["topic"])
        return JSONResponse({"value": [subscription_resource(record) for record in records]})

    async def put_subscription(request: Request) -> Response:
        topic, name = request.path_params["topic"], request.path_params["name"]
        await bus.get_topic(topic)
        properties = _subscription_properties(await _json_object(request), name)
        spec = SubscriptionSpec.from_dict(properties)
        existed = await _exists(bus.get_subscription(topic, name))
        record = await bus.put_subscription(topic, name, spec)
        logger.info("subscription %s/%s %s", topic, name, "updated" if existed else "created")
        if (
            on_webhook_subscription is not None
            and isinstance(record.spec.destination, WebHookDestination)
            and record.provisioning_state == "Creating"
        ):
            await on_webhook_subscription(record)
            record = await bus.get_subscription(topic, name)
        return JSONResponse(subscription_resource(record), status_code=200 if existed else 201)

    async def get_subscription(request: Request) -> Response:
        record = await bus.get_subscription(*_subscription_key(request))
        return JSONResponse(subscription_resource(record))

    async def delete_subscription(request: Request) -> Response:
        topic, name = _subscription_key(request)
        await bus.delete_subscription(topic, name)
        logger.info("subscription %s/%s deleted", topic, name)
        return Response(status_code=200)

    async def get_full_url(request: Request) -> Response:
        record = await bus.get_subscription(*_subscription_key(request))
        destination = record.spec.destination
        if not isinstance(destination, WebHookDestination):
            raise HTTPProblem(
                400,
                f"subscription {record.topic}/{record.name} delivers in process; it has no "
                "endpoint URL",
                code="InvalidSubscription",
            )
        return JSONResponse({"endpointUrl": destination.endpoint_url})

    async def list_dead_letters(request: Request) -> Response:
        topic, name = _subscription_key(request)
        subscription = await bus.get_subscription(topic, name)
        limit = _limit(request)
        after = request.query_params.get("after") or None
        page = await bus.dead_letters(topic, name, limit=limit, after=after)
        body: dict[str, Any] = {"value": [dead_letter_resource(r, subscription) for r in page]}
        if len(page) == limit:
            query = urlencode({"limit": limit, "after": page[-1].id})
            body["nextLink"] = f"{_base_url(request, settings)}{request.url.path}?{query}"
        return JSONResponse(body)

    async def get_dead_letter(request: Request) -> Response:
        topic, name = _subscription_key(request)
        subscription = await bus.get_subscription(topic, name)
        record = await bus.get_dead_letter(topic, name, request.path_params["id"])
        return JSONResponse(dead_letter_resource(record, subscription))

    async def redrive(request: Request) -> Response:
        topic, name = _subscription_key(request)
        await bus.get_subscription(topic, name)
        document = await _json_object(request)
        unknown = sorted(set(document) - {"ids"})
        if unknown:
            raise HTTPProblem(
                400,
                f'`{unknown[0][:60]}` is not a redrive option; give {{"ids": [...]}} or {{}} '
                "for all",
                code="InvalidDeadLetterQuery",
                target=unknown[0][:60],
            )
        ids = document.get("ids")
        moved = await bus.redrive(topic, name, ids)
        logger.info("redrove %d dead letters of %s/%s", moved, topic, name)
        return JSONResponse({"redriven": moved})

    async def purge(request: Request) -> Response:
        topic, name = _subscription_key(request)
        purged = await bus.purge_dead_letters(topic, name)
        logger.info("purged %d dead letters of %s/%s", purged, topic, name)
        return JSONResponse({"purged": purged})

    async def purge_one(request: Request) -> Response:
        topic, name = _subscription_key(request)
        record_id = request.path_params["id"]
        if not await bus.purge_dead_letters(topic, name, [record_id]):
            raise DeadLetterNotFoundError(
                f"subscription {topic}/{name} has no dead letter {record_id[:60]!r}"
            )
        return JSONResponse({"purged": 1})

    subscription = "/topics/{topic}/eventSubscriptions/{name}"
    routes = [
        Route("/topics", list_topics, methods=["GET"]),
        Route("/topics/{topic}", get_topic, methods=["GET"]),
        Route("/topics/{topic}", put_topic, methods=["PUT"]),
        Route("/topics/{topic}", delete_topic, methods=["DELETE"]),
        Route("/topics/{topic}/listKeys", list_keys, methods=["POST"]),
        Route("/topics/{topic}/regenerateKey", regenerate_key, methods=["POST"]),
        Route("/topics/{topic}/eventSubscriptions", list_subscriptions, methods=["GET"]),
        Route(subscription, get_subscription, methods=["GET"]),
        Route(subscription, put_subscription, methods=["PUT"]),
        Route(subscription, delete_subscription, methods=["DELETE"]),
        Route(subscription + "/getFullUrl", get_full_url, methods=["POST"]),
        Route(subscription + "/deadLetters", list_dead_letters, methods=["GET"]),
        Route(subscription + "/deadLetters", purge, methods=["DELETE"]),
        Route(subscription + "/deadLetters/redrive", redrive, methods=["POST"]),
        Route(subscription + "/deadLetters/{id}", get_dead_letter, methods=["GET"]),
        Route(subscription + "/deadLetters/{id}", purge_one, methods=["DELETE"]),
    ]
    return Mount(
        "/management",
        routes=routes,
        middleware=[Middleware(AdminAuthMiddleware, settings=settings)],
    )


def _subscription_key(request: Request) -> tuple[str, str]:
    return request.path_params["topic"], request.path_params["name"]


async def _exists(lookup: Awaitable[object]) -> bool:
    try:
        await lookup
    except NotFoundError:
        return False
    return True
