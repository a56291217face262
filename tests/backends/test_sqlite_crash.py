"""A bus process on SQLite killed with SIGKILL loses nothing: a publish that returned is
delivered after a restart, and deliveries in flight at the kill are delivered again.

The bus runs in ``crash_worker.py``, a separate process, so that the kill is real. The tests
wait on files the worker writes, polling with a deadline (there is no other way to wait on
another process's progress); nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from choreograph import Bus, CloudEvent

WORKER = Path(__file__).with_name("crash_worker.py")
SUBSCRIPTIONS = ("audit", "billing")


def event_ids(count: int) -> set[str]:
    return {f"evt-{index:05d}" for index in range(count)}


def read_log(path: Path) -> list[str]:
    """The ids a handler recorded, in order (an absent log records nothing)."""
    if not path.exists():
        return []
    return path.read_text().splitlines()


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def start_worker(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start the worker on ``tmp_path/bus.db``, its output going to ``tmp_path/worker.out``."""
    with (tmp_path / "worker.out").open("ab") as output:
        return subprocess.Popen(
            [sys.executable, str(WORKER), str(tmp_path / "bus.db"), str(tmp_path / "out"), *args],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def worker_output(tmp_path: Path) -> str:
    path = tmp_path / "worker.out"
    return path.read_text() if path.exists() else ""


def wait_until(
    condition: Callable[[], bool],
    process: subprocess.Popen[bytes],
    tmp_path: Path,
    timeout: float,
) -> None:
    """Poll ``condition`` while the worker runs; fail if it exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(
                f"the worker exited with {process.returncode} before the condition held:\n"
                + worker_output(tmp_path)
            )
        if time.monotonic() > deadline:
            pytest.fail(f"the condition did not hold within {timeout} s")
        time.sleep(0.02)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``process`` if it still runs and reap it."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def run_until_idle(tmp_path: Path, *args: str, timeout: float = 120.0) -> None:
    """Run the worker in delivery-only mode until it reports the bus idle and exits."""
    process = start_worker(tmp_path, *args)
    try:
        code = process.wait(timeout=timeout)
    finally:
        kill(process)
    assert code == 0, worker_output(tmp_path)
    assert (tmp_path / "out" / "idle").exists()


def recorder(ids: list[str]) -> Callable[[CloudEvent], Awaitable[None]]:
    """An in-process handler appending each event id to ``ids``."""

    async def record(event: CloudEvent) -> None:
        ids.append(event.id)

    return record


async def read_store(url: str, topic: str) -> dict[str, tuple[set[str], dict[str, int]]]:
    """Each subscription's dead-lettered event ids and counters, read through a bus."""
    stored = {}
    async with Bus(url) as bus:
        for name in SUBSCRIPTIONS:
            dead = await bus.dead_letters(topic, name, limit=10_000)
            stored[name] = ({record.event.id for record in dead}, await bus.counters(topic, name))
    return stored


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_events_in_delivery_when_the_process_is_killed_are_delivered_after_a_restart(
    tmp_path: Path,
) -> None:
    count = 10_000
    topic = "crash-in-delivery"
    out = tmp_path / "out"
    logs = {name: out / f"{name}.log" for name in SUBSCRIPTIONS}

    def delivering() -> bool:
        if not (out / "published").exists():
            return False
        return all(0 < count_lines(log) < count for log in logs.values())

    started = time.monotonic()
    process = start_worker(
        tmp_path, "--topic", topic, "--publish", str(count), "--handler-delay", "0.001"
    )
    try:
        wait_until(delivering, process, tmp_path, timeout=60)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        kill(process)
    before_crash = {name: count_lines(log) for name, log in logs.items()}
    assert all(delivered < count for delivered in before_crash.values()), before_crash
    killed = time.monotonic()

    # The restart fails with BackendLockedError if the dead process still held the store.
    run_until_idle(tmp_path, "--topic", topic)
    restarted = time.monotonic()

    stored = asyncio.run(read_store(f"sqlite:///{tmp_path / 'bus.db'}", topic))
    expected = event_ids(count)
    for name, log in logs.items():
        recorded = read_log(log)
        dead, counters = stored[name]
        assert set(recorded) <= expected, "a log holds a line that is no event id"
        missing = expected - set(recorded) - dead
        assert not missing, f"{name} lost {len(missing)} events, e.g. {sorted(missing)[:5]}"
        assert counters["queued"] == 0, counters
        redelivered = sum(times - 1 for times in Counter(recorded).values())
        print(
            f"{name}: {before_crash[name]} delivered before the kill, {redelivered} delivered "
            f"again after the restart, {len(dead)} dead-lettered"
        )
    print(f"until the kill {killed - started:.1f} s, restart until idle {restarted - killed:.1f} s")


@pytest.mark.slow
@pytest.mark.parametrize("handlers", ["none", "stall"])
def test_a_publish_that_returned_survives_the_process_being_killed(
    tmp_path: Path, handlers: str
) -> None:
    """With no handler the events wait in the queue; with handlers that never return some are
    leased when the process dies, and reopening the store must release them."""
    count = 1_000
    topic = f"crash-publish-{handlers}"
    process = start_worker(
        tmp_path, "--topic", topic, "--publish", str(count), "--handlers", handlers
    )
    try:
        wait_until((tmp_path / "out" / "published").exists, process, tmp_path, timeout=60)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        kill(process)

    async def deliver_all() -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
        received: dict[str, list[str]] = {name: [] for name in SUBSCRIPTIONS}
        counters = {}
        async with Bus(f"sqlite:///{tmp_path / 'bus.db'}") as bus:
            for name in SUBSCRIPTIONS:
                await bus.attach(topic, name, recorder(received[name]))
            async with asyncio.timeout(60):
                await bus.idle()
            for name in SUBSCRIPTIONS:
                counters[name] = await bus.counters(topic, name)
        return received, counters

    received, counters = asyncio.run(deliver_all())
    for name in SUBSCRIPTIONS:
        missing = event_ids(count) - set(received[name])
        assert not missing, f"{name} lost {len(missing)} events, e.g. {sorted(missing)[:5]}"
        assert counters[name]["queued"] == 0, counters[name]
