"""A bus process on SQLite for the crash tests: it is killed with SIGKILL and started again.

    python crash_worker.py DB_PATH OUT_DIR [--topic NAME] [--publish N]
                           [--handlers record|stall|none] [--handler-delay SECONDS]

It creates the topic and the subscriptions ``audit`` and ``billing``. With ``--handlers record``
(the default) each subscription's handler appends the event id and a newline to
``OUT_DIR/<subscription>.log`` before it returns, so every acknowledged event is in the log;
``stall`` attaches handlers that never return (their deliveries stay leased); ``none`` attaches
no handler. With ``--publish N`` it publishes the events ``evt-00000`` ... first and creates
``OUT_DIR/published`` once every publish has returned (is durable), then keeps delivering until
it is killed. Without ``--publish`` it delivers until the bus is idle, creates ``OUT_DIR/idle``
and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO

from choreograph import Bus, CloudEvent, RetryPolicy, SubscriptionSpec

SUBSCRIPTIONS = ("audit", "billing")
PUBLISH_BATCH = 500


def event_id(index: int) -> str:
    """Fixed width, so a torn line in a log could never pass for another event's id."""
    return f"evt-{index:05d}"


def recorder(log: IO[str], delay_seconds: float) -> Callable[[CloudEvent], Awaitable[None]]:
    """A handler that appends each event id to ``log`` after ``delay_seconds``."""

    async def record(event: CloudEvent) -> None:
        # The delay spreads delivery over a few seconds so that the kill lands during it.
        await asyncio.sleep(delay_seconds)
        log.write(f"{event.id}\n")
        log.flush()  # in the kernel before the handler returns, hence before the ack

    return record


async def stall(event: CloudEvent) -> None:
    """A handler that never returns, so its deliveries stay leased."""
    await asyncio.Event().wait()


async def run(args: argparse.Namespace, url: str, out: Path, logs: Mapping[str, IO[str]]) -> None:
    spec = SubscriptionSpec(
        retry_policy=RetryPolicy(max_delivery_attempts=30, backoff_seconds=(0.05,)),
        max_concurrent_deliveries=8,
    )
    async with Bus(url) as bus:
        await bus.put_topic(args.topic)
        for name in SUBSCRIPTIONS:
            if args.handlers == "record":
                handler = recorder(logs[name], args.handler_delay)
                await bus.subscribe(args.topic, name, handler, spec)
            elif args.handlers == "stall":
                await bus.subscribe(args.topic, name, stall, spec)
            else:
                await bus.put_subscription(args.topic, name, spec)
        print("subscribed", flush=True)
        if args.publish:
            for start in range(0, args.publish, PUBLISH_BATCH):
                stop = min(start + PUBLISH_BATCH, args.publish)
                batch = [
                    CloudEvent(type="Test.Crash", source="/crash-worker", id=event_id(i))
                    for i in range(start, stop)
                ]
                await bus.publish(args.topic, batch)
            # Every publish above returned, so all the events are durable.
            (out / "published").touch()
            print(f"published {args.publish}", flush=True)
            await asyncio.Event().wait()  # deliver until killed
        await bus.idle()
        (out / "idle").touch()
        print("idle", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db_path")
    parser.add_argument("out_dir")
    parser.add_argument("--topic", default="crash-orders")
    parser.add_argument("--publish", type=int, default=0)
    parser.add_argument("--handlers", choices=("record", "stall", "none"), default="record")
    parser.add_argument("--handler-delay", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    # An absolute path after sqlite:/// gives the four slashes of an absolute store.
    url = f"sqlite:///{Path(args.db_path).resolve()}"
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        logs = {
            name: stack.enter_context((out / f"{name}.log").open("a")) for name in SUBSCRIPTIONS
        }
        asyncio.run(run(args, url, out, logs))


if __name__ == "__main__":
    main()
