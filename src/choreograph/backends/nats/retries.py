"""One subscription as this process sees it: its two pull consumers, its leases and held retries.

A lease is JetStream's ``AckWait`` on the ``ready`` consumer: short (three delivery timeouts
and a few seconds), so that a crashed process's deliveries go to another one soon. While this
process is alive it reports the deliveries it leased in progress, up to the dispatcher's own
lease (``lease_until``), so a delivery waiting for a free worker is not taken from it.

A retry is a message on the subscription's ``wait`` subject whose ``Cg-Due`` header says when
it is due, on the bus clock. JetStream cannot schedule on that clock, so a process takes the
retries from the ``wait`` consumer (headers only) and *holds* them, unacknowledged, in a heap
ordered by due time, telling JetStream it is still working on them (``in_progress``) while it
is alive. When one comes due the process reads its event back, copies it to the ``ready``
subject and acknowledges it. If the process dies, JetStream hands its held retries to another
process after the ``wait`` consumer's ``AckWait``; the copy's ``Nats-Msg-Id``
(``mv-<sequence>``) keeps a retry moved twice in a race from being stored twice.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from dataclasses import dataclass
from typing import Final

from nats.aio.msg import Msg
from nats.js.api import DEFAULT_PREFIX

from choreograph.backends.nats.engine import Engine
from choreograph.backends.nats.puller import Puller
from choreograph.backends.nats.wire import MSG_ID, due_of, moved_headers

__all__ = ["SubscriptionQueue", "move_id"]

logger = logging.getLogger(__name__)

WAIT_BATCH: Final = 1000
"""How many retries one request takes from the ``wait`` consumer (their headers only)."""
ABSORB_SECONDS: Final = 1.0
"""How often a lease looks for retries it did not schedule itself (other processes' or a
crashed one's); retries this process schedules are taken at its next lease."""
MAKE_READY_RETRY_SECONDS: Final = 1.0
"""How long (on the bus clock) a due retry whose copy to ``ready`` failed waits for another."""
ACTIVE_SECONDS: Final = 60.0
"""How long after its dispatcher last leased a subscription's held retries and fetched
deliveries are still kept alive."""


@dataclass(slots=True, eq=False)
class _Lease:
    msg: Msg
    until: float
    """Monotonic time the dispatcher's own lease ends: no keeping alive past it."""
    ping_at: float


def move_id(msg: Msg) -> str:
    """The ``Nats-Msg-Id`` of the copy that replaces ``msg``."""
    return f"mv-{msg.metadata.sequence.stream}"


class SubscriptionQueue:
    """A subscription's ``ready`` and ``wait`` consumers in this process, and its held retries."""

    def __init__(
        self, engine: Engine, topic: str, subscription: str, *, ack_wait_seconds: float
    ) -> None:
        names = engine.names
        stream = names.stream(topic)
        self._engine = engine
        self.topic = topic
        self.subscription = subscription
        self.ready = Puller(
            engine.nc, stream, names.ready_consumer(subscription), api_prefix=DEFAULT_PREFIX
        )
        self.wait = Puller(
            engine.nc, stream, names.wait_consumer(subscription), api_prefix=DEFAULT_PREFIX
        )
        self._held: dict[int, Msg] = {}  # stream sequence -> the retry's latest delivery
        self._due: list[tuple[float, int]] = []  # (due at, stream sequence), a heap
        self.new_retries = True
        """Retries were scheduled since the last look (at start: unknown, so look)."""
        self._looked_at = 0.0
        self._leases: dict[int, _Lease] = {}  # id(message) -> its lease
        self._ping_every = ack_wait_seconds / 3
        self._fetched_ping_at = 0.0
        self._held_ping_at = 0.0
        self.active_at = time.monotonic()
        """When a dispatcher last leased or waited here: held retries and fetched deliveries
        are kept alive only while one does, so another process takes them over once it stops."""

    async def start(self) -> None:
        await self.ready.start()
        await self.wait.start()

    async def stop(self) -> None:
        await self.ready.stop()
        await self.wait.stop()

    async def lease(self, now: float, limit: int, *, hold_seconds: float) -> list[Msg]:
        """Make the held retries due at ``now`` ready, then take up to ``limit`` ready messages,
        kept alive for up to ``hold_seconds``."""
        await self.take_retries()
        due = self.pop_due(now)
        if due:
            await self._make_ready(due, now)
        room = limit - len(self.ready.messages)
        if room > 0:
            await self.ready.fetch(room)
        taken = self.ready.take(limit)
        self.leased(taken, hold_seconds)
        return taken

    async def _make_ready(self, due: list[Msg], now: float) -> None:
        """Copy due retries (their event read back by sequence) to ``ready``, then acknowledge
        them. A retry whose copy failed (the engine is electing a stream leader, say) stays
        held, due again :data:`MAKE_READY_RETRY_SECONDS` later, so that a failing engine is not
        asked again at once."""
        engine = self._engine
        stream = engine.names.stream(self.topic)
        subject = engine.names.ready(self.topic, self.subscription)
        events = await asyncio.gather(
            *(engine.payload_at(stream, msg.metadata.sequence.stream) for msg in due),
            return_exceptions=True,
        )
        copies, moving, failed = [], [], []
        for msg, event in zip(due, events, strict=True):
            if isinstance(event, BaseException):
                failed.append((msg, event))
            elif event is None:
                logger.warning("NATS: retry %s is gone", msg.metadata.sequence.stream)
            else:
                copies.append((subject, event, {**moved_headers(msg), MSG_ID: move_id(msg)}))
                moving.append(msg)
        outcomes = await engine.publish_all(copies)
        copied = []
        for msg, outcome in zip(moving, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failed.append((msg, outcome))
            else:
                copied.append(msg)
        await engine.ack_all(copied)
        if failed:
            logger.warning(
                "NATS: making %d retries of %s/%s ready failed (%r); trying again in %g s",
                len(failed),
                self.topic,
                self.subscription,
                failed[0][1],
                MAKE_READY_RETRY_SECONDS,
            )
            for msg, _ in failed:
                self.hold(msg, due=now + MAKE_READY_RETRY_SECONDS)

    # held retries ------------------------------------------------------------------------------
    async def take_retries(self) -> None:
        """Take the retries the ``wait`` consumer has for this process into the heap, when some
        were scheduled since the last look or the last look is a while ago."""
        now = time.monotonic()
        if not self.new_retries and now - self._looked_at < ABSORB_SECONDS:
            return
        self.new_retries = False
        self._looked_at = now
        await self.wait.fetch(WAIT_BATCH)
        arrived = self.wait.take(len(self.wait.messages))
        if len(arrived) >= WAIT_BATCH:
            self.new_retries = True  # there may be more
        for msg in arrived:
            self.hold(msg)

    def hold(self, msg: Msg, *, due: float | None = None) -> None:
        """Hold the retry ``msg`` until it is due: at ``due``, or at its ``Cg-Due`` time."""
        sequence = msg.metadata.sequence.stream
        if sequence not in self._held:
            heapq.heappush(self._due, (due_of(msg) if due is None else due, sequence))
        self._held[sequence] = msg  # a redelivery replaces the stale handle

    def pop_due(self, now: float) -> list[Msg]:
        """Remove and return the held retries due at ``now``."""
        due, held = self._due, self._held
        popped = []
        while due and due[0][0] <= now:
            _, sequence = heapq.heappop(due)
            msg = held.pop(sequence, None)
            if msg is not None:
                popped.append(msg)
        return popped

    def next_due(self) -> float | None:
        due, held = self._due, self._held
        while due and due[0][1] not in held:
            heapq.heappop(due)
        return due[0][0] if due else None

    def held(self) -> list[Msg]:
        return list(self._held.values())

    def drop_held(self) -> list[Msg]:
        """Forget every held retry (to give them back); returns them."""
        held = list(self._held.values())
        self._held.clear()
        self._due.clear()
        return held

    # keeping leases alive ----------------------------------------------------------------------
    def leased(self, messages: list[Msg], hold_seconds: float) -> None:
        """The dispatcher leased ``messages`` for ``hold_seconds``."""
        now = time.monotonic()
        leases = self._leases
        for msg in messages:
            leases[id(msg)] = _Lease(msg, now + hold_seconds, now + self._ping_every)

    def settled(self, msg: Msg) -> None:
        self._leases.pop(id(msg), None)

    def set_ack_wait(self, seconds: float) -> None:
        """The subscription changed its delivery timeout, hence its AckWait."""
        self._ping_every = seconds / 3

    def to_keep_alive(self, held_every: float) -> list[Msg]:
        """The messages to report in progress now: leases due for it, and, while a dispatcher
        is active here, the fetched deliveries and the held retries (``held_every``)."""
        now = time.monotonic()
        due: list[Msg] = []
        for key, lease in list(self._leases.items()):
            if lease.until <= now:
                del self._leases[key]  # past the dispatcher's lease: AckWait decides now
            elif lease.ping_at <= now:
                lease.ping_at = now + self._ping_every
                due.append(lease.msg)
        if now - self.active_at > ACTIVE_SECONDS:
            return due
        if self._fetched_ping_at <= now:
            self._fetched_ping_at = now + self._ping_every
            due.extend(self.ready.messages)
        if self._held_ping_at <= now:
            self._held_ping_at = now + held_every
            due.extend(self._held.values())
        return due
