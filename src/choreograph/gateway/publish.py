"""The publish endpoint: Event Grid's data-plane API and CloudEvents 1.0 over HTTP.

    POST /topics/{topic}/api/events?api-version=2018-01-01
    POST /api/events                       (the default topic, when one is configured)

Checks run in this order, and the first refusal answers: the topic exists (404), the request
carries a valid credential (401, see :mod:`choreograph.gateway.auth`), the body fits the request
limit, read in chunks and abandoned as soon as it is over (413), the content type suits the
topic's input schema and the body parses (400), then the bus validates and stores every event or
none (400, or 413 for an event over 1 MB). Success is exactly 200 with an empty body, which is
all the Azure SDK accepts.

Bodies by the topic's input schema:

- ``EventGridSchema``: a JSON array of Event Grid events, ``application/json``;
- ``CloudEventSchemaV1_0``: structured ``application/cloudevents+json`` (one event), batched
  ``application/cloudevents-batch+json`` (an array), or binary mode: the attributes in ``ce-*``
  headers (percent-decoded), ``Content-Type`` the data's media type; JSON data (``application/json``,
  ``text/json``, ``*+json``) is parsed into ``data``, any other body goes to ``data_base64``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import unquote

import msgspec
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from choreograph.bus.bus import Bus
from choreograph.bus.topic import TopicRecord
from choreograph.errors import (
    ChoreographError,
    InvalidEventError,
    InvalidTopicError,
    TopicNotFoundError,
)
from choreograph.events import CloudEvent, EventGridEvent, parse_cloudevents, parse_eventgrid_events
from choreograph.gateway.auth import authenticate_publisher
from choreograph.gateway.errors import HTTPProblem, problem_from_error
from choreograph.gateway.metrics import GatewayMetrics
from choreograph.gateway.settings import GatewaySettings

__all__ = [
    "API_VERSION",
    "BATCH_MEDIA_TYPE",
    "STRUCTURED_MEDIA_TYPE",
    "PublishHandler",
    "events_from_body",
    "publish_handler",
    "publish_path_params",
    "publish_routes",
    "read_body",
]

logger = logging.getLogger(__name__)

API_VERSION: Final = "2018-01-01"
STRUCTURED_MEDIA_TYPE: Final = "application/cloudevents+json"
BATCH_MEDIA_TYPE: Final = "application/cloudevents-batch+json"
_EVENTGRID_MEDIA_TYPES: Final = frozenset({"", "application/json", "text/json"})
_REQUIRED_BINARY_ATTRIBUTES: Final = ("specversion", "id", "source", "type")
_NOT_BINARY_ATTRIBUTES: Final = frozenset({"data", "data_base64", "datacontenttype"})


_ACCEPTED: Final = Response(status_code=200)
"""The answer to an accepted publish: 200, empty (it holds no state, so one serves every request)."""


def _media_type(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type in ("application/json", "text/json") or media_type.endswith("+json")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes:
    from ``Content-Length`` before reading, or while reading chunk by chunk."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit() or not declared.isascii():
            raise HTTPProblem(
                400, "Content-Length must be a non-negative integer", code="InvalidContentLength"
            )
        if len(declared.strip()) > 18 or int(declared) > limit:
            raise HTTPProblem(
                413,
                f"the request is {declared.strip()[:20]} bytes; the limit of a publish "
                f"request is {limit} bytes",
                code="RequestTooLarge",
            )
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise HTTPProblem(
            400,
            f"Content-Encoding {encoding[:40]!r} is not supported",
            code="InvalidContentEncoding",
        )
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPProblem(
                    413,
                    f"the request exceeds {limit} bytes, the limit of a publish request",
                    code="RequestTooLarge",
                )
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPProblem(400, "the client disconnected", code="ClientDisconnected") from None
    return b"".join(chunks)


def _schema_mismatch(topic: TopicRecord, got: str) -> HTTPProblem:
    if topic.spec.input_schema == "EventGridSchema":
        message = (
            f"topic {topic.name!r} takes the Event Grid schema (inputSchema EventGridSchema): "
            f"send a JSON array of Event Grid events as application/json; got {got}"
        )
    else:
        message = (
            f"topic {topic.name!r} takes CloudEvents (inputSchema CloudEventSchemaV1_0): send "
            f"{STRUCTURED_MEDIA_TYPE}, {BATCH_MEDIA_TYPE}, or binary mode (ce-* headers); "
            f"got {got}"
        )
    return HTTPProblem(400, message, code="InputSchemaMismatch")


def events_from_body(
    topic: TopicRecord, headers: Headers, body: bytes
) -> list[CloudEvent] | list[EventGridEvent]:
    """Parse a publish body by its content mode; InvalidEventError or a 400 HTTPProblem when
    it is malformed or does not suit the topic's input schema."""
    content_type = headers.get("content-type")
    media_type = _media_type(content_type)
    takes_cloudevents = topic.spec.input_schema == "CloudEventSchemaV1_0"
    if media_type in (STRUCTURED_MEDIA_TYPE, BATCH_MEDIA_TYPE):
        if not takes_cloudevents:
            raise _schema_mismatch(topic, f"Content-Type {media_type}")
        return parse_cloudevents(body, batch=media_type == BATCH_MEDIA_TYPE)
    if "ce-specversion" in headers:
        if not takes_cloudevents:
            raise _schema_mismatch(topic, "a binary-mode CloudEvent (ce-* headers)")
        return [binary_event(headers, body)]
    if takes_cloudevents or media_type not in _EVENTGRID_MEDIA_TYPES:
        raise _schema_mismatch(topic, f"Content-Type {(content_type or '(none)')[:80]!r}")
    return parse_eventgrid_events(body)


def binary_event(headers: Headers, body: bytes) -> CloudEvent:
    """A binary-mode CloudEvent: attributes from ``ce-*`` headers, data from the body."""
    attributes: dict[str, Any] = {}
    for raw_name, raw_value in headers.raw:
        name = raw_name.decode("latin-1").lower()
        if not name.startswith("ce-"):
            continue
        attribute = name[3:]
        if attribute in _NOT_BINARY_ATTRIBUTES:
            raise InvalidEventError(
                f"binary mode: header {name} is not allowed (the data's media type is "
                "Content-Type and the data is the body)",
                attribute=attribute,
            )
        if attribute in attributes:
            raise InvalidEventError(
                f"binary mode: header {name} appears more than once", attribute=attribute
            )
        try:
            attributes[attribute] = unquote(raw_value.decode("utf-8"), errors="strict")
        except UnicodeDecodeError:
            raise InvalidEventError(
                f"binary mode: header {name} is not UTF-8 once percent-decoded",
                attribute=attribute,
            ) from None
    for required in _REQUIRED_BINARY_ATTRIBUTES:
        if required not in attributes:
            raise InvalidEventError(
                f"binary mode: header ce-{required} is required", attribute=required
            )
    content_type = headers.get("content-type")
    if content_type:
        attributes["datacontenttype"] = content_type
    if body:
        if _is_json(_media_type(content_type)):
            try:
                attributes["data"] = msgspec.json.decode(body)
            except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
                raise InvalidEventError(
                    f"binary mode: the body is declared {_media_type(content_type)} but is not "
                    f"valid JSON: {exc}",
                    attribute="data",
                ) from exc
        else:
            attributes["data_base64"] = base64.b64encode(body).decode("ascii")
    return CloudEvent.from_dict(attributes)


async def _find_topic(bus: Bus, name: str) -> TopicRecord:
    try:
        return await bus.get_topic(name)
    except (TopicNotFoundError, InvalidTopicError):
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise HTTPProblem(404, f"topic {shown!r} does not exist", code="TopicNotFound") from None


PublishHandler = Callable[[Request], Awaitable[Response]]


def publish_handler(bus: Bus, settings: GatewaySettings, metrics: GatewayMetrics) -> PublishHandler:
    """The publish endpoint over ``bus``: takes a request whose ``path_params`` hold the topic
    (none for the default topic) and answers 200, or raises :class:`HTTPProblem`."""

    async def publish(request: Request) -> Response:
        name = request.path_params.get("topic", settings.default_topic)
        if name is None:
            raise HTTPProblem(
                404,
                "this gateway has no default topic: POST to /topics/{topic}/api/events",
                code="TopicNotFound",
            )
        topic = await _find_topic(bus, name)
        try:
            events = await _accept(request, topic)
            await bus.publish(topic.name, events)
        except HTTPProblem as problem:
            metrics.publish_refused(topic.name, problem.status)
            raise
        except ChoreographError as exc:
            refusal = problem_from_error(exc)
            metrics.publish_refused(topic.name, refusal.status)
            raise refusal from exc
        except RecursionError:  # data that decoded but is too deep to validate
            metrics.publish_refused(topic.name, 400)
            raise HTTPProblem(400, "the body is nested too deeply", code="InvalidEvent") from None
        metrics.published(topic.name)
        return _ACCEPTED

    async def _accept(request: Request, topic: TopicRecord) -> list[Any]:
        try:
            scheme = authenticate_publisher(
                request, topic, public_url=settings.public_url, now=bus.clock.now()
            )
        except HTTPProblem as problem:
            client = request.client.host if request.client else "?"
            logger.info("refused a publish to %s from %s: %s", topic.name, client, problem.code)
            raise
        version = request.query_params.get("api-version") if request.scope["query_string"] else None
        if version is not None and version != API_VERSION:
            raise HTTPProblem(
                400,
                f"api-version must be {API_VERSION}, got {version[:40]!r}",
                code="InvalidApiVersion",
            )
        body = await read_body(request, settings.max_request_bytes)
        events: list[Any] = events_from_body(topic, request.headers, body)
        logger.debug("publish of %d events to %s (%s)", len(events), topic.name, scheme)
        return events

    return publish


def publish_routes(handler: PublishHandler) -> list[Route]:
    """The publish routes, served by ``handler``."""
    return [
        Route("/topics/{topic}/api/events", handler, methods=["POST"]),
        Route("/api/events", handler, methods=["POST"]),
    ]


def publish_path_params(path: str) -> dict[str, str] | None:
    """The path parameters of a publish route that ``path`` (without the root path) matches, as
    the routes would give them; None when it is no publish path."""
    if path == "/api/events":
        return {}
    if path.startswith("/topics/") and path.endswith("/api/events"):
        topic = path[len("/topics/") : -len("/api/events")]
        if topic and "/" not in topic:
            return {"topic": topic}
    return None
