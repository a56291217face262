"""What the monitor keeps of one event it observed: a flat record, extracted by a pure function.

The conventions read here are the SDK's: ``source`` is ``/services/<name>`` for events a service
emitted; ``correlationid``, ``causationid``, ``traceparent`` and ``deliveryattempt`` are
extension attributes. ``Choreograph.DeadLettered`` system events are read for their reason,
attempts and the dead-lettered event's correlation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec

from choreograph.bus.deadletter import DEAD_LETTERED_EVENT_TYPE
from choreograph.events import CloudEvent

__all__ = ["DATA_EXCERPT_CHARS", "SERVICE_PREFIX", "Observation", "observe", "service_of"]

SERVICE_PREFIX: Final = "/services/"
DATA_EXCERPT_CHARS: Final = 4096
"""Data longer than this (as JSON) is kept as a JSON string of its first characters and '…'."""

_encode = msgspec.json.Encoder().encode
_REASON_KEYS: Final = ("reason", "error", "message", "detail")


@dataclass(frozen=True, slots=True)
class Observation:
    """One event as the monitor records it.

    ``correlation_id`` is None when the event does not carry one; the store then takes the
    event's own id if it starts a transaction, or the correlation of its cause for a dead-letter
    announcement. ``detail`` is the reason a failure or dead-letter event gives.
    """

    event_id: str
    source: str
    type: str
    topic: str
    observed_at: float
    correlation_id: str | None = None
    causation_id: str | None = None
    subject: str | None = None
    event_time: str | None = None
    attempt: int | None = None
    traceparent: str | None = None
    data: str | None = None
    detail: str | None = None

    @property
    def service(self) -> str:
        return service_of(self.source)


def service_of(source: str) -> str:
    """The service name in a ``/services/<name>`` source; any other source as it is."""
    if source.startswith(SERVICE_PREFIX):
        name = source[len(SERVICE_PREFIX) :].split("/", 1)[0]
        if name:
            return name
    return source


def _attempt(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 1 else None
    if isinstance(value, str) and value.isdigit():
        return int(value) or None
    return None


def _data_text(event: CloudEvent) -> str | None:
    if event.data is msgspec.UNSET:
        return (
            None
            if event.data_base64 is None
            else _encode(f"<{len(event.data_base64)} base64 characters>").decode()
        )
    try:
        text = _encode(event.data).decode()
    except (TypeError, ValueError, msgspec.EncodeError):
        text = _encode(repr(event.data)).decode()
    if len(text) > DATA_EXCERPT_CHARS:
        text = _encode(text[:DATA_EXCERPT_CHARS] + "…").decode()
    return text


def _reason(data: Any) -> str | None:
    if isinstance(data, dict):
        for key in _REASON_KEYS:
            value = data.get(key)
            if isinstance(value, str) and value:
                return value[:500]
    return None


def observe(event: CloudEvent, topic: str, observed_at: float) -> Observation:
    """The record of ``event`` received from ``topic`` at ``observed_at`` (clock time)."""
    extensions = event.extensions
    correlation = extensions.get("correlationid")
    causation = extensions.get("causationid")
    traceparent = extensions.get("traceparent")
    attempt = _attempt(extensions.get("deliveryattempt"))
    detail = _reason(event.data)
    if event.type == DEAD_LETTERED_EVENT_TYPE and isinstance(event.data, dict):
        data = event.data
        inner = data.get("event")
        if isinstance(inner, dict):
            # An event without a correlation id can only be the start of its transaction, whose
            # correlation id is then its own id.
            if not isinstance(correlation, str):
                correlation = inner.get("correlationid") or inner.get("id")
            if not isinstance(causation, str):
                causation = inner.get("id")
        attempt = _attempt(data.get("deliveryAttempts")) or attempt
        reason = data.get("reason")
        where = f"{data.get('topic')}/{data.get('subscription')}"
        last = data.get("lastDeliveryError") or data.get("lastDeliveryOutcome")
        detail = f"{reason} at {where}" + (f": {last}" if last else "")
    return Observation(
        event_id=event.id,
        source=event.source,
        type=event.type,
        topic=topic,
        observed_at=observed_at,
        correlation_id=correlation if isinstance(correlation, str) else None,
        causation_id=causation if isinstance(causation, str) else None,
        subject=event.subject,
        event_time=event.time,
        attempt=attempt,
        traceparent=traceparent if isinstance(traceparent, str) else None,
        data=_data_text(event),
        detail=detail,
    )
