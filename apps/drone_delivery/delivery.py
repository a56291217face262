"""The Delivery service: schedules each delivery with its drone and ETA, and cancels the schedule
when the delivery fails or is cancelled.

State (the service's own store): ``schedules/<deliveryId>``: ``{deliveryId, state, droneId,
packageId, pickupTime, eta, revision, reason}``, ``state`` ``scheduled``, ``cancelled`` or
``failed``; the last two are tombstones after which the delivery is never scheduled again.
``revision`` is the reschedule the schedule follows: an older ``DroneAssigned`` arriving late
changes nothing.
"""

from __future__ import annotations

import random
from typing import Any, Final

from choreograph import SYSTEM_TOPIC, Clock, CloudEvent
from choreograph.bus import DEAD_LETTERED_EVENT_TYPE
from choreograph.sdk import Context, Service
from drone_delivery.deadletters import DeadLetterNotice, dead_letter_filter
from drone_delivery.events import (
    DELIVERIES_TOPIC,
    DELIVERY_CANCELLED,
    DELIVERY_SCHEDULED,
    DELIVERY_SCHEDULING_FAILED,
    DRONE_ASSIGNED,
    DRONE_ASSIGNMENT_FAILED,
    DRONE_DELIVERY_TIMED_OUT,
    DRONES_TOPIC,
    SCHEDULE_CANCELLED,
    delivery_id_of,
    reason_of,
    subject_of,
)
from drone_delivery.faults import fault_middleware
from drone_delivery.settings import Settings
from drone_delivery.storage import lock_name

__all__ = ["NAME", "build_delivery_service"]

NAME: Final = "delivery"
SCHEDULES: Final = "schedules"
SCHEDULE_HANDLER: Final = "schedule-delivery"


def build_delivery_service(
    settings: Settings, *, clock: Clock, rng: random.Random | None = None
) -> Service:
    """The Delivery service, its forward step faulted as ``settings.faults`` says."""
    faults = settings.faults.of(NAME)
    service = Service(
        NAME,
        description="Schedules each delivery with its drone and ETA; cancels it on failure.",
        middleware=(fault_middleware(faults, rng or random.Random(), {SCHEDULE_HANDLER}),),
    )

    def announce(ctx: Context, schedule: dict[str, Any]) -> None:
        delivery_id = schedule["deliveryId"]
        ctx.emit(
            DELIVERY_SCHEDULED,
            {
                "deliveryId": delivery_id,
                "droneId": schedule["droneId"],
                "packageId": schedule["packageId"],
                "pickupTime": schedule["pickupTime"],
                "eta": schedule["eta"],
                "revision": schedule["revision"],
            },
            subject=subject_of(delivery_id),
        )

    def cancel(ctx: Context, schedule: dict[str, Any], state: str, reason: str) -> None:
        schedule.update(state=state, reason=reason, cancelledAt=clock.now())
        ctx.state.put(SCHEDULES, schedule["deliveryId"], schedule)
        ctx.emit(
            SCHEDULE_CANCELLED,
            {
                "deliveryId": schedule["deliveryId"],
                "droneId": schedule["droneId"],
                "reason": reason,
            },
            subject=subject_of(schedule["deliveryId"]),
        )

    @service.on(
        DRONE_ASSIGNED,
        topic=DRONES_TOPIC,
        name=SCHEDULE_HANDLER,
        emits={DELIVERY_SCHEDULED: DELIVERIES_TOPIC},
        retry_policy=settings.retry_policy,
    )
    async def schedule_delivery(event: CloudEvent, ctx: Context) -> None:
        """Schedule (or reschedule) the delivery with its drone; the ETA is the drone's return."""
        data: dict[str, Any] = event.data
        delivery_id = data["deliveryId"]
        revision = int(data.get("revision", 0))
        async with ctx.state.lock(lock_name("delivery", delivery_id)):
            schedule = await ctx.state.get(SCHEDULES, delivery_id)
            if schedule is not None and schedule["state"] != "scheduled":
                return  # cancelled or failed: never scheduled again
            if schedule is not None and schedule["revision"] > revision:
                return  # a newer reschedule is already in place
            wanted = {
                "deliveryId": delivery_id,
                "state": "scheduled",
                "droneId": data["droneId"],
                "packageId": data.get("packageId"),
                "pickupTime": data["departureTime"],
                "eta": data["busyUntil"],
                "revision": revision,
                "reason": None,
            }
            if schedule is None or any(schedule.get(key) != value for key, value in wanted.items()):
                wanted["scheduledAt"] = (schedule or {}).get("scheduledAt") or clock.now()
                ctx.state.put(SCHEDULES, delivery_id, wanted)
        announce(ctx, wanted)

    async def cancel_schedule(event: CloudEvent, ctx: Context) -> None:
        """Cancel the delivery's schedule (or leave a tombstone if there is none yet)."""
        delivery_id = delivery_id_of(event)
        reason = reason_of(event)
        async with ctx.state.lock(lock_name("delivery", delivery_id)):
            schedule = await ctx.state.get(SCHEDULES, delivery_id)
            if schedule is None:
                ctx.state.put(
                    SCHEDULES,
                    delivery_id,
                    {
                        "deliveryId": delivery_id,
                        "state": "cancelled",
                        "revision": 0,
                        "reason": reason,
                    },
                )
            elif schedule["state"] == "scheduled":
                cancel(ctx, schedule, "cancelled", reason)

    service.on(
        DELIVERY_CANCELLED,
        DRONE_DELIVERY_TIMED_OUT,
        topic=DELIVERIES_TOPIC,
        name="cancel-schedule",
        emits={SCHEDULE_CANCELLED: DELIVERIES_TOPIC},
    )(cancel_schedule)
    service.on(
        DRONE_ASSIGNMENT_FAILED,
        topic=DRONES_TOPIC,
        name="cancel-on-drone-failure",
        emits={SCHEDULE_CANCELLED: DELIVERIES_TOPIC},
    )(cancel_schedule)

    @service.on(
        DEAD_LETTERED_EVENT_TYPE,
        topic=SYSTEM_TOPIC,
        name="delivery-dead-letters",
        emits={DELIVERY_SCHEDULING_FAILED: DELIVERIES_TOPIC, SCHEDULE_CANCELLED: DELIVERIES_TOPIC},
        event_filter=dead_letter_filter([f"{NAME}-{SCHEDULE_HANDLER}"]),
    )
    async def delivery_dead_letters(event: CloudEvent, ctx: Context) -> None:
        """Report a delivery the bus could not get scheduled as ``DeliverySchedulingFailed``."""
        notice = DeadLetterNotice.from_event(event)
        delivery_id = notice.delivery_id
        reason = notice.describe("scheduling the delivery")
        async with ctx.state.lock(lock_name("delivery", delivery_id)):
            schedule = await ctx.state.get(SCHEDULES, delivery_id)
            if schedule is not None and schedule["state"] != "scheduled":
                return  # already cancelled or failed
            if schedule is not None:
                if schedule["revision"] >= notice.event_data.get("revision", 0):
                    return  # a copy of a step that succeeded otherwise failed: nothing to report
                cancel(ctx, schedule, "failed", reason)  # a reschedule failed: undo the schedule
            else:
                ctx.state.put(
                    SCHEDULES,
                    delivery_id,
                    {"deliveryId": delivery_id, "state": "failed", "revision": 0, "reason": reason},
                )
        ctx.emit(
            DELIVERY_SCHEDULING_FAILED,
            {"deliveryId": delivery_id, "reason": reason},
            subject=subject_of(delivery_id),
        )

    return service
