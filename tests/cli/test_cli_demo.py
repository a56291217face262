"""``choreograph demo``: drive N deliveries through an embedded system (or a running one) and
account for every transaction; bad options are one-line errors with exit status 2."""

from __future__ import annotations

import json
import re

import pytest
from cli_helpers import assert_one_line_error, invoke
from typer.testing import CliRunner

SUMMARY_KEYS = {
    "requested",
    "refused",
    "completed",
    "compensated",
    "failed",
    "timedOut",
    "cancelled",
    "lost",
    "seconds",
    "p50_ms",
    "p95_ms",
    "p99_ms",
}
TABLE_ROW = re.compile(r"^[│|]\s*(.+?)\s*[│|]\s*(.+?)\s*[│|]$")


def table(text: str) -> dict[str, str]:
    """The rows of the summary table, by name."""
    return dict(match.groups() for line in text.splitlines() if (match := TABLE_ROW.match(line)))


def test_demo_prints_a_table_with_every_delivery_accounted_for(runner: CliRunner) -> None:
    result = invoke(runner, "demo", "--deliveries", "20")

    assert result.exit_code == 0, result.output
    rows = table(result.stdout)
    assert rows["requested"] == "20", rows
    assert rows["completed (Scheduled)"] == "20", rows
    assert rows["lost"] == "0", rows


def test_demo_as_json_prints_only_the_summary(runner: CliRunner) -> None:
    result = invoke(runner, "demo", "--deliveries", "20", "--json")

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary) >= SUMMARY_KEYS
    assert summary["requested"] == 20
    assert summary["completed"] == 20
    assert summary["lost"] == 0
    assert summary["refused"] == {}


@pytest.mark.slow
def test_demo_with_a_failing_scheduler_compensates_every_transaction(runner: CliRunner) -> None:
    """Every drone assignment fails: each is retried on the policy (about 15 s), dead-lettered,
    reported as DroneAssignmentFailed and compensated; none is lost."""
    result = invoke(
        runner, "demo", "--deliveries", "10", "--faults", "scheduler:error:1.0", "--json"
    )

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["requested"] == 10
    assert summary["completed"] == 0
    assert summary["compensated"] == 10
    assert summary["failed"] == {"DroneAssignmentFailed": 10}
    assert summary["lost"] == 0


def test_invalid_faults_are_a_one_line_error(runner: CliRunner) -> None:
    result = invoke(runner, "demo", "--deliveries", "5", "--faults", "scheduler:explode")

    error = [line for line in result.stderr.splitlines() if line.startswith("choreograph:")]
    assert result.exit_code == 2, result.output
    assert len(error) == 1, result.stderr
    assert "scheduler:explode" in error[0]
    assert result.stdout == ""


def test_invalid_faults_are_refused_before_the_run_starts(runner: CliRunner) -> None:
    result = invoke(runner, "demo", "--deliveries", "5", "--faults", "scheduler:explode")

    error = assert_one_line_error(result, 2)
    assert "--faults" in error


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--deliveries", "0"), "--deliveries must be at least 1"),
        (("--deliveries", "-3"), "--deliveries must be at least 1"),
        (("--concurrency", "0"), "--concurrency must be at least 1"),
        (
            ("--url", "http://127.0.0.1:9", "--faults", "scheduler:error:1.0"),
            "--faults applies to the embedded system",
        ),
    ],
)
def test_bad_options_are_a_one_line_error_with_status_2(
    runner: CliRunner, arguments: tuple[str, ...], message: str
) -> None:
    result = invoke(runner, "demo", *arguments)

    assert message in assert_one_line_error(result, 2)
    assert result.stdout == ""
