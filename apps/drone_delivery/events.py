"""The Drone Delivery vocabulary: topics, event types, delivery statuses and the events' data.

Every event is a CloudEvent from ``/services/<service>`` whose ``correlationid`` is the delivery
id and whose ``subject`` is ``/deliveries/<id>``; every ``data`` object carries ``deliveryId``
(except the monitor's ``DroneDeliveryTimedOut``, which has the delivery id as correlation id).
Times inside ``data`` are RFC 3339 UTC timestamps.

    ingestion --DeliveryRequested--> package --PackageCreated--> scheduler --DroneAssigned-->
    delivery --DeliveryScheduled--> (ingestion tracks every event of the transaction)
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Final, NotRequired, TypedDict

from choreograph import CloudEvent

__all__ = [
    "COMPENSATION_TYPES",
    "DELIVERIES_TOPIC",
    "DELIVERY_CANCELLED",
    "DELIVERY_REQUESTED",
    "DELIVERY_RESCHEDULED",
    "DELIVERY_SCHEDULED",
    "DELIVERY_SCHEDULING_FAILED",
    "DRONES_TOPIC",
    "DRONE_ASSIGNED",
    "DRONE_ASSIGNMENT_FAILED",
    "DRONE_DELIVERY_TIMED_OUT",
    "DRONE_RELEASED",
    "FAILURE_TYPES",
    "PACKAGES_TOPIC",
    "PACKAGE_CANCELLED",
    "PACKAGE_CREATED",
    "PACKAGE_REJECTED",
    "SCHEDULE_CANCELLED",
    "SETTLED_STATUSES",
    "TOPICS",
    "WORKFLOW_NAME",
    "DeliveryRequestedData",
    "PackageInfo",
    "Status",
    "delivery_id_of",
    "parse_timestamp",
    "reason_of",
    "subject_of",
]

DELIVERIES_TOPIC: Final = "deliveries"
PACKAGES_TOPIC: Final = "packages"
DRONES_TOPIC: Final = "drones"
TOPICS: Final = (DELIVERIES_TOPIC, PACKAGES_TOPIC, DRONES_TOPIC)

WORKFLOW_NAME: Final = "DroneDelivery"
"""The monitor's workflow; its timeout event is ``DroneDeliveryTimedOut``."""

# ingestion -> deliveries
DELIVERY_REQUESTED: Final = "DeliveryRequested"
DELIVERY_RESCHEDULED: Final = "DeliveryRescheduled"
DELIVERY_CANCELLED: Final = "DeliveryCancelled"
# package -> packages
PACKAGE_CREATED: Final = "PackageCreated"
PACKAGE_REJECTED: Final = "PackageRejected"
PACKAGE_CANCELLED: Final = "PackageCancelled"
# scheduler -> drones
DRONE_ASSIGNED: Final = "DroneAssigned"
DRONE_ASSIGNMENT_FAILED: Final = "DroneAssignmentFailed"
DRONE_RELEASED: Final = "DroneReleased"
# delivery -> deliveries
DELIVERY_SCHEDULED: Final = "DeliveryScheduled"
DELIVERY_SCHEDULING_FAILED: Final = "DeliverySchedulingFailed"
SCHEDULE_CANCELLED: Final = "ScheduleCancelled"
# the monitor -> deliveries
DRONE_DELIVERY_TIMED_OUT: Final = f"{WORKFLOW_NAME}TimedOut"

FAILURE_TYPES: Final = (
    PACKAGE_REJECTED,
    DRONE_ASSIGNMENT_FAILED,
    DELIVERY_SCHEDULING_FAILED,
    DRONE_DELIVERY_TIMED_OUT,
)
"""Events that fail a delivery (the client sees it ``Failed`` with their reason)."""

COMPENSATION_TYPES: Final = (PACKAGE_CANCELLED, DRONE_RELEASED, SCHEDULE_CANCELLED)
"""Events saying that a step was undone."""


class Status(StrEnum):
    """A delivery's status as the client sees it."""

    REQUESTED = "Requested"
    PACKAGE_CREATED = "PackageCreated"
    DRONE_ASSIGNED = "DroneAssigned"
    SCHEDULED = "Scheduled"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


SETTLED_STATUSES: Final = frozenset({Status.SCHEDULED, Status.FAILED, Status.CANCELLED})
"""Statuses where the transaction has an outcome (the notification stream ends there)."""


class PackageInfo(TypedDict):
    packageId: str
    size: str
    weight: float
    tag: NotRequired[str]


class DeliveryRequestedData(TypedDict):
    """The data of ``DeliveryRequested``: the validated request."""

    deliveryId: str
    ownerId: str
    pickupLocation: str
    dropoffLocation: str
    pickupTime: str | None
    expedited: bool
    packageInfo: PackageInfo


def subject_of(delivery_id: str) -> str:
    """The ``subject`` of every event of a delivery."""
    return f"/deliveries/{delivery_id}"


def delivery_id_of(event: CloudEvent) -> str:
    """The delivery an event is about: ``data.deliveryId``, else its correlation id (the
    monitor's timeout event), else its id."""
    data: Any = event.data
    if isinstance(data, dict):
        value = data.get("deliveryId")
        if isinstance(value, str) and value:
            return value
    return event.correlationid or event.id


def parse_timestamp(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp with a time zone."""
    moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return moment.timestamp()


def reason_of(event: CloudEvent) -> str:
    """Why a failure or cancellation event happened, for the records of compensating services."""
    if event.type == DRONE_DELIVERY_TIMED_OUT:
        return "the delivery timed out"
    data: Any = event.data
    reason = data.get("reason") if isinstance(data, dict) else None
    return str(reason) if reason else event.type
