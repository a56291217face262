"""``memory://``: the whole contract in process memory. For tests and fast local runs.

It is a real implementation, not a mock: same semantics and errors as the durable backends, but
nothing survives the process.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from choreograph.backends.base import (
    AppendResult,
    Backend,
    Delivery,
    Handoff,
    LeaseResult,
    NewEvent,
    TopicAppend,
)
from choreograph.backends.dedupe import DedupeWindow
from choreograph.bus.deadletter import DeadLetter
from choreograph.bus.subscription import SubscriptionRecord
from choreograph.bus.topic import TopicRecord

__all__ = ["MemoryBackend"]


@dataclass(slots=True)
class _Queue:
    """One subscription's deliveries: a heap of due times and the leased set."""

    due: list[tuple[float, int, Delivery]] = field(default_factory=list)
    leased: dict[int, Delivery] = field(default_factory=dict)
    dead_letters: dict[str, DeadLetter] = field(default_factory=dict)
    dropped: int = 0


class MemoryBackend(Backend):
    """Dictionaries and heaps; every operation completes at once."""

    durable = False

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._topics: dict[str, TopicRecord] = {}
        self._subscriptions: dict[tuple[str, str], SubscriptionRecord] = {}
        self._queues: dict[tuple[str, str], _Queue] = {}
        self._dedupe = DedupeWindow()
        self._keys = itertools.count(1)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    # catalog -----------------------------------------------------------------------------------
    async def save_topic(self, record: TopicRecord) -> None:
        self._topics[record.name] = record

    async def delete_topic(self, name: str) -> None:
        self._topics.pop(name, None)
        for key in [key for key in self._subscriptions if key[0] == name]:
            del self._subscriptions[key]
            self._queues.pop(key, None)
        self._dedupe.drop_topic(name)

    async def load_topics(self) -> list[TopicRecord]:
        return list(self._topics.values())

    async def save_subscription(self, record: SubscriptionRecord) -> None:
        key = (record.topic, record.name)
        self._subscriptions[key] = record
        self._queues.setdefault(key, _Queue())

    async def delete_subscription(self, topic: str, name: str) -> None:
        self._subscriptions.pop((topic, name), None)
        self._queues.pop((topic, name), None)

    async def load_subscriptions(self) -> list[SubscriptionRecord]:
        return list(self._subscriptions.values())

    # queue -------------------------------------------------------------------------------------
    def append(
        self, appends: Sequence[TopicAppend], *, now: float, acks: Sequence[Delivery] = ()
    ) -> list[AppendResult]:
        results = []
        for topic, events, window, handoff in appends:
            result = AppendResult(self._dedupe.admit(topic, events, now=now, window=window))
            self._store(topic, events, now, handoff, result)
            results.append(result)
        if acks:
            self.ack(acks)
        return results

    def _store(
        self,
        topic: str,
        events: Sequence[NewEvent],
        now: float,
        handoff: Mapping[str, Handoff],
        result: AppendResult,
    ) -> None:
        queues = self._queues
        leased = result.leased
        for new, duplicate in zip(events, result.duplicates, strict=True):
            if duplicate:
                continue
            for name in new.subscriptions:
                queue = queues.get((topic, name))
                if queue is None:
                    continue
                key = next(self._keys)
                grant = handoff.get(name)
                handed = leased.get(name)
                if grant is not None and (handed is None or len(handed) < grant.limit):
                    delivery = Delivery(
                        key, topic, name, new.event, now, now, 1, size=len(new.encoded)
                    )
                    queue.leased[key] = delivery
                    if handed is None:
                        leased[name] = [delivery]
                    else:
                        handed.append(delivery)
                else:
                    delivery = Delivery(
                        key, topic, name, new.event, now, now, 0, size=len(new.encoded)
                    )
                    heapq.heappush(queue.due, (now, key, delivery))
                    result.mark_queued(name)

    async def lease(
        self, topic: str, subscription: str, *, now: float, limit: int, lease_until: float
    ) -> LeaseResult:
        queue = self._queues.get((topic, subscription))
        if queue is None:
            return LeaseResult([], None)
        leased: list[Delivery] = []
        due = queue.due
        while due and len(leased) < limit and due[0][0] <= now:
            _, key, delivery = heapq.heappop(due)
            delivery.attempts += 1
            queue.leased[key] = delivery
            leased.append(delivery)
        return LeaseResult(leased, due[0][0] if due else None)

    async def release_all_leases(self, now: float) -> int:
        released = 0
        for queue in self._queues.values():
            for key, delivery in queue.leased.items():
                delivery.attempts -= 1
                heapq.heappush(queue.due, (now, key, delivery))
            released += len(queue.leased)
            queue.leased.clear()
        return released

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            queue = self._queues.get((delivery.topic, delivery.subscription))
            if queue is not None:
                queue.leased.pop(delivery.key, None)

    def reschedule(self, delivery: Delivery, due_at: float) -> None:
        queue = self._queues.get((delivery.topic, delivery.subscription))
        if queue is not None and queue.leased.pop(delivery.key, None) is not None:
            heapq.heappush(queue.due, (due_at, delivery.key, delivery))

    def release(self, deliveries: Sequence[Delivery], now: float) -> None:
        for delivery in deliveries:
            queue = self._queues.get((delivery.topic, delivery.subscription))
            if queue is not None and queue.leased.pop(delivery.key, None) is not None:
                delivery.attempts -= 1
                heapq.heappush(queue.due, (now, delivery.key, delivery))

    async def dead_letter(
        self,
        delivery: Delivery,
        record: DeadLetter | None,
        *,
        announce: TopicAppend | None,
        now: float,
    ) -> AppendResult | None:
        queue = self._queues.get((delivery.topic, delivery.subscription))
        if queue is None or queue.leased.pop(delivery.key, None) is None:
            return None
        if record is None:
            queue.dropped += 1
        else:
            queue.dead_letters[record.id] = record
        if announce is None:
            return None
        result = AppendResult([False] * len(announce.events))
        self._store(announce.topic, announce.events, now, announce.handoff, result)
        return result

    # dead letters ------------------------------------------------------------------------------
    def _records(self, topic: str, subscription: str) -> dict[str, DeadLetter]:
        queue = self._queues.get((topic, subscription))
        return {} if queue is None else queue.dead_letters

    async def list_dead_letters(
        self, topic: str, subscription: str, *, limit: int, after: str | None = None
    ) -> list[DeadLetter]:
        records = self._records(topic, subscription)
        ids = sorted(record_id for record_id in records if after is None or record_id > after)
        return [records[record_id] for record_id in ids[:limit]]

    async def get_dead_letter(
        self, topic: str, subscription: str, record_id: str
    ) -> DeadLetter | None:
        return self._records(topic, subscription).get(record_id)

    async def redrive(
        self, topic: str, subscription: str, record_ids: Sequence[str] | None, *, now: float
    ) -> int:
        queue = self._queues.get((topic, subscription))
        if queue is None:
            return 0
        ids = list(queue.dead_letters) if record_ids is None else record_ids
        moved = 0
        for record_id in ids:
            record = queue.dead_letters.pop(record_id, None)
            if record is None:
                continue
            key = next(self._keys)
            delivery = Delivery(key, topic, subscription, record.event, record.publish_time, now, 0)
            heapq.heappush(queue.due, (now, key, delivery))
            moved += 1
        return moved

    async def purge(self, topic: str, subscription: str, record_ids: Sequence[str] | None) -> int:
        records = self._records(topic, subscription)
        if record_ids is None:
            count = len(records)
            records.clear()
            return count
        return sum(records.pop(record_id, None) is not None for record_id in record_ids)

    async def counters(self, topic: str, subscription: str) -> dict[str, int]:
        queue = self._queues.get((topic, subscription)) or _Queue()
        return {
            "queued": len(queue.due) + len(queue.leased),
            "deadLettered": len(queue.dead_letters),
            "dropped": queue.dropped,
        }
