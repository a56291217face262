"""The Ingestion service: the HTTP API of Drone Delivery, and the delivery status clients read.

    POST   /deliveries              request a delivery -> 202 {deliveryId, status} + Location
    GET    /deliveries/{id}         status, drone, ETA, failure reason and history
    GET    /deliveries/{id}/events  the notifications, as server-sent events
    PATCH  /deliveries/{id}         reschedule: {"pickupTime": ...} -> 202
    DELETE /deliveries/{id}         cancel (optional ?reason=...) -> 202

A write request answers only once its event is stored by the bus (``publish`` returned): the 202
is a promise the bus keeps. Event ids are deterministic (``<id>:requested``,
``<id>:cancelled``, ``<id>:rescheduled:<revision>``), so a request retried by the client is
stored once (the topic's de-duplication), and a repeated ``POST`` of a known delivery id answers
with that delivery instead of starting another (409 if the body differs).

The service's handlers track every event of the transaction into ``deliveries/<id>`` in its own
store (see :mod:`drone_delivery.tracking`) and notify the listening streams once the handler's
change is committed (``ctx.after_commit``).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from choreograph import ChoreographError, Clock, CloudEvent, Reject
from choreograph.clock import format_timestamp
from choreograph.sdk import Context, Service, ServiceStore
from choreograph.sdk.remote import Publisher
from choreograph.sdk.tracing import new_trace
from drone_delivery.events import (
    DELIVERIES_TOPIC,
    DELIVERY_CANCELLED,
    DELIVERY_REQUESTED,
    DELIVERY_RESCHEDULED,
    DELIVERY_SCHEDULED,
    DELIVERY_SCHEDULING_FAILED,
    DRONE_ASSIGNED,
    DRONE_ASSIGNMENT_FAILED,
    DRONE_DELIVERY_TIMED_OUT,
    DRONE_RELEASED,
    DRONES_TOPIC,
    PACKAGE_CANCELLED,
    PACKAGE_CREATED,
    PACKAGE_REJECTED,
    PACKAGES_TOPIC,
    SCHEDULE_CANCELLED,
    SETTLED_STATUSES,
    Status,
    delivery_id_of,
    subject_of,
)
from drone_delivery.faults import InjectedFault
from drone_delivery.settings import Settings
from drone_delivery.storage import lock_name, read_state, write_state
from drone_delivery.tracking import (
    FINAL_STATUSES,
    Notifier,
    apply_event,
    new_record,
    notification,
    public_view,
)
from drone_delivery.validation import (
    RequestError,
    decode_body,
    parse_delivery_request,
    parse_reschedule,
    valid_delivery_id,
)

__all__ = ["DELIVERIES", "NAME", "PUBLISHES", "Ingestion"]

NAME: Final = "ingestion"
SOURCE: Final = f"/services/{NAME}"
DELIVERIES: Final = "deliveries"
MAX_REASON: Final = 256
PUBLISHES: Final = (
    {"type": DELIVERY_REQUESTED, "topic": DELIVERIES_TOPIC},
    {"type": DELIVERY_RESCHEDULED, "topic": DELIVERIES_TOPIC},
    {"type": DELIVERY_CANCELLED, "topic": DELIVERIES_TOPIC},
)
"""What the HTTP API publishes (declared beside the handlers for ``choreograph graph``)."""
_TRACKED: Final = {
    DELIVERIES_TOPIC: (
        DELIVERY_REQUESTED,
        DELIVERY_RESCHEDULED,
        DELIVERY_CANCELLED,
        DELIVERY_SCHEDULED,
        DELIVERY_SCHEDULING_FAILED,
        SCHEDULE_CANCELLED,
        DRONE_DELIVERY_TIMED_OUT,
    ),
    PACKAGES_TOPIC: (PACKAGE_CREATED, PACKAGE_REJECTED, PACKAGE_CANCELLED),
    DRONES_TOPIC: (DRONE_ASSIGNED, DRONE_ASSIGNMENT_FAILED, DRONE_RELEASED),
}


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers or None
    )


_CODES: Final = {400: "InvalidRequest", 413: "PayloadTooLarge"}


def _new_delivery_id() -> str:
    return str(uuid.uuid4())


class Ingestion:
    """The Ingestion service (``.service``) and its HTTP API (``.routes()``).

    The API needs where to publish (the bus, or a gateway client in another process) and the
    service's store: :meth:`attach` them once the service runs.
    """

    def __init__(
        self, settings: Settings, *, clock: Clock, rng: random.Random | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.faults = settings.faults.of(NAME)
        self.rng = rng or random.Random()
        self.notifier = Notifier()
        self.service = self._build_service()
        self._bus: Publisher | None = None
        self._store: ServiceStore | None = None

    def attach(self, bus: Publisher, store: ServiceStore) -> None:
        self._bus = bus
        self._store = store

    def declaration(self) -> dict[str, Any]:
        """The service's declaration, with the events its HTTP API publishes."""
        return {**self.service.declaration(), "publishes": [dict(item) for item in PUBLISHES]}

    @property
    def store(self) -> ServiceStore:
        if self._store is None:
            raise ChoreographError("the ingestion service is not running")
        return self._store

    @property
    def bus(self) -> Publisher:
        if self._bus is None:
            raise ChoreographError("the ingestion service is not running")
        return self._bus

    # the service -------------------------------------------------------------------------------
    def _build_service(self) -> Service:
        service = Service(NAME, description="Takes delivery requests; tracks and reports them.")
        timeout_reason = f"timed out: no outcome within {self.settings.deadline_seconds:g} s"
        notifier = self.notifier

        async def track(event: CloudEvent, ctx: Context) -> None:
            """Record the event in the delivery's status and history; notify the client."""
            delivery_id = delivery_id_of(event)
            record = await ctx.state.get(DELIVERIES, delivery_id)
            record, entry = apply_event(record, event, timeout_reason=timeout_reason)
            if entry is None:
                return
            ctx.state.put(DELIVERIES, delivery_id, record)
            ctx.after_commit(lambda: notifier.notify(delivery_id, entry))

        for topic, types in _TRACKED.items():
            service.on(*types, topic=topic, name=f"track-{topic}")(track)
        return service

    # the HTTP API ------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [
            Route("/deliveries", self.create, methods=["POST"]),
            Route("/deliveries/{delivery_id}", self.read, methods=["GET"]),
            Route("/deliveries/{delivery_id}", self.reschedule, methods=["PATCH"]),
            Route("/deliveries/{delivery_id}", self.cancel, methods=["DELETE"]),
            Route("/deliveries/{delivery_id}/events", self.events, methods=["GET"]),
        ]

    async def _inject(self, where: str) -> Response | None:
        """Apply the ingestion faults to a write request; the error response, if any."""
        try:
            await self.faults.inject(self.rng, f"{NAME}.{where}")
        except InjectedFault as exc:
            return _error(503, "ServiceUnavailable", str(exc), **{"Retry-After": "1"})
        except Reject as exc:
            return _error(422, "Rejected", exc.reason)
        return None

    def _event(self, event_id: str, event_type: str, delivery_id: str, data: Any) -> CloudEvent:
        return CloudEvent(
            id=event_id,
            type=event_type,
            source=SOURCE,
            subject=subject_of(delivery_id),
            time=format_timestamp(self.clock.now()),
            datacontenttype="application/json",
            data=data,
            extensions={"correlationid": delivery_id, "traceparent": new_trace().traceparent},
        )

    async def _publish(self, event: CloudEvent) -> Response | None:
        try:
            await self.bus.publish(DELIVERIES_TOPIC, event)
        except ChoreographError as exc:
            return _error(503, "ServiceUnavailable", f"the request could not be stored: {exc}")
        return None

    async def _record(self, delivery_id: str) -> dict[str, Any] | None:
        record: dict[str, Any] | None = await read_state(self.store, DELIVERIES, delivery_id)
        return record

    @staticmethod
    def _accepted(record: dict[str, Any], **extra: Any) -> JSONResponse:
        delivery_id = record["deliveryId"]
        return JSONResponse(
            {"deliveryId": delivery_id, "status": record["status"], **extra},
            status_code=202,
            headers={"Location": f"/deliveries/{delivery_id}"},
        )

    async def create(self, request: Request) -> Response:
        try:
            body = decode_body(await request.body())
            data = parse_delivery_request(body, new_id=_new_delivery_id)
        except RequestError as exc:
            return _error(exc.status, _CODES.get(exc.status, "InvalidRequest"), str(exc))
        if (failed := await self._inject("create")) is not None:
            return failed
        delivery_id = data["deliveryId"]
        async with self.store.state.lock(lock_name("request", delivery_id)):
            record = await self._record(delivery_id)
            if record is None:
                event = self._event(
                    f"{delivery_id}:requested", DELIVERY_REQUESTED, delivery_id, data
                )
                if (failed := await self._publish(event)) is not None:
                    return failed
                record = await self._record(delivery_id)
                if record is None:
                    record = new_record(dict(data), requested_at=event.time)
                    await write_state(self.store, [(DELIVERIES, delivery_id, record)])
            elif record["request"] != data:
                return _error(
                    409,
                    "Conflict",
                    f"delivery {delivery_id} was already requested with a different body",
                )
        return self._accepted(record)

    async def read(self, request: Request) -> Response:
        record = await self._known(request)
        if isinstance(record, Response):
            return record
        return JSONResponse(public_view(record))

    async def _known(self, request: Request) -> dict[str, Any] | Response:
        delivery_id = request.path_params["delivery_id"]
        record = await self._record(delivery_id) if valid_delivery_id(delivery_id) else None
        if record is None:
            return _error(404, "NotFound", f"delivery {delivery_id} does not exist")
        return record

    async def reschedule(self, request: Request) -> Response:
        try:
            pickup_time = parse_reschedule(decode_body(await request.body()))
        except RequestError as exc:
            return _error(exc.status, _CODES.get(exc.status, "InvalidRequest"), str(exc))
        if (failed := await self._inject("reschedule")) is not None:
            return failed
        delivery_id = request.path_params["delivery_id"]
        async with self.store.state.lock(lock_name("request", delivery_id)):
            record = await self._known(request)
            if isinstance(record, Response):
                return record
            if record["status"] in FINAL_STATUSES:
                return _error(
                    409,
                    "Conflict",
                    f"delivery {delivery_id} is {record['status']}; it cannot be rescheduled",
                )
            # Take the revision durably before publishing: a failed publish leaves a gap, never
            # a reused event id that the topic would swallow as a duplicate.
            revision = record["revision"] + 1
            record["revision"] = revision
            await write_state(self.store, [(DELIVERIES, delivery_id, record)])
            event = self._event(
                f"{delivery_id}:rescheduled:{revision}",
                DELIVERY_RESCHEDULED,
                delivery_id,
                {"deliveryId": delivery_id, "pickupTime": pickup_time, "revision": revision},
            )
            if (failed := await self._publish(event)) is not None:
                return failed
        return self._accepted(record, pickupTime=pickup_time, revision=revision)

    async def cancel(self, request: Request) -> Response:
        reason = request.query_params.get("reason") or "cancelled by the client"
        if len(reason) > MAX_REASON:
            return _error(400, "InvalidRequest", f"reason must be at most {MAX_REASON} characters")
        if (failed := await self._inject("cancel")) is not None:
            return failed
        delivery_id = request.path_params["delivery_id"]
        async with self.store.state.lock(lock_name("request", delivery_id)):
            record = await self._known(request)
            if isinstance(record, Response):
                return record
            if record["status"] == Status.FAILED:
                return _error(
                    409,
                    "Conflict",
                    f"delivery {delivery_id} already failed ({record['failureReason']}); "
                    "there is nothing to cancel",
                )
            if record["status"] != Status.CANCELLED:
                event = self._event(
                    f"{delivery_id}:cancelled",
                    DELIVERY_CANCELLED,
                    delivery_id,
                    {"deliveryId": delivery_id, "reason": reason},
                )
                if (failed := await self._publish(event)) is not None:
                    return failed
        return self._accepted(record)

    async def events(self, request: Request) -> Response:
        record = await self._known(request)
        if isinstance(record, Response):
            return record
        return StreamingResponse(
            self._stream(record["deliveryId"]),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _stream(self, delivery_id: str) -> AsyncIterator[str]:
        """The history so far, then each new notification, until the delivery settles."""
        with self.notifier.listen(delivery_id) as queue:
            # Listening and reading the history happen with no await in between: every event
            # is either in this snapshot or in the queue (possibly both; ids tell them apart).
            record = await self._record(delivery_id)
            if record is None:
                return
            sent: set[str] = set()
            for entry in record["history"]:
                sent.add(entry["eventId"])
                yield _server_sent(notification(delivery_id, entry))
            if record["status"] in SETTLED_STATUSES:
                return
            while (item := await queue.get()) is not None:
                if item["eventId"] in sent:
                    continue
                sent.add(item["eventId"])
                yield _server_sent(item)
                if item["status"] in SETTLED_STATUSES:
                    return


def _server_sent(item: dict[str, Any]) -> str:
    """One server-sent event: ``id`` the event id, ``event`` its type, ``data`` the JSON."""
    data = msgspec.json.encode(item).decode()
    return f"id: {item['eventId']}\nevent: {item['type']}\ndata: {data}\n\n"
