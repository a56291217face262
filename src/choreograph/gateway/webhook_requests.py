"""The request of a webhook delivery attempt: its URL, body and headers, built without I/O.

What each request carries is described in :mod:`choreograph.gateway.webhook`, which sends it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

import msgspec
from yarl import URL

from choreograph.bus.endpoint import Attempt
from choreograph.events import CORRELATION_KEY, CloudEvent, EventGridEvent

__all__ = [
    "CLOUDEVENTS_BATCH_CONTENT_TYPE",
    "CLOUDEVENT_CONTENT_TYPE",
    "EVENTGRID_CONTENT_TYPE",
    "REQUEST_ORIGIN",
    "notification_request",
    "request_url",
]

EVENTGRID_CONTENT_TYPE: Final = "application/json; charset=utf-8"
CLOUDEVENT_CONTENT_TYPE: Final = "application/cloudevents+json; charset=utf-8"
CLOUDEVENTS_BATCH_CONTENT_TYPE: Final = "application/cloudevents-batch+json; charset=utf-8"
REQUEST_ORIGIN: Final = "eventgrid.azure.net"
"""``WebHook-Request-Origin`` of CloudEvents deliveries and of the OPTIONS handshake."""
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]{0,512}")
_URL_CHARACTERS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")
_encode = msgspec.json.Encoder().encode


def request_url(endpoint_url: str) -> URL:
    """The URL to request: exactly as given (query string included) when it is already
    well-formed, percent-encoded where it is not; never the fragment."""
    url = endpoint_url.partition("#")[0]
    return URL(url, encoded=bool(_URL_CHARACTERS.fullmatch(url)))


def _header(value: object) -> str | None:
    """``value`` if it can travel in a header unchanged (no control characters, not huge)."""
    return value if isinstance(value, str) and _HEADER_VALUE.fullmatch(value) else None


def _trace_context(event: CloudEvent | EventGridEvent) -> Mapping[str, object]:
    if isinstance(event, CloudEvent):
        return event.extensions
    carried = event.data.get(CORRELATION_KEY) if isinstance(event.data, dict) else None
    return carried if isinstance(carried, dict) else {}


def notification_request(
    events: Sequence[CloudEvent | EventGridEvent], attempt: Attempt
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one delivery attempt (pure: no I/O)."""
    first = events[0]
    headers = {
        "aeg-event-type": "Notification",
        "aeg-subscription-name": attempt.subscription,
        "aeg-delivery-count": str(attempt.delivery_count),
    }
    if attempt.event_delivery_schema == "EventGridSchema":
        body = _encode([event.to_dict() for event in events])
        headers["Content-Type"] = EVENTGRID_CONTENT_TYPE
        headers["aeg-metadata-version"] = "1"
        data_version = _header(first.data_version) if isinstance(first, EventGridEvent) else None
        headers["aeg-data-version"] = data_version or ""
    else:
        if attempt.batched:
            body = _encode([event.to_dict() for event in events])
            headers["Content-Type"] = CLOUDEVENTS_BATCH_CONTENT_TYPE
        else:
            body = _encode(first.to_dict())
            headers["Content-Type"] = CLOUDEVENT_CONTENT_TYPE
        headers["aeg-metadata-version"] = "1.0"
        headers["WebHook-Request-Origin"] = REQUEST_ORIGIN
    context = _trace_context(first)
    traceparent = context.get("traceparent")
    if isinstance(traceparent, str) and _TRACEPARENT.fullmatch(traceparent):
        headers["traceparent"] = traceparent
        tracestate = _header(context.get("tracestate"))
        if tracestate:
            headers["tracestate"] = tracestate
    return body, headers
