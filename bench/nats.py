# ruff: noqa: E402
"""A 3-hop chain on NATS JetStream: bare nats-py, FastStream and choreograph, on one server.

Run ``python bench/nats.py`` (``--quick`` for a short smoke run, ``--only raw_nats,choreograph``
for some of the systems). Progress goes to stderr; stdout gets one JSON object. The exit status is
1 if a measurement failed.

The same chain hop1 -> hop2 -> hop3 runs on four systems, one after the other, each on streams of
its own (deleted afterwards):

``raw_nats``
    Bare nats-py: three work-queue streams, a durable pull consumer on each and three consumer
    tasks. Each fetches a batch, publishes every message to the next hop's stream (pipelined
    ``publish_async``, every ``PubAck`` awaited), then acknowledges the batch; the third records.
    The engine's practical limit.
``faststream``
    FastStream (``faststream[nats]``): the same streams, three ``@broker.subscriber(subject,
    stream=JStream(...), durable=..., pull_sub=PullSub(batch_size=..., timeout=...))`` handlers
    taking the decoded JSON body; the first two ``await broker.publish(body, next, stream=...)``
    (the JetStream publish, acknowledged), the third records.
``choreograph``
    Three choreograph SDK services on ``Bus("nats://...?namespace=<ns>")``: hop1's handler
    ``ctx.emit``s the next event to topic hop2, and so on; hop3's records. In-memory service
    stores (the inbox and state are not what is compared here).
``choreograph_bus``
    The same chain as three plain bus handlers returning ``Emit(next, event)``.

For each: ``peak`` chains/s (``--chains`` chains injected in batches with at most
``--max-outstanding`` unfinished), then ``steady``: chains injected on an absolute ``loop.time()``
schedule at ``--load`` x that system's own peak, latency percentiles from injection to the hop-3
handler (the start time travels in the data). Top-level keys: ``<system>_chains_per_s``,
``<system>_p50_ms``, ``<system>_p99_ms``, the ratios ``choreograph_vs_raw_nats`` and
``choreograph_vs_faststream``, ``targets`` and ``meets_targets``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path, where this file's name hides the
# nats package (nats-py): move the directory to the end before anything imports it, where bus.py
# (the shared helpers) is still found. (Hence the file-wide E402 exemption at the top.)
BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH_DIR]
sys.path.append(str(BENCH_DIR))  # last: the packages come first, bench/bus.py is found

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

from faststream.nats import JStream, NatsBroker, PullSub
from nats.aio.client import Client
from nats.js import api
from nats.js.errors import NotFoundError

import bus as bus_bench
from choreograph import Bus, CloudEvent, __version__
from choreograph.backends.nats import delete_namespace, server_unreachable
from choreograph.bus.endpoint import Emit
from choreograph.sdk import Context, Service
from choreograph.tuning import tune_process

log = bus_bench.log
BenchError = bus_bench.BenchError

TARGETS = {"choreograph_vs_raw_nats": 0.60, "choreograph_p99_ms": 50.0}
SYSTEMS = ("raw_nats", "faststream", "choreograph", "choreograph_bus")
SOURCE = "/bench"
WAIT_LIMIT_SECONDS = 60.0
"""Longest wait for chains to complete; past it (or when a consumer task died) the measurement
fails instead of blocking."""
PUBLISH_TIMEOUT_SECONDS = 10.0
RATE_HELD = 0.9
"""A steady run whose injector reached less than this fraction of its rate did not apply the load."""
ON_TIME_MS = 50.0
"""A steady run whose injector ran later than this (p99 of its ticks) kept chains waiting before
their clock started. Either way its p99 does not meet the target (see ``load_applied``)."""


@dataclass(frozen=True)
class Params:
    """The sizes of a run (reported under ``params``)."""

    server: str = "nats://127.0.0.1:4222"
    chains: int = 15_000
    batch: int = 100
    """Chains injected per publish at peak."""
    max_outstanding: int = 2_000
    fetch_batch: int = 100
    """Messages per pull request (bare nats-py and FastStream)."""
    fetch_timeout: float = 0.005
    """Seconds a pull request may wait for its batch to fill (bare nats-py and FastStream)."""
    warmup_seconds: float = 1.0
    steady_seconds: float = 5.0
    tick_ms: float = 5.0
    load: float = 0.5
    steady_rate: float | None = None
    """Chains/s of the steady run instead of ``load`` x the peak (for every system)."""
    only: tuple[str, ...] = SYSTEMS


# chains ------------------------------------------------------------------------------------------
class Done:
    """Completed chains; waiting for a count fails when a consumer task died or time ran out."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Event()
        self.error: BaseException | None = None

    def add(self, amount: int = 1) -> None:
        self.count += amount
        self.changed.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.changed.set()

    async def reach(self, target: int, limit: float = WAIT_LIMIT_SECONDS) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while self.count < target:
            if self.error is not None:
                raise BenchError(f"a consumer failed: {self.error!r}") from self.error
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise BenchError(f"stuck at {self.count} of {target} after {limit:.0f} s") from None


class ChainRun(Protocol):
    """What the shared peak and pacing code drives (``bench/bus.py``'s ``_saturate`` and
    ``_inject_paced``): inject chain starts, count and time the ends."""

    done: Done
    latencies: list[float]

    async def inject(self, count: int, measured: bool = True) -> None: ...


@dataclass(eq=False)
class Recorder:
    """hop3's side of a chain: counts chains and records their latency (measured ones only)."""

    done: Done = field(default_factory=Done)
    latencies: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._time = asyncio.get_running_loop().time

    def record(self, data: dict[str, Any]) -> None:
        if data["m"]:
            self.latencies.append(self._time() - data["t"])
        self.done.add()

    def stamp(self) -> float:
        return self._time()


def _names(kind: str) -> tuple[str, list[str], list[str]]:
    """A fresh prefix, its three stream names and their subjects."""
    token = secrets.token_hex(4)
    streams = [f"BENCH_{kind.upper()}_{token}_HOP{i}" for i in (1, 2, 3)]
    subjects = [f"bench-{kind}-{token}.hop{i}" for i in (1, 2, 3)]
    return token, streams, subjects


def _stream_config(name: str, subject: str) -> api.StreamConfig:
    """A work-queue stream on file storage (acknowledged messages are deleted), like a topic of
    the choreograph backend."""
    return api.StreamConfig(
        name=name,
        subjects=[subject],
        retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE,
        num_replicas=1,
    )


async def _connect(p: Params, name: str) -> Client:
    # Client().connect rather than nats.connect: a bare ``import nats`` reads as this file to
    # ruff's isort (bench/ is a source root).
    nc = Client()
    await nc.connect(p.server, name=name, connect_timeout=5, allow_reconnect=False)
    return nc


async def _delete_streams(p: Params, names: list[str]) -> None:
    nc = await _connect(p, "bench-cleanup")
    try:
        js = nc.jetstream()
        for name in names:
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


def _payload(stamp: float, measured: bool) -> bytes:
    return json.dumps({"t": stamp, "m": measured}).encode()


# (a) bare nats-py ---------------------------------------------------------------------------------
class RawChain(Recorder):
    def __init__(self, js: Any, subject: str) -> None:
        super().__init__()
        self._js = js
        self._subject = subject

    async def inject(self, count: int, measured: bool = True) -> None:
        payload = _payload(self.stamp(), measured)
        js, subject = self._js, self._subject
        futures = [await js.publish_async(subject, payload) for _ in range(count)]
        await asyncio.gather(*futures)


@contextlib.asynccontextmanager
async def raw_nats(p: Params) -> AsyncIterator[RawChain]:
    """Three streams, three durable pull consumers, three consumer tasks (see the module)."""
    _, streams, subjects = _names("raw")
    nc = await _connect(p, "bench-raw-nats")
    tasks: list[asyncio.Task[None]] = []
    stopping = asyncio.Event()
    try:
        js = nc.jetstream(timeout=PUBLISH_TIMEOUT_SECONDS)
        for stream, subject in zip(streams, subjects, strict=True):
            await js.add_stream(_stream_config(stream, subject))
        chain = RawChain(js, subjects[0])

        async def consume(hop: int) -> None:
            sub = await js.pull_subscribe(
                subjects[hop], durable=f"hop{hop + 1}", stream=streams[hop]
            )
            forward = subjects[hop + 1] if hop < 2 else None
            try:
                while not stopping.is_set():
                    try:
                        msgs = await sub.fetch(p.fetch_batch, timeout=p.fetch_timeout)
                    except TimeoutError:  # nats-py raises its own and asyncio's
                        continue
                    if forward is not None:
                        acks = [await js.publish_async(forward, msg.data) for msg in msgs]
                        await asyncio.gather(*acks)  # stored on the next hop: now acknowledge
                    else:
                        for msg in msgs:
                            chain.record(json.loads(msg.data))
                    for msg in msgs:
                        await msg.ack()
            except Exception as exc:  # fails the measurement waiting for chains
                chain.done.fail(exc)

        tasks = [asyncio.create_task(consume(hop), name=f"raw hop{hop + 1}") for hop in range(3)]
        yield chain
    finally:
        # Let each task finish its fetch (a short one): cancelling nats-py's fetch can leave the
        # task hanging in its asyncio.wait_for on Python 3.11.
        stopping.set()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=p.fetch_timeout + 5.0)
            for task in late:
                task.cancel()
        await nc.close()
        await _delete_streams(p, streams)


# (b) FastStream -----------------------------------------------------------------------------------
class FastStreamChain(Recorder):
    def __init__(self, broker: NatsBroker, subject: str, stream: str) -> None:
        super().__init__()
        self._broker = broker
        self._subject = subject
        self._stream = stream

    async def inject(self, count: int, measured: bool = True) -> None:
        body = {"t": self.stamp(), "m": measured}
        publish = self._broker.publish
        await asyncio.gather(
            *(
                publish(body, self._subject, stream=self._stream, timeout=PUBLISH_TIMEOUT_SECONDS)
                for _ in range(count)
            )
        )


@contextlib.asynccontextmanager
async def faststream(p: Params) -> AsyncIterator[FastStreamChain]:
    """A NatsBroker with three JetStream pull subscribers (see the module). The broker's
    per-message logging is off (``logger=None``), as choreograph logs nothing per message."""
    _, streams, subjects = _names("fs")
    broker = NatsBroker(p.server, logger=None, graceful_timeout=5.0)
    chain = FastStreamChain(broker, subjects[0], streams[0])
    jstreams = [
        JStream(
            name,
            subjects=[subject],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
        )
        for name, subject in zip(streams, subjects, strict=True)
    ]

    def pull() -> PullSub:
        return PullSub(batch_size=p.fetch_batch, timeout=p.fetch_timeout)

    @broker.subscriber(subjects[0], stream=jstreams[0], durable="hop1", pull_sub=pull())
    async def hop1(body: dict[str, Any]) -> None:
        await broker.publish(body, subjects[1], stream=streams[1], timeout=PUBLISH_TIMEOUT_SECONDS)

    @broker.subscriber(subjects[1], stream=jstreams[1], durable="hop2", pull_sub=pull())
    async def hop2(body: dict[str, Any]) -> None:
        await broker.publish(body, subjects[2], stream=streams[2], timeout=PUBLISH_TIMEOUT_SECONDS)

    @broker.subscriber(subjects[2], stream=jstreams[2], durable="hop3", pull_sub=pull())
    async def hop3(body: dict[str, Any]) -> None:
        chain.record(body)

    try:
        await broker.start()
        yield chain
    finally:
        await broker.stop()
        await _delete_streams(p, streams)


# (c) choreograph ----------------------------------------------------------------------------------
class BusChain(Recorder):
    def __init__(self, bus: Bus) -> None:
        super().__init__()
        self._bus = bus

    async def inject(self, count: int, measured: bool = True) -> None:
        stamp = self.stamp()
        for offset in range(0, count, 5000):
            size = min(5000, count - offset)
            await self._bus.publish(
                "hop1",
                [
                    CloudEvent(type="Bench.Start", source=SOURCE, data={"t": stamp, "m": measured})
                    for _ in range(size)
                ],
            )


@contextlib.asynccontextmanager
async def _namespaced_bus(p: Params) -> AsyncIterator[Bus]:
    url = f"{p.server}?namespace=bench-{secrets.token_hex(4)}"
    try:
        async with Bus(url) as bus:
            yield bus
    finally:
        await delete_namespace(url)


@contextlib.asynccontextmanager
async def choreograph(p: Params) -> AsyncIterator[BusChain]:
    """Three SDK services, memory stores (see the module)."""
    hop1 = Service("bench-hop1")
    hop2 = Service("bench-hop2")
    hop3 = Service("bench-hop3")

    @hop1.on("Bench.Start", topic="hop1", emits={"Bench.Hop2": "hop2"})
    async def forward1(event: CloudEvent, ctx: Context) -> None:
        ctx.emit("Bench.Hop2", event.data)

    @hop2.on("Bench.Hop2", topic="hop2", emits={"Bench.Hop3": "hop3"})
    async def forward2(event: CloudEvent, ctx: Context) -> None:
        ctx.emit("Bench.Hop3", event.data)

    @hop3.on("Bench.Hop3", topic="hop3")
    async def finish(event: CloudEvent, ctx: Context) -> None:
        chain.record(event.data)

    async with _namespaced_bus(p) as bus, contextlib.AsyncExitStack() as services:
        chain = BusChain(bus)
        for service in (hop3, hop2, hop1):
            await services.enter_async_context(service.run(bus, store="memory://"))
        yield chain


@contextlib.asynccontextmanager
async def choreograph_bus(p: Params) -> AsyncIterator[BusChain]:
    """Three plain bus handlers returning ``Emit`` (see the module)."""
    async with _namespaced_bus(p) as bus:
        chain = BusChain(bus)

        def forward(to: str) -> Callable[[CloudEvent], Awaitable[Emit]]:
            async def handler(event: CloudEvent) -> Emit:
                return Emit(to, CloudEvent(type="Bench.Next", source=SOURCE, data=event.data))

            return handler

        async def finish(event: CloudEvent) -> None:
            chain.record(event.data)

        for topic in ("hop1", "hop2", "hop3"):
            await bus.put_topic(topic)
        await bus.subscribe("hop3", "sub-hop3", finish)
        await bus.subscribe("hop2", "sub-hop2", forward("hop3"))
        await bus.subscribe("hop1", "sub-hop1", forward("hop2"))
        yield chain


FACTORIES: dict[str, Callable[[Params], contextlib.AbstractAsyncContextManager[Any]]] = {
    "raw_nats": raw_nats,
    "faststream": faststream,
    "choreograph": choreograph,
    "choreograph_bus": choreograph_bus,
}


# measuring ---------------------------------------------------------------------------------------
def _find_server_pid(server: str) -> int | None:
    """The local nats-server process serving ``server``'s port: the one nats-server process, or
    the one whose command line names the port. None (no server CPU reported) when unsure."""
    port = str(urlsplit(server).port or 4222)
    found: list[tuple[int, list[str]]] = []
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{entry}/comm").read_text().strip() == "nats-server":
                        argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                        found.append((int(entry), [arg.decode(errors="replace") for arg in argv]))
    if len(found) == 1:
        return found[0][0]
    naming = [
        pid for pid, argv in found if port in argv or any(a.endswith(f":{port}") for a in argv)
    ]
    return naming[0] if len(naming) == 1 else None


def _process_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) of process ``pid`` from ``/proc``."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _machine_busy() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot (``/proc/stat``)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return user + nice + system + irq + softirq + steal, sum(values)


class CpuWindow:
    """CPU over a timed window: this process (all threads), the NATS server, everything else."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.server = _process_cpu(server_pid)
        self.machine = _machine_busy()

    def shares(self, chains: int) -> dict[str, float | None]:
        """``cpu_share`` (this process, CPU seconds per wall second), ``server_cpu_share``,
        ``other_cpu_cores`` (every other process and the kernel), and the CPU microseconds per
        chain of this process and of the server (steadier than chains/s on a busy machine)."""
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        after = _process_cpu(self.server_pid)
        server = None if after is None or self.server is None else after - self.server
        machine = _machine_busy()
        other = None
        if machine is not None and self.machine is not None and machine[1] > self.machine[1]:
            cores = os.cpu_count() or 1
            busy = (machine[0] - self.machine[0]) / (machine[1] - self.machine[1]) * cores
            other = busy - cpu / wall - (server or 0.0) / wall
        return {
            "cpu_share": cpu / wall,
            "server_cpu_share": None if server is None else server / wall,
            "other_cpu_cores": other,
            "cpu_us_per_chain": cpu / chains * 1e6 if chains else None,
            "server_cpu_us_per_chain": None
            if server is None or not chains
            else server / chains * 1e6,
        }


async def peak(chain: ChainRun, p: Params, server_pid: int | None) -> dict[str, Any]:
    """Chains/s: ``p.chains`` chains as fast as bounded outstanding allows, after a warm-up."""
    await bus_bench._saturate(chain, max(p.batch, p.chains // 10), p, measured=False)
    gc.collect()
    window = CpuWindow(server_pid)
    await bus_bench._saturate(chain, p.chains, p, measured=True)
    seconds = time.perf_counter() - window.wall
    result = {
        "chains": p.chains,
        "seconds": seconds,
        "chains_per_s": p.chains / seconds,
        **window.shares(p.chains),
        "max_outstanding": p.max_outstanding,
        "batch": p.batch,
        "latency_under_saturation": bus_bench.latency_summary(chain.latencies),
    }
    chain.latencies.clear()
    return result


async def steady(chain: ChainRun, p: Params, rate: float, server_pid: int | None) -> dict[str, Any]:
    """Latency at ``rate`` chains/s on an absolute schedule (``bench/bus.py``'s pacing), on the
    setup the peak ran on (its queues are empty again): the pacing counts chains from 0.
    ``whole_run`` is the CPU of the warm-up, the window and the drain together."""
    chain.latencies.clear()
    chain.done = Done()
    gc_pauses = bus_bench.GcPauses()
    gc.collect()
    window = CpuWindow(server_pid)
    result = await bus_bench._inject_paced(chain, rate, p, gc_pauses)
    return {
        **result,
        "load_applied": result["achieved_rate"] >= RATE_HELD * rate
        and result["injection_lag_p99_ms"] <= ON_TIME_MS,
        **bus_bench.latency_summary(chain.latencies),
        "whole_run": window.shares(chain.done.count),
        "gc": gc_pauses.summary(),
    }


async def measure(name: str, p: Params, server_pid: int | None) -> dict[str, Any]:
    """Peak, then steady latency at ``p.load`` x that peak, on one setup of the system."""
    section: dict[str, Any] = {}
    began = time.perf_counter()
    log(f"[{name}] setting up ...")
    async with FACTORIES[name](p) as chain:
        log(f"[{name}] peak: {p.chains:,} chains ...")
        top = section["peak"] = await peak(chain, p, server_pid)
        rate = p.steady_rate or p.load * top["chains_per_s"]
        log(
            f"[{name}] peak {top['chains_per_s']:,.0f} chains/s "
            f"({top['cpu_us_per_chain']:,.0f} us CPU per chain); steady at {rate:,.0f}/s ..."
        )
        held = section["steady"] = await steady(chain, p, rate, server_pid)
        log(
            f"[{name}] steady: p50 {held['p50_ms']:.1f} ms, p99 {held['p99_ms']:.1f} ms at "
            f"{held['achieved_rate']:,.0f}/s, injection lag p99 {held['injection_lag_p99_ms']:.1f} ms"
        )
    section["seconds"] = time.perf_counter() - began
    return section


# the run -----------------------------------------------------------------------------------------
def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


async def _server_info(p: Params) -> dict[str, Any]:
    unreachable = server_unreachable(p.server)
    if unreachable is not None:
        raise BenchError(unreachable)
    nc = await _connect(p, "bench-info")
    try:
        info = await nc.jetstream().account_info()
        return {
            "version": nc._server_info.get("version"),
            "max_payload": nc.max_payload,
            "jetstream_streams_at_start": info.streams,
        }
    finally:
        await nc.close()


async def run_all(p: Params) -> tuple[dict[str, Any], bool]:
    load_at_start = os.getloadavg()
    began = time.perf_counter()
    server_info = await _server_info(p)
    server_pid = _find_server_pid(p.server)
    sections: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in p.only:
        try:
            sections[name] = await measure(name, p, server_pid)
        except Exception as exc:  # reported in the JSON; the other systems still run
            log(f"[{name}] FAILED: {exc!r}")
            errors[name] = repr(exc)
            sections[name] = None

    summary: dict[str, Any] = {}
    for name in SYSTEMS:
        summary[f"{name}_chains_per_s"] = bus_bench.figure(sections, name, "peak", "chains_per_s")
    for name in SYSTEMS:
        for quantile in ("p50_ms", "p99_ms"):
            summary[f"{name}_{quantile}"] = bus_bench.figure(sections, name, "steady", quantile)
    ours = summary["choreograph_chains_per_s"]
    summary["choreograph_vs_raw_nats"] = bus_bench.ratio(ours, summary["raw_nats_chains_per_s"])
    summary["choreograph_vs_faststream"] = bus_bench.ratio(ours, summary["faststream_chains_per_s"])
    summary["choreograph_bus_vs_raw_nats"] = bus_bench.ratio(
        summary["choreograph_bus_chains_per_s"], summary["raw_nats_chains_per_s"]
    )
    summary["faststream_vs_raw_nats"] = bus_bench.ratio(
        summary["faststream_chains_per_s"], summary["raw_nats_chains_per_s"]
    )
    p99 = summary["choreograph_p99_ms"]
    meets = {
        "choreograph_vs_raw_nats": (summary["choreograph_vs_raw_nats"] or 0.0)
        >= TARGETS["choreograph_vs_raw_nats"],
        "choreograph_p99_ms": p99 is not None
        and p99 <= TARGETS["choreograph_p99_ms"]
        and p.steady_rate is None
        and p.load == 0.5
        and bool((sections.get("choreograph") or {}).get("steady", {}).get("load_applied")),
    }
    cpu_us = {
        name: bus_bench.figure(sections, name, "peak", "cpu_us_per_chain") for name in SYSTEMS
    }
    by_cpu = {
        "cpu_us_per_chain": cpu_us,
        "server_cpu_us_per_chain": {
            name: bus_bench.figure(sections, name, "peak", "server_cpu_us_per_chain")
            for name in SYSTEMS
        },
        "choreograph_vs_raw_nats": bus_bench.ratio(cpu_us["raw_nats"], cpu_us["choreograph"]),
        "choreograph_vs_faststream": bus_bench.ratio(cpu_us["faststream"], cpu_us["choreograph"]),
    }
    interference = {
        name: bus_bench.figure(sections, name, "peak", "other_cpu_cores") for name in SYSTEMS
    }
    report = {
        **summary,
        "targets": TARGETS,
        "meets_targets": meets,
        "by_cpu": by_cpu,
        "peak_other_cpu_cores": interference,
        **{name: sections.get(name) for name in SYSTEMS},
        "errors": errors,
        "params": asdict(p),
        "machine": {
            **bus_bench.machine(),
            "choreograph": __version__,
            "nats_py": _version("nats-py"),
            "faststream": _version("faststream"),
            "nats_server": server_info,
            "nats_server_pid": server_pid,
            **bus_bench.git_state("src"),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "total_seconds": time.perf_counter() - began,
    }
    return report, not errors


def parse_args(argv: list[str] | None = None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run for smoke tests")
    parser.add_argument("--only", help=f"comma-separated systems to run ({', '.join(SYSTEMS)})")
    parser.add_argument("--server", help="NATS server URL (default nats://127.0.0.1:4222)")
    parser.add_argument("--chains", type=int, help="chains per peak measurement")
    parser.add_argument("--steady-seconds", type=float, help="length of the steady-load window")
    parser.add_argument("--load", type=float, help="steady-load rate as a fraction of the peak")
    parser.add_argument("--steady-rate", type=float, help="steady chains/s instead of load x peak")
    parser.add_argument("--max-outstanding", type=int, help="unfinished chains allowed at peak")
    parser.add_argument("--batch", type=int, help="chains injected per publish at peak")
    parser.add_argument("--fetch-batch", type=int, help="messages per pull (nats-py, FastStream)")
    parser.add_argument(
        "--fetch-timeout", type=float, help="seconds a pull waits to fill (nats-py, FastStream)"
    )
    args = parser.parse_args(argv)
    params = Params()
    if args.quick:
        params = replace(params, chains=2_000, warmup_seconds=0.5, steady_seconds=1.5)
    if args.only:
        only = tuple(name.strip() for name in args.only.split(",") if name.strip())
        unknown = sorted(set(only) - set(SYSTEMS))
        if unknown:
            parser.error(f"unknown system {unknown[0]!r}; choose from {', '.join(SYSTEMS)}")
        params = replace(params, only=tuple(name for name in SYSTEMS if name in only))
    overrides = {
        "server": args.server,
        "chains": args.chains,
        "steady_seconds": args.steady_seconds,
        "load": args.load,
        "steady_rate": args.steady_rate,
        "max_outstanding": args.max_outstanding,
        "batch": args.batch,
        "fetch_batch": args.fetch_batch,
        "fetch_timeout": args.fetch_timeout,
    }
    return replace(params, **{key: value for key, value in overrides.items() if value is not None})


def main(argv: list[str] | None = None) -> int:
    params = parse_args(argv)
    tune_process()  # as every ``choreograph`` command does (the same for every system)
    try:
        report, ok = asyncio.run(run_all(params))
    except KeyboardInterrupt:
        return 130
    except BenchError as exc:  # no server
        log(f"FAILED: {exc}")
        report, ok = {"errors": {"server": str(exc)}, "params": asdict(params)}, False
    json.dump(bus_bench.finite(report), sys.stdout, indent=2, allow_nan=False)
    print()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
