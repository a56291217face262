"""The Drone Delivery reference application: a choreography of four services.

The happy path (topics in brackets; every event is correlated by the delivery id)::

    POST /deliveries -> DeliveryRequested [deliveries] -> package -> PackageCreated [packages]
    -> scheduler -> DroneAssigned [drones] -> delivery -> DeliveryScheduled [deliveries]

Ingestion tracks every event into the status the client reads (``GET /deliveries/{id}``) and
streams (``GET /deliveries/{id}/events``). A forward step that keeps failing is dead-lettered by
the bus; its service turns the dead letter into its failure event. Compensation, each an
ordinary idempotent handler that leaves a tombstone when there is nothing to undo yet:

    failure                    package          scheduler        delivery          client sees
    PackageRejected            (nothing made)   -                -                 Failed
    DroneAssignmentFailed      cancel package   (holds nothing)  cancel schedule   Failed
    DeliverySchedulingFailed   cancel package   release drone    (its own)         Failed
    DeliveryCancelled          cancel package   release drone    cancel schedule   Cancelled
    DroneDeliveryTimedOut      cancel package   release drone    cancel schedule   Failed

``DroneDeliveryTimedOut`` comes from the transaction monitor (deadline 45 s by default).
"""

from drone_delivery.faults import Faults
from drone_delivery.settings import Settings
from drone_delivery.system import DroneDeliverySystem, declarations

__all__ = ["DroneDeliverySystem", "Faults", "Settings", "declarations"]
