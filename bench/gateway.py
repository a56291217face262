"""HTTP publish requests/s and webhook deliveries/s, each beside its raw limit from the same run.

Run ``python bench/gateway.py`` (``--quick`` for a short smoke run). Progress goes to stderr;
stdout gets one JSON object. Servers run in their own OS processes (``bench/_gateway_server.py``:
uvicorn, one worker, no access log, log level warning), so a server and the client driving it
never share an event loop; the cores are shared as the OS schedules them (no pinning).

``publish``
    Requests/s of ``POST /topics/bench/api/events`` (``aeg-sas-key``) against gateway processes
    on a ``sqlite:///`` bus and on ``memory://``; topic ``bench`` has one subscription with no
    handler attached, so each event is stored as one queued delivery and nothing is delivered.
    ``single``: one structured CloudEvent (``application/cloudevents+json``) per request;
    ``batch``: ``--batch`` events per request (``application/cloudevents-batch+json``), also as
    events/s. Every event id is new (the topic de-duplicates ids). An aiohttp client in this
    process keeps ``--connections`` connections busy (one task per connection, each posting as
    soon as its previous answer arrived) and counts the 200s in ``--seconds`` after ``--warmup``.
``raw``
    The same client, requests and bodies against a bare ASGI app on the same uvicorn settings
    that reads the body and answers 200; ``raw_starlette`` is one Starlette route doing the
    same (the framework's share, for reading the numbers).
``webhook``
    A receiver process (the same bare app; it counts POSTs and answers ``GET`` with its count and
    the ``time.monotonic()`` of the last one). In this process, ``Bus("memory://",
    endpoints=WebhookEndpointFactory(...))`` with one webhook subscription to the receiver,
    marked validated with ``set_provisioning_state(..., "Succeeded")`` (no handshake), and
    ``maxConcurrentDeliveries`` from ``--delivery-concurrency``. ``--deliveries`` events are
    published in batches of 100; deliveries/s = N / (the receiver's time of the N-th POST - the
    moment before the first publish), both on CLOCK_MONOTONIC. ``raw_client``: the session of a
    ``WebhookEndpointFactory`` with the same settings posting the same body and headers to the
    same receiver from as many tasks as connections, timed like ``publish``;
    ``raw_client_httpx``: httpx doing the same, for reference (the choice of delivery client).

Every point is measured at every connection count (or concurrency) in each of ``--rounds``
rounds, the targets interleaved within a round so that a busy spell on the machine hits the raw
limit and the system alike; each figure is the best point. Every point records the CPU used by
this process, by the server process and by the rest of the machine.

Top-level keys: ``publish_per_s`` (single-event publishes/s, SQLite), ``raw_requests_per_s``,
``publish_vs_raw``, ``webhook_deliveries_per_s``, ``raw_client_requests_per_s``,
``webhook_vs_raw`` and more (see bench/README.md), ``targets`` and ``meets_targets``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import aiohttp

from bus import BenchError, figure, finite, git_state, log, machine, ratio
from choreograph import (
    Attempt,
    Bus,
    CloudEvent,
    SubscriptionSpec,
    WebHookDestination,
    __version__,
)
from choreograph.gateway.webhook import (
    WebhookEndpointFactory,
    WebhookSettings,
    notification_request,
)

TARGETS = {"publish_vs_raw": 0.5, "webhook_vs_raw": 0.5}
SERVER_SCRIPT = Path(__file__).resolve().parent / "_gateway_server.py"
SOURCE = "/bench"
START_TIMEOUT_SECONDS = 30.0
WAIT_LIMIT_SECONDS = 120.0
"""Longest wait for deliveries to arrive; past it the run reports a hang instead of blocking."""
REQUEST_TIMEOUT_SECONDS = 60.0
MARK = b"\x00"


@dataclass(frozen=True)
class Params:
    """The sizes of a run (reported under ``params``)."""

    rounds: int = 2
    connections: tuple[int, ...] = (16, 64)
    warmup_seconds: float = 0.5
    seconds: float = 2.0
    batch: int = 100
    deliveries: int = 10_000
    delivery_warmup: int = 1_000
    delivery_concurrency: tuple[int, ...] = (64, 128, 256)
    httpx_seconds: float = 2.0
    only: str | None = None


# CPU accounting ----------------------------------------------------------------------------
def _process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of another process (Linux ``/proc``), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _machine_jiffies() -> tuple[int, int, int] | None:
    """(busy, steal, total) clock ticks of all CPUs since boot (Linux ``/proc/stat``)."""
    try:
        line = Path("/proc/stat").read_text().split("\n", 1)[0]
        values = [int(value) for value in line.split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = values
    except (OSError, ValueError):
        return None
    return user + nice + system + irq + softirq, steal, sum(values)


class CpuWindow:
    """CPU use over a timed window: this process (all threads), one server process, the rest."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.wall = time.perf_counter()
        self.client = time.process_time()
        self.server_cpu = server.cpu_seconds()
        self.machine = _machine_jiffies()

    def shares(self, items: int) -> dict[str, float | None]:
        """CPU seconds per wall second: ``client_cpu_share`` (this process),
        ``server_cpu_share``, ``other_cpu_cores`` (every other process, the kernel's own work
        included) and ``steal_cores`` (time the hypervisor gave to other machines); and the
        client's and the server's CPU microseconds per item (request or delivery) of the window,
        steadier than a rate when the machine is busy."""
        wall = time.perf_counter() - self.wall
        client_seconds = time.process_time() - self.client
        client = client_seconds / wall
        server_cpu = self.server.cpu_seconds()
        server = server_seconds = None
        if server_cpu is not None and self.server_cpu is not None:
            server_seconds = server_cpu - self.server_cpu
            server = server_seconds / wall
        machine = _machine_jiffies()
        other = steal = None
        if machine is not None and self.machine is not None and machine[2] > self.machine[2]:
            cores = os.cpu_count() or 1
            total = machine[2] - self.machine[2]
            other = (machine[0] - self.machine[0]) / total * cores - client - (server or 0.0)
            steal = (machine[1] - self.machine[1]) / total * cores
        return {
            "client_cpu_share": client,
            "server_cpu_share": server,
            "other_cpu_cores": other,
            "steal_cores": steal,
            "client_cpu_us_per_item": client_seconds / items * 1e6 if items else None,
            "server_cpu_us_per_item": (
                server_seconds / items * 1e6 if items and server_seconds is not None else None
            ),
        }


def _cpu_text(point: dict[str, Any]) -> str:
    def text(value: float | None) -> str:
        return "?" if value is None else f"{value:.2f}"

    return (
        f"CPU client {text(point['client_cpu_share'])} server {text(point['server_cpu_share'])} "
        f"other {text(point['other_cpu_cores'])}"
    )


# server processes --------------------------------------------------------------------------
class Server:
    """A running ``_gateway_server.py`` process and what it printed once serving."""

    def __init__(self, process: asyncio.subprocess.Process, info: dict[str, Any]) -> None:
        self.process = process
        self.info = info
        self.pid: int = info["pid"]
        self.base_url = f"http://127.0.0.1:{info['port']}"

    def cpu_seconds(self) -> float | None:
        return _process_cpu_seconds(self.pid)

    def described(self) -> dict[str, Any]:
        """What it printed, without the topic key."""
        return {key: value for key, value in self.info.items() if key != "key"}


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _ready(process: asyncio.subprocess.Process, command: tuple[str, ...]) -> Server:
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_SECONDS)
    except TimeoutError:
        raise BenchError(f"server {command} did not start within 30 s") from None
    if not line:
        raise BenchError(f"server {command} exited ({await process.wait()}) before serving")
    return Server(process, json.loads(line))


@contextlib.asynccontextmanager
async def servers(*commands: tuple[str, ...]) -> AsyncIterator[list[Server]]:
    """Start a ``_gateway_server.py`` process per command (at once) and stop them all on exit
    (SIGTERM, then SIGKILL after 10 s), whatever happens."""
    processes: list[asyncio.subprocess.Process] = []
    try:
        for command in commands:
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(SERVER_SCRIPT),
                    *command,
                    "--parent",
                    str(os.getpid()),
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        started = await asyncio.gather(
            *(
                _ready(process, command)
                for process, command in zip(processes, commands, strict=True)
            ),
            return_exceptions=True,
        )
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        yield [outcome for outcome in started if isinstance(outcome, Server)]
    finally:
        await asyncio.gather(*(_stop(process) for process in processes))


# request bodies ----------------------------------------------------------------------------
class Bodies:
    """Request bodies from a template: every ``MARK`` becomes this request's number, so every
    event id is new (topics de-duplicate ids) at the cost of one ``bytes.join``."""

    def __init__(self, template: bytes) -> None:
        self.parts = template.split(MARK)
        self.size = len(b"100000".join(self.parts))  # a typical body's length
        self._numbers = itertools.count()

    def __call__(self) -> bytes:
        return str(next(self._numbers)).encode().join(self.parts)


def _event_json(event_id: str) -> str:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": SOURCE,
            "type": "Bench.Publish",
            "datacontenttype": "application/json",
            "data": {"orderId": "o-1", "amount": 12.5, "currency": "EUR"},
        },
        separators=(",", ":"),
    )


_runs = itertools.count()


def publish_bodies(kind: str, batch: int) -> tuple[Bodies, str, int]:
    """Bodies (with ids never used before), content type and events per request of a kind."""
    run = f"r{next(_runs)}"
    if kind == "single":
        content_type = "application/cloudevents+json; charset=utf-8"
        return Bodies(_event_json(f"{run}-\x00").encode()), content_type, 1
    events = ",".join(_event_json(f"{run}-\x00-{j}") for j in range(batch))
    content_type = "application/cloudevents-batch+json; charset=utf-8"
    return Bodies(f"[{events}]".encode()), content_type, batch


# the driver --------------------------------------------------------------------------------
Post = Callable[[bytes], Awaitable[int]]


def aiohttp_post(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], **options: Any
) -> Post:
    async def post(body: bytes) -> int:
        async with session.post(url, data=body, headers=headers, **options) as response:
            await response.read()
            return response.status

    return post


async def drive(
    post: Post,
    make_body: Callable[[], bytes],
    connections: int,
    warmup: float,
    seconds: float,
    server: Server,
) -> dict[str, Any]:
    """Keep ``connections`` requests in flight (one task each, posting again as soon as its
    answer arrived); count the 200s answered in a window of ``seconds`` after ``warmup``.

    Raises BenchError if any request failed or was answered with another status.
    """
    completed = failed = 0
    first_failure: str | None = None
    stopping = False

    async def worker() -> None:
        nonlocal completed, failed, first_failure
        while not stopping:
            try:
                status = await post(make_body())
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                failed += 1
                first_failure = first_failure or repr(exc)
                await asyncio.sleep(0.01)
                continue
            if status == 200:
                completed += 1
            else:
                failed += 1
                first_failure = first_failure or f"HTTP {status}"

    tasks = [asyncio.create_task(worker()) for _ in range(connections)]
    try:
        await asyncio.sleep(warmup)
        gc.collect()
        before, window = completed, CpuWindow(server)
        await asyncio.sleep(seconds)
        requests = completed - before
        cpu = window.shares(requests)
        wall = time.perf_counter() - window.wall
    finally:
        stopping = True
        _, pending = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if failed:
        raise BenchError(f"{failed} requests failed; the first: {first_failure}")
    return {
        "connections": connections,
        "requests": requests,
        "seconds": wall,
        "requests_per_s": requests / wall,
        **cpu,
    }


class Section:
    """Runs measurements; a failing one is logged and recorded, and the others still run."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    async def run(self, name: str, measurement: Awaitable[Any]) -> Any:
        try:
            return await measurement
        except Exception as exc:
            log(f"  {name} FAILED: {exc!r}")
            self.errors[name] = repr(exc)
            return None


def best_of(points: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The best point's figures, with every point under ``points``; None without points."""
    if not points:
        return None
    best = max(points, key=lambda point: point[key])
    return {**best, "points": points}


# publish -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where publish requests of one kind go."""

    name: str
    """``raw``, ``raw_starlette``, ``sqlite`` or ``memory``."""
    kind: str
    """``single`` or ``batch``."""
    server: Server


async def publish_point(
    target: Target, connections: int, p: Params, round_number: int
) -> dict[str, Any]:
    """Requests/s of ``target``'s kind of publish with ``connections`` connections."""
    bodies, content_type, per_request = publish_bodies(target.kind, p.batch)
    headers = {"Content-Type": content_type}
    if key := target.server.info.get("key"):
        headers["aeg-sas-key"] = key
    url = f"{target.server.base_url}/topics/bench/api/events"
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        post = aiohttp_post(session, url, headers)
        point = await drive(post, bodies, connections, p.warmup_seconds, p.seconds, target.server)
    point = {"round": round_number, **point, "body_bytes": bodies.size}
    if per_request > 1:
        point["events_per_request"] = per_request
        point["events_per_s"] = point["requests_per_s"] * per_request
    events = f" ({point['events_per_s']:,.0f} events/s)" if per_request > 1 else ""
    log(
        f"  {target.name} {target.kind} @{connections}: {point['requests_per_s']:,.0f} "
        f"requests/s{events}, {_cpu_text(point)}"
    )
    return point


async def publish_phase(p: Params, directory: Path, section: Section) -> dict[str, Any]:
    """Every publish target at every connection count, interleaved, in each round."""

    def sqlite(kind: str) -> str:
        return "sqlite:///" + str((directory / f"gateway-{kind}.db").resolve())

    log("[publish] starting the servers ...")
    async with servers(
        ("bare",),
        ("starlette",),
        ("gateway", "--bus", sqlite("single")),
        ("gateway", "--bus", sqlite("batch")),
        ("gateway", "--bus", "memory://"),
        ("gateway", "--bus", "memory://"),
    ) as (bare, starlette, sqlite_single, sqlite_batch, memory_single, memory_batch):
        order = [
            Target("raw", "single", bare),
            Target("sqlite", "single", sqlite_single),
            Target("memory", "single", memory_single),
            Target("raw_starlette", "single", starlette),
            Target("raw", "batch", bare),
            Target("sqlite", "batch", sqlite_batch),
            Target("memory", "batch", memory_batch),
        ]
        points: dict[tuple[str, str], list[dict[str, Any]]] = {
            (target.name, target.kind): [] for target in order
        }
        for round_number in range(1, p.rounds + 1):
            log(f"[publish] round {round_number} of {p.rounds}")
            for connections in p.connections:
                for target in order:
                    point = await section.run(
                        f"{target.name} {target.kind} @{connections} round {round_number}",
                        publish_point(target, connections, p, round_number),
                    )
                    if point is not None:
                        points[(target.name, target.kind)].append(point)
        result: dict[str, Any] = {
            "servers": {
                "raw": bare.described(),
                "raw_starlette": starlette.described(),
                "sqlite": sqlite_single.described(),
                "memory": memory_single.described(),
            }
        }
    for (name, kind), measured in points.items():
        result.setdefault(name, {})[kind] = best_of(measured, "requests_per_s")
    return result


# webhook delivery --------------------------------------------------------------------------
def webhook_settings(concurrency: int) -> WebhookSettings:
    """The factory's settings, with as many connections to one host as concurrent deliveries
    (its defaults, 256 and 64, at 64)."""
    return WebhookSettings(
        allow_private_addresses=True,
        max_connections=max(256, concurrency),
        max_connections_per_host=concurrency,
    )


def delivery_request() -> tuple[bytes, dict[str, str]]:
    """Body and headers of one webhook delivery, exactly as the webhook endpoint builds them."""
    event = CloudEvent(
        type="Bench.Deliver", source=SOURCE, data={"orderId": "o-1", "amount": 12.5, "i": 0}
    )
    attempt = Attempt(
        topic="hook",
        subscription="receiver",
        delivery_count=0,
        event_delivery_schema="CloudEventSchemaV1_0",
        batched=False,
    )
    return notification_request([event], attempt)


async def raw_client(
    receiver: Server, concurrency: int, p: Params, round_number: int
) -> dict[str, Any]:
    """Requests/s of a webhook factory's own session posting a delivery's body and headers."""
    body, headers = delivery_request()
    async with WebhookEndpointFactory(webhook_settings(concurrency)) as factory:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        post = aiohttp_post(
            factory.session,
            f"{receiver.base_url}/hook",
            headers,
            allow_redirects=False,
            timeout=timeout,
        )
        point = await drive(post, lambda: body, concurrency, p.warmup_seconds, p.seconds, receiver)
    point = {"round": round_number, **point, "body_bytes": len(body)}
    log(
        f"  raw_client @{concurrency}: {point['requests_per_s']:,.0f} requests/s, {_cpu_text(point)}"
    )
    return point


async def raw_client_httpx(receiver: Server, concurrency: int, p: Params) -> dict[str, Any]:
    """The same requests through ``httpx.AsyncClient`` with as many connections."""
    import httpx

    body, headers = delivery_request()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        url = f"{receiver.base_url}/hook"

        async def post(data: bytes) -> int:
            return (await client.post(url, content=data, headers=headers)).status_code

        point = await drive(
            post, lambda: body, concurrency, p.warmup_seconds, p.httpx_seconds, receiver
        )
    point["httpx"] = httpx.__version__
    log(f"  httpx @{concurrency}: {point['requests_per_s']:,.0f} requests/s, {_cpu_text(point)}")
    return point


async def webhook_deliveries(
    receiver: Server, concurrency: int, p: Params, round_number: int
) -> dict[str, Any]:
    """Deliveries/s from an in-process memory bus to the receiver through the webhook endpoint."""
    url = f"{receiver.base_url}/hook"
    async with (
        WebhookEndpointFactory(webhook_settings(concurrency)) as factory,
        Bus("memory://", endpoints=factory) as bus,
        aiohttp.ClientSession() as probe,
    ):
        await bus.put_topic("hook")
        spec = SubscriptionSpec(
            destination=WebHookDestination(endpoint_url=url),
            max_concurrent_deliveries=concurrency,
        )
        await bus.put_subscription("hook", "receiver", spec)
        await bus.set_provisioning_state("hook", "receiver", "Succeeded")  # no handshake

        async def received() -> dict[str, Any]:
            async with probe.get(url) as response:
                state: dict[str, Any] = await response.json()
                return state

        async def run(total: int) -> dict[str, Any]:
            base = (await received())["count"]
            gc.collect()
            window = CpuWindow(receiver)
            began = time.monotonic()
            for offset in range(0, total, 100):
                await bus.publish(
                    "hook",
                    [
                        CloudEvent(
                            type="Bench.Deliver",
                            source=SOURCE,
                            data={"orderId": "o-1", "amount": 12.5, "i": offset + i},
                        )
                        for i in range(min(100, total - offset))
                    ],
                )
            published = time.monotonic()
            deadline = published + WAIT_LIMIT_SECONDS
            while (state := await received())["count"] < base + total:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"the receiver has {state['count'] - base} of {total} deliveries "
                        f"after {WAIT_LIMIT_SECONDS:.0f} s"
                    )
                await asyncio.sleep(0.02)
            cpu = window.shares(total)
            seconds = state["last_monotonic"] - began
            return {
                "deliveries": total,
                "received": state["count"] - base,
                "seconds": seconds,
                "publish_seconds": published - began,
                "deliveries_per_s": total / seconds,
                **cpu,
            }

        await run(p.delivery_warmup)
        point = await run(p.deliveries)
        await asyncio.sleep(0.05)  # the last acknowledgements
        metrics = bus.metrics.subscription("hook", "receiver")
        counts = {
            "delivered": metrics.delivered,
            "retried": metrics.retried,
            "dead_lettered": metrics.dead_lettered,
        }
    if point["received"] != p.deliveries or counts["retried"] or counts["dead_lettered"]:
        raise BenchError(
            f"{point['received']} received of {p.deliveries}, {counts['retried']} retried, "
            f"{counts['dead_lettered']} dead-lettered"
        )
    point = {"round": round_number, "max_concurrent_deliveries": concurrency, **point}
    point["bus"] = counts
    log(
        f"  deliveries @{concurrency}: {point['deliveries_per_s']:,.0f}/s "
        f"(published in {point['publish_seconds']:.2f} s), {_cpu_text(point)}"
    )
    return point


async def webhook_phase(p: Params, section: Section) -> dict[str, Any]:
    """The raw client and the deliveries at every concurrency, interleaved, in each round."""
    raw: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    log("[webhook] starting the receiver ...")
    async with servers(("bare",)) as (receiver,):
        result["receiver"] = receiver.described()
        for round_number in range(1, p.rounds + 1):
            log(f"[webhook] round {round_number} of {p.rounds}")
            for concurrency in p.delivery_concurrency:
                name = f"@{concurrency} round {round_number}"
                point = await section.run(
                    f"raw_client {name}", raw_client(receiver, concurrency, p, round_number)
                )
                if point is not None:
                    raw.append(point)
                point = await section.run(
                    f"deliveries {name}",
                    webhook_deliveries(receiver, concurrency, p, round_number),
                )
                if point is not None:
                    deliveries.append(point)
        if p.httpx_seconds > 0:
            concurrency = p.delivery_concurrency[0]
            result["raw_client_httpx"] = await section.run(
                f"raw_client_httpx @{concurrency}", raw_client_httpx(receiver, concurrency, p)
            )
    result["raw_client"] = best_of(raw, "requests_per_s")
    result["deliveries"] = best_of(deliveries, "deliveries_per_s")
    return result


# the run -----------------------------------------------------------------------------------
def _median_cpu(section: Any, side: str, *path: str) -> float | None:
    """Median over every point of a target of its ``side``'s CPU microseconds per item."""
    best = section
    for key in path:
        best = best.get(key) if isinstance(best, dict) else None
    if not isinstance(best, dict):
        return None
    key = f"{side}_cpu_us_per_item"
    values = [point[key] for point in best["points"] if point.get(key) is not None]
    return statistics.median(values) if values else None


def _by_cpu(publish: dict[str, Any], webhook: dict[str, Any]) -> dict[str, float | None]:
    """The ratios again from CPU per item (the side that does the extra work), medians."""
    figures = {
        "publish_server_cpu_us": _median_cpu(publish, "server", "sqlite", "single"),
        "memory_publish_server_cpu_us": _median_cpu(publish, "server", "memory", "single"),
        "raw_server_cpu_us": _median_cpu(publish, "server", "raw", "single"),
        "delivery_client_cpu_us": _median_cpu(webhook, "client", "deliveries"),
        "raw_client_cpu_us": _median_cpu(webhook, "client", "raw_client"),
    }
    figures["publish_vs_raw"] = ratio(
        figures["raw_server_cpu_us"], figures["publish_server_cpu_us"]
    )
    figures["memory_publish_vs_raw"] = ratio(
        figures["raw_server_cpu_us"], figures["memory_publish_server_cpu_us"]
    )
    figures["webhook_vs_raw"] = ratio(
        figures["raw_client_cpu_us"], figures["delivery_client_cpu_us"]
    )
    return figures


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in ("uvicorn", "h11", "starlette", "aiohttp", "httpx", "msgspec"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    for name in ("uvloop", "httptools"):
        found[name] = "installed" if importlib.util.find_spec(name) else None
    return found


async def run_all(p: Params, directory: Path) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    began = time.perf_counter()
    section = Section()
    publish: dict[str, Any] = {}
    webhook: dict[str, Any] = {}
    if p.only != "webhook":
        publish = await section.run("publish", publish_phase(p, directory, section)) or {}
    if p.only != "publish":
        webhook = await section.run("webhook", webhook_phase(p, section)) or {}

    summary: dict[str, Any] = {
        "publish_per_s": figure(publish, "sqlite", "single", "requests_per_s"),
        "publish_batch_requests_per_s": figure(publish, "sqlite", "batch", "requests_per_s"),
        "publish_batch_events_per_s": figure(publish, "sqlite", "batch", "events_per_s"),
        "memory_publish_per_s": figure(publish, "memory", "single", "requests_per_s"),
        "memory_publish_batch_requests_per_s": figure(publish, "memory", "batch", "requests_per_s"),
        "memory_publish_batch_events_per_s": figure(publish, "memory", "batch", "events_per_s"),
        "raw_requests_per_s": figure(publish, "raw", "single", "requests_per_s"),
        "raw_batch_requests_per_s": figure(publish, "raw", "batch", "requests_per_s"),
        "raw_starlette_requests_per_s": figure(
            publish, "raw_starlette", "single", "requests_per_s"
        ),
        "webhook_deliveries_per_s": figure(webhook, "deliveries", "deliveries_per_s"),
        "raw_client_requests_per_s": figure(webhook, "raw_client", "requests_per_s"),
        "raw_client_httpx_requests_per_s": figure(webhook, "raw_client_httpx", "requests_per_s"),
    }
    summary["publish_vs_raw"] = ratio(summary["publish_per_s"], summary["raw_requests_per_s"])
    summary["publish_batch_vs_raw_batch"] = ratio(
        summary["publish_batch_requests_per_s"], summary["raw_batch_requests_per_s"]
    )
    summary["memory_publish_vs_raw"] = ratio(
        summary["memory_publish_per_s"], summary["raw_requests_per_s"]
    )
    summary["webhook_vs_raw"] = ratio(
        summary["webhook_deliveries_per_s"], summary["raw_client_requests_per_s"]
    )
    meets = {name: (summary[name] or 0.0) >= target for name, target in TARGETS.items()}
    # how busy the rest of the machine was during each headline's best point
    interference = {
        "publish_per_s": figure(publish, "sqlite", "single", "other_cpu_cores"),
        "raw_requests_per_s": figure(publish, "raw", "single", "other_cpu_cores"),
        "webhook_deliveries_per_s": figure(webhook, "deliveries", "other_cpu_cores"),
        "raw_client_requests_per_s": figure(webhook, "raw_client", "other_cpu_cores"),
    }
    return {
        **summary,
        "targets": TARGETS,
        "meets_targets": meets,
        "headline_other_cpu_cores": interference,
        "by_cpu": _by_cpu(publish, webhook),
        "publish": publish,
        "webhook": webhook,
        "errors": section.errors,
        "params": asdict(p),
        "machine": {
            **machine(),
            "choreograph": __version__,
            **_versions(),
            **git_state("src"),
            "layout": "the client (and the webhook phase's bus) in this process, each server in "
            "its own process (uvicorn, one asyncio loop); no CPU pinning",
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "total_seconds": time.perf_counter() - began,
    }


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts like 16,64, got {text!r}") from None
    if min(counts) < 1 or max(counts) > 1000:
        raise argparse.ArgumentTypeError(f"expected counts from 1 to 1000, got {text!r}")
    return counts


def parse_args(argv: list[str] | None = None) -> tuple[Params, str | None]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run for smoke tests")
    parser.add_argument("--rounds", type=int, help="rounds of every measurement (best is kept)")
    parser.add_argument("--connections", type=_counts, help="publish connections, e.g. 16,64")
    parser.add_argument("--seconds", type=float, help="measured seconds of each request run")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up before each")
    parser.add_argument("--batch", type=int, help="events per batch request")
    parser.add_argument("--deliveries", type=int, help="webhook deliveries per measurement")
    parser.add_argument(
        "--delivery-concurrency", type=_counts, help="maxConcurrentDeliveries, e.g. 64,128,256"
    )
    parser.add_argument("--only", choices=("publish", "webhook"), help="run one phase")
    parser.add_argument("--dir", help="where to put the SQLite files (default: a temp dir)")
    args = parser.parse_args(argv)
    params = Params()
    if args.quick:
        params = Params(
            rounds=1,
            connections=(64,),
            warmup_seconds=0.3,
            seconds=1.0,
            deliveries=3_000,
            delivery_warmup=500,
            delivery_concurrency=(64,),
            httpx_seconds=1.0,
        )
    overrides = {
        "rounds": args.rounds,
        "connections": args.connections,
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "batch": args.batch,
        "deliveries": args.deliveries,
        "delivery_concurrency": args.delivery_concurrency,
        "only": args.only,
    }
    params = replace(
        params, **{key: value for key, value in overrides.items() if value is not None}
    )
    return params, args.dir


async def _main(params: Params, directory: Path) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # clean up
    return await run_all(params, directory)


def main(argv: list[str] | None = None) -> int:
    params, directory = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="choreograph-gateway-bench-", dir=directory) as tmp:
        try:
            report = asyncio.run(_main(params, Path(tmp)))
        except (KeyboardInterrupt, asyncio.CancelledError):  # SIGINT, SIGTERM: servers stopped
            log("interrupted")
            return 130
    json.dump(finite(report), sys.stdout, indent=2, allow_nan=False)
    print()
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
