"""A service process on a NATS bus, for the cluster and service-kill tests.

    python nats_cluster_worker.py BUS_URL OUT_DIR --service first|second [--label NAME]
        [--hang] [--delivery-timeout SECONDS] [--concurrency N]

Two SDK services make a chain: ``first`` handles ``Chain.Started`` (topic ``chain-start``) and
emits ``Chain.Stepped`` (``chain-mid``); ``second`` handles that and emits ``Chain.Finished``
(``chain-end``). Each handler's *effect* is a counter per transaction (correlation id) in the
service's state, incremented in the handler's unit of work: a delivery handled twice in effect
would count 2. The state lives in ``OUT_DIR/<label>.db``, a SQLite service store of this
process alone.

The process appends to ``OUT_DIR/<label>.log``: ``done <correlation id> <attempt> <unix time>``
once a handler's effect is committed,
``delivered <deliveries> <retries>`` (its subscription's) when it stops, and ``hang <correlation id> <attempt>`` when, with
``--hang``, the handler reached an event whose data says ``"hang": true``: it has counted the
effect in its (uncommitted) unit and then waits forever, so the process can be killed
mid-handler. ``OUT_DIR/<label>.ready`` appears once the service is subscribed. SIGTERM stops the
process cleanly (``stopped`` in the log).

Imported, the module is the tests' handle on such a process (:class:`WorkerProcess`): start it,
wait until it is subscribed, read its log and, once it is gone, its effects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import msgspec

from choreograph import Bus, CloudEvent
from choreograph.sdk import Context, Service

EFFECTS = "effects"
TOPICS = {"first": ("chain-start", "chain-mid"), "second": ("chain-mid", "chain-end")}
TYPES = {"first": ("Chain.Started", "Chain.Stepped"), "second": ("Chain.Stepped", "Chain.Finished")}


def build_service(
    role: str, log: IO[str], *, hang: bool, delivery_timeout_seconds: float, concurrency: int
) -> Service:
    """The ``first`` or ``second`` service of the chain (see the module docstring)."""
    consumed_topic, emitted_topic = TOPICS[role]
    consumed, emitted = TYPES[role]
    service = Service(f"chain-{role}")

    def record(line: str) -> None:
        log.write(line + "\n")
        log.flush()

    @service.on(
        consumed,
        topic=consumed_topic,
        emits={emitted: emitted_topic},
        delivery_timeout_seconds=delivery_timeout_seconds,
        max_concurrent_deliveries=concurrency,
    )
    async def step(event: CloudEvent, ctx: Context) -> None:
        transaction = ctx.correlation_id
        count = await ctx.state.get(EFFECTS, transaction, 0)
        ctx.state.put(EFFECTS, transaction, count + 1)
        if hang and isinstance(event.data, dict) and event.data.get("hang"):
            record(f"hang {transaction} {ctx.attempt}")
            await asyncio.Event().wait()  # until the process is killed
        ctx.emit(emitted, {"step": role})
        ctx.after_commit(lambda: record(f"done {transaction} {ctx.attempt} {time.time():.3f}"))

    return service


async def run(args: argparse.Namespace, out: Path, log: IO[str]) -> None:
    service = build_service(
        args.service,
        log,
        hang=args.hang,
        delivery_timeout_seconds=args.delivery_timeout,
        concurrency=args.concurrency,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    async with (
        Bus(args.bus_url, shutdown_grace_seconds=2.0) as bus,
        service.run(bus, store=f"sqlite:///{(out / args.label).resolve()}.db"),
    ):
        (out / f"{args.label}.ready").touch()
        print("ready", flush=True)
        await stopping.wait()
        spec = service.handlers[0]
        metrics = bus.metrics.subscription(TOPICS[args.service][0], service.subscription_name(spec))
        log.write(f"delivered {metrics.delivered} {metrics.retried}\n")
    log.write("stopped\n")
    log.flush()


# the tests' side ---------------------------------------------------------------------------------
READY_SECONDS = 60.0
STOP_SECONDS = 30.0
POLL_SECONDS = 0.05


@dataclass
class WorkerProcess:
    """One worker process started by a test; its output goes to ``OUT_DIR/<label>.out``."""

    process: asyncio.subprocess.Process
    out: Path
    label: str

    @classmethod
    async def start(
        cls,
        bus_url: str,
        out: Path,
        service: str,
        *,
        label: str | None = None,
        hang: bool = False,
        delivery_timeout_seconds: float = 5.0,
        concurrency: int = 16,
    ) -> WorkerProcess:
        label = label or service
        options = ["--service", service, "--label", label]
        options += ["--delivery-timeout", str(delivery_timeout_seconds)]
        options += ["--concurrency", str(concurrency)]
        if hang:
            options.append("--hang")
        with _output_file(out, label).open("ab") as sink:
            process = await asyncio.create_subprocess_exec(
                sys.executable, __file__, bus_url, str(out), *options, stdout=sink, stderr=sink
            )
        return cls(process, out, label)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        path = self.out / f"{self.label}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def check_running(self) -> None:
        """Fail the test if the process exited (with its output)."""
        if self.process.returncode is not None:
            raise AssertionError(
                f"worker {self.label} exited with {self.process.returncode}:\n{self.output()}"
            )

    async def wait_ready(self, seconds: float = READY_SECONDS) -> None:
        """Wait until the service is subscribed; fail if the process exits or time runs out."""
        deadline = time.monotonic() + seconds
        while not (self.out / f"{self.label}.ready").exists():
            self.check_running()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"worker {self.label} not ready in {seconds} s:\n{self.output()}"
                )
            await asyncio.sleep(POLL_SECONDS)

    def lines(self, kind: str) -> list[list[str]]:
        """The fields after ``kind`` of each complete log line of that kind."""
        path = self.out / f"{self.label}.log"
        if not path.exists():
            return []
        text = path.read_text()
        complete = text[: text.rfind("\n") + 1]
        return [line.split()[1:] for line in complete.splitlines() if line.split()[0] == kind]

    def done(self) -> list[tuple[str, int, float]]:
        """``(correlation id, attempt, unix time)`` of each committed effect."""
        return [(cid, int(attempt), float(at)) for cid, attempt, at in self.lines("done")]

    def delivered(self) -> int:
        """How many deliveries the process's bus made, replays of handled events included
        (written when it stops)."""
        return sum(int(fields[0]) for fields in self.lines("delivered"))

    def hung(self) -> list[str]:
        """The correlation ids this process hangs on."""
        return [fields[0] for fields in self.lines("hang")]

    async def kill(self) -> None:
        """SIGKILL the process by PID and reap it."""
        if self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM the process by PID and wait for it (SIGKILL after a while); its exit code."""
        if self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_SECONDS):
                    await self.process.wait()
            except TimeoutError:
                await self.kill()
        return self.process.returncode or 0

    def effects(self) -> dict[str, int]:
        """The effect counter of each transaction in the process's store (read once it is
        gone: what it committed)."""
        path = self.out / f"{self.label}.db"
        if not path.exists():
            return {}
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT key, value FROM state WHERE collection = ?", (EFFECTS,))
            return {key: msgspec.json.decode(value) for key, value in rows}


def _output_file(out: Path, label: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return out / f"{label}.out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bus_url")
    parser.add_argument("out_dir")
    parser.add_argument("--service", choices=sorted(TOPICS), required=True)
    parser.add_argument("--label", help="names this process's files (default: the service)")
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--delivery-timeout", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    args.label = args.label or args.service
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(name)s %(message)s"
    )
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{args.label}.log").open("a") as log:
        asyncio.run(run(args, out, log))


if __name__ == "__main__":
    main()
