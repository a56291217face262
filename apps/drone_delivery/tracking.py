"""Ingestion's read model of a delivery: its status, drone, ETA, failure reason and history, kept
up to date from the transaction's events; and the notifications sent to the client.

Status rules (pure, in :func:`apply_event`):

- progress moves forward only: ``Requested`` < ``PackageCreated`` < ``DroneAssigned`` <
  ``Scheduled`` (events of different topics may arrive in any order);
- a failure event makes the delivery ``Failed`` with its reason, ``DeliveryCancelled`` makes it
  ``Cancelled``; both are final: a later event of any kind is only recorded in the history;
- the drone and ETA follow the newest reschedule (``revision``); older ones arriving late are
  recorded only;
- every event appears once in the history (by id), in the order it was handled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from choreograph import CloudEvent
from drone_delivery.events import (
    DELIVERY_CANCELLED,
    DELIVERY_REQUESTED,
    DELIVERY_RESCHEDULED,
    DELIVERY_SCHEDULED,
    DRONE_ASSIGNED,
    DRONE_DELIVERY_TIMED_OUT,
    FAILURE_TYPES,
    PACKAGE_CREATED,
    Status,
    delivery_id_of,
)

__all__ = ["FINAL_STATUSES", "Notifier", "apply_event", "new_record", "public_view"]

FINAL_STATUSES: Final = frozenset({Status.FAILED, Status.CANCELLED})
_PROGRESS: Final = {
    Status.REQUESTED: 0,
    Status.PACKAGE_CREATED: 1,
    Status.DRONE_ASSIGNED: 2,
    Status.SCHEDULED: 3,
}


def new_record(request: dict[str, Any], *, requested_at: str | None) -> dict[str, Any]:
    """The record of a delivery just requested (``request`` is ``DeliveryRequested`` data)."""
    return {
        "deliveryId": request["deliveryId"],
        "request": request,
        "requestedAt": requested_at,
        "status": Status.REQUESTED.value,
        "droneId": None,
        "eta": None,
        "pickupTime": request.get("pickupTime"),
        "failureReason": None,
        "revision": 0,
        "pickupRevision": 0,
        "scheduleRevision": -1,
        "history": [],
    }


def _record_for(event: CloudEvent) -> dict[str, Any]:
    """A record for a delivery first heard of through ``event`` (its request was published but
    not recorded, or the events came in another order)."""
    data: Any = event.data if isinstance(event.data, dict) else {}
    request = data if event.type == DELIVERY_REQUESTED else {"deliveryId": delivery_id_of(event)}
    return new_record(
        request, requested_at=event.time if event.type == DELIVERY_REQUESTED else None
    )


def apply_event(
    record: dict[str, Any] | None, event: CloudEvent, *, timeout_reason: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The record after ``event``, and the history entry it added (None for a repeat)."""
    if record is None:
        record = _record_for(event)
    history: list[dict[str, Any]] = record["history"]
    if any(entry["eventId"] == event.id for entry in history):
        return record, None
    data: Any = event.data if isinstance(event.data, dict) else {}
    status = Status(record["status"])
    final = status in FINAL_STATUSES
    kind = event.type
    detail: str | None = data.get("reason") if isinstance(data.get("reason"), str) else None
    if kind == DRONE_DELIVERY_TIMED_OUT:
        detail = timeout_reason

    def advance(to: Status) -> None:
        if not final and _PROGRESS[to] > _PROGRESS[Status(record["status"])]:
            record["status"] = to.value

    if kind == PACKAGE_CREATED:
        advance(Status.PACKAGE_CREATED)
    elif kind == DRONE_ASSIGNED:
        advance(Status.DRONE_ASSIGNED)
        if not final and record["droneId"] is None:
            record["droneId"] = data.get("droneId")
    elif kind == DELIVERY_SCHEDULED:
        revision = int(data.get("revision", 0))
        if not final and revision > record["scheduleRevision"]:
            advance(Status.SCHEDULED)
            record.update(
                droneId=data.get("droneId"),
                eta=data.get("eta"),
                pickupTime=data.get("pickupTime"),
                scheduleRevision=revision,
            )
    elif kind == DELIVERY_RESCHEDULED:
        revision = int(data.get("revision", 0))
        if not final and revision > record["pickupRevision"]:
            record.update(pickupTime=data.get("pickupTime"), pickupRevision=revision)
            record["revision"] = max(record["revision"], revision)
    elif kind in FAILURE_TYPES:
        if not final:
            record.update(status=Status.FAILED.value, failureReason=detail or kind)
    elif kind == DELIVERY_CANCELLED and not final:
        record.update(status=Status.CANCELLED.value, failureReason=detail or "cancelled")
    entry = {
        "eventId": event.id,
        "type": kind,
        "time": event.time,
        "source": event.source,
        "status": record["status"],
        "droneId": data.get("droneId"),
        "eta": data.get("eta"),
        "detail": detail,
    }
    history.append(entry)
    return record, entry


def public_view(record: dict[str, Any]) -> dict[str, Any]:
    """A delivery as ``GET /deliveries/{id}`` shows it."""
    request: dict[str, Any] = record.get("request") or {}
    return {
        "deliveryId": record["deliveryId"],
        "status": record["status"],
        "droneId": record["droneId"],
        "eta": record["eta"],
        "failureReason": record["failureReason"],
        "ownerId": request.get("ownerId"),
        "pickupLocation": request.get("pickupLocation"),
        "dropoffLocation": request.get("dropoffLocation"),
        "pickupTime": record["pickupTime"],
        "expedited": request.get("expedited"),
        "packageInfo": request.get("packageInfo"),
        "requestedAt": record["requestedAt"],
        "history": record["history"],
    }


def notification(delivery_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """What the client is told about one event of its delivery."""
    return {"deliveryId": delivery_id, **entry}


class Notifier:
    """Hands each new history entry of a delivery to the streams listening to it."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Queue[dict[str, Any] | None]]] = {}
        self.closed = False

    @contextmanager
    def listen(self, delivery_id: str) -> Iterator[asyncio.Queue[dict[str, Any] | None]]:
        """A queue receiving the delivery's notifications (None when the notifier closes)."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        if self.closed:
            queue.put_nowait(None)
        listeners = self._listeners.setdefault(delivery_id, set())
        listeners.add(queue)
        try:
            yield queue
        finally:
            listeners.discard(queue)
            if not listeners:
                self._listeners.pop(delivery_id, None)

    def notify(self, delivery_id: str, entry: dict[str, Any]) -> None:
        for queue in self._listeners.get(delivery_id, ()):
            queue.put_nowait(notification(delivery_id, entry))

    def close(self) -> None:
        """End every stream (the system is shutting down)."""
        self.closed = True
        for listeners in self._listeners.values():
            for queue in listeners:
                queue.put_nowait(None)
