"""The JSON contract between the ambassador and the plain service behind it (pure functions).

Each delivery becomes ``POST <service-url>`` with ``Content-Type: application/json``, the
``traceparent`` of the ambassador's span, and the body::

    {"id": "…", "type": "DroneAssigned", "source": "/services/scheduler",
     "subject": "/deliveries/d-1", "time": "2026-01-01T10:00:00Z", "data": {…},
     "correlationId": "d-1", "attempt": 1}

(``subject``, ``time`` and ``data`` are null when the event has none; binary data comes as
``dataBase64`` instead of ``data``). The service answers:

- **2xx** with ``{"events": [{"type": "…", "data": …, "subject": "…"}]}`` (``data`` and
  ``subject`` optional; ``subject`` defaults to the consumed event's), or an empty body or
  ``{}`` for no events: the ambassador publishes them, then acknowledges the delivery;
- **5xx**, **408**, **429**, no answer in time or no connection: a transient failure, retried
  by the bus (a ``Retry-After`` of the service is passed on);
- any other **4xx**: the event is refused, dead-lettered at once;
- anything else (1xx, 3xx, or a 2xx whose body breaks this contract, or names an event type
  the ambassador was not told about with ``--emits``): a failure, retried.

``POST /publish`` on the ambassador takes ``{"type", "data"?, "subject"?, "id"?,
"correlationId"?}`` and publishes the event (a new transaction unless ``correlationId`` is
given; the caller's ``traceparent`` header is continued).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import msgspec

from choreograph.bus.retry import Outcome
from choreograph.errors import ValidationError
from choreograph.events import CloudEvent
from choreograph.gateway.webhook import parse_retry_after

__all__ = [
    "AnswerError",
    "NextEvent",
    "PublishRequest",
    "outcome_of_status",
    "parse_answer",
    "parse_publish",
    "service_request",
]

MAX_DETAIL_CHARS: Final = 512
_NEXT_KEYS: Final = frozenset({"type", "data", "subject"})
_PUBLISH_KEYS: Final = frozenset({"type", "data", "subject", "id", "correlationId"})
_TRANSIENT_4XX: Final = frozenset({408, 429})


class AnswerError(ValidationError):
    """The service's answer (or a ``/publish`` request) breaks the contract."""


class NextEvent(NamedTuple):
    """An event the service asks to emit."""

    type: str
    data: Any
    """The JSON data, or ``msgspec.UNSET`` for none."""
    subject: str | None


class PublishRequest(NamedTuple):
    """What ``POST /publish`` asks to publish."""

    event: NextEvent
    id: str | None
    correlation_id: str | None


def service_request(event: CloudEvent, attempt: int) -> dict[str, Any]:
    """The body sent to the service for one delivery attempt (``attempt`` counts from 1)."""
    body: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "subject": event.subject,
        "time": event.time,
        "data": None if event.data is msgspec.UNSET else event.data,
        "correlationId": event.correlationid or event.id,
        "attempt": attempt,
    }
    if event.data_base64 is not None:
        body["dataBase64"] = event.data_base64
    return body


def _object(body: bytes, what: str) -> dict[str, Any]:
    try:
        document = msgspec.json.decode(body) if body.strip() else {}
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise AnswerError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise AnswerError(f"{what} must be a JSON object, got {type(document).__name__}")
    return document


def _next_event(item: object, where: str, emits: Mapping[str, str], keys: frozenset[str]) -> Any:
    if not isinstance(item, dict):
        raise AnswerError(f"{where} must be a JSON object, got {type(item).__name__}")
    unknown = sorted(set(item) - keys)
    if unknown:
        allowed = ", ".join(sorted(keys))
        raise AnswerError(f"{where} has `{str(unknown[0])[:40]}`; its keys are {allowed}")
    event_type = item.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise AnswerError(f"{where}.type must be a non-empty string")
    if event_type not in emits:
        declared = ", ".join(sorted(emits)) or "none (no --emits)"
        raise AnswerError(
            f"{where}.type {event_type[:80]!r} is not an event type this service emits "
            f"(declared: {declared})"
        )
    subject = item.get("subject")
    if subject is not None and (not isinstance(subject, str) or not subject):
        raise AnswerError(f"{where}.subject must be a non-empty string")
    data = item.get("data", msgspec.UNSET)
    return NextEvent(event_type, data, subject)


def parse_answer(body: bytes, emits: Mapping[str, str]) -> list[NextEvent]:
    """The events a 2xx answer asks to emit; AnswerError when it breaks the contract."""
    document = _object(body, "the service's answer")
    unknown = sorted(set(document) - {"events"})
    if unknown:
        raise AnswerError(
            f'the service\'s answer has `{str(unknown[0])[:40]}`; expected {{"events": [...]}}'
        )
    events = document.get("events", [])
    if not isinstance(events, list):
        raise AnswerError("`events` in the service's answer must be a list")
    return [_next_event(item, f"events[{i}]", emits, _NEXT_KEYS) for i, item in enumerate(events)]


def parse_publish(body: bytes, emits: Mapping[str, str]) -> PublishRequest:
    """A ``POST /publish`` body; AnswerError when it breaks the contract."""
    document = _object(body, "the body")
    event = _next_event(document, "the body", emits, _PUBLISH_KEYS)
    ids: dict[str, str | None] = {}
    for key in ("id", "correlationId"):
        value = document.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise AnswerError(f"`{key}` must be a non-empty string")
        ids[key] = value
    return PublishRequest(event, ids["id"], ids["correlationId"])


def _detail(status: int, text: str) -> str:
    text = text.strip()
    if len(text) > MAX_DETAIL_CHARS:
        text = text[:MAX_DETAIL_CHARS] + "…"
    return f"the service answered {status}" + (f": {text}" if text else "")


def outcome_of_status(status: int, body: str, retry_after: str | None = None) -> Outcome:
    """The bus outcome of a service that answered ``status`` (not 2xx) with ``body``."""
    detail = _detail(status, body)
    if status >= 500 or status in _TRANSIENT_4XX:
        return Outcome(
            status=503,
            name="Busy",
            detail=detail,
            retry_after_seconds=parse_retry_after(retry_after),
        )
    if 400 <= status < 500:
        return Outcome(status=400, name="BadRequest", detail=detail, rejected=True)
    return Outcome(status=502, name="BadGateway", detail=detail)
