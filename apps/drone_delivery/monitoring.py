"""The ``DroneDelivery`` workflow the transaction monitor watches.

A delivery starts with ``DeliveryRequested`` and succeeds with ``DeliveryScheduled``; it fails
with any failure event of a service, or ends with the client's ``DeliveryCancelled``. When none
of these arrives within the deadline (45 s by default) the monitor publishes
``DroneDeliveryTimedOut`` on ``deliveries``, which every service compensates and Ingestion
reports as ``Failed``.
"""

from __future__ import annotations

from choreograph.monitor import Workflow
from drone_delivery.events import (
    DELIVERIES_TOPIC,
    DELIVERY_CANCELLED,
    DELIVERY_REQUESTED,
    DELIVERY_SCHEDULED,
    DELIVERY_SCHEDULING_FAILED,
    DRONE_ASSIGNMENT_FAILED,
    PACKAGE_REJECTED,
    TOPICS,
    WORKFLOW_NAME,
)
from drone_delivery.settings import Settings

__all__ = ["drone_delivery_workflow"]


def drone_delivery_workflow(settings: Settings) -> Workflow:
    """The workflow of one delivery, with the deadline of ``settings``."""
    return Workflow(
        name=WORKFLOW_NAME,
        start=DELIVERY_REQUESTED,
        success=[DELIVERY_SCHEDULED],
        failure=[
            PACKAGE_REJECTED,
            DRONE_ASSIGNMENT_FAILED,
            DELIVERY_SCHEDULING_FAILED,
            DELIVERY_CANCELLED,
        ],
        topics=list(TOPICS),
        deadline_seconds=settings.deadline_seconds,
        timeout_topic=DELIVERIES_TOPIC,
    )
