"""Dead-letter records: the event plus why, after how many attempts and with what last outcome."""

from __future__ import annotations

import os
from typing import Any, Final

import msgspec

from choreograph.bus.subscription import DeliverySchema
from choreograph.clock import format_timestamp
from choreograph.events import CloudEvent, ExtensionValue, eventgrid_from_cloudevent

__all__ = ["DEAD_LETTERED_EVENT_TYPE", "DeadLetter", "dead_lettered_event", "new_record_id"]

DEAD_LETTERED_EVENT_TYPE: Final = "Choreograph.DeadLettered"

_last_record_id = 0


def new_record_id(now: float) -> str:
    """A dead-letter record id that sorts in dead-lettering order (UUID layout, 32 hex digits).

    The first 48 bits are the millisecond, the rest random, and ids never repeat or go backwards
    within a process, so listings page by id and a cursor stays valid after its record is gone.
    """
    global _last_record_id
    value = (int(now * 1000) << 80) | int.from_bytes(os.urandom(10), "big") >> 1
    value = max(value, _last_record_id + 1)
    _last_record_id = value
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One dead-lettered event of one subscription."""

    id: str
    topic: str
    subscription: str
    event: CloudEvent
    reason: str
    delivery_attempts: int
    last_delivery_outcome: str
    last_delivery_error: str | None
    publish_time: float
    last_delivery_attempt_time: float | None
    dead_letter_time: float

    def to_record(self, schema: DeliverySchema) -> dict[str, Any]:
        """The record as Event Grid writes it: the event in ``schema`` plus the top-level fields.

        The CloudEvents schema uses lower-case names. ``lastDeliveryError`` and
        ``deadLetterTime`` are choreograph extensions (Event Grid documents neither).
        """
        last_attempt = (
            format_timestamp(self.last_delivery_attempt_time)
            if self.last_delivery_attempt_time is not None
            else None
        )
        fields: dict[str, Any] = {
            "deadLetterReason": self.reason,
            "deliveryAttempts": self.delivery_attempts,
            "lastDeliveryOutcome": self.last_delivery_outcome,
            "publishTime": format_timestamp(self.publish_time),
            "lastDeliveryAttemptTime": last_attempt,
            "lastDeliveryError": self.last_delivery_error,
            "deadLetterTime": format_timestamp(self.dead_letter_time),
        }
        fields = {name: value for name, value in fields.items() if value is not None}
        if schema == "EventGridSchema":
            event = eventgrid_from_cloudevent(
                self.event, default_time=format_timestamp(self.publish_time)
            ).to_dict()
            return {**event, **fields}
        return {**self.event.to_dict(), **{name.lower(): value for name, value in fields.items()}}


def dead_lettered_event(record: DeadLetter) -> CloudEvent:
    """The ``Choreograph.DeadLettered`` system event announcing ``record``.

    It keeps the transaction's correlation and trace and is caused by the dead-lettered event;
    its id is the record's, so a replayed dead-lettering announces the same event.
    """
    carried: dict[str, ExtensionValue] = {
        name: record.event.extensions[name]
        for name in ("correlationid", "traceparent", "tracestate")
        if name in record.event.extensions
    }
    path = f"/topics/{record.topic}/eventSubscriptions/{record.subscription}"
    return CloudEvent(
        id=record.id,
        source=path,
        type=DEAD_LETTERED_EVENT_TYPE,
        subject=path,
        time=format_timestamp(record.dead_letter_time),
        datacontenttype="application/json",
        data={
            "topic": record.topic,
            "subscription": record.subscription,
            "deadLetterId": record.id,
            "reason": record.reason,
            "deliveryAttempts": record.delivery_attempts,
            "lastDeliveryOutcome": record.last_delivery_outcome,
            "lastDeliveryError": record.last_delivery_error,
            "event": record.event.to_dict(),
        },
        extensions={**carried, "causationid": record.event.id},
    )
