"""``sqlite:///path/bus.db``: the embedded durable backend, one WAL file owned by one process.

``synchronous=FULL`` (the default) makes a returned publish survive a power cut;
``?synchronous=normal`` keeps it across a process crash only, for more speed. Writes are
group-committed (see :mod:`choreograph.backends.sqlite.writer`).

Deliveries handed straight to a dispatcher are inserted already leased, so the common path is one
insert at publish and one delete at acknowledgement. A lock file (``bus.db.lock``) keeps a second
process from opening the same store; on open, leases left by a crashed owner are released so
their deliveries run again at once.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import msgspec

from choreograph.backends.base import (
    AppendResult,
    Backend,
    Delivery,
    Handoff,
    LeaseResult,
    NewEvent,
    TopicAppend,
)
from choreograph.backends.dedupe import DedupeWindow, dedupe_key
from choreograph.backends.sqlite.deadletters import SqliteDeadLetters
from choreograph.backends.sqlite.files import acquire_lock, connect, migrate
from choreograph.backends.sqlite.schema import SCHEMA, SCHEMA_VERSION
from choreograph.backends.sqlite.writer import RowBatch, Writer
from choreograph.bus.deadletter import DeadLetter
from choreograph.bus.subscription import SubscriptionRecord, SubscriptionSpec
from choreograph.bus.topic import TopicRecord
from choreograph.errors import BackendError, ConfigError
from choreograph.events import decode_event

__all__ = ["SqliteBackend"]

_SYNCHRONOUS: Final = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}
_PRUNE_EVERY_SECONDS: Final = 10.0
_dead_letter_encoder = msgspec.json.Encoder()
_topic_decoder = msgspec.json.Decoder(TopicRecord)
_entries_decoder = msgspec.msgpack.Decoder(list[tuple[float, float, list[str]]])
_entries_encoder = msgspec.msgpack.Encoder()

Row = tuple[Any, ...]
T = TypeVar("T")


class SqliteBackend(SqliteDeadLetters, Backend):
    """SQLite in WAL mode with group commit."""

    durable = True

    def __init__(self, url: str, path: str, *, synchronous: str = "full") -> None:
        if synchronous.lower() not in _SYNCHRONOUS:
            raise ConfigError(
                f"sqlite `synchronous` must be one of {', '.join(_SYNCHRONOUS)}, got {synchronous!r}"
            )
        self.url = url
        self.path = Path(path)
        self.synchronous = _SYNCHRONOUS[synchronous.lower()]
        self._writer: Writer | None = None
        self._lock_file: IO[str] | None = None
        self._ids = itertools.count(1)
        self._subscription_ids: dict[tuple[str, str], int] = {}
        self._dedupe = DedupeWindow()
        self._last_prune = 0.0

    # lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = acquire_lock(self.path, "bus")
        try:
            connection = self._connect()
        except BaseException:
            self._release_lock()
            raise
        self._writer = Writer(connection, self.path)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        connection = connect(self.path, synchronous=self.synchronous)
        try:
            migrate(connection, self.path, SCHEMA, SCHEMA_VERSION)
            max_id = connection.execute("SELECT coalesce(max(id), 0) FROM deliveries").fetchone()[0]
            self._ids = itertools.count(max_id + 1)
            self._subscription_ids = {
                (topic, name): sub_id
                for sub_id, topic, name in connection.execute(
                    "SELECT id, topic, name FROM subscriptions"
                )
            }
            self._load_dedupe(connection)
        except sqlite3.Error as exc:
            connection.close()
            raise BackendError(f"cannot open {self.path}: {exc}") from exc
        except BackendError:
            connection.close()
            raise
        return connection

    def _load_dedupe(self, connection: sqlite3.Connection) -> None:
        """Restore the de-duplication window."""
        for (blob,) in connection.execute("SELECT entries FROM dedupe_log ORDER BY id"):
            for _, expires_at, keys in _entries_decoder.decode(blob):
                for key in keys:
                    self._dedupe.remember(key, expires_at)

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    @property
    def _open_writer(self) -> Writer:
        if self._writer is None:
            raise BackendError(f"{self.path} is not open")
        return self._writer

    async def _call(self, function: Any) -> Any:
        return await self._open_writer.call(function)

    async def flush(self) -> None:
        await self._open_writer.call(lambda connection: None)

    # catalog -----------------------------------------------------------------------------------
    async def save_topic(self, record: TopicRecord) -> None:
        blob = msgspec.json.encode(record)
        await self._call(
            lambda c: c.execute(
                "INSERT INTO topics (name, record) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET record = excluded.record",
                (record.name, blob),
            )
        )

    async def delete_topic(self, name: str) -> None:
        for topic, subscription in [key for key in self._subscription_ids if key[0] == name]:
            await self.delete_subscription(topic, subscription)

        def forget(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM topics WHERE name = ?", (name,))
            # The window's log mixes topics in one row per commit; rewrite the rows it touches.
            prefix = dedupe_key(name, "", "")[: len(name) + 1]
            for row_id, blob in c.execute("SELECT id, entries FROM dedupe_log").fetchall():
                entries = _entries_decoder.decode(blob)
                kept = [
                    (stored_at, expires_at, [key for key in keys if not key.startswith(prefix)])
                    for stored_at, expires_at, keys in entries
                ]
                kept = [entry for entry in kept if entry[2]]
                if not kept:
                    c.execute("DELETE FROM dedupe_log WHERE id = ?", (row_id,))
                elif kept != entries:
                    c.execute(
                        "UPDATE dedupe_log SET entries = ? WHERE id = ?",
                        (_entries_encoder.encode(kept), row_id),
                    )

        await self._call(forget)
        self._dedupe.drop_topic(name)

    async def load_topics(self) -> list[TopicRecord]:
        rows = await self._call(lambda c: c.execute("SELECT record FROM topics").fetchall())
        return [_topic_decoder.decode(row[0]) for row in rows]

    async def save_subscription(self, record: SubscriptionRecord) -> None:
        blob = msgspec.json.encode(_subscription_to_dict(record))
        sub_id = await self._call(
            lambda c: c.execute(
                "INSERT INTO subscriptions (topic, name, record) VALUES (?, ?, ?) "
                "ON CONFLICT (topic, name) DO UPDATE SET record = excluded.record RETURNING id",
                (record.topic, record.name, blob),
            ).fetchone()[0]
        )
        self._subscription_ids[(record.topic, record.name)] = sub_id

    async def delete_subscription(self, topic: str, name: str) -> None:
        sub_id = self._subscription_ids.pop((topic, name), None)
        if sub_id is None:
            return

        def delete(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM deliveries WHERE subscription_id = ?", (sub_id,))
            c.execute("DELETE FROM dead_letters WHERE subscription_id = ?", (sub_id,))
            c.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,))

        await self._call(delete)

    async def load_subscriptions(self) -> list[SubscriptionRecord]:
        rows = await self._call(lambda c: c.execute("SELECT record FROM subscriptions").fetchall())
        return [_subscription_from_dict(msgspec.json.decode(row[0])) for row in rows]

    # queue -------------------------------------------------------------------------------------
    def _stage(
        self,
        batch: RowBatch,
        topic: str,
        events: Sequence[NewEvent],
        now: float,
        handoff: Mapping[str, Handoff],
        result: AppendResult,
    ) -> None:
        """Add the delivery rows of ``events`` to ``batch``; leased ones go into ``result``."""
        ids = self._ids
        sub_ids = self._subscription_ids
        leased = result.leased
        inserts = batch.inserts
        for new, duplicate in zip(events, result.duplicates, strict=True):
            if duplicate:
                continue
            for name in new.subscriptions:
                sub_id = sub_ids.get((topic, name))
                if sub_id is None:
                    continue
                key = next(ids)
                grant = handoff.get(name)
                handed = leased.get(name)
                if grant is not None and (handed is None or len(handed) < grant.limit):
                    inserts.append((key, sub_id, new.encoded, now, now, 1, grant.lease_until, 1))
                    delivery = Delivery(
                        key, topic, name, new.event, now, now, 1, size=len(new.encoded)
                    )
                    if handed is None:
                        leased[name] = [delivery]
                    else:
                        handed.append(delivery)
                else:
                    inserts.append((key, sub_id, new.encoded, now, now, 0, now, 0))
                    result.mark_queued(name)

    def append(
        self, appends: Sequence[TopicAppend], *, now: float, acks: Sequence[Delivery] = ()
    ) -> asyncio.Future[list[AppendResult]]:
        writer = self._open_writer
        batch = writer.rows()  # stage straight into the next transaction
        results = []
        remembered: list[str] = []
        for topic, events, window, handoff in appends:
            admitted: list[str] = []
            duplicates = self._dedupe.admit(
                topic, events, now=now, window=window, admitted=admitted
            )
            result = AppendResult(duplicates)
            results.append(result)
            self._stage(batch, topic, events, now, handoff, result)
            if admitted:
                remembered.extend(admitted)
                batch.dedupe.append((now, now + window, admitted))
        if acks:
            batch.acks.extend([delivery.key for delivery in acks])
        if now - self._last_prune > _PRUNE_EVERY_SECONDS:
            self._last_prune = now
            batch.dedupe_cutoff = now
        done: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()

        def committed(error: BaseException | None) -> None:
            if error is not None:
                self._dedupe.forget(remembered)
            if done.cancelled():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(results)

        writer.when_committed(committed)
        return done

    async def lease(
        self, topic: str, subscription: str, *, now: float, limit: int, lease_until: float
    ) -> LeaseResult:
        sub_id = self._subscription_ids.get((topic, subscription))
        if sub_id is None:
            return LeaseResult([], None)

        def lease(c: sqlite3.Connection) -> tuple[list[Row], float | None]:
            rows = c.execute(
                "SELECT id, event, published_at, ttl_start, attempts, last_outcome, last_error, "
                "last_attempt_at FROM deliveries "
                "WHERE subscription_id = ? AND leased = 0 AND due_at <= ? ORDER BY due_at LIMIT ?",
                (sub_id, now, limit),
            ).fetchall()
            c.executemany(
                "UPDATE deliveries SET leased = 1, due_at = ?, attempts = attempts + 1 WHERE id = ?",
                [(lease_until, row[0]) for row in rows],
            )
            next_due = c.execute(
                "SELECT min(due_at) FROM deliveries WHERE subscription_id = ? AND leased = 0",
                (sub_id,),
            ).fetchone()[0]
            return rows, next_due

        rows, next_due = await self._call(lease)
        deliveries = [
            Delivery(
                key,
                topic,
                subscription,
                decode_event(blob),
                published,
                ttl,
                attempts + 1,
                outcome,
                error,
                attempted,
                len(blob),
            )
            for key, blob, published, ttl, attempts, outcome, error, attempted in rows
        ]
        return LeaseResult(deliveries, next_due)

    async def release_all_leases(self, now: float) -> int:
        count: int = await self._call(
            lambda c: (
                c.execute(
                    "UPDATE deliveries SET leased = 0, due_at = ?, attempts = max(attempts - 1, 0) "
                    "WHERE leased = 1",
                    (now,),
                ).rowcount
            )
        )
        return count

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._open_writer.rows().acks.extend([delivery.key for delivery in deliveries])

    def reschedule(self, delivery: Delivery, due_at: float) -> None:
        self._open_writer.rows().reschedules.append(
            (
                due_at,
                delivery.last_outcome,
                delivery.last_error,
                delivery.last_attempt_at,
                delivery.key,
            )
        )

    def release(self, deliveries: Sequence[Delivery], now: float) -> None:
        self._open_writer.rows().releases.extend((now, delivery.key) for delivery in deliveries)

    async def dead_letter(
        self,
        delivery: Delivery,
        record: DeadLetter | None,
        *,
        announce: TopicAppend | None,
        now: float,
    ) -> AppendResult | None:
        sub_id = self._subscription_ids.get((delivery.topic, delivery.subscription))
        batch = RowBatch()
        result = None
        if announce is not None:
            result = AppendResult([False] * len(announce.events))
            self._stage(batch, announce.topic, announce.events, now, announce.handoff, result)
        blob = None if record is None else _dead_letter_encoder.encode(record)

        def move(c: sqlite3.Connection) -> bool:
            removed = c.execute("DELETE FROM deliveries WHERE id = ?", (delivery.key,)).rowcount
            if not removed or sub_id is None:
                return False
            if record is None:
                c.execute("UPDATE subscriptions SET dropped = dropped + 1 WHERE id = ?", (sub_id,))
            else:
                c.execute(
                    "INSERT INTO dead_letters (id, subscription_id, record) VALUES (?, ?, ?)",
                    (record.id, sub_id, blob),
                )
            batch.write(c)
            return True

        moved = await self._call(move)
        return result if moved else None


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
