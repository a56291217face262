"""The storage and queue contract every backend implements.

The :class:`~choreograph.bus.Bus` does everything that is the same for all backends (validation,
filtering, fan-out decisions, retry policy, dead-letter records, dispatch); a backend only stores
and hands out. Its model:

- A **topic** and its **subscriptions** are catalog records (:meth:`Backend.save_topic` ...).
- :meth:`Backend.append` stores published events, one **delivery** per matching subscription,
  possibly for several topics at once and together with acknowledgements (a handler's emitted
  events and the ack of the delivery that caused them commit together where the engine allows).
  It returns the results at once when the write completed in the call (in memory), or else a
  future that completes when they are durable. It de-duplicates on
  (``source``, ``id``) within each topic's window and reports which events were duplicates. The
  bus may ask for some deliveries back already **leased** (``handoff``) so a dispatcher with free
  capacity starts on them without a round trip; a backend that cannot do that returns none and
  they are leased later.
- A delivery is **due** from its ``due_at``. :meth:`Backend.lease` hands out due deliveries and
  hides them until ``lease_until``; a lease held by a process that died makes the delivery due
  again, so in-flight work survives a crash. The embedded backends have one owner, so their
  leases last until that owner settles them or reopens the store (:meth:`release_all_leases`);
  a shared engine (NATS) expires them after ``lease_until``. Leasing counts an attempt.
- Settling is ordered but need not wait: :meth:`Backend.ack`, :meth:`Backend.reschedule` and
  :meth:`Backend.release` take effect in call order and are durable once :meth:`Backend.flush`
  returns (losing one to a crash only causes a redelivery). :meth:`Backend.dead_letter` waits,
  because it moves the event and may announce it on the system topic in the same write.
- **Dead letters** are listed, read, redriven (back to their subscription as fresh deliveries)
  and purged per subscription. A dropped delivery (dead-lettering disabled) increments the
  subscription's ``dropped`` counter.
- A backend shared by several processes (NATS) reports the **catalog** changes the others make
  (:meth:`Backend.watch_catalog`), so that every process routes to every subscription; the
  embedded backends have one owner and report none.
- A **pulling** backend (:attr:`Backend.pulls`, NATS) is shared by several processes, and
  deliveries another process stores reach this one only when it asks the engine for them: the
  dispatcher then keeps a request waiting (:meth:`Backend.wait_ready`) whenever it has room, and
  ``Bus.idle`` also asks the engine whether a subscription is :meth:`Backend.quiet`. The embedded
  backends are told of every delivery at ``append`` and keep the defaults.

Backends raise :class:`~choreograph.errors.BackendError` for engine failures (the driver's
exception chained) and never let a driver exception escape.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from choreograph.bus.deadletter import DeadLetter
from choreograph.bus.subscription import SubscriptionRecord
from choreograph.bus.topic import TopicRecord
from choreograph.clock import Clock
from choreograph.events import CloudEvent

__all__ = [
    "AppendResult",
    "Backend",
    "CatalogChange",
    "Delivery",
    "Handoff",
    "LeaseResult",
    "NewEvent",
    "TopicAppend",
]


@dataclass(slots=True, eq=False)
class Delivery:
    """One event on its way to one subscription.

    ``attempts`` counts the attempt in progress (1 on the first). The ``last_*`` fields describe
    the previous attempt and feed the dead-letter record. ``key`` is the backend's handle.
    """

    key: Any
    topic: str
    subscription: str
    event: CloudEvent
    published_at: float
    ttl_start: float
    attempts: int
    last_outcome: str | None = None
    last_error: str | None = None
    last_attempt_at: float | None = None
    size: int = 0
    """Bytes of the stored event (for ``preferredBatchSizeInKilobytes``); 0 when unknown."""


class NewEvent(NamedTuple):
    """A validated event to append: its storage encoding and the subscriptions it matched."""

    event: CloudEvent
    encoded: bytes
    subscriptions: tuple[str, ...]


class Handoff(NamedTuple):
    """How many new deliveries of one subscription the caller takes leased, and until when."""

    limit: int
    lease_until: float


class TopicAppend(NamedTuple):
    """Events for one topic, with its de-duplication window and the leases the caller takes."""

    topic: str
    events: Sequence[NewEvent]
    dedupe_window_seconds: float
    handoff: Mapping[str, Handoff]


class AppendResult:
    """``duplicates[i]`` is True when event i was already stored within the window;
    ``leased`` maps a subscription to the deliveries handed off to the caller, and ``queued``
    names the subscriptions that got deliveries not handed off (to be leased later)."""

    __slots__ = ("duplicates", "leased", "queued")

    def __init__(self, duplicates: list[bool]) -> None:
        self.duplicates = duplicates
        self.leased: dict[str, list[Delivery]] = {}
        self.queued: set[str] = _NONE_QUEUED

    def mark_queued(self, subscription: str) -> None:
        if self.queued is _NONE_QUEUED:
            self.queued = set()
        self.queued.add(subscription)


_NONE_QUEUED: set[str] = set()


@dataclass(slots=True)
class LeaseResult:
    """Deliveries now leased, and when the subscription's next non-leased delivery is due."""

    deliveries: list[Delivery]
    next_due: float | None


class CatalogChange(NamedTuple):
    """A topic (``subscription`` None) or a subscription another process saved, or deleted
    (``record`` None)."""

    topic: str
    subscription: str | None
    record: TopicRecord | SubscriptionRecord | None


class Backend(abc.ABC):
    """Storage and queues for a bus. One instance serves one bus."""

    url: str
    durable: bool
    """True when a published event survives the process (``sqlite``, ``nats``)."""
    pulls: bool = False
    """True when deliveries stored by other processes arrive only when asked for (``nats``)."""

    # lifecycle ---------------------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect or create the store. Raises BackendLockedError if another owner holds it."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending writes and release every resource."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Wait until every settle call made so far is durable."""

    def use_clock(self, clock: Clock) -> None:
        """Told the bus's clock before ``open``: a backend whose engine keeps time of its own
        may rely on it when the bus's clock is the system's. (Default: nothing to do.)"""
        return None

    # catalog -----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def save_topic(self, record: TopicRecord) -> None:
        """Create or replace a topic."""

    @abc.abstractmethod
    async def delete_topic(self, name: str) -> None:
        """Delete a topic with its subscriptions, deliveries and dead letters."""

    @abc.abstractmethod
    async def load_topics(self) -> list[TopicRecord]: ...

    @abc.abstractmethod
    async def save_subscription(self, record: SubscriptionRecord) -> None:
        """Create or replace a subscription (its queue and dead letters are kept)."""

    @abc.abstractmethod
    async def delete_subscription(self, topic: str, name: str) -> None:
        """Delete a subscription with its deliveries and dead letters."""

    @abc.abstractmethod
    async def load_subscriptions(self) -> list[SubscriptionRecord]: ...

    async def watch_catalog(self, changed: Callable[[CatalogChange], Awaitable[None]]) -> None:
        """From now until the backend closes, call ``changed`` with each catalog change another
        process makes after the catalog was loaded, in order. The embedded backends have one
        owner: nothing to report."""
        return None

    # queue -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def append(
        self, appends: Sequence[TopicAppend], *, now: float, acks: Sequence[Delivery] = ()
    ) -> list[AppendResult] | asyncio.Future[list[AppendResult]]:
        """Store the events durably (all or none), one delivery per matched subscription, and
        acknowledge ``acks`` in the same write: the results (one per append) once durable.

        Not a coroutine: de-duplication is decided at the call, and the caller gets the list at
        once when the write is already complete, or a future to chain on without a task."""

    @abc.abstractmethod
    async def lease(
        self, topic: str, subscription: str, *, now: float, limit: int, lease_until: float
    ) -> LeaseResult:
        """Lease up to ``limit`` deliveries due at ``now``, earliest first."""

    @abc.abstractmethod
    async def release_all_leases(self, now: float) -> int:
        """Make every leased delivery due at ``now`` (the owning process restarted)."""

    @abc.abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Delivered: forget these deliveries."""

    @abc.abstractmethod
    def reschedule(self, delivery: Delivery, due_at: float) -> None:
        """Failed with budget left: due again at ``due_at``, keeping its ``last_*`` fields."""

    @abc.abstractmethod
    def release(self, deliveries: Sequence[Delivery], now: float) -> None:
        """Give back leased deliveries unattempted (shutdown): due at ``now``, attempt uncounted."""

    @abc.abstractmethod
    async def dead_letter(
        self,
        delivery: Delivery,
        record: DeadLetter | None,
        *,
        announce: TopicAppend | None,
        now: float,
    ) -> AppendResult | None:
        """Remove ``delivery`` and store ``record`` (None: drop it and count it), appending
        ``announce`` in the same write; returns the announcement's result."""

    # pulling ----------------------------------------------------------------------------------
    async def wait_ready(
        self, topic: str, subscription: str, *, limit: int, wake: asyncio.Event
    ) -> None:
        """Wait until deliveries of the subscription may be ready to lease or ``wake`` is set.

        Called by the dispatcher of a pulling backend whenever it has room for ``limit`` more:
        the backend asks the engine for them meanwhile, and returns after a short real-time
        poll period at the latest, after which the dispatcher leases anyway (which also takes
        retries other processes scheduled). The other backends are told of new deliveries and
        only wait for ``wake``."""
        await wake.wait()

    async def quiet(self, topic: str, subscription: str, *, now: float) -> bool:
        """Whether the engine holds nothing of the subscription that is due at ``now`` or being
        delivered (by any process). ``Bus.idle`` asks a pulling backend this once its own
        dispatchers are idle; the embedded backends know no more than their dispatcher."""
        return True

    # dead letters ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def list_dead_letters(
        self, topic: str, subscription: str, *, limit: int, after: str | None = None
    ) -> list[DeadLetter]:
        """Records in dead-lettering order, starting after the record id ``after``."""

    @abc.abstractmethod
    async def get_dead_letter(
        self, topic: str, subscription: str, record_id: str
    ) -> DeadLetter | None: ...

    @abc.abstractmethod
    async def redrive(
        self, topic: str, subscription: str, record_ids: Sequence[str] | None, *, now: float
    ) -> int:
        """Move records (all when None) back to the subscription as fresh deliveries due at
        ``now``: no attempts made, time-to-live counted from ``now``. Returns how many moved."""

    @abc.abstractmethod
    async def purge(self, topic: str, subscription: str, record_ids: Sequence[str] | None) -> int:
        """Delete records (all when None). Returns how many were deleted."""

    # statistics --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def counters(self, topic: str, subscription: str) -> dict[str, int]:
        """``{"queued": ..., "deadLettered": ..., "dropped": ...}`` for one subscription."""

    async def __aenter__(self) -> Backend:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
