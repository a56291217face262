"""The transaction monitor: watches each business transaction by correlation id, keeps its trace,
and publishes ``<workflow>TimedOut`` when one stalls so that compensating services act.

    workflow = Workflow(
        name="Delivery",
        start="Delivery.Requested",
        success=["Delivery.Completed"],
        failure=["Delivery.Failed"],
        topics=["deliveries", "drones"],
        deadline_seconds=60,
        timeout_topic="deliveries",
    )
    async with Monitor(bus, [workflow], store_path="data/monitor.db") as monitor:
        ...
        monitor.timeline(correlation_id)
"""

from choreograph.monitor.monitor import Monitor
from choreograph.monitor.observation import Observation, observe, service_of
from choreograph.monitor.routes import TraceSource, monitor_routes
from choreograph.monitor.store import TRACE_STORE_FILE, Recorded, TraceStore
from choreograph.monitor.timeline import Hop, Timeline, Transaction
from choreograph.monitor.timeout import MONITOR_SOURCE, timed_out_event
from choreograph.monitor.workflow import (
    TRANSACTION_STATES,
    HopOutcome,
    TransactionState,
    Workflow,
    WorkflowCatalog,
)

__all__ = [
    "MONITOR_SOURCE",
    "TRACE_STORE_FILE",
    "TRANSACTION_STATES",
    "Hop",
    "HopOutcome",
    "Monitor",
    "Observation",
    "Recorded",
    "Timeline",
    "TraceSource",
    "TraceStore",
    "Transaction",
    "TransactionState",
    "Workflow",
    "WorkflowCatalog",
    "monitor_routes",
    "observe",
    "service_of",
    "timed_out_event",
]
