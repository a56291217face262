"""The event the monitor publishes when a transaction misses its deadline."""

from __future__ import annotations

from typing import Final

from choreograph.clock import format_timestamp
from choreograph.events import CloudEvent
from choreograph.monitor.timeline import Transaction
from choreograph.monitor.workflow import Workflow

__all__ = ["MONITOR_SOURCE", "timed_out_event"]

MONITOR_SOURCE: Final = "/services/monitor"


def timed_out_event(
    workflow: Workflow,
    transaction: Transaction,
    last: tuple[str, str, str, str | None] | None,
    now: float,
) -> CloudEvent:
    """The ``<workflow>TimedOut`` event for ``transaction``, caused by its last event ``last``
    (id, type, source, traceparent). Its id depends only on the transaction and the workflow."""
    extensions: dict[str, str | int | bool] = {"correlationid": transaction.correlation_id}
    if last is not None:
        extensions["causationid"] = last[0]
        if last[3] is not None:
            extensions["traceparent"] = last[3]
    return CloudEvent(
        id=f"{transaction.correlation_id}:{workflow.timed_out_type}",
        source=MONITOR_SOURCE,
        type=workflow.timed_out_type,
        subject=transaction.correlation_id,
        time=format_timestamp(now),
        datacontenttype="application/json",
        data={
            "correlationId": transaction.correlation_id,
            "workflow": workflow.name,
            "startedAt": format_timestamp(transaction.started_at),
            "deadline": format_timestamp(transaction.deadline),
            "lastEventType": None if last is None else last[1],
            "lastEventSource": None if last is None else last[2],
        },
        extensions=extensions,
    )
