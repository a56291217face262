"""Throughput and latency of the choreograph bus, next to the raw limits of its building blocks.

Run ``python bench/bus.py`` (``--quick`` for a short smoke run, ``--chains N`` to size the chain
runs). Progress goes to stderr; stdout gets one JSON object. The figures:

``publish``
    Events per second stored by ``Bus.publish`` on a topic with one subscription that has no
    handler attached (so every event is stored as one queued delivery, nothing is delivered):
    ``batched`` (lists of ``--batch`` events, sequential awaits), ``single_sequential`` (one event
    per call, each awaited before the next) and ``single_concurrent`` (``--publishers`` tasks each
    publishing one event per call; the SQLite backend group-commits their writes).
``deliveries``
    Publish-to-handler deliveries per second: ``--chains`` events published in batches to a topic
    whose one subscription's handler only counts; the clock stops when the count reaches N.
``chains``
    A 3-hop chain hop1 -> hop2 -> hop3, one subscription per topic. The hop1 handler publishes an
    event to hop2, hop2's to hop3, and hop3's handler records the chain's end-to-end latency (now
    minus the start time carried in ``data``). ``peak``: ``--chains`` chains injected in batches
    with at most ``--max-outstanding`` unfinished, chains/s = N / elapsed. ``steady``: chains
    injected on an absolute ``loop.time()`` schedule at ``--load`` x peak for ``--steady-seconds``
    (after a warm-up at the same rate; an open loop: a tick does not wait for the previous ticks'
    publishes), latency percentiles of the chains injected in that window (with the garbage
    collector's pauses in that window, from ``gc.callbacks``).
``raw_sqlite``
    A bare ``sqlite3`` loop with the bus's pragmas (WAL, synchronous=FULL) on 3 x ``--chains``
    rows: insert 100 rows in one transaction, then delete them by id in a second one. Rows
    appended and acknowledged per second; a 3-hop chain appends and acknowledges 3 events, so
    chains/s = rows/s / 3. ``interleaved_*``: one transaction per 100 rows that inserts them and
    deletes the previous 100 (as a group commit mixing publishes and acks would), for reference.
``raw_queue``
    Three ``asyncio.Queue`` hops: three consumer tasks, the first two ``get()`` and
    ``put_nowait`` to the next queue, the third counts. N = 5 x ``--chains`` items (the run is short)
    put into the first queue at once; chains/s = N / time until the N-th comes out of the third.

Each raw limit runs twice, just before and just after the backend it is compared with (the queue
around ``memory://``, ``sqlite3`` around ``sqlite://``); its rates are the means of the two runs,
kept under ``before`` and ``after``.

Top-level keys: ``sqlite_chains_per_s`` / ``memory_chains_per_s`` (chain peaks),
``sqlite_p50_ms`` / ``sqlite_p99_ms`` / ``memory_p50_ms`` / ``memory_p99_ms`` (steady-load
latency), ``raw_sqlite_chains_per_s``, ``raw_queue_chains_per_s``, the ratios
``sqlite_vs_raw_sqlite`` and ``memory_vs_raw_queue``, ``targets`` and ``meets_targets``.
Every measurement runs on a fresh bus (a fresh SQLite file), warms up first, and is preceded by
``gc.collect()``; the garbage collector stays enabled. The process is tuned as ``choreograph``
commands tune theirs (:func:`choreograph.tuning.tune_process`: the collector's youngest threshold
and the GIL switch interval, ``machine.gc_threshold`` and ``machine.switch_interval_s`` in the
output).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from choreograph import Bus, CloudEvent, __version__
from choreograph.tuning import tune_process

TARGETS = {"sqlite_vs_raw_sqlite": 0.25, "memory_vs_raw_queue": 0.10, "sqlite_p99_ms": 25.0}
SOURCE = "/bench"
HOPS = ("hop1", "hop2", "hop3")
WAIT_LIMIT_SECONDS = 180.0
"""Longest wait for a measurement to drain; past it the run reports a hang instead of blocking."""


@dataclass(frozen=True)
class Params:
    """The sizes of a run (reported under ``params``)."""

    chains: int = 20_000
    batch: int = 100
    max_outstanding: int = 2_000
    publishers: int = 64
    publish_seconds: float = 2.0
    publish_max_events: int = 100_000
    warmup_seconds: float = 1.0
    steady_seconds: float = 5.0
    tick_ms: float = 5.0
    load: float = 0.5


class BenchError(Exception):
    """A measurement did not finish (the library hung or lost events)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def latency_summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "count": len(ordered),
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p90_ms": percentile(ordered, 0.90) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] * 1000) if ordered else float("nan"),
    }


def start_event(stamp: float, measured: bool = True) -> CloudEvent:
    return CloudEvent(type="Bench.Start", source=SOURCE, data={"t": stamp, "m": measured})


class Stopwatch:
    """Wall-clock and CPU time (all threads of the process) of one timed section."""

    def __enter__(self) -> Stopwatch:
        gc.collect()
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


class GcPauses:
    """Collections and their pause times while active (``gc.callbacks``), by generation."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            f"gen{generation}": {
                "collections": len(pauses),
                "total_ms": sum(pauses) * 1000,
                "max_ms": max(pauses, default=0.0) * 1000,
            }
            for generation, pauses in self.pauses.items()
        }


class Counter:
    """Counts calls and lets a coroutine wait until the count reaches a value."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Event()

    def add(self, amount: int = 1) -> None:
        self.count += amount
        self.changed.set()

    async def reach(self, target: int, limit: float = WAIT_LIMIT_SECONDS) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while self.count < target:
            self.changed.clear()
            remaining = deadline - loop.time()
            try:
                await asyncio.wait_for(self.changed.wait(), max(remaining, 0.0))
            except TimeoutError:
                raise BenchError(f"stuck at {self.count} of {target} after {limit:.0f} s") from None


class Backends:
    """Opens a fresh bus per measurement: ``memory://`` or a new SQLite file in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.opened = 0

    def url(self, backend: str) -> str:
        if backend == "memory":
            return "memory://"
        self.opened += 1
        path = self.directory / f"bus-{self.opened}.db"
        return "sqlite:///" + str(path.resolve())

    @contextlib.asynccontextmanager
    async def bus(self, backend: str) -> AsyncIterator[Bus]:
        async with Bus(self.url(backend)) as bus:
            yield bus


# publish -------------------------------------------------------------------------------------
async def _undelivered_topic(bus: Bus) -> None:
    """A topic whose one subscription has no handler: every publish stores one delivery."""
    await bus.put_topic("sink")
    await bus.put_subscription("sink", "parked")


async def _publish_for(
    seconds: float, max_events: int, step: Callable[[], Awaitable[int]]
) -> tuple[int, Stopwatch]:
    """Call ``step`` (which publishes and returns how many events) until time or count runs out."""
    loop = asyncio.get_running_loop()
    published = 0
    with Stopwatch() as watch:
        deadline = loop.time() + seconds
        while published < max_events and loop.time() < deadline:
            published += await step()
    return published, watch


def _publish_result(published: int, watch: Stopwatch) -> dict[str, float]:
    return {
        "events": published,
        "seconds": watch.wall,
        "cpu_seconds": watch.cpu,
        "events_per_s": published / watch.wall,
    }


async def publish_batched(backends: Backends, backend: str, p: Params) -> dict[str, float]:
    """Events/s publishing lists of ``p.batch`` events, each publish awaited before the next."""
    async with backends.bus(backend) as bus:
        await _undelivered_topic(bus)

        async def step() -> int:
            await bus.publish(
                "sink",
                [
                    CloudEvent(type="Bench.Batched", source=SOURCE, data={"i": i})
                    for i in range(p.batch)
                ],
            )
            return p.batch

        await _publish_for(p.warmup_seconds / 4, p.publish_max_events // 10, step)
        return _publish_result(*await _publish_for(p.publish_seconds, p.publish_max_events, step))


async def publish_single(backends: Backends, backend: str, p: Params) -> dict[str, float]:
    """Events/s publishing one event per call, each awaited before the next."""
    async with backends.bus(backend) as bus:
        await _undelivered_topic(bus)

        async def step() -> int:
            await bus.publish("sink", CloudEvent(type="Bench.Single", source=SOURCE, data={"i": 0}))
            return 1

        await _publish_for(p.warmup_seconds / 4, p.publish_max_events // 10, step)
        return _publish_result(*await _publish_for(p.publish_seconds, p.publish_max_events, step))


async def publish_concurrent(backends: Backends, backend: str, p: Params) -> dict[str, float]:
    """Events/s with ``p.publishers`` tasks each publishing one event per call."""
    async with backends.bus(backend) as bus:
        await _undelivered_topic(bus)

        loop = asyncio.get_running_loop()

        async def publisher(deadline: float, quota: int) -> int:
            sent = 0
            while sent < quota and loop.time() < deadline:
                await bus.publish(
                    "sink", CloudEvent(type="Bench.Concurrent", source=SOURCE, data={"i": sent})
                )
                sent += 1
            return sent

        async def run(seconds: float, max_events: int) -> int:
            quota = max(1, max_events // p.publishers)
            deadline = loop.time() + seconds  # shared: a publisher may start late
            counts = await asyncio.gather(
                *(publisher(deadline, quota) for _ in range(p.publishers))
            )
            return sum(counts)

        await run(p.warmup_seconds / 4, p.publish_max_events // 10)
        with Stopwatch() as watch:
            published = await run(p.publish_seconds, p.publish_max_events)
        result = _publish_result(published, watch)
        result["publishers"] = p.publishers
        return result


# publish to handler ------------------------------------------------------------------------
async def deliveries(backends: Backends, backend: str, p: Params) -> dict[str, float]:
    """Deliveries/s: ``p.chains`` events published in batches, until the handler counted all."""
    async with backends.bus(backend) as bus:
        counter = Counter()

        async def handler(event: CloudEvent) -> None:
            counter.add()

        await bus.put_topic("deliver")
        await bus.subscribe("deliver", "counter", handler)

        async def run(total: int) -> None:
            target = counter.count + total
            sent = 0
            while sent < total:
                size = min(p.batch, total - sent)
                await bus.publish(
                    "deliver",
                    [
                        CloudEvent(type="Bench.Deliver", source=SOURCE, data={"i": i})
                        for i in range(size)
                    ],
                )
                sent += size
            await counter.reach(target)

        await run(max(p.batch, p.chains // 10))
        with Stopwatch() as watch:
            await run(p.chains)
        return {
            "events": p.chains,
            "seconds": watch.wall,
            "cpu_seconds": watch.cpu,
            "deliveries_per_s": p.chains / watch.wall,
        }


# the 3-hop chain ---------------------------------------------------------------------------
class Chain:
    """hop1 -> hop2 -> hop3 on one bus; hop3's handler counts chains and records latencies."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.done = Counter()
        self.latencies: list[float] = []
        self._time = asyncio.get_running_loop().time

    async def setup(self) -> None:
        bus = self.bus
        for topic in HOPS:
            await bus.put_topic(topic)

        def forward(to: str) -> Callable[[CloudEvent], Awaitable[None]]:
            async def handler(event: CloudEvent) -> None:
                await bus.publish(to, CloudEvent(type="Bench.Next", source=SOURCE, data=event.data))

            return handler

        async def finish(event: CloudEvent) -> None:
            if event.data["m"]:
                self.latencies.append(self._time() - event.data["t"])
            self.done.add()

        await bus.subscribe("hop1", "sub-hop1", forward("hop2"))
        await bus.subscribe("hop2", "sub-hop2", forward("hop3"))
        await bus.subscribe("hop3", "sub-hop3", finish)

    async def inject(self, count: int, measured: bool = True) -> None:
        """Publish ``count`` chain starts to hop1 (in batches of at most 5000)."""
        stamp = self._time()
        for offset in range(0, count, 5000):
            size = min(5000, count - offset)
            await self.bus.publish("hop1", [start_event(stamp, measured) for _ in range(size)])


async def _saturate(chain: Chain, total: int, p: Params, measured: bool) -> None:
    """Inject ``total`` chains in batches, at most ``p.max_outstanding`` unfinished; wait for all."""
    done = chain.done
    base = done.count
    injected = 0
    while injected < total:
        size = min(p.batch, total - injected)
        await done.reach(base + injected + size - p.max_outstanding)
        await chain.inject(size, measured)
        injected += size
    await done.reach(base + total)


async def chain_peak(backends: Backends, backend: str, p: Params) -> dict[str, Any]:
    """Peak chains/s: ``p.chains`` chains as fast as bounded outstanding allows."""
    async with backends.bus(backend) as bus:
        chain = Chain(bus)
        await chain.setup()
        await _saturate(chain, max(p.batch, p.chains // 10), p, measured=False)
        with Stopwatch() as watch:
            await _saturate(chain, p.chains, p, measured=True)
        return {
            "chains": p.chains,
            "seconds": watch.wall,
            "cpu_seconds": watch.cpu,
            "chains_per_s": p.chains / watch.wall,
            "max_outstanding": p.max_outstanding,
            "batch": p.batch,
            "latency_under_saturation": latency_summary(chain.latencies),
        }


async def _inject_paced(
    chain: Chain, rate: float, p: Params, gc_pauses: GcPauses
) -> dict[str, float]:
    """Inject chains at ``rate``/s on an absolute schedule: warm-up, then the measured window.

    Chain number i is due at ``start + i / rate``; every ``p.tick_ms`` the injector starts a
    publish of the chains due by then, without waiting for the previous ticks' publishes to
    return (an open loop, as independent clients would: a tick that waited would hold the next
    one back by the publish's own latency, and the rate would drop exactly when the system is
    slow). At most :data:`INJECTIONS_IN_FLIGHT` publishes are under way; past that a tick waits,
    which shows as injection lag. Chains due before the window are warm-up even when a late tick
    injects them inside it. Returns the window's figures.
    """
    loop = asyncio.get_running_loop()
    tick = p.tick_ms / 1000
    start = loop.time()
    end = start + p.warmup_seconds + p.steady_seconds
    warmup_chains = int(rate * p.warmup_seconds)
    injected = 0
    lags: list[float] = []
    cpu = wall = 0.0
    publishes = Publishes()
    with contextlib.ExitStack() as window:
        ticks = 0
        while (scheduled := start + (ticks := ticks + 1) * tick) <= end:
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await publishes.room()
            if not wall and scheduled - start >= p.warmup_seconds:
                window.enter_context(gc_pauses)
                cpu, wall = time.process_time(), time.perf_counter()
            due = int(rate * (scheduled - start))
            warmup = max(0, min(due, warmup_chains) - injected)
            measured = due - injected - warmup
            if warmup:
                publishes.start(chain.inject(warmup, measured=False))
            if measured:
                lags.append(loop.time() - scheduled)
                publishes.start(chain.inject(measured, measured=True))
            injected = due
        injection_seconds = time.perf_counter() - wall
        await publishes.all_done()
        await chain.done.reach(injected)
    window_chains = injected - warmup_chains
    return {
        "target_rate": rate,
        "achieved_rate": window_chains / injection_seconds,
        "chains_measured": window_chains,
        "seconds": p.steady_seconds,
        "cpu_seconds": time.process_time() - cpu,
        "tick_ms": p.tick_ms,
        "injection_lag_p50_ms": percentile(sorted(lags), 0.50) * 1000,
        "injection_lag_p99_ms": percentile(sorted(lags), 0.99) * 1000,
        "injections_in_flight_max": publishes.most,
    }


INJECTIONS_IN_FLIGHT = 256
"""Most injecting publishes of the paced injector under way at once."""


class Publishes:
    """The paced injector's publishes under way; the first failure fails the run."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self.most = 0

    def start(self, publish: Awaitable[None]) -> None:
        self._raise_failure()
        task = asyncio.ensure_future(publish)
        self._tasks.add(task)
        self.most = max(self.most, len(self._tasks))
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise BenchError(f"an injecting publish failed: {self._failure!r}") from self._failure

    async def room(self) -> None:
        """Wait until fewer than :data:`INJECTIONS_IN_FLIGHT` publishes are under way."""
        while len(self._tasks) >= INJECTIONS_IN_FLIGHT:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        self._raise_failure()

    async def all_done(self) -> None:
        while self._tasks:
            await asyncio.wait(self._tasks)
        self._raise_failure()


async def chain_steady(backends: Backends, backend: str, p: Params, rate: float) -> dict[str, Any]:
    """Latency at a fixed injection rate (chains/s), paced by an absolute ``loop.time()`` schedule.

    A chain's latency runs from just before the publish that injects it until its hop3 handler
    runs. Chains of the warm-up are not recorded. ``injection_lag_p99_ms`` is how late ticks ran
    against the schedule (large means the bus held up the injector); ``gc`` lists the garbage
    collector's pauses during the window.
    """
    async with backends.bus(backend) as bus:
        chain = Chain(bus)
        await chain.setup()
        gc_pauses = GcPauses()
        gc.collect()
        result = await _inject_paced(chain, rate, p, gc_pauses)
        return {**result, **latency_summary(chain.latencies), "gc": gc_pauses.summary()}


# raw limits --------------------------------------------------------------------------------
def _raw_sqlite_rate(path: Path, rows: int, batch: int, payload: bytes, interleave: bool) -> float:
    """Rows/s appended and deleted through a bare SQLite table with the bus's pragmas.

    Separate (``interleave=False``): insert ``batch`` rows, commit, delete them by id, commit.
    Interleaved: one transaction inserts the next ``batch`` rows and deletes the previous batch.
    """
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("CREATE TABLE queue (id INTEGER PRIMARY KEY, payload BLOB)")
        next_id = 1
        pending: list[tuple[int]] = []

        def transaction(inserts: list[tuple[int]], deletes: list[tuple[int]]) -> None:
            connection.execute("BEGIN")
            if inserts:
                connection.executemany(
                    "INSERT INTO queue (id, payload) VALUES (?, ?)",
                    [(i, payload) for (i,) in inserts],
                )
            if deletes:
                connection.executemany("DELETE FROM queue WHERE id = ?", deletes)
            connection.execute("COMMIT")

        def cycle(count: int) -> None:
            nonlocal next_id, pending
            ids = [(i,) for i in range(next_id, next_id + count)]
            next_id += count
            if interleave:
                transaction(ids, pending)
                pending = ids
            else:
                transaction(ids, [])
                transaction([], ids)

        for _ in range(max(1, rows // batch // 10)):
            cycle(batch)
        with Stopwatch() as watch:
            for offset in range(0, rows, batch):
                cycle(min(batch, rows - offset))
            if pending:
                transaction([], pending)
    finally:
        connection.close()
    return rows / watch.wall


def raw_sqlite(directory: Path, rows: int, batch: int, payload: bytes) -> dict[str, float]:
    """Rows appended and acknowledged per second by bare ``sqlite3`` (WAL, synchronous=FULL).

    The headline is the separate-commits loop (a commit every ``batch`` rows written);
    ``interleaved_rows_per_s`` puts each batch's inserts and the previous batch's deletes in one
    transaction, as a group commit that mixes publishes and acknowledgements would.
    """
    began = time.perf_counter()
    separate = _raw_sqlite_rate(directory / "raw-separate.db", rows, batch, payload, False)
    interleaved = _raw_sqlite_rate(directory / "raw-interleaved.db", rows, batch, payload, True)
    return {
        "rows": rows,
        "batch": batch,
        "payload_bytes": len(payload),
        "seconds": time.perf_counter() - began,
        "rows_per_s": separate,
        "chains_per_s": separate / 3,
        "interleaved_rows_per_s": interleaved,
        "interleaved_chains_per_s": interleaved / 3,
    }


async def raw_queue(chains: int) -> dict[str, float]:
    """Chains/s through three ``asyncio.Queue`` hops."""
    first: asyncio.Queue[float] = asyncio.Queue()
    second: asyncio.Queue[float] = asyncio.Queue()
    third: asyncio.Queue[float] = asyncio.Queue()
    done = Counter()

    async def hop(source: asyncio.Queue[float], to: asyncio.Queue[float]) -> None:
        while True:
            to.put_nowait(await source.get())

    async def last() -> None:
        while True:
            await third.get()
            done.count += 1
            if done.count >= done_target:
                done.changed.set()

    done_target = 0
    tasks = [
        asyncio.create_task(hop(first, second)),
        asyncio.create_task(hop(second, third)),
        asyncio.create_task(last()),
    ]
    try:
        for total, timed in ((max(1, chains // 10), False), (chains, True)):
            done_target = done.count + total
            with Stopwatch() as watch:
                for _ in range(total):
                    first.put_nowait(0.0)
                await done.reach(done_target)
            if timed:
                return {
                    "chains": chains,
                    "seconds": watch.wall,
                    "cpu_seconds": watch.cpu,
                    "chains_per_s": chains / watch.wall,
                }
        raise AssertionError("unreachable")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# the run -----------------------------------------------------------------------------------
async def measure_backend(backends: Backends, backend: str, p: Params) -> dict[str, Any]:
    """Every bus measurement on one backend; a failing one is reported, the rest still run."""
    section: dict[str, Any] = {"publish": {}, "errors": {}}

    async def run(name: str, measurement: Awaitable[Any]) -> Any:
        log(f"[{backend}] {name} ...")
        began = time.perf_counter()
        try:
            result = await measurement
        except Exception as exc:
            log(f"[{backend}] {name} FAILED: {exc!r}")
            section["errors"][name] = repr(exc)
            return None
        log(f"[{backend}] {name} done in {time.perf_counter() - began:.1f} s: {_headline(result)}")
        return result

    for name, function in (
        ("batched", publish_batched),
        ("single_sequential", publish_single),
        ("single_concurrent", publish_concurrent),
    ):
        section["publish"][name] = await run(f"publish {name}", function(backends, backend, p))
    section["deliveries"] = await run("deliveries", deliveries(backends, backend, p))
    peak = await run("chain peak", chain_peak(backends, backend, p))
    section["chain_peak"] = peak
    if peak is not None:
        rate = p.load * peak["chains_per_s"]
        section["chain_steady"] = await run(
            f"chain steady at {rate:.0f}/s", chain_steady(backends, backend, p, rate)
        )
    else:
        section["chain_steady"] = None
    if not section["errors"]:
        del section["errors"]
    return section


def _headline(result: dict[str, Any]) -> str:
    for key in ("events_per_s", "deliveries_per_s", "chains_per_s", "rows_per_s"):
        if key in result:
            return f"{result[key]:,.0f} {key.replace('_per_s', '')}/s"
    if "p99_ms" in result:
        return f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"
    return ""


def figure(section: dict[str, Any], *path: str) -> float | None:
    """The number at ``path`` in a nested report section, None where it is missing."""
    value: Any = section
    for key in path:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return float(value)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``; None when either is missing or the numerator not finite."""
    if numerator is None or not denominator or not math.isfinite(numerator):
        return None
    return numerator / denominator


def git_state(*paths: str) -> dict[str, Any]:
    """The commit benchmarked, and whether ``paths`` had uncommitted changes (shared by the
    benchmarks that import this file)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", *paths],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {
        "commit": commit or None,
        f"uncommitted_changes_in_{'_'.join(paths)}": bool(status.strip()),
    }


async def run_all(p: Params, directory: Path) -> dict[str, Any]:
    backends = Backends(directory)
    load_at_start = os.getloadavg()
    payload = msgspec.json.encode(start_event(0.0))
    began = time.perf_counter()

    async def queue_limit(when: str) -> dict[str, float]:
        log(f"[raw] asyncio.Queue 3-hop chain, {when} ...")
        result = await raw_queue(p.chains * 5)
        log(f"[raw] queue {when}: {_headline(result)}")
        return result

    def sqlite_limit(when: str) -> dict[str, float]:
        log(f"[raw] sqlite3 append+ack, {when} ...")
        files = directory / f"raw-{when}"
        files.mkdir()
        result = raw_sqlite(files, 3 * p.chains, p.batch, payload)
        log(f"[raw] sqlite {when}: {_headline(result)}")
        return result

    # Each raw limit runs just before and just after the backend it is compared with, so that a
    # busy spell of the machine weighs on both sides of the ratio.
    queue_before = await queue_limit("before")
    memory = await measure_backend(backends, "memory", p)
    queue = bracketed(queue_before, await queue_limit("after"))
    raw_before = sqlite_limit("before")
    sqlite = await measure_backend(backends, "sqlite", p)
    raw = bracketed(raw_before, sqlite_limit("after"))

    summary = {
        "sqlite_chains_per_s": figure(sqlite, "chain_peak", "chains_per_s"),
        "sqlite_p50_ms": figure(sqlite, "chain_steady", "p50_ms"),
        "sqlite_p99_ms": figure(sqlite, "chain_steady", "p99_ms"),
        "memory_chains_per_s": figure(memory, "chain_peak", "chains_per_s"),
        "memory_p50_ms": figure(memory, "chain_steady", "p50_ms"),
        "memory_p99_ms": figure(memory, "chain_steady", "p99_ms"),
        "raw_sqlite_rows_per_s": raw["rows_per_s"],
        "raw_sqlite_chains_per_s": raw["chains_per_s"],
        "raw_queue_chains_per_s": queue["chains_per_s"],
    }
    summary["sqlite_vs_raw_sqlite"] = ratio(
        summary["sqlite_chains_per_s"], summary["raw_sqlite_chains_per_s"]
    )
    summary["memory_vs_raw_queue"] = ratio(
        summary["memory_chains_per_s"], summary["raw_queue_chains_per_s"]
    )
    meets = {
        "sqlite_vs_raw_sqlite": (summary["sqlite_vs_raw_sqlite"] or 0.0)
        >= TARGETS["sqlite_vs_raw_sqlite"],
        "memory_vs_raw_queue": (summary["memory_vs_raw_queue"] or 0.0)
        >= TARGETS["memory_vs_raw_queue"],
        "sqlite_p99_ms": summary["sqlite_p99_ms"] is not None
        and summary["sqlite_p99_ms"] <= TARGETS["sqlite_p99_ms"],
    }
    return {
        **summary,
        "targets": TARGETS,
        "meets_targets": meets,
        "memory": memory,
        "sqlite": sqlite,
        "raw_sqlite": raw,
        "raw_queue": queue,
        "params": asdict(p),
        "machine": {
            **machine(),
            "sqlite": sqlite3.sqlite_version,
            "choreograph": __version__,
            "msgspec": msgspec.__version__,
            "data_dir": str(directory),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "total_seconds": time.perf_counter() - began,
    }


def bracketed(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """A raw limit measured before and after what it is compared with: each rate (``*_per_s``)
    is the mean of the two runs, which are kept under ``before`` and ``after``."""
    means = {key: (before[key] + after[key]) / 2 for key in before if key.endswith("_per_s")}
    return {**means, "before": before, "after": after}


def machine() -> dict[str, Any]:
    """The Python and the machine a benchmark ran on (shared by the benchmarks that import this
    file)."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "gc_threshold": gc.get_threshold(),
        "switch_interval_s": sys.getswitchinterval(),
    }


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities (an empty measurement) replaced by null, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def parse_args(argv: list[str] | None = None) -> tuple[Params, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run for smoke tests")
    parser.add_argument("--chains", type=int, help="chains (and events) per peak measurement")
    parser.add_argument("--steady-seconds", type=float, help="length of the steady-load window")
    parser.add_argument("--load", type=float, help="steady-load rate as a fraction of the peak")
    parser.add_argument("--max-outstanding", type=int, help="unfinished chains allowed at peak")
    parser.add_argument("--publishers", type=int, help="concurrent publishers")
    parser.add_argument("--batch", type=int, help="events per batched publish (at most 5000)")
    parser.add_argument("--dir", help="where to put the SQLite files (default: a temp dir)")
    args = parser.parse_args(argv)
    params = Params()
    if args.quick:
        params = Params(
            chains=2_000,
            publish_seconds=0.5,
            publish_max_events=20_000,
            warmup_seconds=0.5,
            steady_seconds=1.5,
        )
    overrides = {
        "chains": args.chains,
        "steady_seconds": args.steady_seconds,
        "load": args.load,
        "max_outstanding": args.max_outstanding,
        "publishers": args.publishers,
        "batch": args.batch,
    }
    fields = asdict(params) | {key: value for key, value in overrides.items() if value is not None}
    return Params(**fields), args.dir


def main(argv: list[str] | None = None) -> int:
    params, directory = parse_args(argv)
    tune_process()  # as every ``choreograph`` command does
    with tempfile.TemporaryDirectory(prefix="choreograph-bench-", dir=directory) as tmp:
        report = asyncio.run(run_all(params, Path(tmp)))
    json.dump(finite(report), sys.stdout, indent=2, allow_nan=False)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
