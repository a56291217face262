"""``nats://host:4222``: the bus on NATS JetStream, shared by any number of processes.

Each topic is a stream and each subscription two durable pull consumers on it (see
:mod:`~choreograph.backends.nats.settings` for every name). A delivery is a message on the
subscription's ``ready`` subject; leasing it is JetStream delivering it, the lease lasting the
consumer's ``AckWait`` (so another process gets it after a crash), and acknowledging it deletes
it. A retry is a copy on the ``wait`` subject that a process holds until it is due on the bus
clock (:mod:`~choreograph.backends.nats.retries`). Publishes are de-duplicated by JetStream on
``Nats-Msg-Id`` (:mod:`~choreograph.backends.nats.appends`); dead letters and the catalog are
KV buckets. Appends and settles are written by one task, in order
(:mod:`~choreograph.backends.nats.writer`). Every process follows the catalog bucket for the
topics and subscriptions the others create, change and delete
(:mod:`~choreograph.backends.nats.watch`).

The backend *pulls*: deliveries another process publishes reach this one when its dispatcher
asks for them (``wait_ready`` leaves a request open on the server), so ``Bus.idle`` also asks
the server whether a subscription is ``quiet``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import msgspec
from nats.aio.msg import Msg

from choreograph.backends.base import (
    AppendResult,
    Backend,
    CatalogChange,
    Delivery,
    LeaseResult,
    TopicAppend,
)
from choreograph.backends.nats.catalog import WAIT_ACK_SECONDS, CatalogStore, lease_seconds
from choreograph.backends.nats.deadletters import DeadLetterStore
from choreograph.backends.nats.engine import Engine, engine_errors
from choreograph.backends.nats.retries import SubscriptionQueue, move_id
from choreograph.backends.nats.settings import NatsSettings
from choreograph.backends.nats.watch import CatalogWatch
from choreograph.backends.nats.wire import (
    ATTEMPTS,
    DUE,
    MSG_ID,
    delivery_from,
    moved_headers,
    num_delivered,
    state_headers,
)
from choreograph.backends.nats.writer import Writer
from choreograph.bus.deadletter import DeadLetter
from choreograph.bus.subscription import SubscriptionRecord
from choreograph.bus.topic import TopicRecord
from choreograph.clock import Clock, SystemClock
from choreograph.errors import BackendError
from choreograph.events import MAX_EVENT_BYTES

__all__ = ["NatsBackend"]

logger = logging.getLogger(__name__)

POLL_SECONDS: Final = 1.0
"""How long a request for deliveries stays open on the server before the dispatcher leases
anyway (which also takes retries other processes scheduled)."""
KEEPALIVE_TICK_SECONDS: Final = 1.0
_warned_payload: set[tuple[str, ...]] = set()  # warn once per process and servers


class NatsBackend(Backend):
    """JetStream streams, pull consumers and KV buckets (see the module docstring)."""

    durable = True
    pulls = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.settings = NatsSettings.from_url(url)
        self._engine = Engine(self.settings)
        self._names = self._engine.names
        self._catalog = CatalogStore(self._engine)
        self._dead_letters = DeadLetterStore(self._engine)
        self._writer: Writer | None = None
        self._subscriptions: dict[tuple[str, str], float] = {}
        """The subscriptions this process knows, with their lease (``ready`` AckWait)."""
        self._queues: dict[tuple[str, str], SubscriptionQueue] = {}
        self._stack = contextlib.AsyncExitStack()
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wall_clock = False

    # lifecycle ---------------------------------------------------------------------------------
    def use_clock(self, clock: Clock) -> None:
        """On the system's clock JetStream's de-duplication window is the bus's (no markers,
        see :mod:`~choreograph.backends.nats.appends`)."""
        self._wall_clock = isinstance(clock, SystemClock)

    async def open(self) -> None:
        engine = self._engine
        await engine.connect()
        try:
            with engine_errors("creating the catalog and dead-letter buckets"):
                await self._catalog.bucket.create(self.settings.replicas)
                await self._dead_letters.bucket.create(self.settings.replicas)
        except BaseException:
            await engine.close()
            raise
        if (
            engine.nc.max_payload < MAX_EVENT_BYTES + 4096
            and self.settings.servers not in _warned_payload
        ):
            _warned_payload.add(self.settings.servers)
            logger.warning(
                "the NATS server's max_payload (%d bytes) is below the largest event a topic "
                "accepts (%d bytes); set max_payload to 2MB or more in the server configuration",
                engine.nc.max_payload,
                MAX_EVENT_BYTES,
            )
        self._writer = Writer(
            engine,
            lambda topic, name: (topic, name) in self._subscriptions,
            wall_clock=self._wall_clock,
        )
        group = self._group = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._tasks = [
            group.create_task(self._writer.run(), name=f"NATS writer {self.url}"),
            group.create_task(self._keep_alive(), name=f"NATS keepalive {self.url}"),
        ]

    async def close(self) -> None:
        """Write what is queued, give back what this process holds but has not started (the
        deliveries fetched ahead, the held retries), stop the tasks, close the connection."""
        writer = self._writer
        if writer is None:
            return
        for queue in self._queues.values():
            # First stop listening; what arrived until then is given back below.
            try:
                await queue.stop()
            except Exception as exc:
                logger.warning(
                    "NATS: stopping the consumers of %s/%s failed: %r",
                    queue.topic,
                    queue.subscription,
                    exc,
                )
            for msg in queue.ready.take(len(queue.ready.messages)):
                self._release_message(msg, queue)
        await writer.flush()
        for queue in self._queues.values():
            for msg in queue.drop_held():
                with contextlib.suppress(Exception):
                    await msg.nak()  # due times travel in the headers: the next holder keeps them
        self._queues.clear()
        for task in self._tasks:
            task.cancel()
        await self._stack.aclose()
        self._group = None
        self._writer = None
        await self._engine.close()

    @property
    def _open_writer(self) -> Writer:
        if self._writer is None:
            raise BackendError("the NATS backend is not open")
        return self._writer

    async def flush(self) -> None:
        await self._open_writer.flush()

    async def _keep_alive(self) -> None:
        """Report in progress what this process holds (see retries), once a second."""
        while True:
            await asyncio.sleep(KEEPALIVE_TICK_SECONDS)
            for queue in list(self._queues.values()):
                try:
                    for msg in queue.to_keep_alive(WAIT_ACK_SECONDS / 3):
                        await msg.in_progress()
                except Exception as exc:
                    logger.warning("NATS: keeping deliveries alive failed: %r", exc)

    # catalog -----------------------------------------------------------------------------------
    async def save_topic(self, record: TopicRecord) -> None:
        with engine_errors(f"saving topic {record.name}"):
            await self._catalog.save_topic(record)

    async def delete_topic(self, name: str) -> None:
        for key in [key for key in self._subscriptions if key[0] == name]:
            await self._forget(*key)
        with engine_errors(f"deleting topic {name}"):
            await self._catalog.delete_topic(name)
            await self._dead_letters.delete_topic(name)

    async def load_topics(self) -> list[TopicRecord]:
        with engine_errors("loading topics"):
            return await self._catalog.load_topics()

    async def save_subscription(self, record: SubscriptionRecord) -> None:
        with engine_errors(f"saving subscription {record.topic}/{record.name}"):
            await self._catalog.save_subscription(record)
        self._subscriptions[(record.topic, record.name)] = lease_seconds(record)
        queue = self._queues.get((record.topic, record.name))
        if queue is not None:
            queue.set_ack_wait(lease_seconds(record))

    async def delete_subscription(self, topic: str, name: str) -> None:
        await self._forget(topic, name)
        with engine_errors(f"deleting subscription {topic}/{name}"):
            await self._catalog.delete_subscription(topic, name)
            await self._dead_letters.delete_subscription(topic, name)

    async def _forget(self, topic: str, name: str) -> None:
        self._subscriptions.pop((topic, name), None)
        queue = self._queues.pop((topic, name), None)
        if queue is not None:
            queue.drop_held()
            with contextlib.suppress(Exception):
                await queue.stop()

    async def load_subscriptions(self) -> list[SubscriptionRecord]:
        with engine_errors("loading subscriptions"):
            records = await self._catalog.load_subscriptions()
        self._subscriptions = {(r.topic, r.name): lease_seconds(r) for r in records}
        return records

    async def watch_catalog(self, changed: Callable[[CatalogChange], Awaitable[None]]) -> None:
        """Follow the catalog bucket from where it was loaded (see the watch module)."""
        if self._group is None:
            raise BackendError("the NATS backend is not open")

        async def external(change: CatalogChange) -> None:
            # The backend's view of the subscriptions changes in the same step as the bus's
            # catalog (the first part of ``changed`` runs before it awaits anything).
            gone: list[tuple[str, str]] = []
            if isinstance(change.record, SubscriptionRecord):
                key = (change.topic, change.record.name)
                self._subscriptions[key] = lease_seconds(change.record)
                queue = self._queues.get(key)
                if queue is not None:
                    queue.set_ack_wait(lease_seconds(change.record))
            elif change.record is None:
                gone = [
                    key
                    for key in self._subscriptions
                    if key[0] == change.topic and change.subscription in (None, key[1])
                ]
                for key in gone:
                    self._subscriptions.pop(key, None)
            await changed(change)
            for key in gone:
                queue = self._queues.pop(key, None)
                if queue is not None:
                    queue.drop_held()
                    with contextlib.suppress(Exception):
                        await queue.stop()

        watch = CatalogWatch(self._engine, self._catalog, external)
        await watch.open()
        self._tasks.append(
            self._group.create_task(watch.run(), name=f"NATS catalog watch {self.url}")
        )

    # queue -------------------------------------------------------------------------------------
    def append(
        self, appends: Sequence[TopicAppend], *, now: float, acks: Sequence[Delivery] = ()
    ) -> asyncio.Future[list[AppendResult]]:
        """Queue the events for the writer; the future completes once JetStream stored them.

        Nothing is handed off leased: the dispatchers lease the new deliveries."""
        for delivery in acks:
            self._settled(delivery)
        return self._open_writer.append(appends, now, acks)

    async def _queue(self, topic: str, subscription: str) -> SubscriptionQueue | None:
        queue = self._queues.get((topic, subscription))
        ack_wait = self._subscriptions.get((topic, subscription))
        if queue is None and ack_wait is not None:
            queue = SubscriptionQueue(self._engine, topic, subscription, ack_wait_seconds=ack_wait)
            with engine_errors(f"subscribing to {topic}/{subscription}"):
                await queue.start()
            self._queues[(topic, subscription)] = queue
        if queue is not None:
            queue.active_at = time.monotonic()
        return queue

    async def lease(
        self, topic: str, subscription: str, *, now: float, limit: int, lease_until: float
    ) -> LeaseResult:
        """Move the held retries due at ``now`` to ``ready``, then take up to ``limit`` ready
        deliveries. A lease lasts the ``ready`` consumer's AckWait (``lease_until`` is the
        dispatcher's own reckoning of it)."""
        queue = await self._queue(topic, subscription)
        if queue is None:
            return LeaseResult([], None)
        with engine_errors(f"leasing {topic}/{subscription}"):
            taken = await queue.lease(now, limit, hold_seconds=lease_until - now)
        deliveries = []
        for msg in taken:
            try:
                deliveries.append(delivery_from(msg, topic, subscription))
            except (KeyError, ValueError, msgspec.DecodeError) as exc:
                logger.error(
                    "NATS: message %s of %s/%s is not a delivery (%r); it is discarded",
                    msg.metadata.sequence.stream,
                    topic,
                    subscription,
                    exc,
                )
                queue.settled(msg)
                self._open_writer.ack(msg)
        return LeaseResult(deliveries, queue.next_due())

    async def wait_ready(
        self, topic: str, subscription: str, *, limit: int, wake: asyncio.Event
    ) -> None:
        queue = await self._queue(topic, subscription)
        puller = None if queue is None else queue.ready
        if puller is not None and puller.messages:
            return
        try:
            if puller is not None:
                puller.wake = wake
                with engine_errors(f"asking for deliveries of {topic}/{subscription}"):
                    await puller.linger(limit, POLL_SECONDS)
            async with asyncio.timeout(POLL_SECONDS):
                await wake.wait()
        except TimeoutError:
            pass
        finally:
            if puller is not None:
                puller.wake = None

    async def quiet(self, topic: str, subscription: str, *, now: float) -> bool:
        queue = self._queues.get((topic, subscription))
        if queue is not None:
            next_due = queue.next_due()
            if queue.ready.messages or (next_due is not None and next_due <= now):
                return False
        names = self._names
        stream = names.stream(topic)
        with engine_errors(f"reading the state of {topic}/{subscription}"):
            (ready, leased), (retries, _) = await asyncio.gather(
                self._engine.consumer_state(stream, names.ready_consumer(subscription)),
                self._engine.consumer_state(stream, names.wait_consumer(subscription)),
            )
        if retries and queue is not None:
            queue.new_retries = True
        # Retries held anywhere wait for their time: only those no process took yet count.
        return not (ready or leased or retries)

    async def release_all_leases(self, now: float) -> int:
        """Nothing to do: a lease held by a process that died ends with its AckWait."""
        return 0

    def _settled(self, delivery: Delivery) -> None:
        """The dispatcher is done with ``delivery``: stop keeping its lease alive."""
        queue = self._queues.get((delivery.topic, delivery.subscription))
        if queue is not None:
            queue.settled(delivery.key)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        writer = self._open_writer
        for delivery in deliveries:
            self._settled(delivery)
            writer.ack(delivery.key)

    def reschedule(self, delivery: Delivery, due_at: float) -> None:
        self._settled(delivery)
        msg: Msg = delivery.key
        headers = state_headers(delivery, completed=delivery.attempts)
        headers[DUE] = repr(due_at)
        headers[MSG_ID] = move_id(msg)
        self._open_writer.move(
            msg, self._names.wait(delivery.topic, delivery.subscription), headers
        )
        queue = self._queues.get((delivery.topic, delivery.subscription))
        if queue is not None:
            queue.new_retries = True

    def release(self, deliveries: Sequence[Delivery], now: float) -> None:
        """Give back leased deliveries uncounted: a copy due at ``now`` on the ``wait`` subject.

        Not straight to ``ready``: this runs as the process stops, and the engine may still hand
        a new ``ready`` message to a request this process left open, though nobody listens to
        its inbox any more (nats-server 2.9 does, now and then, right after the unsubscribe);
        the message would then wait out a whole lease. Requests on ``wait`` never stay open."""
        writer = self._open_writer
        for delivery in deliveries:
            self._settled(delivery)
            msg: Msg = delivery.key
            headers = state_headers(delivery, completed=delivery.attempts - 1)
            headers[DUE] = repr(now)
            headers[MSG_ID] = move_id(msg)
            writer.move(msg, self._names.wait(delivery.topic, delivery.subscription), headers)

    def _release_message(self, msg: Msg, queue: SubscriptionQueue) -> None:
        """Give back a message fetched but never leased: a copy counting the same attempts, due
        at once on the ``wait`` subject (see :meth:`release`)."""
        headers = moved_headers(msg)  # no due time: due at once
        made = int(headers.get(ATTEMPTS, 0)) + num_delivered(msg) - 1
        headers[ATTEMPTS] = str(made)
        headers[MSG_ID] = move_id(msg)
        self._open_writer.move(msg, self._names.wait(queue.topic, queue.subscription), headers)

    async def dead_letter(
        self,
        delivery: Delivery,
        record: DeadLetter | None,
        *,
        announce: TopicAppend | None,
        now: float,
    ) -> AppendResult | None:
        """Store the record (or count the drop), announce it, then acknowledge the delivery: a
        crash in between dead-letters it again rather than losing it."""
        self._settled(delivery)
        with engine_errors(f"dead-lettering in {delivery.topic}/{delivery.subscription}"):
            if record is None:
                await self._dead_letters.count_drop(delivery.topic, delivery.subscription)
            else:
                await self._dead_letters.put(record)
        result = None
        if announce is not None:
            [result] = await self._open_writer.append([announce], now, ())
        with engine_errors("acknowledging a dead-lettered delivery"):
            [error] = await self._engine.ack_all([delivery.key])
        if error is not None:
            logger.warning("NATS: acknowledging a dead-lettered delivery failed: %r", error)
        return result

    # dead letters ------------------------------------------------------------------------------
    async def list_dead_letters(
        self, topic: str, subscription: str, *, limit: int, after: str | None = None
    ) -> list[DeadLetter]:
        with engine_errors(f"listing dead letters of {topic}/{subscription}"):
            return await self._dead_letters.page(topic, subscription, limit=limit, after=after)

    async def get_dead_letter(
        self, topic: str, subscription: str, record_id: str
    ) -> DeadLetter | None:
        with engine_errors(f"reading a dead letter of {topic}/{subscription}"):
            return await self._dead_letters.get(topic, subscription, record_id)

    async def redrive(
        self, topic: str, subscription: str, record_ids: Sequence[str] | None, *, now: float
    ) -> int:
        if (topic, subscription) not in self._subscriptions:
            return 0
        with engine_errors(f"redriving dead letters of {topic}/{subscription}"):
            return await self._dead_letters.redrive(topic, subscription, record_ids, now=now)

    async def purge(self, topic: str, subscription: str, record_ids: Sequence[str] | None) -> int:
        with engine_errors(f"purging dead letters of {topic}/{subscription}"):
            return await self._dead_letters.purge(topic, subscription, record_ids)

    async def counters(self, topic: str, subscription: str) -> dict[str, int]:
        await self.flush()
        names = self._names
        stream = names.stream(topic)
        with engine_errors(f"counting {topic}/{subscription}"):
            ready, waiting, ids, dropped = await asyncio.gather(
                self._engine.consumer_state(stream, names.ready_consumer(subscription)),
                self._engine.consumer_state(stream, names.wait_consumer(subscription)),
                self._dead_letters.ids(topic, subscription),
                self._dead_letters.dropped(topic, subscription),
            )
        return {"queued": sum(ready) + sum(waiting), "deadLettered": len(ids), "dropped": dropped}
