"""A service as an ASGI webhook app that the bus pushes to through the gateway.

    async with (
        GatewayClient(gateway_url, admin_token=token) as gateway,
        ServiceWebhook(service, gateway, public_url="http://10.0.0.5:8100",
                       store="sqlite:///data/package.db") as webhook,
    ):
        await serve(webhook.app, [listener], on_listening=webhook.register)

Routes: ``POST /handlers/<handler>`` (one per handler, each the endpoint of the handler's
subscription ``<service>-<handler>``; ``OPTIONS`` there answers the CloudEvents handshake) and
``GET /healthz`` (503 until the subscriptions are registered).

A delivery runs through :meth:`ServiceEndpoint.handle <choreograph.sdk.ServiceEndpoint.handle>`,
so the inbox, the state's unit of work and the deterministic ids are those of the in-process
runtime. The emitted events are published to the gateway (with their topics' keys) **before**
the answer: 200 means they are durable. The answer maps the outcome as the in-process runtime
does: 200 delivered; 503 for :class:`~choreograph.Retry` (``Retry-After`` carries its delay) or
when the emitted events could not be published; 400 for :class:`~choreograph.Reject` or a body
that is no CloudEvent (dead-lettered at once); 500 for any other exception (retried). A retried
delivery finds the inbox entry and publishes the same events again; the topic's
de-duplication absorbs them.

Start-up order (``__aenter__``): the store opens and the startup functions run, the topics the
service consumes and emits are created when missing (``create_topics``) and their keys read,
then the app exists. :meth:`ServiceWebhook.register` must run once the app is reachable at
``public_url``: each ``PUT …/eventSubscriptions/<service>-<handler>`` makes the gateway run the
validation handshake against it. :func:`serve` runs uvicorn on a bound socket and registers
while it starts (connections wait in the socket's backlog).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from choreograph.bus.endpoint import Attempt, outcome_of_exception
from choreograph.bus.retry import Outcome
from choreograph.bus.subscription import WebHookDestination
from choreograph.clock import Clock, SystemClock
from choreograph.errors import ChoreographError, InvalidEventError
from choreograph.events import CloudEvent, parse_cloudevents
from choreograph.gateway.errors import (
    HTTPProblem,
    error_body,
    http_exception_handler,
    problem_handler,
)
from choreograph.gateway.publish import read_body
from choreograph.gateway.validation import VALIDATION_EVENT_TYPE
from choreograph.gateway.webhook import REQUEST_ORIGIN
from choreograph.sdk.endpoint import ServiceEndpoint
from choreograph.sdk.remote import GatewayClient, GatewayError, Publisher
from choreograph.sdk.retention import forgetting_old_entries
from choreograph.sdk.runner import subscription_spec
from choreograph.sdk.service import HandlerSpec, Service
from choreograph.sdk.serving import serve
from choreograph.sdk.store import ServiceStore, open_service_store

__all__ = [
    "MAX_DELIVERY_BYTES",
    "ApiContext",
    "ApiFactory",
    "ServiceWebhook",
    "ServiceWithApi",
    "WebhookHost",
    "answer_handshake",
    "delivery_count",
    "outcome_response",
    "publish_emitted",
    "read_delivered_event",
    "serve",
]

logger = logging.getLogger(__name__)

MAX_DELIVERY_BYTES: Final = 1_100_000
"""Largest delivery body accepted: one event of at most 1 MB, plus its envelope."""
_CLOUDEVENT_TYPES: Final = frozenset({"application/cloudevents+json", "application/json"})


# the webhook protocol, shared with the ambassador ------------------------------------------------
async def answer_handshake(
    request: Request, *, subscription: str, allowed_origins: Sequence[str] = (REQUEST_ORIGIN,)
) -> Response | None:
    """The answer to a validation handshake or a deletion notice; None for a notification.

    ``OPTIONS`` (CloudEvents abuse protection) grants ``WebHook-Request-Origin`` when it is one of
    ``allowed_origins``; an Event Grid ``SubscriptionValidation`` POST is answered with its
    ``validationCode`` when ``aeg-subscription-name`` is ``subscription`` (any case)."""
    if request.method == "OPTIONS":
        origin = request.headers.get("webhook-request-origin", "").strip()
        if origin.lower() not in {allowed.lower() for allowed in allowed_origins}:
            message = f"origin {origin[:100]!r} may not deliver to this endpoint"
            return JSONResponse(error_body(403, message), status_code=403)
        return Response(
            status_code=200,
            headers={
                "WebHook-Allowed-Origin": origin,
                "WebHook-Allowed-Rate": "*",
                "Allow": "POST, OPTIONS",
            },
        )
    kind = request.headers.get("aeg-event-type", "Notification")
    if kind == "SubscriptionDeletion":
        logger.warning("subscription %s was deleted on the bus", subscription)
        return Response(status_code=200)
    if kind != "SubscriptionValidation":
        return None
    named = request.headers.get("aeg-subscription-name", "")
    if named.lower() != subscription.lower():
        message = f"this endpoint belongs to subscription {subscription}, not {named[:64]!r}"
        return JSONResponse(error_body(403, message), status_code=403)
    code = _validation_code(await read_body(request, MAX_DELIVERY_BYTES))
    if code is None:
        raise HTTPProblem(400, f"expected one {VALIDATION_EVENT_TYPE} with a validationCode")
    logger.info("validating subscription %s", subscription)
    return JSONResponse({"validationResponse": code})


def _validation_code(body: bytes) -> str | None:
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    events = document if isinstance(document, list) else [document]
    for event in events:
        if isinstance(event, dict) and event.get("eventType") == VALIDATION_EVENT_TYPE:
            data = event.get("data")
            code = data.get("validationCode") if isinstance(data, dict) else None
            return code if isinstance(code, str) else None
    return None


async def read_delivered_event(request: Request) -> CloudEvent:
    """The one CloudEvent a notification carries (structured mode, or a batch of one); a 400
    HTTPProblem for anything else (a poison delivery: the bus dead-letters it)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    body = await read_body(request, MAX_DELIVERY_BYTES)
    try:
        if media_type == "application/cloudevents-batch+json":
            events = parse_cloudevents(body, batch=True)
            if len(events) != 1:
                raise InvalidEventError(f"expected a batch of one event, got {len(events)}")
            return events[0]
        if media_type not in _CLOUDEVENT_TYPES:
            raise InvalidEventError(
                f"expected application/cloudevents+json (subscribe with the CloudEvents "
                f"delivery schema), got {media_type[:80] or 'no Content-Type'}"
            )
        return CloudEvent.from_json(body)
    except InvalidEventError as exc:
        raise HTTPProblem(400, f"not a CloudEvent: {exc}", code="InvalidEvent") from exc


def delivery_count(request: Request) -> int:
    """``aeg-delivery-count``: the attempts made before this one (0 when absent or unreadable)."""
    text = request.headers.get("aeg-delivery-count", "0").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 6 else 0


def outcome_response(outcome: Outcome) -> Response:
    """The HTTP answer of a failed attempt: its status, Event Grid's error body, and
    ``Retry-After`` (whole seconds, rounded up) when the outcome asks for a delay."""
    headers = {}
    if outcome.retry_after_seconds > 0:
        headers["Retry-After"] = str(math.ceil(outcome.retry_after_seconds))
    message = outcome.detail or outcome.name
    return JSONResponse(
        error_body(outcome.status, message, code=outcome.name),
        status_code=outcome.status,
        headers=headers,
    )


# services with an HTTP API of their own -----------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ApiContext:
    """What a service's own HTTP API gets when the service starts."""

    publisher: Publisher
    store: ServiceStore
    clock: Clock
    data_dir: Path | None


ApiFactory = Callable[[ApiContext], AbstractAsyncContextManager[Sequence[BaseRoute]]]
"""``async with api(context) as routes``: the routes of a service's HTTP API, served beside its
handlers for as long as the block lasts."""


@dataclass(frozen=True, kw_only=True)
class ServiceWithApi:
    """A service that also serves an HTTP API (Drone Delivery's ingestion service)."""

    service: Service
    api: ApiFactory


# the webhook app -------------------------------------------------------------------------------
class WebhookHost(abc.ABC):
    """A Starlette app of webhooks that lives while its owner is entered (``async with``): the
    owner's ``_start`` builds ``_app`` and enters what it needs in ``_stack``; leaving (or a
    failed start) closes them all."""

    def __init__(self) -> None:
        self._app: Starlette | None = None
        self._ready = False
        self._stack = contextlib.AsyncExitStack()

    @property
    def app(self) -> Starlette:
        if self._app is None:
            raise ChoreographError(
                f"the webhook app is not running; use `async with {type(self).__name__}`"
            )
        return self._app

    @abc.abstractmethod
    async def _start(self) -> None:
        """Build ``_app`` and enter what it needs in ``_stack``."""

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._app = None
        self._ready = False
        await self._stack.aclose()


class ServiceWebhook(WebhookHost):
    """``service`` served as webhooks, publishing through ``gateway`` (see the module docstring).

    ``public_url`` is where the gateway reaches this app; ``api`` adds the service's own routes;
    ``publisher`` replaces the gateway as the destination of emitted events (tests).
    """

    def __init__(
        self,
        service: Service,
        gateway: GatewayClient,
        *,
        public_url: str,
        store: ServiceStore | str = "memory://",
        clock: Clock | None = None,
        api: ApiFactory | None = None,
        data_dir: Path | None = None,
        create_topics: bool = True,
        allowed_origins: Sequence[str] = (REQUEST_ORIGIN,),
        publisher: Publisher | None = None,
    ) -> None:
        self.service = service
        self.gateway = gateway
        self.publisher: Publisher = publisher if publisher is not None else gateway
        """Where emitted events go: the gateway, unless told otherwise."""
        self.public_url = public_url.rstrip("/")
        self.store = store if isinstance(store, ServiceStore) else open_service_store(store)
        self.clock: Clock = clock or SystemClock()
        self.api = api
        self.data_dir = data_dir
        self.create_topics = create_topics
        self.allowed_origins = tuple(allowed_origins)
        self.endpoints: dict[str, ServiceEndpoint] = {}
        self.registered: list[tuple[str, str, str]] = []
        """(topic, subscription, provisioning state) of each registered subscription."""
        super().__init__()

    def endpoint_url(self, spec: HandlerSpec) -> str:
        return f"{self.public_url}/handlers/{spec.name}"

    async def _start(self) -> None:
        service, store = self.service, self.store
        await store.open()
        self._stack.push_async_callback(store.close)
        await self._stack.enter_async_context(
            forgetting_old_entries(store, self.clock, service.name)
        )
        for startup in service.startup:
            async with store.transaction() as state:
                await startup(state)
        consumed = {topic for spec in service.handlers for topic in spec.topics.values()}
        emitted = {topic for spec in service.handlers for topic in spec.emits.values()}
        emitted |= set(service.publishes.values())
        if self.create_topics:
            for topic in sorted(consumed | emitted):
                await self.gateway.ensure_topic(topic)
        for topic in sorted(emitted):  # a wrong token or a missing topic shows at start
            await self.gateway.topic_key(topic)
        self.endpoints = {
            spec.name: ServiceEndpoint(service, spec, store, self.clock)
            for spec in service.handlers
        }
        routes: list[BaseRoute] = [
            Route("/handlers/{name}", self._deliver, methods=["POST", "OPTIONS"]),
            Route("/healthz", self._health, methods=["GET"]),
        ]
        if self.api is not None:
            context = ApiContext(
                publisher=self.publisher, store=store, clock=self.clock, data_dir=self.data_dir
            )
            routes.extend(await self._stack.enter_async_context(self.api(context)))
        self._app = Starlette(
            routes=routes,
            exception_handlers={
                HTTPProblem: problem_handler,
                HTTPException: http_exception_handler,
            },
        )

    async def register(self) -> None:
        """Create or update every handler's webhook subscription on the gateway (which validates
        the endpoint before answering); then ``/healthz`` answers 200."""
        for spec in self.service.handlers:
            name = self.service.subscription_name(spec)
            for topic in dict.fromkeys(spec.topics.values()):
                local = subscription_spec(self.service, spec, topic)
                webhook = msgspec.structs.replace(
                    local, destination=WebHookDestination(endpoint_url=self.endpoint_url(spec))
                )
                resource = await self.gateway.put_subscription(topic, name, webhook)
                state = str(resource.get("properties", {}).get("provisioningState", "Unknown"))
                if state == "Failed":
                    raise GatewayError(
                        f"the gateway could not validate {self.endpoint_url(spec)} for "
                        f"{topic}/{name}: is the public URL reachable from the gateway (and "
                        "does the gateway allow private addresses, for loopback)?"
                    )
                if state != "Succeeded":
                    logger.warning(
                        "subscription %s/%s is %s, not yet delivering", topic, name, state
                    )
                self.registered.append((topic, name, state))
        self._ready = True
        logger.info(
            "service %s registered %d subscriptions", self.service.name, len(self.registered)
        )

    async def _health(self, request: Request) -> Response:
        body: dict[str, Any] = {
            "status": "ok" if self._ready else "starting",
            "service": self.service.name,
            "subscriptions": [f"{topic}/{name}" for topic, name, _ in self.registered],
        }
        return JSONResponse(body, status_code=200 if self._ready else 503)

    async def _deliver(self, request: Request) -> Response:
        name = request.path_params["name"]
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise HTTPProblem(404, f"service {self.service.name} has no handler {name[:60]!r}")
        subscription = self.service.subscription_name(endpoint.spec)
        handshake = await answer_handshake(
            request, subscription=subscription, allowed_origins=self.allowed_origins
        )
        if handshake is not None:
            return handshake
        event = await read_delivered_event(request)
        count = delivery_count(request)
        try:
            emitted = await endpoint.handle(event, count + 1)
        except Exception as exc:
            attempt = Attempt(
                topic=endpoint.spec.topics.get(event.type, "?"),
                subscription=subscription,
                delivery_count=count,
                event_delivery_schema="CloudEventSchemaV1_0",
                batched=False,
            )
            return outcome_response(outcome_of_exception(exc, attempt))
        try:
            await publish_emitted(self.publisher, emitted)
        except GatewayError as exc:
            logger.warning("%s: emitted events not published, the bus will retry: %s", name, exc)
            message = f"the emitted events could not be published: {exc}"
            return JSONResponse(error_body(503, message), status_code=503)
        return Response(status_code=200)


async def publish_emitted(publisher: Publisher, emitted: Sequence[tuple[str, CloudEvent]]) -> None:
    """Publish (topic, event) pairs, one request per topic, in the order of first emission."""
    by_topic: dict[str, list[CloudEvent]] = {}
    for topic, event in emitted:
        by_topic.setdefault(topic, []).append(event)
    for topic, events in by_topic.items():
        await publisher.publish(topic, events)
