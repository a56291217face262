"""The Drone Scheduler service: assigns a drone to each delivery, always the same one, and releases
it when the delivery fails or is cancelled.

State (the service's own store), changed only under the ``fleet`` lock:

- ``fleet/<droneId>``: ``{droneId, capacity, heldBy, busyUntil}``. A drone is free when no
  delivery holds it or its ``busyUntil`` (epoch seconds) has passed.
- ``assignments/<deliveryId>``: ``{deliveryId, state, droneId, packageId, weight, expedited,
  pickupTime, revision, assignedAt, departure, busyUntil, reason}``. ``state`` is ``pending`` (a
  reschedule came before the package), ``assigned``, or an end: ``released``, ``failed``,
  ``cancelled`` — a tombstone after which no drone is assigned to the delivery again.

A delivery already assigned gets its recorded drone again (retries and duplicates), otherwise the
first free drone that can carry the package; with none, the step asks the bus to retry, and when
the bus gives up the dead letter becomes ``DroneAssignmentFailed``.
"""

from __future__ import annotations

import random
from typing import Any, Final

from choreograph import SYSTEM_TOPIC, Clock, CloudEvent, Retry
from choreograph.bus import DEAD_LETTERED_EVENT_TYPE
from choreograph.clock import format_timestamp
from choreograph.sdk import Context, Service
from choreograph.sdk.state import StateView
from drone_delivery.deadletters import DeadLetterNotice, dead_letter_filter
from drone_delivery.events import (
    DELIVERIES_TOPIC,
    DELIVERY_CANCELLED,
    DELIVERY_RESCHEDULED,
    DELIVERY_SCHEDULING_FAILED,
    DRONE_ASSIGNED,
    DRONE_ASSIGNMENT_FAILED,
    DRONE_DELIVERY_TIMED_OUT,
    DRONE_RELEASED,
    DRONES_TOPIC,
    PACKAGE_CREATED,
    PACKAGES_TOPIC,
    delivery_id_of,
    parse_timestamp,
    reason_of,
    subject_of,
)
from drone_delivery.faults import fault_middleware
from drone_delivery.settings import Settings

__all__ = ["CAPACITIES_KG", "NAME", "build_scheduler_service", "fleet", "seed_fleet"]

NAME: Final = "scheduler"
FLEET: Final = "fleet"
ASSIGNMENTS: Final = "assignments"
CAPACITIES_KG: Final = (5.0, 10.0, 25.0)
"""Payload capacities of the fleet, in this repeating order: drone-001 carries 5 kg, drone-002
10 kg, drone-003 25 kg, drone-004 5 kg..."""
ENDED: Final = frozenset({"released", "failed", "cancelled"})
ASSIGN_HANDLER: Final = "assign-drone"
RESCHEDULE_HANDLER: Final = "reschedule-drone"


def fleet(size: int) -> list[dict[str, Any]]:
    """The drones of a fleet of ``size``, all free."""
    return [
        {
            "droneId": f"drone-{number:03d}",
            "capacity": CAPACITIES_KG[(number - 1) % len(CAPACITIES_KG)],
            "heldBy": None,
            "busyUntil": None,
        }
        for number in range(1, size + 1)
    ]


async def seed_fleet(state: StateView, size: int) -> int:
    """Create the drones missing from the fleet; returns how many. A fleet only grows: drones
    beyond ``size`` from an earlier start are kept (one may be held)."""
    known = {key for key, _ in await state.items(FLEET)}
    missing = [drone for drone in fleet(size) if drone["droneId"] not in known]
    for drone in missing:
        state.put(FLEET, drone["droneId"], drone)
    return len(missing)


def _is_free(drone: dict[str, Any], now: float) -> bool:
    return drone["heldBy"] is None or (drone["busyUntil"] or 0.0) <= now


async def _choose(state: StateView, weight: float, now: float) -> dict[str, Any]:
    """The first free drone (by id) that can carry ``weight``; Retry when there is none. Drones
    are read one by one until one fits: the busy ones come first only while they fly."""
    for key in await state.keys(FLEET):
        drone: dict[str, Any] | None = await state.get(FLEET, key)
        if drone is not None and drone["capacity"] >= weight and _is_free(drone, now):
            return drone
    capacities = [drone["capacity"] for _, drone in await state.items(FLEET)]
    able = sum(1 for capacity in capacities if capacity >= weight)
    if not able:
        largest = max(capacities, default=0.0)
        raise Retry(f"no drone can carry {weight:g} kg (the largest carries {largest:g} kg)")
    raise Retry(f"no free drone can carry {weight:g} kg ({able} able, all busy)")


def build_scheduler_service(
    settings: Settings, *, clock: Clock, rng: random.Random | None = None
) -> Service:
    """The Drone Scheduler service, its forward steps faulted as ``settings.faults`` says."""
    faults = settings.faults.of(NAME)
    service = Service(
        NAME,
        description="Assigns a drone to each delivery and releases it on failure.",
        middleware=(
            fault_middleware(faults, rng or random.Random(), {ASSIGN_HANDLER, RESCHEDULE_HANDLER}),
        ),
    )

    @service.on_start
    async def create_fleet(state: StateView) -> None:
        """Create the drones missing from the fleet before the first assignment."""
        await seed_fleet(state, settings.fleet_size)

    def hold(state: StateView, assignment: dict[str, Any], drone: dict[str, Any]) -> None:
        """Hold ``drone`` for the assignment from now until the end of its flight."""
        now = clock.now()
        pickup = assignment.get("pickupTime")
        departure = max(now, parse_timestamp(pickup)) if pickup else now
        flight = settings.flight_seconds / (2 if assignment["expedited"] else 1)
        assignment.update(
            state="assigned",
            droneId=drone["droneId"],
            assignedAt=assignment.get("assignedAt") or now,
            departure=departure,
            busyUntil=departure + flight,
        )
        drone.update(heldBy=assignment["deliveryId"], busyUntil=assignment["busyUntil"])
        state.put(FLEET, drone["droneId"], drone)
        state.put(ASSIGNMENTS, assignment["deliveryId"], assignment)

    def announce(ctx: Context, assignment: dict[str, Any]) -> None:
        delivery_id = assignment["deliveryId"]
        ctx.emit(
            DRONE_ASSIGNED,
            {
                "deliveryId": delivery_id,
                "droneId": assignment["droneId"],
                "packageId": assignment["packageId"],
                "assignedAt": format_timestamp(assignment["assignedAt"]),
                "departureTime": format_timestamp(assignment["departure"]),
                "busyUntil": format_timestamp(assignment["busyUntil"]),
                "revision": assignment["revision"],
            },
            subject=subject_of(delivery_id),
        )

    async def release(ctx: Context, assignment: dict[str, Any], state: str, reason: str) -> None:
        """End the assignment; free its drone (announcing it) if the delivery still holds it."""
        delivery_id = assignment["deliveryId"]
        drone = (
            await ctx.state.get(FLEET, assignment["droneId"]) if assignment.get("droneId") else None
        )
        assignment.update(state=state, reason=reason)
        ctx.state.put(ASSIGNMENTS, delivery_id, assignment)
        if drone is None or drone["heldBy"] != delivery_id:
            return
        drone.update(heldBy=None, busyUntil=None)
        ctx.state.put(FLEET, drone["droneId"], drone)
        ctx.emit(
            DRONE_RELEASED,
            {"deliveryId": delivery_id, "droneId": drone["droneId"], "reason": reason},
            subject=subject_of(delivery_id),
        )

    @service.on(
        PACKAGE_CREATED,
        topic=PACKAGES_TOPIC,
        name=ASSIGN_HANDLER,
        emits={DRONE_ASSIGNED: DRONES_TOPIC},
        retry_policy=settings.retry_policy,
    )
    async def assign_drone(event: CloudEvent, ctx: Context) -> None:
        """Assign a drone to a delivery whose package was created (the same one every time)."""
        data: dict[str, Any] = event.data
        delivery_id = data["deliveryId"]
        async with ctx.state.lock(FLEET):
            assignment = await ctx.state.get(ASSIGNMENTS, delivery_id)
            if assignment is not None and assignment["state"] in ENDED:
                return
            if assignment is not None and assignment["state"] == "assigned":
                announce(ctx, assignment)
                return
            pending = assignment or {"pickupTime": data.get("pickupTime"), "revision": 0}
            assignment = {
                "deliveryId": delivery_id,
                "state": "pending",
                "droneId": None,
                "packageId": data["packageId"],
                "weight": float(data["weight"]),
                "expedited": bool(data.get("expedited", False)),
                "pickupTime": pending["pickupTime"],
                "revision": pending["revision"],
                "assignedAt": None,
                "reason": None,
            }
            drone = await _choose(ctx.state, assignment["weight"], clock.now())
            hold(ctx.state, assignment, drone)
            announce(ctx, assignment)

    @service.on(
        DELIVERY_RESCHEDULED,
        topic=DELIVERIES_TOPIC,
        name=RESCHEDULE_HANDLER,
        emits={DRONE_ASSIGNED: DRONES_TOPIC},
        retry_policy=settings.retry_policy,
    )
    async def reschedule_drone(event: CloudEvent, ctx: Context) -> None:
        """Move the delivery's flight to its new pickup time (another drone if it lost its own)."""
        data: dict[str, Any] = event.data
        delivery_id = data["deliveryId"]
        revision = int(data["revision"])
        async with ctx.state.lock(FLEET):
            assignment = await ctx.state.get(ASSIGNMENTS, delivery_id)
            if assignment is not None and (
                assignment["state"] in ENDED or assignment["revision"] >= revision
            ):
                return  # ended, or an older (or the same) reschedule
            if assignment is None or assignment["state"] == "pending":
                ctx.state.put(
                    ASSIGNMENTS,
                    delivery_id,
                    {
                        "deliveryId": delivery_id,
                        "state": "pending",
                        "pickupTime": data["pickupTime"],
                        "revision": revision,
                    },
                )
                return  # the package is not created yet; the assignment will use this time
            assignment.update(pickupTime=data["pickupTime"], revision=revision)
            drone = await ctx.state.get(FLEET, assignment["droneId"])
            if drone is None or drone["heldBy"] != delivery_id:
                drone = await _choose(ctx.state, assignment["weight"], clock.now())
            hold(ctx.state, assignment, drone)
            announce(ctx, assignment)

    async def release_drone(event: CloudEvent, ctx: Context) -> None:
        """Release the drone held for a failed or cancelled delivery (tombstone if none yet)."""
        delivery_id = delivery_id_of(event)
        reason = reason_of(event)
        async with ctx.state.lock(FLEET):
            assignment = await ctx.state.get(ASSIGNMENTS, delivery_id)
            if assignment is None or assignment["state"] == "pending":
                ctx.state.put(
                    ASSIGNMENTS,
                    delivery_id,
                    {
                        **(assignment or {"deliveryId": delivery_id, "revision": 0}),
                        "state": "cancelled",
                        "reason": reason,
                    },
                )
                return
            if assignment["state"] in ENDED:
                return
            await release(ctx, assignment, "released", reason)

    service.on(
        DELIVERY_SCHEDULING_FAILED,
        DELIVERY_CANCELLED,
        DRONE_DELIVERY_TIMED_OUT,
        topic=DELIVERIES_TOPIC,
        name="release-drone",
        emits={DRONE_RELEASED: DRONES_TOPIC},
    )(release_drone)

    @service.on(
        DEAD_LETTERED_EVENT_TYPE,
        topic=SYSTEM_TOPIC,
        name="drone-dead-letters",
        emits={DRONE_ASSIGNMENT_FAILED: DRONES_TOPIC, DRONE_RELEASED: DRONES_TOPIC},
        event_filter=dead_letter_filter(
            [f"{NAME}-{ASSIGN_HANDLER}", f"{NAME}-{RESCHEDULE_HANDLER}"]
        ),
    )
    async def drone_dead_letters(event: CloudEvent, ctx: Context) -> None:
        """Report a drone the bus could not get assigned as ``DroneAssignmentFailed``."""
        notice = DeadLetterNotice.from_event(event)
        delivery_id = notice.delivery_id
        reason = notice.describe("assigning a drone")
        async with ctx.state.lock(FLEET):
            assignment = await ctx.state.get(ASSIGNMENTS, delivery_id)
            if assignment is not None and assignment["state"] in ENDED:
                return
            if assignment is not None and assignment["state"] == "assigned":
                wanted = notice.event_data.get("revision", 0)
                if notice.event_type == PACKAGE_CREATED or assignment["revision"] >= wanted:
                    return  # a copy of a step that succeeded otherwise failed: nothing to report
                await release(ctx, assignment, "failed", reason)
            else:
                ctx.state.put(
                    ASSIGNMENTS,
                    delivery_id,
                    {
                        **(assignment or {"deliveryId": delivery_id, "revision": 0}),
                        "state": "failed",
                        "reason": reason,
                    },
                )
        ctx.emit(
            DRONE_ASSIGNMENT_FAILED,
            {"deliveryId": delivery_id, "reason": reason},
            subject=subject_of(delivery_id),
        )

    return service
