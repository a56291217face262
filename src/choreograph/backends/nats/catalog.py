"""Topics and subscriptions on NATS: records in a KV bucket, and the streams and consumers they need.

Creating a topic creates its stream (and, with a de-duplication window, its marker stream)
before its record, and deleting it removes the record first, so a record never names a stream
that does not exist. A subscription gets two durable pull consumers on its topic's stream:
``<name>-ready`` hands out due deliveries and its ``AckWait`` is the lease (three delivery
timeouts and a margin); ``<name>-wait`` hands out scheduled retries to the process that will
hold them until they are due (see :mod:`choreograph.backends.nats.retries`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

import msgspec
import nats.js.errors
from nats.js import api

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
        await self.bucket.put(f"topic.{topic}", msgspec.json.encode(record))

    async def delete_topic(self, name: str) -> None:
        await self.bucket.delete(f"topic.{name}")
        await self.bucket.delete(f"subscription.{name}.*")
        await self._engine.delete_stream(self._names.stream(name))
        await self._engine.delete_stream(self._names.marker_stream(name))

    async def load_topics(self) -> list[TopicRecord]:
        keys = await self.bucket.keys("topic.*")
        values = await self.bucket.values(keys)
        return [_topic_decoder.decode(value) for value in values if value is not None]

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
        await self.bucket.put(
            f"subscription.{record.topic}.{record.name}",
            msgspec.json.encode(_subscription_to_dict(record)),
        )

    async def delete_subscription(self, topic: str, name: str) -> None:
        names, js = self._names, self._engine.js
        await self.bucket.delete(f"subscription.{topic}.{name}")
        stream = names.stream(topic)
        for consumer in (names.ready_consumer(name), names.wait_consumer(name)):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_consumer(stream, consumer)
        await self._engine.purge(stream, names.subscription_subjects(topic, name))

    async def load_subscriptions(self) -> list[SubscriptionRecord]:
        keys = await self.bucket.keys("subscription.*.*")
        values = await self.bucket.values(keys)
        return [
            _subscription_from_dict(msgspec.json.decode(value))
            for value in values
            if value is not None
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
