"""What only the NATS JetStream backend does: de-duplication by JetStream across processes,
competing consumers, redelivery after a crash, and its URL options.

These tests run on real time, since JetStream's acknowledgement deadlines do: they wait on
conditions with a deadline and never sleep for a fixed time. Each test works in a namespace of
its own on the shared server at 127.0.0.1:4222 and deletes it at the end. Without a server
they are skipped, unless ``CHOREOGRAPH_REQUIRE_SERVICES=1`` (CI), which makes them fail.

Run as a script, this module is the bus process the crash test kills (see :func:`worker`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from choreograph.backends import open_backend
from choreograph.bus import Attempt, Bus, Outcome, SubscriptionSpec, TopicSpec
from choreograph.bus.retry import outcome_for_status
from choreograph.errors import BackendError, ConfigError
from choreograph.events import CloudEvent, EventGridEvent
from choreograph.testing.clock import FakeClock

if os.environ.get("CHOREOGRAPH_REQUIRE_SERVICES") == "1":
    import choreograph.backends.nats as nats
else:
    nats = pytest.importorskip("choreograph.backends.nats")

import nats as nats_py  # after the skip: nats-py is an optional dependency
from nats.aio.msg import Msg

from choreograph.backends.nats.settings import Names, NatsSettings
from choreograph.backends.nats.wire import MSG_ID, event_key, num_delivered, reply_consumer

SERVER = "nats://127.0.0.1:4222"
DEADLINE_SECONDS = 30.0

pytestmark = pytest.mark.requires_service("nats")


@pytest.fixture
def url(nats_url: str) -> str:
    """A bus URL with a namespace of its own, deleted afterwards."""
    return nats_url


def event(event_id: str | None = None, **fields: object) -> CloudEvent:
    values: dict[str, object] = {"type": "Nats.Tested", "source": "/nats-tests", **fields}
    if event_id is not None:
        values["id"] = event_id
    return CloudEvent(**values)  # type: ignore[arg-type]


async def until(condition: object, what: str, seconds: float = DEADLINE_SECONDS) -> None:
    """Wait until ``condition()`` holds, checking each few milliseconds, at most ``seconds``."""
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds} s")
        await asyncio.sleep(0.01)


class Recording:
    """An endpoint recording each event id with the attempt's delivery count."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def deliver(
        self, events: Sequence[CloudEvent | EventGridEvent], attempt: Attempt
    ) -> Outcome:
        self.calls.extend((received.id, attempt.delivery_count) for received in events)
        return outcome_for_status(200)


# de-duplication by JetStream --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("clock", "markers"),
    [(None, 0), (FakeClock(), 2)],
    ids=["system clock: JetStream's window alone", "another clock: one marker per event"],
)
async def test_the_same_event_from_two_processes_is_stored_once(
    url: str, clock: FakeClock | None, markers: int
) -> None:
    async with Bus(url, clock=clock) as first:
        await first.create_topic("dedupe-shared")
        await first.create_subscription("dedupe-shared", "audit")
        await first.create_subscription("dedupe-shared", "billing")
        async with Bus(url, clock=clock) as second:
            same = event("same-everywhere")
            await asyncio.gather(
                first.publish("dedupe-shared", same), second.publish("dedupe-shared", same)
            )
            await second.publish("dedupe-shared", [same, event("other"), event("other")])
            for subscription in ("audit", "billing"):
                assert (await first.counters("dedupe-shared", subscription))["queued"] == 2
    names = Names(NatsSettings.from_url(url).namespace)
    connection = await nats_py.connect(SERVER)
    try:
        info = await connection.jetstream().stream_info(names.marker_stream("dedupe-shared"))
        assert info.state.messages == markers
    finally:
        await connection.close()


async def test_on_the_system_clock_a_duplicate_restores_the_deliveries_a_failed_publish_left_out(
    url: str,
) -> None:
    """The first publish stored one of the event's two deliveries and failed: the retried
    publish stores the other, and the one stored is not stored twice."""
    names = Names(NatsSettings.from_url(url).namespace)
    async with Bus(url) as bus:
        await bus.create_topic("dedupe-half")
        await bus.create_subscription("dedupe-half", "audit")
        await bus.create_subscription("dedupe-half", "billing")
        retried = event("half-stored")
        connection = await nats_py.connect(SERVER)
        try:
            await connection.jetstream().publish(
                names.ready("dedupe-half", "audit"),
                b"{}",
                headers={MSG_ID: f"{event_key(retried.source, retried.id)}.audit"},
            )
        finally:
            await connection.close()
        await bus.publish("dedupe-half", retried)
        assert (await bus.counters("dedupe-half", "audit"))["queued"] == 1
        assert (await bus.counters("dedupe-half", "billing"))["queued"] == 1


async def test_a_duplicate_restores_the_deliveries_a_failed_publish_left_out(url: str) -> None:
    """A publish that stored its marker and then failed is retried: JetStream reports the event
    a duplicate, and the deliveries the first attempt did not store are stored now."""
    clock = FakeClock()
    names = Names(NatsSettings.from_url(url).namespace)
    async with Bus(url, clock=clock) as bus:
        await bus.create_topic("dedupe-restore")
        await bus.create_subscription("dedupe-restore", "audit")
        retried = event("half-stored")
        connection = await nats_py.connect(SERVER)
        try:
            await connection.jetstream().publish(
                names.marker("dedupe-restore"),
                repr(clock.now()).encode(),
                headers={MSG_ID: event_key(retried.source, retried.id)},
            )
        finally:
            await connection.close()
        await bus.publish("dedupe-restore", retried)
        assert (await bus.counters("dedupe-restore", "audit"))["queued"] == 1
        await bus.publish("dedupe-restore", retried)
        assert (await bus.counters("dedupe-restore", "audit"))["queued"] == 1


async def test_a_topic_without_a_window_keeps_no_markers(url: str) -> None:
    names = Names(NatsSettings.from_url(url).namespace)
    async with Bus(url) as bus:
        await bus.create_topic("dedupe-none", TopicSpec(deduplication_window_seconds=0))
        await bus.create_subscription("dedupe-none", "audit")
        same = event("again-and-again")
        await bus.publish("dedupe-none", [same, same])
        assert (await bus.counters("dedupe-none", "audit"))["queued"] == 2
    connection = await nats_py.connect(SERVER)
    try:
        with pytest.raises(nats_py.js.errors.NotFoundError):
            await connection.jetstream().stream_info(names.marker_stream("dedupe-none"))
    finally:
        await connection.close()


# several processes ------------------------------------------------------------------------------
async def test_an_event_published_by_another_process_is_delivered(url: str) -> None:
    async with Bus(url) as publisher:
        await publisher.create_topic("cross-process")
        await publisher.create_subscription("cross-process", "audit")
        async with Bus(url) as consumer:
            endpoint = Recording()
            await consumer.attach("cross-process", "audit", endpoint)
            sent = event()
            await publisher.publish("cross-process", sent)
            await until(lambda: endpoint.calls, "the delivery")
            assert endpoint.calls == [(sent.id, 0)]


async def test_competing_consumers_share_a_subscription_without_duplicates(url: str) -> None:
    """Two buses (two processes in effect) attached to one subscription split its events;
    while one is busy the other takes the rest, and no event is delivered twice."""
    spec = SubscriptionSpec(max_concurrent_deliveries=1)
    async with Bus(url) as first:
        await first.create_topic("competing")
        await first.create_subscription("competing", "audit", spec)
        async with Bus(url) as second:
            first_ids: list[str] = []
            second_ids: list[str] = []
            second_busy = asyncio.Event()

            async def slow(received: CloudEvent) -> None:
                first_ids.append(received.id)
                await second_busy.wait()  # holds the first bus until the second has worked

            async def quick(received: CloudEvent) -> None:
                second_ids.append(received.id)
                second_busy.set()

            events = [event(data={"n": n}) for n in range(40)]
            await first.attach("competing", "audit", slow)
            await first.publish("competing", events[0])
            await until(lambda: first_ids, "the first bus's first delivery")
            await second.attach("competing", "audit", quick)
            await first.publish("competing", events[1:])
            await until(lambda: len(first_ids) + len(second_ids) >= len(events), "all deliveries")
            assert first_ids
            assert second_ids
            assert sorted(first_ids + second_ids) == sorted(e.id for e in events)
            await first.idle()
            assert (await first.counters("competing", "audit"))["queued"] == 0


async def test_a_delivery_leased_by_a_crashed_process_is_redelivered_after_its_lease(
    url: str, tmp_path: Path
) -> None:
    """The worker leases the delivery and hangs on it; killed, it never settles. After the
    lease (three 1.5 s delivery timeouts and a margin) the delivery goes to another bus,
    counting the interrupted attempt."""
    spec = SubscriptionSpec(delivery_timeout_seconds=1.5)
    async with Bus(url) as survivor:
        await survivor.create_topic("crashing")
        await survivor.create_subscription("crashing", "audit", spec)
        sent = event()
        await survivor.publish("crashing", sent)
        output = tmp_path / "worker.out"
        with output.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                sys.executable, __file__, url, "crashing", "audit", stdout=sink, stderr=sink
            )
        try:
            await until(
                lambda: "started" in output.read_text() or process.returncode is not None,
                "the worker's attempt",
            )
            assert process.returncode is None, output.read_text()
            process.send_signal(signal.SIGKILL)
            assert await process.wait() == -signal.SIGKILL
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        killed_at = time.monotonic()
        endpoint = Recording()
        await survivor.attach("crashing", "audit", endpoint)
        await until(lambda: endpoint.calls, "the redelivery")
        assert endpoint.calls == [(sent.id, 1)]
        assert time.monotonic() - killed_at < 3 * 1.5 + 10


async def test_a_live_process_keeps_a_delivery_past_its_ack_wait(url: str) -> None:
    """A delivery its process holds longer than the lease JetStream enforces (here its handler
    hangs on a fake clock, so no delivery timeout cuts it short) is reported in progress and
    not handed to another process; once it returns it is delivered once."""
    spec = SubscriptionSpec(delivery_timeout_seconds=0.5)  # AckWait 1.5 s + 3 s
    clock = FakeClock()
    async with Bus(url, clock=clock) as holder:
        await holder.create_topic("kept-alive")
        await holder.create_subscription("kept-alive", "audit", spec)
        async with Bus(url, clock=clock) as other:
            release = asyncio.Event()
            held: list[str] = []

            async def hang(received: CloudEvent) -> None:
                held.append(received.id)
                await release.wait()

            await holder.attach("kept-alive", "audit", hang)
            sent = event()
            await holder.publish("kept-alive", sent)
            await until(lambda: held, "the first attempt")
            endpoint = Recording()
            await other.attach("kept-alive", "audit", endpoint)
            started = time.monotonic()
            await until(lambda: time.monotonic() - started > 2 * 4.5, "twice the AckWait")
            release.set()
            await holder.idle()
            assert held == [sent.id]
            assert endpoint.calls == []


def worker(url: str, topic: str, subscription: str) -> None:
    """The crash test's other process: attach a handler that reports its attempt and hangs."""

    async def hang(received: CloudEvent) -> None:
        print("started", received.id, flush=True)
        await asyncio.Event().wait()

    async def run() -> None:
        async with Bus(url) as bus:
            await bus.attach(topic, subscription, hang)
            await asyncio.Event().wait()

    asyncio.run(run())


# the URL ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bus_url", "named"),
    [
        pytest.param("nats://h:4222?replicas=0", "replicas", id="replicas-0"),
        pytest.param("nats://h:4222?replicas=6", "replicas", id="replicas-6"),
        pytest.param("nats://h:4222?replicas=three", "replicas", id="replicas-word"),
        pytest.param("nats://h:4222?replicas=", "replicas", id="replicas-empty"),
        pytest.param("nats://h:4222?colour=blue", "colour", id="unknown-option"),
        pytest.param("nats://h:4222?namespace=a_b", "namespace", id="namespace-underscore"),
        pytest.param("nats://", "server", id="no-server"),
        pytest.param("nats://h:4222,,g:4222", "server", id="empty-server"),
        pytest.param("nats://h:port", "port", id="bad-port"),
        pytest.param("nats://h:4222/path", "nats://host:port", id="path"),
    ],
)
def test_an_invalid_nats_url_is_refused_naming_the_problem(bus_url: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        open_backend(bus_url)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param("$JS.ACK.orders.sub-a.3.41.17.1764331000123456789.5", id="v1"),
        pytest.param("$JS.ACK._.ACCHASH.orders.sub-a.3.41.17.1764331000123456789.5", id="v2"),
        pytest.param(
            "$JS.ACK.hub.ACCHASH.orders.sub-a.3.41.17.1764331000123456789.5.rnd", id="v2-token"
        ),
    ],
)
def test_the_reply_subject_gives_the_consumer_and_the_delivery_count(reply: str) -> None:
    msg = Msg(nats_py.NATS(), subject="x", reply=reply)
    assert reply_consumer(msg) == ("orders", "sub-a")
    assert num_delivered(msg) == 3
    assert (msg.metadata.stream, msg.metadata.consumer) == ("orders", "sub-a")  # as nats-py reads
    assert msg.metadata.num_delivered == 3


@pytest.mark.parametrize("reply", ["", "_INBOX.abc.1", "$JS.ACK.orders.sub-a.3"])
def test_a_reply_subject_that_is_not_jetstream_s_is_refused(reply: str) -> None:
    with pytest.raises(ValueError, match="not a JetStream message"):
        num_delivered(Msg(nats_py.NATS(), subject="x", reply=reply))


def test_a_nats_url_names_servers_replicas_and_namespace() -> None:
    backend = open_backend("nats://a.example:4222,b.example:4223?replicas=3&namespace=stage-1")
    assert isinstance(backend, nats.NatsBackend)
    assert backend.settings == NatsSettings(
        servers=("nats://a.example:4222", "nats://b.example:4223"),
        replicas=3,
        namespace="stage-1",
    )
    assert open_backend("nats://127.0.0.1:4222").settings.replicas == 1  # type: ignore[attr-defined]


async def test_three_replicas_on_a_single_server_fail_to_open_with_backend_error(
    url: str,
) -> None:
    bus = Bus(url + "&replicas=3")
    with pytest.raises(BackendError, match="replicas") as caught:
        await bus.open()
    assert isinstance(caught.value.__cause__, nats_py.errors.Error)
    await bus.close()


if __name__ == "__main__":
    worker(*sys.argv[1:4])
