"""Workflow and monitor configuration is validated with a message naming the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from monitor_helpers import delivery_workflow

from choreograph.bus import Bus
from choreograph.errors import ConfigError
from choreograph.monitor import Monitor, Workflow


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": ""}, "workflow `name` must be a non-empty string"),
        ({"name": "has space"}, "workflow name 'has space' must be 1-100 letters"),
        ({"deadline_seconds": -1}, r"`deadline_seconds` must be a number of seconds above 0"),
        ({"deadline_seconds": 0}, r"`deadline_seconds` must be a number of seconds above 0"),
        ({"deadline_seconds": float("nan")}, "`deadline_seconds`"),
        ({"deadline_seconds": True}, "`deadline_seconds`"),
        ({"topics": []}, r"workflow `Delivery.topics` is empty; list at least one"),
        ({"topics": ["ok-topic", "x"]}, "topic name 'x' must be 3-50 letters"),
        ({"timeout_topic": "no spaces"}, "topic name 'no spaces'"),
        ({"topics": ["choreograph-system"]}, "do not list 'choreograph-system'"),
        ({"start": []}, r"workflow `Delivery.start` is empty"),
        ({"success": []}, r"workflow `Delivery.success` is empty"),
        ({"success": ["A", ""]}, r"`Delivery.success\[1\]` must be a non-empty string"),
        ({"success": ["A", "A"]}, "lists a name twice"),
        ({"failure": ["Delivery.Completed"]}, "is both a success and a failure type"),
        ({"start": "Delivery.Failed"}, "is both a start and a failure type"),
        ({"topics": 7}, "must be a list of strings"),
    ],
)
def test_a_bad_workflow_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        delivery_workflow(**changes)


def test_single_strings_stand_for_one_item_lists() -> None:
    workflow = delivery_workflow(start="A.Started", success="A.Done", topics="deliveries")
    assert workflow.start_types == ("A.Started",)
    assert workflow.success == ("A.Done",)
    assert workflow.topics == ("deliveries",)
    assert workflow.timed_out_type == "DeliveryTimedOut"


def test_a_workflow_is_frozen() -> None:
    workflow = delivery_workflow()
    with pytest.raises(AttributeError):
        workflow.name = "Other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("workflows", "message"),
    [
        ([], "at least one workflow"),
        ([delivery_workflow(), delivery_workflow()], "two workflows are named 'Delivery'"),
        (
            [delivery_workflow(), delivery_workflow(name="Other")],
            "'Delivery.Requested' starts both workflow 'Delivery' and workflow 'Other'",
        ),
        (["not a workflow"], "expected a Workflow, got str"),
    ],
)
def test_a_bad_monitor_configuration_is_refused(
    workflows: list[Workflow], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        Monitor(Bus(), workflows, store_path=tmp_path / "monitor.db")
