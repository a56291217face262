"""Fault tolerance of the NATS backend in a JetStream cluster: a node killed with SIGKILL in the
middle of a run, and restarted later, loses no transaction and doubles no effect.

The test starts a private three-node cluster (``nats_cluster_nodes.py``: the installed
``nats-server``, free loopback ports, stopped by PID) and runs every stream with three replicas.
Two SDK services make a chain, each in a process of its own (``nats_cluster_worker.py``) with a
SQLite store: ``Chain.Started`` → first → ``Chain.Stepped`` → second → ``Chain.Finished``, which
a sink subscription in the test process records. Each service counts its effect per
transaction in its state, so a delivery handled twice in effect would show as a 2.

The test waits on conditions with deadlines (the other processes' progress has no other
signal); nothing sleeps for a fixed time. The timings are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from choreograph import Bus, CloudEvent
from choreograph.bus import SubscriptionSpec
from choreograph.errors import BackendError
from polling import until

if os.environ.get("CHOREOGRAPH_REQUIRE_SERVICES") == "1":
    import choreograph.backends.nats  # noqa: F401 - fails loudly when nats-py is missing
else:
    pytest.importorskip("choreograph.backends.nats")

# After the skip: nats-py is an optional dependency.
from nats_cluster_nodes import Cluster, Node, running_cluster
from nats_cluster_worker import WorkerProcess

from choreograph.backends.nats.settings import Names, NatsSettings

nats_py = pytest.importorskip("nats")

pytestmark = [
    pytest.mark.requires_service("nats"),
    pytest.mark.slow,
    pytest.mark.timeout(600),
]

TRANSACTIONS = 5_000
PUBLISH_BATCH = 100
KILL_AT = 1_000
"""Transactions finished when the node is killed."""
RESTART_AFTER = 1_500
"""Transactions finished with the node down before it is restarted (or RESTART_SECONDS)."""
RESTART_SECONDS = 20.0
RUN_SECONDS = 300.0
"""Generous: deliveries whose acknowledgement the kill lost come back after their AckWait."""
CATCH_UP_SECONDS = 60.0
POLL_SECONDS = 0.05
DELIVERY_TIMEOUT_SECONDS = 5.0  # AckWait 3 x 5 + 3 = 18 s
SUBSCRIPTIONS = [
    ("chain-start", "chain-first-step"),
    ("chain-mid", "chain-second-step"),
    ("chain-end", "sink"),
]


@dataclass
class Sink:
    """The terminal events, by transaction: when each first arrived, how often."""

    first_seen: dict[str, float] = field(default_factory=dict)
    deliveries: Counter[str] = field(default_factory=Counter)

    async def __call__(self, event: CloudEvent) -> None:
        transaction = event.correlationid or event.id
        self.deliveries[transaction] += 1
        self.first_seen.setdefault(transaction, time.monotonic())

    @property
    def finished(self) -> int:
        return len(self.first_seen)

    def longest_stall(self, after: float) -> float:
        """The longest time without a new terminal event from ``after`` on."""
        times = sorted(t for t in self.first_seen.values() if t >= after)
        edges = [after, *times]
        return max((b - a for a, b in itertools.pairwise(edges)), default=0.0)


async def publish_all(bus: Bus, topic: str, events: list[CloudEvent]) -> int:
    """Publish ``events`` in batches, retrying a batch that fails (a node just died: the
    topic's de-duplication makes the retry safe); returns how many publishes failed."""
    failures = 0
    deadline = time.monotonic() + RUN_SECONDS
    for start in range(0, len(events), PUBLISH_BATCH):
        batch = events[start : start + PUBLISH_BATCH]
        while True:
            try:
                await bus.publish(topic, batch)
                break
            except BackendError:
                failures += 1
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    return failures


async def raft_groups(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """The replica groups of ``namespace``: each stream and durable consumer (``stream/name``)
    with its cluster information (leader, followers)."""
    names = Names(namespace)
    connection = await nats_py.connect(
        [f"nats://{node.address}" for node in cluster.nodes if node.running],
        connect_timeout=2,
        allow_reconnect=False,
    )
    groups: dict[str, Any] = {}
    try:
        js = connection.jetstream(timeout=5)
        for stream in await js.streams_info():
            name = stream.config.name or ""
            if not names.owns_stream(name):
                continue
            groups[name] = stream.cluster
            for consumer in await js.consumers_info(name):
                if consumer.config.durable_name:  # ephemeral ones (KV reads) have one replica
                    groups[f"{name}/{consumer.name}"] = consumer.cluster
    finally:
        await connection.close()
    return groups


def lagging(groups: dict[str, Any]) -> list[str]:
    """The groups without a leader and two followers online, and the streams with a follower
    behind. (An idle consumer's follower can show a lag until the consumer's next change: the
    leader learns a follower's position from its answers to new entries.)"""
    found = []
    for label, group in groups.items():
        followers = (group.replicas or []) if group else []
        if group is None or not group.leader or len(followers) != 2:
            found.append(f"{label}: leader {group and group.leader}, {len(followers)} followers")
        elif any(peer.offline for peer in followers) or (
            "/" not in label and not all(peer.current for peer in followers)
        ):
            found.append(f"{label}: {[(p.name, p.current, p.offline, p.lag) for p in followers]}")
    return found


async def until_caught_up(cluster: Cluster, namespace: str) -> None:
    """Wait until every stream and durable consumer of ``namespace`` has a leader and its two
    followers online, the streams' followers current (the restarted node caught up)."""
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while behind := lagging(await raft_groups(cluster, namespace)):
        if time.monotonic() > deadline:
            pytest.fail(f"replicas still behind after {CATCH_UP_SECONDS} s: {behind[:5]}")
        await asyncio.sleep(0.5)


async def until_drained(
    bus: Bus, subscriptions: list[tuple[str, str]]
) -> dict[str, dict[str, int]]:
    """Wait until no delivery of ``subscriptions`` is queued or leased anywhere (those whose
    acknowledgement a kill lost come back after their AckWait and are absorbed); returns each
    subscription's counters."""
    deadline = time.monotonic() + RUN_SECONDS
    while True:
        counters = {name: await bus.counters(topic, name) for topic, name in subscriptions}
        if all(counter["queued"] == 0 for counter in counters.values()):
            return counters
        if time.monotonic() > deadline:
            pytest.fail(f"deliveries still queued after {RUN_SECONDS} s: {counters}")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def workers(url: str, out: Path) -> AsyncIterator[dict[str, WorkerProcess]]:
    """The two services, each in its process, started consumer first: a bus routes an event to
    the subscriptions it knows when it opens, so ``second`` subscribes before ``first`` opens."""
    started: dict[str, WorkerProcess] = {}
    try:
        for service in ("second", "first"):
            started[service] = await WorkerProcess.start(
                url, out, service, delivery_timeout_seconds=DELIVERY_TIMEOUT_SECONDS
            )
            await started[service].wait_ready()
        yield started
    finally:
        for worker in started.values():
            await worker.kill()


async def test_a_node_killed_mid_run_and_restarted_loses_nothing_and_doubles_no_effect(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("CHOREOGRAPH_CLUSTER_SEED", secrets.randbits(32)))
    rng = random.Random(seed)
    namespace = f"cluster-{secrets.token_hex(4)}"
    out = tmp_path / "workers"
    sink = Sink()
    spec = SubscriptionSpec(delivery_timeout_seconds=DELIVERY_TIMEOUT_SECONDS)
    async with running_cluster(tmp_path / "cluster") as cluster:
        url = cluster.url(namespace)
        assert NatsSettings.from_url(url).replicas == 3
        async with Bus(url) as receiver:
            for topic in ("chain-start", "chain-mid", "chain-end"):
                await receiver.put_topic(topic)
            await receiver.subscribe("chain-end", "sink", sink, spec)
            async with workers(url, out) as running, Bus(url) as publisher:

                def alive() -> None:
                    for worker in running.values():
                        worker.check_running()
                    cluster.check_alive()

                started = time.monotonic()
                transactions = [
                    CloudEvent(
                        type="Chain.Started", source="/cluster-test", id=f"tx-{n:05d}", data={}
                    )
                    for n in range(TRANSACTIONS)
                ]
                publishing = asyncio.create_task(
                    publish_all(publisher, "chain-start", transactions)
                )
                await until(
                    lambda: sink.finished >= KILL_AT, "the first transactions", 120, alive=alive
                )

                victim: Node = rng.choice(cluster.nodes)
                meta_leader = await cluster.meta_leader()
                groups = await raft_groups(cluster, namespace)
                led = sum(1 for group in groups.values() if group.leader == victim.name)
                victim.kill()
                killed_at = time.monotonic()
                finished_at_kill = sink.finished

                def restart_due() -> bool:
                    return (
                        sink.finished >= min(TRANSACTIONS, finished_at_kill + RESTART_AFTER)
                        or time.monotonic() - killed_at > RESTART_SECONDS
                    )

                await until(
                    restart_due, "progress with a node down", RESTART_SECONDS + 5, alive=alive
                )
                restarted_at = time.monotonic()
                finished_at_restart = sink.finished
                victim.start()
                await cluster.wait_for_meta_leader()
                rejoined_at = time.monotonic()

                await until(
                    lambda: sink.finished >= TRANSACTIONS,
                    "every transaction",
                    RUN_SECONDS,
                    alive=alive,
                )
                all_finished_at = time.monotonic()
                publish_failures = await publishing
                await until_caught_up(cluster, namespace)
                caught_up_at = time.monotonic()

                counters = await until_drained(publisher, SUBSCRIPTIONS)
                drained_at = time.monotonic()
                for worker in running.values():
                    assert await worker.stop() == 0, worker.output()

    expected = {event.id for event in transactions}
    assert set(sink.first_seen) == expected, "a terminal event is missing or unexpected"
    for service, worker in running.items():
        effects = worker.effects()
        missing = expected - set(effects)
        assert not missing, f"{service} lost {len(missing)} effects, e.g. {sorted(missing)[:5]}"
        doubled = {key: count for key, count in effects.items() if count != 1}
        assert not doubled, f"{service} applied effects more than once: {list(doubled.items())[:5]}"
    for name, counter in counters.items():
        assert counter["deadLettered"] == 0, (name, counter)
        assert counter["dropped"] == 0, (name, counter)

    handled_again = {
        service: sum(1 for _, attempt, _ in worker.done() if attempt > 1)
        for service, worker in running.items()
    }
    delivered = {service: worker.delivered() for service, worker in running.items()}
    print(
        f"\ncluster run (seed {seed}): killed {victim.name} (meta leader: {meta_leader}; it led "
        f"{led} of {len(groups)} streams and consumers) with {finished_at_kill}/{TRANSACTIONS} "
        f"transactions finished, {killed_at - started:.1f} s into the run\n"
        f"  longest stall after the kill {sink.longest_stall(killed_at):.1f} s; "
        f"restarted {restarted_at - killed_at:.1f} s after the kill with {finished_at_restart} "
        f"finished; back in the meta group after {rejoined_at - restarted_at:.1f} s\n"
        f"  all {TRANSACTIONS} finished {all_finished_at - started:.1f} s after the start "
        f"({all_finished_at - killed_at:.1f} s after the kill); every replica current "
        f"{caught_up_at - restarted_at:.1f} s after the restart; every queue empty "
        f"{drained_at - started:.1f} s after the start\n"
        f"  publishes retried {publish_failures}; terminal events delivered more than once "
        f"{sum(1 for n in sink.deliveries.values() if n > 1)}; deliveries per service "
        f"{delivered} (the inbox absorbed those beyond {TRANSACTIONS}); effects committed on a "
        f"later attempt {handled_again}"
    )
