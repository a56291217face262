"""A service instance killed in the middle of a handler: its deliveries go to the other instance
once their AckWait runs out, and each effect happens once.

Two processes run the same SDK service (``nats_cluster_worker.py``, service ``first``), attached
to the same subscription as competing consumers, on the shared server at 127.0.0.1:4222 in a
namespace of their own. Instance A hangs in its handler on events marked ``"hang": true``,
after counting the effect in its (uncommitted) unit of work; instance B handles everything.
The test kills A with SIGKILL while it hangs, and B must handle those events after the
``ready`` consumer's AckWait: three delivery timeouts and 3 s
(:func:`choreograph.backends.nats.catalog.lease_seconds`), 9 s here.

Each instance keeps its own SQLite store, which is enough here because A never commits the
events it hangs on and the test lets A's earlier acknowledgements reach the server before the
kill; a service that runs several instances in production shares one store (PostgreSQL), so
that an acknowledgement lost in a crash cannot repeat an effect in another instance.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from choreograph import Bus, CloudEvent
from polling import until

if os.environ.get("CHOREOGRAPH_REQUIRE_SERVICES") == "1":
    import choreograph.backends.nats as nats
else:
    nats = pytest.importorskip("choreograph.backends.nats")

from nats_cluster_worker import WorkerProcess

from choreograph.backends.nats.catalog import LEASE_MARGIN_SECONDS

pytestmark = [pytest.mark.requires_service("nats"), pytest.mark.slow, pytest.mark.timeout(300)]

TOPIC = "chain-start"
SUBSCRIPTION = "chain-first-step"
DELIVERY_TIMEOUT_SECONDS = 2.0
"""Short, so that AckWait is a few seconds; A must be killed within it, before the bus would
time its handler out (the test kills it as soon as it sees the hang)."""
ACK_WAIT_SECONDS = 3 * DELIVERY_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS  # catalog.lease_seconds
CONCURRENCY = 4
NORMAL_EVENTS = 20
HANG_BATCH = 4
MAX_HANG_BATCHES = 10
DEADLINE_SECONDS = 60.0
POLL_SECONDS = 0.02


@pytest.fixture
def url(nats_url: str) -> str:
    """A bus URL with a namespace of its own, deleted afterwards."""
    return nats_url


def started(name: str, *, hang: bool = False) -> CloudEvent:
    return CloudEvent(
        type="Chain.Started", source="/service-kill-test", id=name, data={"hang": hang}
    )


async def test_deliveries_of_an_instance_killed_mid_handler_go_to_the_other_after_ack_wait(
    url: str, tmp_path: Path
) -> None:
    out = tmp_path / "workers"
    async with Bus(url) as setup:
        await setup.put_topic(TOPIC)
    options = {"delivery_timeout_seconds": DELIVERY_TIMEOUT_SECONDS, "concurrency": CONCURRENCY}
    a = await WorkerProcess.start(url, out, "first", label="a", hang=True, **options)
    b = await WorkerProcess.start(url, out, "first", label="b", **options)
    try:
        await a.wait_ready()
        await b.wait_ready()
        async with Bus(url) as publisher:

            def b_alive() -> None:
                b.check_running()

            def both_alive() -> None:
                a.check_running()
                b.check_running()

            def done_ids() -> list[str]:
                return [cid for cid, _, _ in a.done() + b.done()]

            # Both instances take their share; A's acknowledgements reach the server.
            normal = [started(f"normal-{n:02d}") for n in range(NORMAL_EVENTS)]
            await publisher.publish(TOPIC, normal)
            await until(
                lambda: len(done_ids()) >= NORMAL_EVENTS,
                "the normal events",
                DEADLINE_SECONDS,
                alive=both_alive,
            )

            async def drained() -> bool:
                return (await publisher.counters(TOPIC, SUBSCRIPTION))["queued"] == 0

            await until(drained, "no delivery queued", DEADLINE_SECONDS, every=POLL_SECONDS)
            normal_split = (len(a.done()), len(b.done()))

            # Events A hangs on; publish until A holds at least one, then kill it at once.
            hang_events: list[CloudEvent] = []
            for batch in range(MAX_HANG_BATCHES):
                events = [started(f"hang-{batch}-{n}", hang=True) for n in range(HANG_BATCH)]
                hang_events += events
                await publisher.publish(TOPIC, events)
                landed = {event.id for event in hang_events}

                def settled_or_hung(landed: set[str] = landed) -> bool:
                    return bool(a.hung()) or landed <= set(done_ids())

                await until(
                    settled_or_hung,
                    "the hang events' first attempts",
                    DEADLINE_SECONDS,
                    alive=both_alive,
                )
                if a.hung():
                    break
            else:
                pytest.fail(f"A took none of {len(hang_events)} events in {MAX_HANG_BATCHES} tries")
            await a.kill()
            killed_at = time.time()
            hung = set(a.hung())

            expected = {event.id for event in normal + hang_events}
            await until(
                lambda: expected <= set(done_ids()),
                "every event's effect",
                ACK_WAIT_SECONDS + DEADLINE_SECONDS,
                alive=b_alive,
            )
            await until(drained, "no delivery queued", DEADLINE_SECONDS, every=POLL_SECONDS)
        assert await b.stop() == 0, b.output()
    finally:
        await a.kill()
        await b.kill()

    redelivered = {cid: (attempt, at) for cid, attempt, at in b.done() if cid in hung}
    assert set(redelivered) == hung, "an event A hung on was not handled by B"
    delays = [at - killed_at for _, at in redelivered.values()]
    for cid, (attempt, _) in redelivered.items():
        assert attempt == 2, f"{cid} was handled by B on attempt {attempt}, expected 2"
    # A reports a lease in progress every AckWait / 3 while alive, so B gets it between
    # two thirds of an AckWait and an AckWait after the kill (plus B's polling).
    assert min(delays) >= ACK_WAIT_SECONDS * 2 / 3 - 1, delays
    assert max(delays) <= ACK_WAIT_SECONDS + 10, delays

    effects: dict[str, int] = {}
    for worker in (a, b):
        for cid, count in worker.effects().items():
            effects[cid] = effects.get(cid, 0) + count
    assert set(effects) == expected
    doubled = {cid: count for cid, count in effects.items() if count != 1}
    assert not doubled, f"effects applied more than once: {doubled}"
    assert sorted(done_ids()) == sorted(expected), "an effect was committed twice"
    assert not any(cid in hung for cid, _, _ in a.done())

    print(
        f"\nservice kill: normal events split A/B {normal_split}; A hung on {len(hung)} of "
        f"{len(hang_events)} marked events; AckWait {ACK_WAIT_SECONDS:g} s; B handled them "
        f"{min(delays):.1f}-{max(delays):.1f} s after the kill"
    )
