# ruff: noqa: E402
"""Drone Delivery end to end: deliveries/s and latency through the whole app on the SQLite bus.

Run ``python bench/drone_delivery.py`` (``--quick`` for a short smoke run, ``--deliveries N`` to
size the peak, ``--http`` to also drive the app over real sockets). Progress goes to stderr;
stdout gets one JSON object.

One process holds everything: a fresh temporary directory, ``Bus("sqlite:///<dir>/bus.db")``
(default ``synchronous=FULL``), ``DroneDeliverySystem`` with every service's store in that
directory, and an in-process ASGI client (:class:`AsgiClient`, calling ``system.app`` directly): each request
goes through the real Starlette app (routing, validation, the Ingestion API's publish and record
write) but not through an HTTP server socket. The target is the choreography (four services,
the monitor and the bus); HTTP serving is a separate cost (``--http`` measures it here too).

``peak``
    ``--deliveries`` requests posted by ``drone_delivery.driver.drive`` with at most
    ``--concurrency`` requests in flight, then waited on until every one settles. The wait reads
    Ingestion's records in-process (the state ``GET /deliveries/{id}`` reads, see
    :class:`StoreStatus`) every ``--poll-seconds`` instead of polling N deliveries over HTTP,
    which would load the system it measures. ``deliveries_per_s`` = completed deliveries / (the
    time of the last settling event - the moment just before the first request), both on the
    server clock, so the poll interval does not round it. ``cpu_ms_per_delivery`` counts the
    process's CPU time (the SQLite writer threads too), ``loop_cpu_ms_per_delivery`` the event
    loop's thread alone: the one that bounds the rate.
``half_load``
    Requests paced on an absolute ``loop.time()`` schedule (request i is sent at
    ``start + i / rate``) at ``--load`` x the peak rate for ``--half-load-seconds``, after a
    warm-up at the same rate that is not recorded. Latency is the driver's: from the request's
    ``requestedAt`` (stamped by the Ingestion API before it publishes) to the time of the event
    that settled the delivery (``DeliveryScheduled``, stamped by the Delivery service's handler),
    on the server clock. ``client_visible_*`` adds what a client would see: from just before the
    request is sent until Ingestion's record shows the delivery settled (polled every 5 ms).
``raw``
    The same machine's limits, from ``bench/bus.py`` in this process: bare ``sqlite3``
    append-and-acknowledge (``raw_sqlite``), three ``asyncio.Queue`` hops (``raw_queue``) and the
    bus's own 3-hop chain peak on SQLite (``bus_sqlite_chain_peak``).

The process is tuned as ``choreograph`` commands tune theirs
(:func:`choreograph.tuning.tune_process`; ``machine.gc_threshold`` and ``machine.switch_interval_s``
in the output).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path, where this file's name hides
# the drone_delivery package: move the directory to the end before anything imports the app,
# where bus.py (the shared helpers) is still found. (Hence the file-wide E402 exemption at the
# top.)
BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH_DIR]
sys.path.append(str(BENCH_DIR))  # last: the packages come first, bench/bus.py is found

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import socket
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import aiohttp
import httpx
import msgspec

import bus as bus_bench
from choreograph import Bus, __version__
from choreograph.sdk import ServiceStore
from choreograph.tuning import tune_process
from drone_delivery.driver import DriveReport, drive
from drone_delivery.events import SETTLED_STATUSES, parse_timestamp
from drone_delivery.ingestion import DELIVERIES
from drone_delivery.settings import Settings
from drone_delivery.system import DroneDeliverySystem

TARGETS = {"deliveries_per_s": 1000.0, "p99_ms": 100.0}
TARGET_LOAD = 0.5
"""The p99 target holds at this fraction of the deliveries/s target (500/s)."""
VISIBLE_POLL_SECONDS = 0.005
PACED_CONCURRENCY = 256


@dataclass(frozen=True)
class Params:
    """The sizes of a run (reported under ``params``)."""

    deliveries: int = 10_000
    concurrency: int = 64
    warmup_deliveries: int = 500
    fleet_size: int = 100
    flight_seconds: float = 0.01
    deadline_seconds: float = 600.0
    settle_seconds: float = 120.0
    poll_seconds: float = 0.1
    load: float = 0.5
    half_load_rate: float | None = None
    half_load_seconds: float = 10.0
    half_load_warmup_seconds: float = 1.0
    raw_chains: int = 20_000
    bus_chain_peak: bool = True
    http: bool = False


log = bus_bench.log


def _ms(seconds: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of durations in seconds, in milliseconds (None if empty)."""
    return bus_bench.percentile(sorted(seconds), fraction) * 1000 if seconds else None


# where the driver reads the deliveries' state -----------------------------------------------
class _Status(msgspec.Struct):
    status: str


_status_decoder = msgspec.json.Decoder(_Status)


class StoreStatus:
    """A ``StatusSource`` reading Ingestion's records in this process, not over HTTP.

    This is the state ``GET /deliveries/{id}`` answers from (``store.view()``): a handler's change
    shows there as soon as the handler makes it (its commit follows). Each poll decodes only the
    ``status`` of a record that is not settled yet (a few microseconds), and the whole record
    once, when it has settled. ``last_settled`` is the latest settling event's time seen.
    """

    def __init__(self, store: ServiceStore) -> None:
        self.store = store
        self.last_settled = 0.0
        self._raw: Callable[[str, str], bytes | None] | None = getattr(store.state, "raw", None)

    async def records(self, delivery_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for delivery_id in delivery_ids:
            record = await self._settled(delivery_id)
            if record is not None:
                found[delivery_id] = record
                self.last_settled = max(self.last_settled, settled_time(record) or 0.0)
        return found

    def settled_now(self, delivery_id: str) -> bool:
        """Whether the record shows the delivery settled (the fast path only)."""
        raw = self._raw(DELIVERIES, delivery_id) if self._raw is not None else None
        return raw is not None and _status_decoder.decode(raw).status in SETTLED_STATUSES

    async def _settled(self, delivery_id: str) -> dict[str, Any] | None:
        if self._raw is None:  # the store changed shape: read through the public view
            record: dict[str, Any] | None = await self.store.view().get(DELIVERIES, delivery_id)
            return record if record is not None and record["status"] in SETTLED_STATUSES else None
        raw = self._raw(DELIVERIES, delivery_id)
        if raw is None or _status_decoder.decode(raw).status not in SETTLED_STATUSES:
            return None
        decoded: dict[str, Any] = msgspec.json.decode(raw)
        return decoded


def settled_time(record: dict[str, Any]) -> float | None:
    """Epoch seconds of the event that gave the record its status (as the driver picks it)."""
    for entry in record.get("history", []):
        if entry.get("status") == record["status"] and entry.get("time"):
            return parse_timestamp(entry["time"])
    return None


class Progress:
    """The driver's ``progress`` callback: logs each tenth, remembers when posting ended."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.began = time.perf_counter()
        self.posted_seconds: float | None = None
        self._logged: dict[str, int] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        step = done * 10 // max(total, 1)
        if step <= self._logged.get(phase, -1):
            return
        self._logged[phase] = step
        elapsed = time.perf_counter() - self.began
        if phase == "requested" and done == total:
            self.posted_seconds = elapsed
        log(f"[{self.label}] {phase} {done:,}/{total:,} at {elapsed:.1f} s")


# clients -------------------------------------------------------------------------------------
class Poster(Protocol):
    """What the driver uses of its client: ``post(url, json=...)`` -> ``status_code``, ``json()``
    (:class:`AsgiClient` in process, or :class:`AiohttpClient` over real sockets)."""

    async def post(self, url: str, **kwargs: Any) -> Any: ...


class PacedClient:
    """Sends the i-th POST through ``client`` at ``start + i / rate`` (``loop.time()``).

    The driver posts through it unchanged. ``lags`` is how late each POST left against its slot
    (a large lag means the injector could not keep the rate: too few requests allowed in flight,
    or a starved event loop). ``sent`` lists (delivery id, the moment its request left).
    """

    def __init__(self, client: Poster, rate: float) -> None:
        self.client = client
        self.rate = rate
        self.start: float | None = None
        self.slots = 0
        self.lags: list[float] = []
        self.sent: list[tuple[str, float]] = []
        self.last_sent = 0.0

    async def post(self, url: str, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        due = self.start + self.slots / self.rate
        self.slots += 1
        if (delay := due - loop.time()) > 0:
            await asyncio.sleep(delay)
        now = loop.time()
        self.lags.append(now - due)
        self.last_sent = now
        body = kwargs.get("json")
        if isinstance(body, dict) and isinstance(body.get("deliveryId"), str):
            self.sent.append((body["deliveryId"], now))
        return await self.client.post(url, **kwargs)


@dataclass(frozen=True)
class _Response:
    status_code: int
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


class AiohttpClient:
    """``post`` over an ``aiohttp`` session with at most ``limit`` connections.

    Over real sockets the driver uses this instead of ``httpx.AsyncClient``: with 100+
    connections, httpcore's pool spends more CPU assigning requests to connections than the
    server spends on them (``AsyncConnectionPool._assign_requests_to_connections`` took a
    third of the process in a profile), and client and server share this process.
    """

    def __init__(self, base_url: str, limit: int) -> None:
        connector = aiohttp.TCPConnector(limit=limit)
        timeout = aiohttp.ClientTimeout(total=120)
        self.session = aiohttp.ClientSession(base_url, connector=connector, timeout=timeout)

    async def post(self, url: str, **kwargs: Any) -> _Response:
        async with self.session.post(url, **kwargs) as response:
            return _Response(response.status, await response.read())

    async def close(self) -> None:
        await self.session.close()


Clients = Callable[[], contextlib.AbstractAsyncContextManager[Any]]
"""Opens a client on the system under test (``async with clients() as client``)."""


class AsgiClient:
    """``post`` straight into the ASGI app: one scope, the JSON body in one message, the answer
    gathered from the app's messages. What ``httpx.ASGITransport`` does, without httpx's request
    and response machinery (a sixth of the process in a profile): the client shares the process
    with the system it measures, so its cost is kept small."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def post(self, url: str, *, json: Any) -> _Response:
        body = msgspec.json.encode(json)
        path, _, query = url.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [
                (b"host", b"bench"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("bench", 80),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Future()  # no disconnect before the answer is complete
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return _Response(status, b"".join(chunks))


@contextlib.asynccontextmanager
async def in_process(system: DroneDeliverySystem) -> AsyncIterator[Clients]:
    """Clients calling the ASGI app directly (:class:`AsgiClient`): no socket, no server."""

    @contextlib.asynccontextmanager
    async def clients() -> AsyncIterator[AsgiClient]:
        yield AsgiClient(system.app)

    yield clients


@contextlib.asynccontextmanager
async def over_http(system: DroneDeliverySystem, concurrency: int) -> AsyncIterator[Clients]:
    """Serve the app with uvicorn on a free local port (this process and event loop); clients
    are aiohttp sessions over TCP keep-alive connections."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        system.app, log_level="warning", access_log=False, lifespan="off", backlog=2048
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)

    @contextlib.asynccontextmanager
    async def clients() -> AsyncIterator[AiohttpClient]:
        client = AiohttpClient(f"http://127.0.0.1:{port}", max(concurrency, PACED_CONCURRENCY))
        try:
            yield client
        finally:
            await client.close()

    try:
        yield clients
    finally:
        server.should_exit = True
        await serving
        sock.close()


@contextlib.asynccontextmanager
async def running_system(
    directory: Path, p: Params
) -> AsyncIterator[tuple[Bus, DroneDeliverySystem]]:
    """A fresh Drone Delivery system on a SQLite bus in ``directory`` (which exists)."""
    settings = Settings.from_env(
        {
            "DRONE_DELIVERY_FLEET_SIZE": str(p.fleet_size),
            "DRONE_DELIVERY_FLIGHT_SECONDS": str(p.flight_seconds),
            "DRONE_DELIVERY_DEADLINE_SECONDS": str(p.deadline_seconds),
        }
    )
    async with (
        Bus("sqlite:///" + str((directory / "bus.db").resolve())) as bus,
        DroneDeliverySystem(bus, data_dir=directory, settings=settings) as system,
    ):
        yield bus, system


# the measurements ----------------------------------------------------------------------------
def _outcome(report: DriveReport) -> dict[str, Any]:
    summary = report.to_dict()
    return {
        key: summary[key]
        for key in ("requested", "refused", "completed", "compensated", "failed", "lost")
    }


async def peak(
    system: DroneDeliverySystem, clients: Clients, p: Params, label: str
) -> dict[str, Any]:
    """Completed deliveries/s with ``p.deliveries`` requests, ``p.concurrency`` in flight."""
    async with clients() as client:
        log(f"[{label}] warm-up: {p.warmup_deliveries} deliveries ...")
        warm = await drive(
            client,
            deliveries=p.warmup_deliveries,
            concurrency=p.concurrency,
            settle_seconds=p.settle_seconds,
            poll_seconds=p.poll_seconds,
            status=StoreStatus(system.ingestion.store),
        )
        if warm.lost or warm.refused:
            log(f"[{label}] warm-up: {_outcome(warm)}")
        source = StoreStatus(system.ingestion.store)
        progress = Progress(label)
        gc.collect()
        began = system.clock.now()
        wall, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        report = await drive(
            client,
            deliveries=p.deliveries,
            concurrency=p.concurrency,
            settle_seconds=p.settle_seconds,
            poll_seconds=p.poll_seconds,
            status=source,
            progress=progress,
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        loop_cpu = time.thread_time() - loop_cpu
    seconds = source.last_settled - began if source.last_settled else float("nan")
    summary = report.to_dict()
    result = {
        **_outcome(report),
        "deliveries_per_s": report.completed / seconds,
        "seconds": seconds,
        "posted_seconds": progress.posted_seconds,
        "posts_per_s": p.deliveries / progress.posted_seconds if progress.posted_seconds else None,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "cpu_share": cpu / wall,
        "cpu_ms_per_delivery": cpu * 1000 / p.deliveries,
        "loop_cpu_ms_per_delivery": loop_cpu * 1000 / p.deliveries,
        "concurrency": p.concurrency,
        "latency_under_saturation": {key: summary[key] for key in ("p50_ms", "p95_ms", "p99_ms")},
    }
    log(
        f"[{label}] {result['deliveries_per_s']:,.0f} deliveries/s, {report.completed:,} completed, "
        f"{len(report.lost)} lost, cpu {cpu:.1f} s of {wall:.1f} s wall"
    )
    return result


async def _watch_visible(
    client: PacedClient, source: StoreStatus, visible: list[float], stop: asyncio.Event
) -> None:
    """Record, for each request sent, how long until Ingestion's record shows it settled.

    Checks the unsettled ones every ``VISIBLE_POLL_SECONDS`` (a few at half load); returns once
    ``stop`` is set and every request sent has been seen settled.
    """
    loop = asyncio.get_running_loop()
    pending: dict[str, float] = {}
    taken = 0
    while True:
        stopping = stop.is_set()
        sent = client.sent
        pending.update(sent[taken:])
        taken = len(sent)
        now = loop.time()
        for delivery_id, started in list(pending.items()):
            if source.settled_now(delivery_id):
                del pending[delivery_id]
                visible.append(now - started)
        if stopping and not pending:
            return
        await asyncio.sleep(VISIBLE_POLL_SECONDS)


async def paced(
    system: DroneDeliverySystem,
    clients: Clients,
    p: Params,
    rate: float,
    seconds: float,
    label: str,
    measured: bool,
) -> dict[str, Any]:
    """Drive ``rate`` deliveries/s for ``seconds``; the driver's latencies and the pacing."""
    count = max(1, round(rate * seconds))
    # Enough requests in flight that a slot never waits for a free one: a request holds one from
    # the moment the driver hands it over (it then sleeps until its slot) until its response.
    concurrency = max(p.concurrency, PACED_CONCURRENCY)
    source = StoreStatus(system.ingestion.store)
    visible: list[float] = []
    stop = asyncio.Event()
    gc_pauses = bus_bench.GcPauses()
    async with clients() as inner:
        client = PacedClient(inner, rate)
        watcher = asyncio.create_task(_watch_visible(client, source, visible, stop))
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        with gc_pauses if measured else contextlib.nullcontext():
            report = await drive(
                client,
                deliveries=count,
                concurrency=concurrency,
                settle_seconds=p.settle_seconds,
                poll_seconds=p.poll_seconds,
                status=source,
                progress=Progress(label) if measured else None,
            )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stop.set()
        try:
            await asyncio.wait_for(watcher, 10)
        except TimeoutError:
            log(f"[{label}] client-visible watcher did not see every delivery settle")
        sending = (client.last_sent - client.start) if client.start is not None else 0.0
    summary = report.to_dict()
    result = {
        **_outcome(report),
        "target_rate": rate,
        "achieved_rate": (count - 1) / sending if sending > 0 else None,
        "seconds": seconds,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "cpu_share": cpu / wall,
        "cpu_ms_per_delivery": cpu * 1000 / count,
        "concurrency": concurrency,
        "p50_ms": summary["p50_ms"],
        "p95_ms": summary["p95_ms"],
        "p99_ms": summary["p99_ms"],
        "max_ms": max(report.latencies_ms, default=None),
        "client_visible_p50_ms": _ms(visible, 0.50),
        "client_visible_p99_ms": _ms(visible, 0.99),
        "injection_lag_p50_ms": _ms(client.lags, 0.50),
        "injection_lag_p99_ms": _ms(client.lags, 0.99),
        "injection_lag_max_ms": max(client.lags, default=0.0) * 1000,
    }
    if measured:
        result["gc"] = gc_pauses.summary()
        log(
            f"[{label}] {result['achieved_rate'] or 0:,.0f}/s for {seconds:g} s: "
            f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms "
            f"(client-visible p99 {result['client_visible_p99_ms'] or float('nan'):.1f} ms)"
        )
    return result


async def half_load(
    system: DroneDeliverySystem, clients: Clients, p: Params, rate: float, label: str
) -> dict[str, Any]:
    """Latency at ``rate``: an unrecorded warm-up at that rate, then the measured window."""
    log(f"[{label}] warm-up at {rate:,.0f}/s for {p.half_load_warmup_seconds:g} s ...")
    await paced(system, clients, p, rate, p.half_load_warmup_seconds, label, measured=False)
    log(f"[{label}] {rate:,.0f}/s for {p.half_load_seconds:g} s ...")
    return await paced(system, clients, p, rate, p.half_load_seconds, label, measured=True)


async def bus_counters(bus: Bus) -> dict[str, Any]:
    """Deliveries still queued and dead letters per subscription (all should be 0 at the end)."""
    totals = {"queued": 0, "deadLettered": 0, "dropped": 0}
    subscriptions = 0
    for topic in await bus.list_topics():
        for subscription in await bus.list_subscriptions(topic.name):
            subscriptions += 1
            counts = await bus.counters(topic.name, subscription.name)
            for key in totals:
                totals[key] += counts.get(key, 0)
    return {"subscriptions": subscriptions, **totals}


async def measure_app(directory: Path, p: Params, mode: str) -> dict[str, Any]:
    """Peak then half load on one fresh system, in-process (ASGI) or over HTTP (uvicorn)."""
    async with running_system(directory, p) as (bus, system):
        opener = in_process(system) if mode == "asgi" else over_http(system, p.concurrency)
        async with opener as clients:
            top = await peak(system, clients, p, f"{mode} peak")
            rate = p.half_load_rate or p.load * top["deliveries_per_s"]
            if not math.isfinite(rate) or rate <= 0:
                raise RuntimeError(f"no half-load rate from a peak of {top['deliveries_per_s']}")
            half = await half_load(system, clients, p, rate, f"{mode} half load")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bus.idle(), 10)
        counters = await bus_counters(bus)
    return {"peak": top, "half_load": half, "bus_after": counters}


async def measure_raw(directory: Path, p: Params) -> dict[str, Any]:
    """bench/bus.py's raw limits, and its SQLite 3-hop chain peak, on this machine now."""
    raw: dict[str, Any] = {}
    log(f"[raw] asyncio.Queue 3-hop chain ({p.raw_chains * 5:,} items) ...")
    raw["raw_queue"] = await bus_bench.raw_queue(p.raw_chains * 5)
    log(f"[raw] sqlite3 append+ack ({3 * p.raw_chains:,} rows) ...")
    payload = msgspec.json.encode(bus_bench.start_event(0.0))
    raw["raw_sqlite"] = bus_bench.raw_sqlite(directory, 3 * p.raw_chains, 100, payload)
    if p.bus_chain_peak:
        log(f"[raw] bus 3-hop chain peak on SQLite ({p.raw_chains:,} chains) ...")
        chain_params = bus_bench.Params(chains=p.raw_chains)
        backends = bus_bench.Backends(directory)
        raw["bus_sqlite_chain_peak"] = await bus_bench.chain_peak(backends, "sqlite", chain_params)
    for name, section in raw.items():
        log(f"[raw] {name}: {section.get('chains_per_s', 0):,.0f} chains/s")
    return raw


async def run_all(p: Params, directory: Path) -> tuple[dict[str, Any], bool]:
    load_at_start = os.getloadavg()
    began, cpu_began = time.perf_counter(), time.process_time()
    errors: dict[str, str] = {}

    async def attempt(name: str, measurement: Any) -> Any:
        try:
            return await measurement
        except Exception as exc:  # reported in the JSON; the other measurements still run
            log(f"[{name}] FAILED: {exc!r}")
            errors[name] = repr(exc)
            return None

    raw = await attempt("raw", measure_raw(directory / "raw", p)) or {}
    app = await attempt("asgi", measure_app(directory / "asgi", p, "asgi"))
    http = await attempt("http", measure_app(directory / "http", p, "http")) if p.http else None

    top = (app or {}).get("peak") or {}
    half = (app or {}).get("half_load") or {}
    deliveries_per_s = top.get("deliveries_per_s")
    p99 = half.get("p99_ms")
    half_rate = half.get("achieved_rate")
    raw_sqlite_chains = (raw.get("raw_sqlite") or {}).get("chains_per_s")
    bus_chains = (raw.get("bus_sqlite_chain_peak") or {}).get("chains_per_s")
    lost = None if app is None else top["lost"] + half["lost"]
    meets = {
        "deliveries_per_s": deliveries_per_s is not None
        and deliveries_per_s >= TARGETS["deliveries_per_s"],
        # Only a half-load run at the target's half rate (500/s) or more can show the p99 target.
        "p99_ms": p99 is not None
        and p99 < TARGETS["p99_ms"]
        and half.get("target_rate", 0.0) >= TARGET_LOAD * TARGETS["deliveries_per_s"],
    }
    report: dict[str, Any] = {
        "deliveries_per_s": deliveries_per_s,
        "p50_ms": half.get("p50_ms"),
        "p99_ms": p99,
        "lost": lost,
        "completed": top.get("completed"),
        "compensated": top.get("compensated"),
        "peak_p99_ms": (top.get("latency_under_saturation") or {}).get("p99_ms"),
        "half_load_rate": half_rate,
        "cpu_ms_per_delivery": top.get("cpu_ms_per_delivery"),
        "loop_cpu_ms_per_delivery": top.get("loop_cpu_ms_per_delivery"),
        "raw_sqlite_chains_per_s": raw_sqlite_chains,
        "raw_queue_chains_per_s": (raw.get("raw_queue") or {}).get("chains_per_s"),
        "bus_sqlite_chains_per_s": bus_chains,
        "deliveries_vs_raw_sqlite_chains": bus_bench.ratio(deliveries_per_s, raw_sqlite_chains),
        "deliveries_vs_bus_sqlite_chains": bus_bench.ratio(deliveries_per_s, bus_chains),
        "targets": TARGETS,
        "meets_targets": meets,
        "peak": top or None,
        "half_load": half or None,
        "bus_after": (app or {}).get("bus_after"),
        "http": http,
        "raw": raw,
        "params": asdict(p),
        "machine": {
            **bus_bench.machine(),
            "sqlite": sqlite3.sqlite_version,
            "choreograph": __version__,
            "httpx": httpx.__version__,
            "msgspec": msgspec.__version__,
            **bus_bench.git_state("src", "apps"),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "total_seconds": time.perf_counter() - began,
        "total_cpu_seconds": time.process_time() - cpu_began,
    }
    if errors:
        report["errors"] = errors
    ok = not errors and lost == 0
    if http is not None:
        ok = ok and http["peak"]["lost"] + http["half_load"]["lost"] == 0
    return report, ok


def parse_args(argv: list[str] | None = None) -> tuple[Params, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run for smoke tests")
    parser.add_argument("--deliveries", type=int, help="deliveries in the peak run")
    parser.add_argument("--concurrency", type=int, help="requests in flight at peak")
    parser.add_argument("--load", type=float, help="half-load rate as a fraction of the peak")
    parser.add_argument("--half-load-rate", type=float, help="fixed half-load rate (deliveries/s)")
    parser.add_argument("--half-load-seconds", type=float, help="length of the half-load window")
    parser.add_argument("--fleet-size", type=int, help="DRONE_DELIVERY_FLEET_SIZE")
    parser.add_argument("--flight-seconds", type=float, help="DRONE_DELIVERY_FLIGHT_SECONDS")
    parser.add_argument("--settle-seconds", type=float, help="longest wait for settlement")
    parser.add_argument("--raw-chains", type=int, help="size of the raw measurements (bus.py)")
    parser.add_argument(
        "--no-bus-chain", action="store_true", help="skip bus.py's SQLite chain peak"
    )
    parser.add_argument("--http", action="store_true", help="also drive the app over uvicorn")
    parser.add_argument("--dir", help="where to put the SQLite files (default: a temp dir)")
    args = parser.parse_args(argv)
    params = Params()
    if args.quick:
        params = replace(
            params,
            deliveries=1_000,
            warmup_deliveries=100,
            half_load_seconds=3.0,
            half_load_warmup_seconds=0.5,
            raw_chains=2_000,
        )
    overrides = {
        "deliveries": args.deliveries,
        "concurrency": args.concurrency,
        "load": args.load,
        "half_load_rate": args.half_load_rate,
        "half_load_seconds": args.half_load_seconds,
        "fleet_size": args.fleet_size,
        "flight_seconds": args.flight_seconds,
        "settle_seconds": args.settle_seconds,
        "raw_chains": args.raw_chains,
    }
    params = replace(
        params, **{key: value for key, value in overrides.items() if value is not None}
    )
    if args.no_bus_chain:
        params = replace(params, bus_chain_peak=False)
    if args.http:
        params = replace(params, http=True)
    return params, args.dir


def main(argv: list[str] | None = None) -> int:
    params, directory = parse_args(argv)
    tune_process()  # as every ``choreograph`` command does
    with tempfile.TemporaryDirectory(prefix="drone-bench-", dir=directory) as tmp:
        for name in ("raw", "asgi", "http"):
            (Path(tmp) / name).mkdir()
        report, ok = asyncio.run(run_all(params, Path(tmp)))
    json.dump(bus_bench.finite(report), sys.stdout, indent=2, allow_nan=False)
    print()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
