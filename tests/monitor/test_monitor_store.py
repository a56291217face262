"""The trace store on its own: schema checks, read-only access, idempotent recording."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from monitor_helpers import delivery_workflow

from choreograph.errors import BackendError, NotFoundError, ValidationError
from choreograph.monitor import Observation, TraceStore, WorkflowCatalog

START = 1_767_225_600.0
WORKFLOWS = WorkflowCatalog([delivery_workflow()])


def observation(event_id: str, event_type: str, at: float = 0.0, **fields: object) -> Observation:
    return Observation(
        event_id=event_id,
        source=str(fields.pop("source", "/services/test")),
        type=event_type,
        topic="deliveries",
        observed_at=START + at,
        correlation_id=str(fields.pop("correlation_id", "tx")),
        **fields,  # type: ignore[arg-type]
    )


def test_recording_reports_starts_ends_and_duplicates(tmp_path: Path) -> None:
    with TraceStore(tmp_path / "monitor.db") as store:
        first = store.record([observation("e1", "Delivery.Requested")], WORKFLOWS)
        assert (first.recorded, first.started, first.ended) == (1, [("tx", START + 60)], [])
        again = store.record(
            [observation("e1", "Delivery.Requested"), observation("e2", "Delivery.Completed", 1)],
            WORKFLOWS,
        )
        assert (again.recorded, again.duplicates, again.ended) == (1, 1, ["tx"])
        # Same id from another source is another event (CloudEvents identity is source + id).
        other = store.record(
            [observation("e2", "Package.Created", 2, source="/services/other")], WORKFLOWS
        )
        assert other.recorded == 1
        assert [hop.event_id for hop in store.timeline("tx").hops] == ["e1", "e2", "e2"]


def test_a_read_only_store_reads_while_the_writer_writes(tmp_path: Path) -> None:
    path = tmp_path / "monitor.db"
    with TraceStore(path) as writer:
        writer.record([observation("e1", "Delivery.Requested")], WORKFLOWS)
        with TraceStore.open_readonly(path) as reader:
            assert reader.timeline("tx").state == "Running"
            writer.record([observation("e2", "Delivery.Failed", 3)], WORKFLOWS)
            assert reader.timeline("tx").state == "Failed"
            with pytest.raises(BackendError, match="readonly"):
                reader.record([observation("e3", "Package.Created")], WORKFLOWS)


def test_opening_a_missing_store_read_only_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no trace store at"):
        TraceStore.open_readonly(tmp_path / "monitor.db")


def test_a_store_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "monitor.db"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 99")
    connection.close()
    with pytest.raises(BackendError, match="schema version 99, expected 1"):
        TraceStore(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "monitor.db"
    path.write_text("not sqlite at all, " * 100)
    with pytest.raises(BackendError, match="cannot open trace store"):
        TraceStore(path)


def test_listing_validates_its_arguments(tmp_path: Path) -> None:
    with TraceStore(tmp_path / "monitor.db") as store:
        with pytest.raises(ValidationError, match="state must be one of"):
            store.transactions("Done")
        with pytest.raises(ValidationError, match="limit must be an integer from 1 to 1000"):
            store.transactions(limit=0)
        assert store.transactions() == []


def test_unknown_workflows_in_the_store_are_left_alone(tmp_path: Path) -> None:
    """A transaction whose workflow was removed from the configuration keeps its record."""
    path = tmp_path / "monitor.db"
    with TraceStore(path) as store:
        store.record([observation("e1", "Delivery.Requested")], WORKFLOWS)
    other = WorkflowCatalog([delivery_workflow(name="Other", start="Other.Started")])
    with TraceStore(path) as store:
        result = store.record([observation("e2", "Delivery.Completed", 1)], other)
        assert (result.recorded, result.ended) == (1, [])
        assert store.timeline("tx").state == "Running"
