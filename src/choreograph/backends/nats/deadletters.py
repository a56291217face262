"""Dead letters on NATS: one KV bucket, key ``<topic>.<subscription>.<record id>``.

The value is the msgspec JSON of the :class:`~choreograph.bus.deadletter.DeadLetter`, the same
record every backend keeps. Record ids sort in dead-lettering order, so listing the keys of a
subscription in order pages through its dead letters, and a cursor stays valid after its record
is gone. The key ``<topic>.<subscription>`` (one token shorter, never listed with the records)
counts the subscription's dropped deliveries.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence

import msgspec

from choreograph.backends.nats.bucket import Bucket
from choreograph.backends.nats.engine import Engine
from choreograph.backends.nats.wire import fresh_headers
from choreograph.bus.deadletter import DeadLetter

__all__ = ["DeadLetterStore", "is_record_id"]

logger = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeadLetter)
_RECORD_ID = re.compile(r"[A-Za-z0-9_=-]{1,128}")


def is_record_id(text: str) -> bool:
    """Whether ``text`` can be a record id (and so a key token); others name no record."""
    return isinstance(text, str) and _RECORD_ID.fullmatch(text) is not None


class DeadLetterStore:
    """Every subscription's dead letters and dropped counts."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.bucket = Bucket(engine, engine.names.dead_letter_bucket)

    async def put(self, record: DeadLetter) -> None:
        await self.bucket.put(
            f"{record.topic}.{record.subscription}.{record.id}", _encoder.encode(record)
        )

    async def count_drop(self, topic: str, subscription: str) -> None:
        await self.bucket.add(f"{topic}.{subscription}", 1)

    async def dropped(self, topic: str, subscription: str) -> int:
        value = await self.bucket.get(f"{topic}.{subscription}")
        return int(value) if value else 0

    async def ids(self, topic: str, subscription: str) -> list[str]:
        """The subscription's record ids, in dead-lettering order."""
        prefix = len(topic) + len(subscription) + 2
        return [key[prefix:] for key in await self.bucket.keys(f"{topic}.{subscription}.*")]

    async def page(
        self, topic: str, subscription: str, *, limit: int, after: str | None
    ) -> list[DeadLetter]:
        ids = [
            record_id
            for record_id in await self.ids(topic, subscription)
            if after is None or record_id > after
        ][:limit]
        return await self.records(topic, subscription, ids)

    async def records(self, topic: str, subscription: str, ids: Sequence[str]) -> list[DeadLetter]:
        """The records with these ids, in the same order; ids without a record are left out."""
        keys = [f"{topic}.{subscription}.{i}" for i in ids if is_record_id(i)]
        values = await self.bucket.values(keys)
        return [_decoder.decode(value) for value in values if value]

    async def get(self, topic: str, subscription: str, record_id: str) -> DeadLetter | None:
        if not is_record_id(record_id):
            return None
        value = await self.bucket.get(f"{topic}.{subscription}.{record_id}")
        return _decoder.decode(value) if value else None

    async def delete(self, topic: str, subscription: str, record_id: str) -> None:
        await self.bucket.delete(f"{topic}.{subscription}.{record_id}")

    async def _selected(
        self, topic: str, subscription: str, record_ids: Sequence[str] | None
    ) -> list[str]:
        """The ids among ``record_ids`` (all when None) that have a record."""
        existing = await self.ids(topic, subscription)
        if record_ids is None:
            return existing
        present = set(existing)
        return [record_id for record_id in dict.fromkeys(record_ids) if record_id in present]

    async def redrive(
        self, topic: str, subscription: str, record_ids: Sequence[str] | None, *, now: float
    ) -> int:
        """Publish each record's event to the subscription as a fresh delivery (no attempts,
        time-to-live from ``now``), then delete the record. Returns how many moved."""
        ids = await self._selected(topic, subscription, record_ids)
        records = await self.records(topic, subscription, ids)
        subject = self._engine.names.ready(topic, subscription)
        outcomes = await self._engine.publish_all(
            [
                (subject, msgspec.json.encode(r.event), fresh_headers(r.publish_time, now))
                for r in records
            ]
        )
        moved = []
        for record, outcome in zip(records, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                logger.warning(
                    "NATS: redriving %s failed (it stays dead-lettered): %r", record.id, outcome
                )
            else:
                moved.append(record)
        await asyncio.gather(*(self.delete(topic, subscription, r.id) for r in moved))
        return len(moved)

    async def purge(self, topic: str, subscription: str, record_ids: Sequence[str] | None) -> int:
        """Delete records (all when None); returns how many there were."""
        ids = await self._selected(topic, subscription, record_ids)
        await asyncio.gather(*(self.delete(topic, subscription, i) for i in ids))
        return len(ids)

    async def delete_subscription(self, topic: str, subscription: str) -> None:
        await self.bucket.delete(f"{topic}.{subscription}.*")
        await self.bucket.delete(f"{topic}.{subscription}")

    async def delete_topic(self, topic: str) -> None:
        await self.bucket.delete(f"{topic}.>")
