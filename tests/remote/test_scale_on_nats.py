"""Horizontal scale: Drone Delivery on NATS with two OS processes per business service, each pair
sharing its subscriptions (competing consumers) and one PostgreSQL store. Every delivery is
scheduled, and exactly once in effect: one package, one drone assignment (no drone double-booked)
and one schedule per delivery, one inbox entry per handled event, and both processes of each
service did part of the work. Then one process of each service is killed (SIGKILL) in the middle
of a second batch: what it held goes to the survivor after its lease, with the same results.

The effects are read where the services keep them: the state and inbox tables of each service's
schema (the inbox records which process, ``host:pid``, handled each event, and what it emitted,
with the attempt number). Processes, the NATS namespace and the schemas are removed at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import pytest
from remote_helpers import (
    ProcessOutput,
    child_environment,
    delivery_request,
    free_port,
    kill_all,
    start_choreograph,
)
from typer.testing import CliRunner

import choreograph.cli
from choreograph.cli import app
from choreograph.cli.serve_service import store_for
from choreograph.sdk.store import decode_emitted
from choreograph.urls import without_password
from polling import until

if os.environ.get("CHOREOGRAPH_REQUIRE_SERVICES") == "1":
    import asyncpg  # type: ignore[import-untyped]

    import choreograph.backends.nats as nats
else:
    asyncpg = pytest.importorskip("asyncpg")
    nats = pytest.importorskip("choreograph.backends.nats")


POSTGRES: Final = "postgresql://postgres@127.0.0.1:5432/test"
SERVICES: Final = ("package", "scheduler", "delivery")
FORWARD_HANDLERS: Final = {
    "package": "create-package",
    "scheduler": "assign-drone",
    "delivery": "schedule-delivery",
}
BATCH: Final = 200
"""Deliveries per batch (two batches)."""
DELIVERY_TIMEOUT_SECONDS: Final = 3.0
"""Of every handler: a lease on NATS is three of them and 3 s, so a killed process's deliveries
go to the survivor after 12 s."""
STEP_DELAY_MS: Final = 300
"""Each step sleeps this long right after claiming its inbox entry (in its transaction), so that
work is in flight when a process is killed."""
KILL_MARGIN_MS: Final = 100
"""A process is killed only while one of its runs has slept at most this long of the delay: the
rest of the delay (200 ms) is the margin for the kill to land before that run commits."""
START_SECONDS: Final = 90.0
SETTLE_SECONDS: Final = 180.0
STOP_SECONDS: Final = 60.0
POSTING_CONCURRENCY: Final = 16


# the system ---------------------------------------------------------------------------------------
@dataclass
class ScaledSystem:
    """The processes of one run, the bus and the schemas they use."""

    tmp_path: Path
    bus_url: str
    schemas: dict[str, str]
    env: dict[str, str]
    api_port: int = 0
    monitor: ProcessOutput | None = None
    ingestion: ProcessOutput | None = None
    workers: dict[str, list[ProcessOutput]] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def everything(self) -> list[ProcessOutput]:
        listed = [self.monitor, self.ingestion, *(p for ps in self.workers.values() for p in ps)]
        return [process for process in listed if process is not None]

    def start(self, name: str, *args: str) -> ProcessOutput:
        return start_choreograph(*args, output=self.tmp_path / f"{name}.out", env=self.env)

    async def ready(self, processes: list[ProcessOutput]) -> None:
        """Until each process printed that it runs (failing at once if one exited)."""

        async def all_ready() -> bool:
            for process in processes:
                if process.process.poll() is not None:
                    pytest.fail(
                        f"a process exited with {process.process.returncode}:\n{process.text()}"
                    )
            return all("Press Ctrl-C to stop." in process.text() for process in processes)

        await until(all_ready, "every process started", START_SECONDS, every=0.2)

    async def launch(self) -> None:
        """The gateway with the monitor first (it creates the topics), then the Ingestion API
        and two processes of each business service, all on the bus."""
        data = str(self.tmp_path / "data")
        self.monitor = self.start(
            "monitor",
            *("serve", "monitor", "drone_delivery.processes:workflows", "--bus", self.bus_url),
            *("--port", str(free_port()), "--data-dir", data),
        )
        await self.ready([self.monitor])
        self.api_port = free_port()
        self.ingestion = self.start(
            "ingestion",
            *("serve", "service", "drone_delivery.processes:ingestion", "--bus", self.bus_url),
            *("--port", str(self.api_port), "--data-dir", data),
            *("--store", f"sqlite:///{self.tmp_path / 'ingestion.db'}"),
        )
        for service in SERVICES:
            store = f"{POSTGRES}?schema={self.schemas[service]}"
            self.workers[service] = [
                self.start(
                    f"{service}-{number}",
                    *("serve", "service", f"drone_delivery.processes:{service}"),
                    *("--bus", self.bus_url, "--store", store),
                )
                for number in (1, 2)
            ]
        await self.ready(self.everything())

    def handled_by(self, process: ProcessOutput) -> str:
        """What the store records as the process that handled an event."""
        return f"{socket.gethostname()}:{process.process.pid}"


@pytest.fixture
async def system(
    tmp_path: Path, nats_url: str, postgres_server: str
) -> AsyncIterator[ScaledSystem]:
    run = secrets.token_hex(5)
    env = child_environment(
        CHOREOGRAPH_ADMIN_TOKEN=f"scale-test-admin-token-{run}",
        DRONE_DELIVERY_FLEET_SIZE=str(2 * BATCH + 50),
        DRONE_DELIVERY_DEADLINE_SECONDS="600",
        DRONE_DELIVERY_DELIVERY_TIMEOUT_SECONDS=str(DELIVERY_TIMEOUT_SECONDS),
        DRONE_DELIVERY_FAULTS=",".join(f"{s}:delay_ms:{STEP_DELAY_MS}" for s in SERVICES),
    )
    running = ScaledSystem(
        tmp_path=tmp_path,
        bus_url=nats_url,
        schemas={service: f"cg_scale_{run}_{service}" for service in SERVICES},
        env=env,
    )
    try:
        yield running
    finally:
        # only those still running: a reaped process's id may belong to another one by now
        kill_all([p.process.pid for p in running.everything() if p.process.poll() is None])
        for process in running.everything():
            process.process.wait(timeout=30)
        connection = await asyncpg.connect(POSTGRES)
        try:
            for schema in running.schemas.values():
                await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()


# driving ------------------------------------------------------------------------------------------
async def post_deliveries(client: httpx.AsyncClient, delivery_ids: list[str]) -> None:
    gate = asyncio.Semaphore(POSTING_CONCURRENCY)

    async def post(delivery_id: str) -> None:
        async with gate:
            answer = await client.post(
                "/deliveries", json={**delivery_request(), "deliveryId": delivery_id}
            )
            assert answer.status_code == 202, answer.text

    await asyncio.gather(*(post(delivery_id) for delivery_id in delivery_ids))


async def wait_settled(client: httpx.AsyncClient, delivery_ids: list[str]) -> dict[str, str]:
    """Each delivery's status once every one of them has an outcome."""
    statuses: dict[str, str] = {}
    gate = asyncio.Semaphore(POSTING_CONCURRENCY)

    async def read(delivery_id: str) -> None:
        async with gate:
            answer = await client.get(f"/deliveries/{delivery_id}")
        if answer.status_code == 200:
            status = answer.json()["status"]
            if status in ("Scheduled", "Failed", "Cancelled"):
                statuses[delivery_id] = status

    async def settled() -> bool:
        pending = [d for d in delivery_ids if d not in statuses]
        await asyncio.gather(*(read(delivery_id) for delivery_id in pending))
        return len(statuses) == len(delivery_ids)

    await until(settled, f"{len(delivery_ids)} deliveries settled", SETTLE_SECONDS, every=0.2)
    return statuses


# what the stores hold -----------------------------------------------------------------------------
@dataclass
class Effects:
    """The services' state and inbox, read from PostgreSQL."""

    state: dict[str, dict[str, dict[str, Any]]]
    """service -> "collection/key" -> value"""
    inbox: dict[str, list[tuple[str, str, float, list[Any]]]]
    """service -> (handler, handled_by, processed_at, emitted events)"""

    def collection(self, service: str, name: str) -> dict[str, dict[str, Any]]:
        prefix = f"{name}/"
        return {
            key[len(prefix) :]: value
            for key, value in self.state[service].items()
            if key.startswith(prefix)
        }

    def work(self, service: str) -> Counter[str]:
        """How many events each process handled in the service's forward step."""
        handler = FORWARD_HANDLERS[service]
        return Counter(by for name, by, _, _ in self.inbox[service] if name == handler)


async def read_effects(schemas: dict[str, str]) -> Effects:
    connection = await asyncpg.connect(POSTGRES)
    try:
        state, inbox = {}, {}
        for service, schema in schemas.items():
            state[service] = {
                f"{row['collection']}/{row['key']}": msgspec.json.decode(row["value"])
                for row in await connection.fetch(
                    f'SELECT collection, key, value FROM "{schema}".state'
                )
            }
            inbox[service] = [
                (
                    row["handler"],
                    row["handled_by"],
                    row["processed_at"],
                    decode_emitted(row["emitted"]),
                )
                for row in await connection.fetch(
                    f'SELECT handler, handled_by, processed_at, emitted FROM "{schema}".inbox'
                )
            ]
    finally:
        await connection.close()
    return Effects(state, inbox)


def assert_exactly_once(effects: Effects, delivery_ids: list[str]) -> None:
    """One package, one drone (never double-booked) and one schedule per delivery; one inbox
    entry per forward event."""
    expected = sorted(delivery_ids)
    count = len(delivery_ids)

    deliveries = effects.collection("package", "deliveries")
    assert sorted(deliveries) == expected
    assert {entry["state"] for entry in deliveries.values()} == {"created"}
    packages = effects.collection("package", "packages")
    assert len(packages) == count
    assert sorted(p["deliveryId"] for p in packages.values()) == expected
    assert {p["status"] for p in packages.values()} == {"active"}

    assignments = effects.collection("scheduler", "assignments")
    assert sorted(assignments) == expected
    assert {a["state"] for a in assignments.values()} == {"assigned"}
    flights: dict[str, list[tuple[float, float, str]]] = {}
    for delivery_id, assignment in assignments.items():
        flights.setdefault(assignment["droneId"], []).append(
            (assignment["departure"], assignment["busyUntil"], delivery_id)
        )
    for drone, booked in flights.items():
        booked.sort()
        for (_, busy_until, first), (departure, _, second) in itertools.pairwise(booked):
            assert departure >= busy_until, f"{drone} booked for {first} and {second} at once"
    fleet = effects.collection("scheduler", "fleet")
    for drone, booked in flights.items():
        assert fleet[drone]["heldBy"] == booked[-1][2]  # held by its latest flight only

    schedules = effects.collection("delivery", "schedules")
    assert sorted(schedules) == expected
    for delivery_id, schedule in schedules.items():
        assert schedule["state"] == "scheduled"
        assert schedule["droneId"] == assignments[delivery_id]["droneId"]

    for service in SERVICES:
        assert sum(effects.work(service).values()) == count, service


async def all_sleeping_in_a_run(connection: Any, processes: list[str]) -> bool:
    """Whether each of ``processes`` (``host:pid``) has a handler run that claimed its inbox entry
    at most ``KILL_MARGIN_MS`` ago and sleeps in the injected delay, uncommitted: killed now, that
    run is lost and its event must be redelivered. (The store names its connections
    ``choreograph <schema> <host:pid>``; a run's connection is idle in its transaction after the
    claim, with the claim as its last statement, until the delay ends.)"""
    names = await connection.fetch(
        "SELECT application_name FROM pg_stat_activity "
        "WHERE state = 'idle in transaction' AND query LIKE 'INSERT INTO %inbox%DO NOTHING' "
        "AND clock_timestamp() - state_change < $1 * interval '1 millisecond' "
        "AND application_name LIKE 'choreograph %'",
        KILL_MARGIN_MS,
    )
    return all(any(row[0].endswith(f" {process}") for row in names) for process in processes)


def redelivered(effects: Effects, service: str, processes: set[str]) -> int:
    """Forward events ``processes`` handled on a second attempt or later (by what they emitted:
    an emitted event carries its cause's attempt number)."""
    handler = FORWARD_HANDLERS[service]
    return sum(
        1
        for name, by, _, emitted in effects.inbox[service]
        if name == handler
        and by in processes
        and any(int(event.extensions.get("deliveryattempt", 1)) > 1 for _, event in emitted)
    )


# the tests ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.requires_service("nats")
@pytest.mark.requires_service("postgres")
@pytest.mark.timeout(600)
async def test_two_processes_per_service_complete_every_delivery_once_even_when_one_is_killed(
    system: ScaledSystem,
) -> None:
    await system.launch()
    first_batch = [f"first-{number:04d}" for number in range(BATCH)]
    second_batch = [f"second-{number:04d}" for number in range(BATCH)]
    async with httpx.AsyncClient(base_url=system.api, timeout=30.0) as client:
        # every process of each service takes part
        await post_deliveries(client, first_batch)
        statuses = await wait_settled(client, first_batch)
        assert Counter(statuses.values()) == {"Scheduled": BATCH}
        effects = await read_effects(system.schemas)
        assert_exactly_once(effects, first_batch)
        for service, processes in system.workers.items():
            work = effects.work(service)
            assert set(work) == {system.handled_by(p) for p in processes}, (service, work)
            assert all(work.values()), (service, work)

        # one process of each service dies while handling an event, the batch still arriving
        posting = asyncio.create_task(post_deliveries(client, second_batch))
        killed = [processes[0] for processes in system.workers.values()]
        watching = await asyncpg.connect(POSTGRES)
        try:
            await until(
                lambda: all_sleeping_in_a_run(watching, [system.handled_by(p) for p in killed]),
                "each process to kill is in the middle of handling an event",
                SETTLE_SECONDS,
                every=0.005,
            )
            kill_all([process.process.pid for process in killed])
        finally:
            await watching.close()
        killed_at = time.time()
        for process in killed:
            assert process.process.wait(timeout=30) == -signal.SIGKILL
        await posting
        statuses = await wait_settled(client, first_batch + second_batch)
        assert Counter(statuses.values()) == {"Scheduled": 2 * BATCH}

    effects = await read_effects(system.schemas)
    assert_exactly_once(effects, first_batch + second_batch)
    for service, processes in system.workers.items():
        dead, survivor = (system.handled_by(p) for p in processes)
        late = [at for name, by, at, _ in effects.inbox[service] if by == dead]
        assert max(late) < killed_at + 1.0, service  # nothing committed by the dead process after
        # what the dead process held came back to the survivor, after its lease
        assert redelivered(effects, service, {survivor}) > 0, service

    # the survivors and the Ingestion API stop cleanly on SIGTERM (the monitor on Ctrl-C)
    alive = [p for p in system.everything() if p.process.poll() is None]
    for process in alive:
        process.process.send_signal(signal.SIGINT if process is system.monitor else signal.SIGTERM)
    for process in alive:
        assert process.process.wait(timeout=STOP_SECONDS) == 0, process.text()
        assert "Stopped." in process.text()


# the command line ---------------------------------------------------------------------------------
@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    choreograph.cli._register_commands()
    for name in ("CHOREOGRAPH_GATEWAY_URL", "DRONE_DELIVERY_DELIVERY_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "give --gateway URL (webhooks behind the gateway) or --bus URL"),
        (["--gateway", "http://x", "--bus", "memory://"], "--gateway (or CHOREOGRAPH_GATEWAY_URL)"),
    ],
)
def test_a_service_runs_behind_the_gateway_or_on_a_bus(
    runner: CliRunner, options: list[str], message: str
) -> None:
    result = runner.invoke(app, ["serve", "service", "drone_delivery.processes:package", *options])
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_postgresql_store_without_a_schema_gets_the_service_s_name() -> None:
    assert store_for(f"{POSTGRES}?sslmode=disable", "package") == (
        f"{POSTGRES}?sslmode=disable&schema=package"
    )
    assert store_for(f"{POSTGRES}?schema=mine", "package") == f"{POSTGRES}?schema=mine"
    assert store_for("sqlite:///package.db", "package") == "sqlite:///package.db"
    assert without_password("postgresql://app:secret@db/shop?schema=a") == (
        "postgresql://app:***@db/shop?schema=a"
    )


def test_an_invalid_delivery_timeout_is_a_one_line_error(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRONE_DELIVERY_DELIVERY_TIMEOUT_SECONDS", "soon")
    result = runner.invoke(
        app, ["serve", "service", "drone_delivery.processes:package", "--bus", "memory://"]
    )
    assert result.exit_code == 2
    assert "DRONE_DELIVERY_DELIVERY_TIMEOUT_SECONDS must be a positive number" in result.stderr
