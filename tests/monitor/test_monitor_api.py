"""The public names of ``choreograph.monitor``: a change to them is a deliberate one."""

from __future__ import annotations

import choreograph.monitor


def test_the_public_names_are_the_documented_ones() -> None:
    assert choreograph.monitor.__all__ == [
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
    for name in choreograph.monitor.__all__:
        assert hasattr(choreograph.monitor, name), name
    assert choreograph.monitor.TRACE_STORE_FILE == "monitor.db"
