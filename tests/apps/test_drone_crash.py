"""Drone Delivery killed with ``kill -9`` in the middle of 1,000 deliveries loses none: after a
restart on the same data directory every delivery ends terminal, and each service's effects
happened once.

The whole system runs as ``choreograph up`` (SQLite bus, four services, monitor, HTTP API) in a
separate process, so the kill is real. The client posts the deliveries with client-chosen ids;
the kill lands while requests are still being posted and transactions are in flight. A 202 is a
promise that the request is stored: after the restart every delivery that got one must be
known without being posted again. Requests that got no answer are posted again, as a client
would (a repeated POST with the same id and body starts nothing new).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from drone_process import read_collection

from drone_delivery.driver import HttpStatus, delivery_request
from drone_delivery.events import SETTLED_STATUSES, Status
from up_process import Server, free_port, start_up

DELIVERIES = 1_000
CONCURRENCY = 32
KILL_AFTER_ACCEPTED = 400
"""The kill comes once this many requests were accepted: well into the run, far from its end."""
SETTLE_SECONDS = 120.0
"""A failed transaction ends within 60 s by design; twice that is the safety net."""
STEP_DELAY_MS = 500
REJECTED = 0.1
ENVIRONMENT = {
    # A drone for every delivery and short flights: drones are not the bottleneck.
    "DRONE_DELIVERY_FLEET_SIZE": str(DELIVERIES),
    "DRONE_DELIVERY_FLIGHT_SECONDS": "5",
    # Each forward step takes a while, as real work would: at the kill, many transactions are
    # part-way (package created, drone held, not yet scheduled). The last step refuses some
    # deliveries, whose package and drone must then be given back: the kill also catches
    # compensations under way.
    "DRONE_DELIVERY_FAULTS": (
        f"package:delay_ms:{STEP_DELAY_MS},scheduler:delay_ms:{STEP_DELAY_MS},"
        f"delivery:delay_ms:{STEP_DELAY_MS},delivery:reject:{REJECTED}"
    ),
}


@dataclass
class Posting:
    """How the requests posted before the kill were answered."""

    accepted: list[str] = field(default_factory=list)
    """Answered 202: stored, whatever happens next."""
    unanswered: list[str] = field(default_factory=list)
    """Cut off by the kill, or never sent: the client does not know, and asks again."""


async def post_until_killed(
    server: Server, bodies: Sequence[dict[str, Any]], kill_after: int
) -> Posting:
    """Post ``bodies``, ``CONCURRENCY`` at a time; SIGKILL the server after ``kill_after`` 202s."""
    posting = Posting()
    gate = asyncio.Semaphore(CONCURRENCY)
    killed = False

    async def post(body: dict[str, Any]) -> None:
        nonlocal killed
        delivery_id = body["deliveryId"]
        async with gate:
            if killed:
                posting.unanswered.append(delivery_id)
                return
            try:
                response = await client.post("/deliveries", json=body)
            except httpx.TransportError:
                posting.unanswered.append(delivery_id)
                return
        assert response.status_code == 202, response.text
        posting.accepted.append(delivery_id)
        if len(posting.accepted) == kill_after:
            os.kill(server.process.pid, signal.SIGKILL)
            killed = True

    async with server.client() as client:
        await asyncio.gather(*(post(body) for body in bodies))
    return posting


async def recover(
    server: Server, bodies: Sequence[dict[str, Any]], posting: Posting
) -> dict[str, dict[str, Any]]:
    """After the restart: check the accepted requests are known, post the unanswered ones again,
    then wait for every delivery to settle; their records."""
    by_id = {body["deliveryId"]: body for body in bodies}
    async with server.client() as client:
        status = HttpStatus(client, CONCURRENCY)
        known = await status.records(posting.accepted)
        forgotten = sorted(set(posting.accepted) - set(known))
        assert not forgotten, f"{len(forgotten)} accepted deliveries are unknown: {forgotten[:5]}"
        gate = asyncio.Semaphore(CONCURRENCY)

        async def post_again(delivery_id: str) -> None:
            async with gate:
                response = await client.post("/deliveries", json=by_id[delivery_id])
            assert response.status_code == 202, response.text

        await asyncio.gather(*(post_again(delivery_id) for delivery_id in posting.unanswered))
        settled: dict[str, dict[str, Any]] = {}
        pending = set(by_id)
        deadline = time.monotonic() + SETTLE_SECONDS
        while pending:
            latest = await status.records(sorted(pending))
            for delivery_id, record in latest.items():
                if record["status"] in SETTLED_STATUSES:
                    settled[delivery_id] = record
                    pending.discard(delivery_id)
            if pending and time.monotonic() > deadline:
                statuses = Counter(record["status"] for record in latest.values())
                pytest.fail(
                    f"{len(pending)} deliveries did not settle within {SETTLE_SECONDS} s, e.g. "
                    f"{sorted(pending)[:5]} ({statuses})"
                )
            if pending:
                await asyncio.sleep(0.2)
    return settled


def check_effects_happened_once(data_dir: Path, records: dict[str, dict[str, Any]]) -> None:
    """Each service's store agrees with how each delivery ended, with every effect applied once."""
    scheduled = {key for key, record in records.items() if record["status"] == Status.SCHEDULED}
    ended = set(records) - scheduled  # Failed or Cancelled: compensated

    # Package: at most one package per delivery; active exactly for the scheduled ones.
    packages = read_collection(data_dir / "package.db", "packages")
    per_delivery = Counter(package["deliveryId"] for package in packages.values())
    assert max(per_delivery.values()) == 1, per_delivery.most_common(3)
    active = {p["deliveryId"] for p in packages.values() if p["status"] == "active"}
    assert active == scheduled, (sorted(active - scheduled)[:5], sorted(scheduled - active)[:5])

    # Scheduler: one assignment per delivery; no drone flies two deliveries at once; no drone is
    # held for a delivery that ended without a schedule.
    assignments = read_collection(data_dir / "scheduler.db", "assignments")
    fleet = read_collection(data_dir / "scheduler.db", "fleet")
    assert set(assignments) <= set(records)
    assigned = {key: a for key, a in assignments.items() if a["state"] == "assigned"}
    assert set(assigned) == scheduled, sorted(set(assigned) ^ scheduled)[:5]
    flights: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for key, assignment in assigned.items():
        assert assignment["droneId"] == records[key]["droneId"], (key, assignment)
        flights[assignment["droneId"]].append(
            (assignment["departure"], assignment["busyUntil"], key)
        )
    for drone, times in flights.items():
        times.sort()
        for earlier, later in pairwise(times):
            assert earlier[1] <= later[0], f"{drone} flies {earlier[2]} and {later[2]} at once"
    for drone in fleet.values():
        held_by = drone["heldBy"]
        assert held_by is None or held_by not in ended, drone
        assert held_by is None or assignments[held_by]["droneId"] == drone["droneId"], drone

    # Delivery: one schedule per delivery, in force exactly for the scheduled ones.
    schedules = read_collection(data_dir / "delivery.db", "schedules")
    assert set(schedules) <= set(records)
    in_force = {key for key, s in schedules.items() if s["state"] == "scheduled"}
    assert in_force == scheduled, sorted(in_force ^ scheduled)[:5]
    for key in in_force:
        assert schedules[key]["droneId"] == records[key]["droneId"], (key, schedules[key])

    # Ingestion: the history keeps one entry per event id, so two entries of one type would be
    # a step emitting its event twice (under a new id) after the restart.
    for key, record in records.items():
        types = Counter(entry["type"] for entry in record["history"])
        repeated = sorted(kind for kind, times in types.items() if times > 1)
        assert not repeated, f"{key}: {repeated} in {record['history']}"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_system_ends_every_delivery_after_a_restart_and_loses_none(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    rng = random.Random(2024)
    bodies = [delivery_request(f"crash-{number:04d}", rng) for number in range(DELIVERIES)]

    server = start_up(data_dir, port, tmp_path, ENVIRONMENT)
    try:
        server.wait_healthy()
        started = time.monotonic()
        posting = asyncio.run(post_until_killed(server, bodies, KILL_AFTER_ACCEPTED))
        assert server.process.wait(timeout=30) == -signal.SIGKILL, server.text()
    finally:
        server.kill()
    killed = time.monotonic()
    at_kill = read_collection(data_dir / "ingestion.db", "deliveries")
    settled_at_kill = sum(record["status"] in SETTLED_STATUSES for record in at_kill.values())
    in_flight = Counter(
        record["status"] for record in at_kill.values() if record["status"] not in SETTLED_STATUSES
    )
    print(
        f"\nkilled after {killed - started:.1f} s: {len(posting.accepted)} requests accepted, "
        f"{len(posting.unanswered)} unanswered or unsent; {len(at_kill)} transactions stored, "
        f"{settled_at_kill} settled, {in_flight.total()} in flight {dict(in_flight)}"
    )
    # The kill landed mid-run: some transactions had ended, others were under way.
    assert settled_at_kill > 0, dict(in_flight)
    assert in_flight.total() > 0, settled_at_kill

    server = start_up(data_dir, port, tmp_path, ENVIRONMENT)
    try:
        server.wait_healthy()
        healthy = time.monotonic()
        records = asyncio.run(recover(server, bodies, posting))
        recovered = time.monotonic()
        assert server.interrupt() == 0, server.text()
    finally:
        server.kill()

    assert len(records) == DELIVERIES
    outcomes = Counter(record["status"] for record in records.values())
    # Both ends happened, so that both are checked below.
    assert outcomes[Status.SCHEDULED] > 0, outcomes
    assert outcomes[Status.FAILED] > 0, outcomes
    print(
        f"restart until healthy {healthy - killed:.1f} s; until all {DELIVERIES} settled "
        f"{recovered - killed:.1f} s (the {len(posting.unanswered)} posted again included); "
        f"outcomes {dict(outcomes)}"
    )
    check_effects_happened_once(data_dir, records)
