"""``choreograph trace``: one transaction's hops, read from the trace store a run left behind, or
from a running system (its store, or its HTTP API)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest
from cli_helpers import assert_one_line_error, invoke, run_choreograph, wait_settled
from typer.testing import CliRunner

from up_process import Server

HOPS = (
    ("DeliveryRequested", "ingestion"),
    ("PackageCreated", "package"),
    ("DroneAssigned", "scheduler"),
    ("DeliveryScheduled", "delivery"),
)
WIDE = {"COLUMNS": "200"}
"""Room for the whole table: rich would cut the columns to 80 characters otherwise."""


@pytest.fixture
def run(runner: CliRunner, tmp_path: Path) -> tuple[Path, list[str]]:
    """The data directory of a finished ``demo`` run, and its delivery ids."""
    data_dir = tmp_path / "data"
    result = invoke(runner, "demo", "--deliveries", "3", "--data-dir", str(data_dir), "--json")
    assert result.exit_code == 0, result.output
    connection = sqlite3.connect(f"file:{data_dir / 'ingestion.db'}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT key FROM state WHERE collection = 'deliveries' ORDER BY key"
        ).fetchall()
    finally:
        connection.close()
    return data_dir, [key for (key,) in rows]


def test_trace_shows_the_hops_of_a_delivery(runner: CliRunner, run: tuple[Path, list[str]]) -> None:
    data_dir, delivery_ids = run
    assert len(delivery_ids) == 3
    delivery_id = delivery_ids[1]

    result = invoke(runner, "trace", delivery_id, "--data-dir", str(data_dir), env=WIDE)

    assert result.exit_code == 0, result.output
    shown = result.stdout.splitlines()
    assert shown[0].startswith(f"{delivery_id}  Completed  workflow DroneDelivery"), shown[0]
    rows = [line for line in shown if any(event in line for event, _ in HOPS)]
    assert len(rows) == len(HOPS), shown
    for row, (event, service) in zip(rows, HOPS, strict=True):
        cells = [cell.strip() for cell in row.split("│")]
        assert cells[2:4] == [event, service], row
        assert cells[-1] == "ok", row
    assert delivery_ids[0] not in result.stdout


def test_trace_as_json_gives_the_timeline(runner: CliRunner, run: tuple[Path, list[str]]) -> None:
    data_dir, delivery_ids = run

    result = invoke(runner, "trace", delivery_ids[0], "--data-dir", str(data_dir), "--json")

    assert result.exit_code == 0, result.output
    timeline = json.loads(result.stdout)
    assert timeline["correlationId"] == delivery_ids[0]
    assert timeline["state"] == "Completed"
    assert timeline["outcomeType"] == "DeliveryScheduled"
    assert [(hop["type"], hop["service"]) for hop in timeline["hops"]] == list(HOPS)
    assert {hop["outcome"] for hop in timeline["hops"]} == {"ok"}


def test_trace_reads_a_running_system_by_url_or_data_dir(server: Server, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        body = {
            "deliveryId": "trace-1",
            "ownerId": "owner-1",
            "pickupLocation": "47.64,-122.13",
            "dropoffLocation": "47.61,-122.33",
            "packageInfo": {"packageId": "package-trace-1", "size": "small", "weight": 2.5},
        }
        assert client.post("/deliveries", json=body).status_code == 202
        assert wait_settled(client, "/deliveries/trace-1")["status"] == "Scheduled"

    by_url = run_choreograph("trace", "trace-1", "--url", server.url, "--json")
    from_store = run_choreograph("trace", "trace-1", "--data-dir", str(tmp_path / "data"), "--json")
    unknown = run_choreograph("trace", "trace-2", "--url", server.url)

    for result in (by_url, from_store):
        assert result.returncode == 0, result.stderr
        timeline = json.loads(result.stdout)
        assert [(hop["type"], hop["service"]) for hop in timeline["hops"]] == list(HOPS)
    assert json.loads(by_url.stdout) == json.loads(from_store.stdout)
    assert "trace-2" in assert_one_line_error(unknown, 1)


def test_trace_of_an_unknown_transaction_exits_1(
    runner: CliRunner, run: tuple[Path, list[str]]
) -> None:
    data_dir, _ = run

    result = invoke(runner, "trace", "no-such-delivery", "--data-dir", str(data_dir))

    assert "no-such-delivery" in assert_one_line_error(result, 1)


def test_trace_without_a_trace_store_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, "trace", "d-1", "--data-dir", str(tmp_path))

    assert "no trace store" in assert_one_line_error(result, 2)


def test_trace_takes_a_data_dir_or_a_url_not_both(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(
        runner, "trace", "d-1", "--data-dir", str(tmp_path), "--url", "http://127.0.0.1:9"
    )

    assert "not both" in assert_one_line_error(result, 2)
