"""The Package service: creates the delivery's package (an idempotent upsert), rejects invalid
ones, and cancels it when the delivery fails or is cancelled.

State (the service's own store):

- ``packages/<packageId>``: ``{packageId, deliveryId, size, weight, tag, status}``, ``status``
  ``active`` or ``cancelled``. A package id belongs to one active delivery at a time.
- ``deliveries/<deliveryId>``: ``{deliveryId, packageId, state, reason}``, ``state`` ``created``,
  ``rejected`` or ``cancelled``. A ``cancelled`` entry without a package is a tombstone: the
  delivery was cancelled (or failed) before its request reached this service, and a late
  ``DeliveryRequested`` then creates nothing.
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
    DELIVERY_REQUESTED,
    DELIVERY_SCHEDULING_FAILED,
    DRONE_ASSIGNMENT_FAILED,
    DRONE_DELIVERY_TIMED_OUT,
    DRONES_TOPIC,
    PACKAGE_CANCELLED,
    PACKAGE_CREATED,
    PACKAGE_REJECTED,
    PACKAGES_TOPIC,
    delivery_id_of,
    reason_of,
    subject_of,
)
from drone_delivery.faults import fault_middleware
from drone_delivery.settings import Settings

__all__ = ["NAME", "SIZES", "build_package_service", "package_problem"]

NAME: Final = "package"
SIZES: Final = ("small", "medium", "large")
PACKAGES: Final = "packages"
DELIVERIES: Final = "deliveries"
CREATE_HANDLER: Final = "create-package"
LOCK: Final = "packages"
"""One lock for the whole service: a package id may pass from one delivery to another."""


def package_problem(info: dict[str, Any], *, max_weight_kg: float) -> str | None:
    """Why a package cannot be delivered, or None when it can (the business rules)."""
    package_id = info.get("packageId")
    size = info.get("size")
    weight = info.get("weight")
    if size not in SIZES:
        return f"package {package_id}: size {size!r} is not one of {', '.join(SIZES)}"
    if not isinstance(weight, int | float) or isinstance(weight, bool) or weight <= 0:
        return f"package {package_id}: weight {weight!r} is not a positive number of kg"
    if weight > max_weight_kg:
        return f"package {package_id}: weight {weight:g} kg is over the {max_weight_kg:g} kg limit"
    return None


def build_package_service(
    settings: Settings, *, clock: Clock, rng: random.Random | None = None
) -> Service:
    """The Package service, its forward step faulted as ``settings.faults`` says."""
    faults = settings.faults.of(NAME)
    service = Service(
        NAME,
        description="Creates, rejects and cancels the package of a delivery.",
        middleware=(fault_middleware(faults, rng or random.Random(), {CREATE_HANDLER}),),
    )

    @service.on(
        DELIVERY_REQUESTED,
        topic=DELIVERIES_TOPIC,
        name=CREATE_HANDLER,
        emits={PACKAGE_CREATED: PACKAGES_TOPIC, PACKAGE_REJECTED: PACKAGES_TOPIC},
        retry_policy=settings.retry_policy,
    )
    async def create_package(event: CloudEvent, ctx: Context) -> None:
        """Upsert the package of a requested delivery, or reject it."""
        request: dict[str, Any] = event.data
        delivery_id = request["deliveryId"]
        info: dict[str, Any] = request["packageInfo"]
        package_id = str(info.get("packageId"))
        async with ctx.state.lock(LOCK):
            entry = await ctx.state.get(DELIVERIES, delivery_id)
            if entry is not None and entry["state"] == "cancelled":
                return  # cancelled (or failed) before the request arrived: create nothing
            if entry is not None and entry["state"] == "rejected":
                problem: str | None = entry["reason"]  # the same answer, never a late package
            else:
                problem = package_problem(info, max_weight_kg=settings.max_weight_kg)
            existing = await ctx.state.get(PACKAGES, package_id)
            if (
                problem is None
                and existing is not None
                and existing["deliveryId"] != delivery_id
                and existing["status"] == "active"
            ):
                problem = (
                    f"package {package_id} already belongs to delivery {existing['deliveryId']}"
                )
            if problem is not None:
                ctx.state.put(
                    DELIVERIES,
                    delivery_id,
                    {
                        "deliveryId": delivery_id,
                        "packageId": None,
                        "state": "rejected",
                        "reason": problem,
                    },
                )
                ctx.emit(
                    PACKAGE_REJECTED,
                    {"deliveryId": delivery_id, "packageId": package_id, "reason": problem},
                    subject=subject_of(delivery_id),
                )
                return
            package = {
                "packageId": package_id,
                "deliveryId": delivery_id,
                "size": info["size"],
                "weight": info["weight"],
                "tag": info.get("tag"),
                "status": "active",
                "createdAt": (existing or {}).get("createdAt") or clock.now(),
            }
            ctx.state.put(PACKAGES, package_id, package)
            ctx.state.put(
                DELIVERIES,
                delivery_id,
                {
                    "deliveryId": delivery_id,
                    "packageId": package_id,
                    "state": "created",
                    "reason": None,
                },
            )
        ctx.emit(
            PACKAGE_CREATED,
            {
                "deliveryId": delivery_id,
                "packageId": package_id,
                "size": info["size"],
                "weight": info["weight"],
                "tag": info.get("tag"),
                "pickupTime": request.get("pickupTime"),
                "expedited": bool(request.get("expedited", False)),
            },
            subject=subject_of(delivery_id),
        )

    async def cancel(event: CloudEvent, ctx: Context) -> None:
        """Cancel the delivery's active package (or leave a tombstone if there is none yet)."""
        delivery_id = delivery_id_of(event)
        reason = reason_of(event)
        async with ctx.state.lock(LOCK):
            entry = await ctx.state.get(DELIVERIES, delivery_id)
            if entry is None:
                ctx.state.put(
                    DELIVERIES,
                    delivery_id,
                    {
                        "deliveryId": delivery_id,
                        "packageId": None,
                        "state": "cancelled",
                        "reason": reason,
                    },
                )
                return
            if entry["state"] != "created":
                return  # rejected (nothing was created) or already cancelled
            entry.update(state="cancelled", reason=reason)
            ctx.state.put(DELIVERIES, delivery_id, entry)
            package = await ctx.state.get(PACKAGES, entry["packageId"])
            if package is None or package["deliveryId"] != delivery_id:
                return
            if package["status"] != "active":
                return
            package.update(status="cancelled", cancelledAt=clock.now(), reason=reason)
            ctx.state.put(PACKAGES, package["packageId"], package)
        ctx.emit(
            PACKAGE_CANCELLED,
            {"deliveryId": delivery_id, "packageId": package["packageId"], "reason": reason},
            subject=subject_of(delivery_id),
        )

    service.on(
        DRONE_ASSIGNMENT_FAILED,
        topic=DRONES_TOPIC,
        name="cancel-on-drone-failure",
        emits={PACKAGE_CANCELLED: PACKAGES_TOPIC},
    )(cancel)
    service.on(
        DELIVERY_SCHEDULING_FAILED,
        DELIVERY_CANCELLED,
        DRONE_DELIVERY_TIMED_OUT,
        topic=DELIVERIES_TOPIC,
        name="cancel-package",
        emits={PACKAGE_CANCELLED: PACKAGES_TOPIC},
    )(cancel)

    @service.on(
        DEAD_LETTERED_EVENT_TYPE,
        topic=SYSTEM_TOPIC,
        name="package-dead-letters",
        emits={PACKAGE_REJECTED: PACKAGES_TOPIC},
        event_filter=dead_letter_filter([service_subscription(CREATE_HANDLER)]),
    )
    async def package_dead_letters(event: CloudEvent, ctx: Context) -> None:
        """Report a request this service could not process as a rejected package."""
        notice = DeadLetterNotice.from_event(event)
        delivery_id = notice.delivery_id
        async with ctx.state.lock(LOCK):
            entry = await ctx.state.get(DELIVERIES, delivery_id)
            if entry is not None:
                return  # created by another copy of the request, rejected, or cancelled
            reason = notice.describe("creating the package")
            ctx.state.put(
                DELIVERIES,
                delivery_id,
                {
                    "deliveryId": delivery_id,
                    "packageId": None,
                    "state": "rejected",
                    "reason": reason,
                },
            )
        info: Any = notice.event_data.get("packageInfo") or {}
        ctx.emit(
            PACKAGE_REJECTED,
            {"deliveryId": delivery_id, "packageId": info.get("packageId"), "reason": reason},
            subject=subject_of(delivery_id),
        )

    return service


def service_subscription(handler: str) -> str:
    """The bus subscription of one of this service's handlers."""
    return f"{NAME}-{handler}"
