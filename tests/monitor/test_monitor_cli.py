"""``choreograph trace``: the timeline from the trace store or from a monitor's HTTP API."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from monitor_helpers import MonitorFactory, advance, delivery_workflow, service_event, settle
from starlette.applications import Starlette
from typer.testing import CliRunner

from choreograph.bus import Bus
from choreograph.cli import app, commands  # noqa: F401  (registers every command)
from choreograph.cli import trace as trace_command
from choreograph.monitor import (
    TRACE_STORE_FILE,
    Monitor,
    Observation,
    TraceStore,
    WorkflowCatalog,
    monitor_routes,
)
from choreograph.testing import FakeClock

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
START = 1_767_225_600.0


async def record_delivery(bus: Bus, monitor: Monitor, clock: FakeClock) -> None:
    requested = service_event("Delivery.Requested", "ingestion", correlation_id="tx-cli")
    await bus.publish("deliveries", requested)
    await advance(monitor, clock, 0.2)
    drone = service_event(
        "Drone.Assigned", "drone-scheduler", correlation_id="tx-cli", cause=requested, attempt=3
    )
    await bus.publish("drones", drone)
    await advance(monitor, clock, 1.3)
    failed = service_event(
        "Delivery.Failed",
        "delivery",
        correlation_id="tx-cli",
        cause=drone,
        data={"reason": "battery low"},
    )
    await bus.publish("deliveries", failed)
    await settle(monitor)


async def test_trace_prints_the_header_and_a_table_of_hops(
    bus: Bus, monitor: Monitor, clock: FakeClock, store_path: Path
) -> None:
    await record_delivery(bus, monitor, clock)
    # The monitor is still running: the command reads its store read-only meanwhile.
    result = runner.invoke(app, ["trace", "tx-cli", "--data-dir", str(store_path.parent)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "tx-cli" in lines[0]
    assert "Failed" in lines[0]
    assert "workflow Delivery" in lines[0]
    assert "duration 1,500 ms" in lines[0]
    assert "reason: battery low" in result.stdout
    for expected in (
        ["Delivery.Requested", "ingestion", "ok"],
        ["Drone.Assigned", "drone-scheduler", "+200 ms", "3", "200 ms", "ok"],
        ["Delivery.Failed", "delivery", "+1,500 ms", "1,300 ms", "failed (battery low)"],
    ):
        assert any(all(text in line for text in expected) for line in lines), expected


async def test_trace_json_prints_the_timeline(
    bus: Bus, make_monitor: MonitorFactory, clock: FakeClock, store_path: Path
) -> None:
    async with make_monitor() as monitor:
        await record_delivery(bus, monitor, clock)
    result = runner.invoke(app, ["trace", "tx-cli", "--data-dir", str(store_path.parent), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["state"] == "Failed"
    assert body["failureReason"] == "battery low"
    assert [hop["attempt"] for hop in body["hops"]] == [1, 3, 1]
    assert [hop["offsetMs"] for hop in body["hops"]] == [0, 200, 1500]


async def test_trace_of_an_unknown_transaction_exits_1(monitor: Monitor, store_path: Path) -> None:
    result = runner.invoke(app, ["trace", "ghost", "--data-dir", str(store_path.parent)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "choreograph: no transaction with correlation id 'ghost'\n"


def test_trace_without_a_store_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["trace", "tx", "--data-dir", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert f"no trace store at {tmp_path / 'empty' / TRACE_STORE_FILE}" in result.stderr


def test_trace_reads_the_default_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_store(tmp_path / ".choreograph" / TRACE_STORE_FILE)
    result = runner.invoke(app, ["trace", "tx-url", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["state"] == "Completed"


def test_trace_refuses_both_sources(tmp_path: Path) -> None:
    result = runner.invoke(app, ["trace", "tx", "--data-dir", ".", "--url", "http://x"])
    assert result.exit_code == 2
    assert "give --data-dir or --url, not both" in result.stderr


def write_store(path: Path) -> None:
    """A store holding one completed transaction, written through the store's own API."""
    workflows = WorkflowCatalog([delivery_workflow()])
    with TraceStore(path) as store:
        store.record(
            [
                Observation(
                    event_id="e1",
                    source="/services/ingestion",
                    type="Delivery.Requested",
                    topic="deliveries",
                    observed_at=START,
                    correlation_id="tx-url",
                    attempt=1,
                ),
                Observation(
                    event_id="e2",
                    source="/services/delivery",
                    type="Delivery.Completed",
                    topic="deliveries",
                    observed_at=START + 0.75,
                    correlation_id="tx-url",
                    causation_id="e1",
                    attempt=2,
                ),
            ],
            workflows,
        )


def test_trace_url_asks_the_monitor_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_store(tmp_path / TRACE_STORE_FILE)
    with TraceStore.open_readonly(tmp_path / TRACE_STORE_FILE) as store:
        app_under_test = Starlette(routes=monitor_routes(store))
        monkeypatch.setattr(
            trace_command, "http_transport", httpx.ASGITransport(app=app_under_test)
        )
        shown = runner.invoke(app, ["trace", "tx-url", "--url", "http://monitor:8000/"])
        as_json = runner.invoke(app, ["trace", "tx-url", "--url", "http://monitor", "--json"])
        missing = runner.invoke(app, ["trace", "ghost", "--url", "http://monitor"])
    assert shown.exit_code == 0, shown.output
    assert "Completed" in shown.stdout.splitlines()[0]
    assert "duration 750 ms" in shown.stdout
    assert json.loads(as_json.stdout)["hops"][1]["sinceCauseMs"] == 750
    assert missing.exit_code == 1
    assert missing.stderr == "choreograph: no transaction with correlation id 'ghost'\n"


def test_trace_url_that_cannot_be_reached_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(trace_command, "http_transport", httpx.MockTransport(refuse))
    result = runner.invoke(app, ["trace", "tx", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "cannot reach the monitor at http://127.0.0.1:9" in result.stderr
