"""Topics and subscriptions on NATS: records in a KV bucket, and the streams and consumers they need.

Creating a topic creates its stream (and, with a de-duplication window, its marker stream)
before its record, and deleting it removes the record first, so a record never names a stream
that does not exist. A subscription gets two durable pull consumers on its topic's stream:
``<name>-ready`` hands out due deliveries and its ``AckWait`` is the lease (three delivery
timeouts and a margin); ``<name>-wait`` hands out scheduled retries to the process that will
hold them until they are due (see :mod:`choreograph.backends.nats.retries`).

Every process of a bus keeps the catalog in memory and follows the bucket for what the others
change (:mod:`~choreograph.backends.nats.watch`). To tell a change it has not seen from one it
has, it remembers the stream sequence of each key's latest value it knows (loaded, written by
itself, or seen): a change is new only when its sequence is higher. Deletions leave a tombstone
so that followers see them.
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

import msgspec
import nats.js.errors
from nats.js import api

from choreograph.backends.base import CatalogChange
from choreograph.backends.nats.bucket import Bucket
from choreograph.backends.nats.engine import Engine
from choreograph.bus.subscription import SubscriptionRecord, SubscriptionSpec
from choreograph.bus.topic import TopicRecord

__all__ = ["LEASE_MARGIN_SECONDS", "WAIT_ACK_SECONDS", "CatalogStore", "lease_seconds"]

LEASE_MARGIN_SECONDS: Final = 3.0
"""Added to three delivery timeouts to make a lease: how long a crashed process's deliveries
wait before another process gets them."""
WAIT_ACK_SECONDS: Final = 30.0
"""How long a crashed process's held retries wait before another process gets them."""
DEFAULT_DUPLICATE_WINDOW_SECONDS: Final = 120.0
"""De-duplication of moved messages on a topic without a window of its own."""

_topic_decoder = msgspec.json.Decoder(TopicRecord)


def lease_seconds(record: SubscriptionRecord) -> float:
    """How long a leased delivery stays hidden from other processes."""
    return 3 * record.spec.delivery_timeout_seconds + LEASE_MARGIN_SECONDS


class CatalogStore:
    """The catalog bucket and the topic streams and consumers it describes."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._names = engine.names
        self._replicas = engine.settings.replicas
        self.bucket = Bucket(engine, engine.names.catalog_bucket)
        self.sequences: dict[str, int] = {}
        """Key -> stream sequence of the latest value of it this process knows."""
        self.loaded_through = 0
        """The bucket's latest sequence before the catalog was loaded: following starts after."""

    def is_new(self, key: str, sequence: int) -> bool:
        """Whether the value of ``key`` at ``sequence`` is newer than any this process knows;
        if so it is now the one known."""
        if sequence <= self.sequences.get(key, 0):
            return False
        self.sequences[key] = sequence
        return True

    def _known(self, key: str, sequence: int) -> None:
        self.sequences[key] = max(sequence, self.sequences.get(key, 0))

    def change_of(self, key: str, value: bytes | None) -> CatalogChange | None:
        """The change a value (None: a tombstone) of ``key`` stands for; None for a key that is
        no topic or subscription."""
        kind, _, rest = key.partition(".")
        if kind == "topic" and rest:
            record = None if value is None else _topic_decoder.decode(value)
            return CatalogChange(topic=rest, subscription=None, record=record)
        topic, _, name = rest.partition(".")
        if kind == "subscription" and topic and name:
            subscription = (
                None if value is None else _subscription_from_dict(msgspec.json.decode(value))
            )
            return CatalogChange(topic=topic, subscription=name, record=subscription)
        return None

    # topics ------------------------------------------------------------------------------------
    async def save_topic(self, record: TopicRecord) -> None:
        names, engine = self._names, self._engine
        topic = record.name
        window = record.spec.deduplication_window_seconds
        await engine.ensure_stream(
            api.StreamConfig(
                name=names.stream(topic),
                subjects=[names.topic_subjects(topic)],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                num_replicas=self._replicas,
                duplicate_window=window if window > 0 else DEFAULT_DUPLICATE_WINDOW_SECONDS,
                allow_direct=True,  # held retries read their event back by sequence
            )
        )
        if window > 0:
            # JetStream's window runs on real time and is at least a second; the bus clock
            # decides within it (see appends).
            kept = max(window, 1.0)
            await engine.ensure_stream(
                api.StreamConfig(
                    name=names.marker_stream(topic),
                    subjects=[names.marker(topic)],
                    retention=api.RetentionPolicy.LIMITS,
                    storage=api.StorageType.FILE,
                    num_replicas=self._replicas,
                    max_age=kept,
                    duplicate_window=kept,
                    allow_direct=True,
                )
            )
        else:
            await engine.delete_stream(names.marker_stream(topic))
        key = f"topic.{topic}"
        self._known(key, await self.bucket.put(key, msgspec.json.encode(record)))

    async def delete_topic(self, name: str) -> None:
        for key in [f"topic.{name}", *await self.bucket.keys(f"subscription.{name}.*")]:
            self._known(key, await self.bucket.tombstone(key))
        await self._engine.delete_stream(self._names.stream(name))
        await self._engine.delete_stream(self._names.marker_stream(name))

    async def _load(self, pattern: str) -> list[bytes]:
        """The values of the keys matching ``pattern``, their sequences remembered."""
        keys = await self.bucket.keys(pattern)
        values = []
        for key, (value, sequence) in zip(keys, await self.bucket.entries(keys), strict=True):
            self._known(key, sequence)
            if value is not None:
                values.append(value)
        return values

    async def load_topics(self) -> list[TopicRecord]:
        self.loaded_through = await self.bucket.last_sequence()
        return [_topic_decoder.decode(value) for value in await self._load("topic.*")]

    # subscriptions -----------------------------------------------------------------------------
    async def save_subscription(self, record: SubscriptionRecord) -> None:
        names, js = self._names, self._engine.js
        stream = names.stream(record.topic)
        # Creating an existing durable consumer with another AckWait updates it.
        await js.add_consumer(
            stream,
            api.ConsumerConfig(
                durable_name=names.ready_consumer(record.name),
                filter_subject=names.ready(record.topic, record.name),
                ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_wait=lease_seconds(record),
                max_deliver=-1,
            ),
        )
        # A held retry is only its headers (its due time and state): the event is read back
        # when it comes due, so a process can hold many retries cheaply.
        await js.add_consumer(
            stream,
            api.ConsumerConfig(
                durable_name=names.wait_consumer(record.name),
                filter_subject=names.wait(record.topic, record.name),
                ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_wait=WAIT_ACK_SECONDS,
                max_deliver=-1,
                max_ack_pending=-1,
                headers_only=True,
            ),
        )
        key = f"subscription.{record.topic}.{record.name}"
        encoded = msgspec.json.encode(_subscription_to_dict(record))
        self._known(key, await self.bucket.put(key, encoded))

    async def delete_subscription(self, topic: str, name: str) -> None:
        names, js = self._names, self._engine.js
        key = f"subscription.{topic}.{name}"
        self._known(key, await self.bucket.tombstone(key))
        stream = names.stream(topic)
        for consumer in (names.ready_consumer(name), names.wait_consumer(name)):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_consumer(stream, consumer)
        await self._engine.purge(stream, names.subscription_subjects(topic, name))

    async def load_subscriptions(self) -> list[SubscriptionRecord]:
        return [
            _subscription_from_dict(msgspec.json.decode(value))
            for value in await self._load("subscription.*.*")
        ]


def _subscription_to_dict(record: SubscriptionRecord) -> dict[str, Any]:
    return {
        "topic": record.topic,
        "name": record.name,
        "createdAt": record.created_at,
        "provisioningState": record.provisioning_state,
        "spec": record.spec.to_dict(),
    }


def _subscription_from_dict(stored: dict[str, Any]) -> SubscriptionRecord:
    return SubscriptionRecord(
        topic=stored["topic"],
        name=stored["name"],
        created_at=stored["createdAt"],
        provisioning_state=stored["provisioningState"],
        spec=SubscriptionSpec.from_dict(stored["spec"]),
    )
