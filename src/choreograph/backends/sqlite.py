"""``sqlite:///path/bus.db``: the embedded durable backend, one WAL file owned by one process.

Every write goes through one connection on one thread. Writes queue up while the previous
transaction commits, then go in together (group commit): a publish costs one fsync shared with
everything else that arrived meanwhile, and the event loop keeps running during the fsync.
``synchronous=FULL`` (default) makes a returned publish survive a power cut;
``?synchronous=normal`` keeps it across a process crash only, for more speed.

Deliveries handed straight to a dispatcher are inserted already leased, so the common path is one
insert at publish and one delete at acknowledgement. A lock file (``bus.db.lock``) keeps a second
process from opening the same store; on open, leases left by a crashed owner are released so
their deliveries run again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import itertools
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
)
from choreograph.backends.dedupe import DedupeWindow
from choreograph.backends.sqlite_schema import SCHEMA, SCHEMA_VERSION
from choreograph.bus.deadletter import DeadLetter
from choreograph.bus.subscription import SubscriptionRecord, SubscriptionSpec
from choreograph.bus.topic import TopicRecord
from choreograph.errors import BackendError, BackendLockedError, ConfigError
from choreograph.events import decode_event

__all__ = ["SqliteBackend"]

logger = logging.getLogger(__name__)

_SYNCHRONOUS: Final = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}
_PRUNE_EVERY_SECONDS: Final = 10.0
_dead_letter_encoder = msgspec.json.Encoder()
_dead_letter_decoder = msgspec.json.Decoder(DeadLetter)
_topic_decoder = msgspec.json.Decoder(TopicRecord)

Row = tuple[Any, ...]
T = TypeVar("T")


@dataclass(slots=True)
class _Batch:
    """Writes that commute with each other, applied together with ``executemany``."""

    inserts: list[Row] = field(default_factory=list)
    dedupe: list[Row] = field(default_factory=list)
    acks: list[tuple[int]] = field(default_factory=list)
    reschedules: list[Row] = field(default_factory=list)
    releases: list[Row] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.inserts or self.dedupe or self.acks or self.reschedules or self.releases)


@dataclass(slots=True)
class _Op:
    """A queued write: either rows for the commuting batch or a function run in order."""

    rows: _Batch | None = None
    call: Callable[[sqlite3.Connection], Any] | None = None
    future: asyncio.Future[Any] | None = None


class SqliteBackend(Backend):
    """SQLite in WAL mode with group commit on a dedicated thread."""

    durable = True

    def __init__(self, url: str, path: str, *, synchronous: str = "full") -> None:
        if synchronous.lower() not in _SYNCHRONOUS:
            raise ConfigError(
                f"sqlite `synchronous` must be one of {', '.join(_SYNCHRONOUS)}, got {synchronous!r}"
            )
        self.url = url
        self.path = Path(path)
        self.synchronous = _SYNCHRONOUS[synchronous.lower()]
        self._connection: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock_file: IO[str] | None = None
        self._ops: list[_Op] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._subscription_ids: dict[tuple[str, str], int] = {}
        self._dedupe = DedupeWindow()
        self._last_prune = 0.0

    # lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._acquire_lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="choreograph-sqlite")
        try:
            state = await self._in_thread(self._connect)
        except BaseException:
            self._release()
            raise
        max_id, subscription_ids, dedupe_rows = state
        self._ids = itertools.count(max_id + 1)
        self._subscription_ids = subscription_ids
        for topic, source, event_id, expires_at in dedupe_rows:
            self._dedupe.remember((topic, source, event_id), expires_at)
        self._writer = asyncio.create_task(self._write_loop(), name=f"sqlite-writer {self.path}")

    def _acquire_lock(self) -> IO[str]:
        lock_file = open(f"{self.path}.lock", "a+")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            lock_file.close()
            raise BackendLockedError(
                f"{self.path} is in use by another bus process (lock {self.path}.lock is held)"
            ) from exc
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        return lock_file

    def _connect(self) -> tuple[int, dict[tuple[str, str], int], list[Row]]:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={self.synchronous}")
            connection.execute("PRAGMA busy_timeout=5000")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise BackendError(
                    f"{self.path} has schema version {version}; this choreograph reads {SCHEMA_VERSION}"
                )
            connection.executescript(SCHEMA)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            max_id = connection.execute("SELECT coalesce(max(id), 0) FROM deliveries").fetchone()[0]
            subscription_ids = {
                (topic, name): sub_id
                for sub_id, topic, name in connection.execute(
                    "SELECT id, topic, name FROM subscriptions"
                )
            }
            dedupe = connection.execute(
                "SELECT topic, source, event_id, expires_at FROM dedupe"
            ).fetchall()
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open {self.path}: {exc}") from exc
        self._connection = connection
        return max_id, subscription_ids, dedupe

    async def close(self) -> None:
        if self._writer is not None:
            await self.flush()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._connection is not None:
            await self._in_thread(self._connection.close)
            self._connection = None
        self._release()

    def _release(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def flush(self) -> None:
        await self._call(lambda connection: None)

    # the writer ------------------------------------------------------------------------------
    async def _in_thread(self, function: Callable[[], T]) -> T:
        if self._executor is None:
            raise BackendError(f"{self.path} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    def _submit(self, op: _Op) -> None:
        if self._writer is None:
            raise BackendError(f"{self.path} is not open")
        self._ops.append(op)
        self._wake.set()

    def _rows(self) -> _Batch:
        """The open commuting batch at the tail of the queue (a new one after a call)."""
        ops = self._ops
        if ops and ops[-1].rows is not None:
            return ops[-1].rows
        batch = _Batch()
        self._submit(_Op(rows=batch))
        return batch

    async def _call(self, call: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``call`` in the writer's transaction, after every earlier write; wait for commit."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._submit(_Op(call=call, future=future))
        return await future

    async def _commit_rows(self, batch: _Batch) -> None:
        """Queue ``batch`` and wait until it is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._submit(_Op(rows=batch, future=future))
        await future

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            ops, self._ops = self._ops, []
            if not ops:
                continue
            try:
                results = await self._in_thread(functools.partial(self._apply, ops))
            except Exception as error:
                exc = error if isinstance(error, BackendError) else BackendError(str(error))
                exc.__cause__ = exc.__cause__ or (error if error is not exc else None)
                failed = [op for op in ops if op.future is None]
                if failed:
                    logger.error("lost %d acknowledgements and reschedules: %s", len(failed), exc)
                for op in ops:
                    if op.future is not None and not op.future.done():
                        op.future.set_exception(exc)
                continue
            for op, result in zip(ops, results, strict=True):
                if op.future is not None and not op.future.done():
                    op.future.set_result(result)

    def _apply(self, ops: list[_Op]) -> list[Any]:
        """One transaction for every queued write, in order; runs on the writer thread."""
        connection = self._connection
        assert connection is not None
        results: list[Any] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            for op in ops:
                if op.rows is not None:
                    _write_batch(connection, op.rows)
                    results.append(None)
                else:
                    assert op.call is not None
                    results.append(op.call(connection))
            connection.execute("COMMIT")
        except BaseException as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise BackendError(f"{self.path}: {exc}") from exc
            raise
        return results

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
        await self._call(lambda c: c.execute("DELETE FROM topics WHERE name = ?", (name,)))
        await self._call(lambda c: c.execute("DELETE FROM dedupe WHERE topic = ?", (name,)))
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
        batch: _Batch,
        topic: str,
        events: Sequence[NewEvent],
        duplicates: Sequence[bool],
        now: float,
        handoff: Mapping[str, Handoff],
        result: AppendResult,
    ) -> None:
        """Add the delivery rows of ``events`` to ``batch``; leased ones go into ``result``."""
        ids = self._ids
        sub_ids = self._subscription_ids
        leased = result.leased
        inserts = batch.inserts
        for new, duplicate in zip(events, duplicates, strict=True):
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
                    delivery = Delivery(key, topic, name, new.event, now, now, 1)
                    if handed is None:
                        leased[name] = [delivery]
                    else:
                        handed.append(delivery)
                else:
                    inserts.append((key, sub_id, new.encoded, now, now, 0, now, 0))
                    result.queued.add(name)

    async def append(
        self,
        topic: str,
        events: Sequence[NewEvent],
        *,
        now: float,
        dedupe_window_seconds: float,
        handoff: Mapping[str, Handoff],
    ) -> AppendResult:
        duplicates = self._dedupe.admit(topic, events, now=now, window=dedupe_window_seconds)
        result = AppendResult(duplicates)
        batch = _Batch()
        self._stage(batch, topic, events, duplicates, now, handoff, result)
        keys = []
        if dedupe_window_seconds > 0:
            expires_at = now + dedupe_window_seconds
            for new, duplicate in zip(events, duplicates, strict=True):
                if not duplicate:
                    key = (topic, new.event.source, new.event.id)
                    keys.append(key)
                    batch.dedupe.append((int(expires_at), *key, expires_at))
        if now - self._last_prune > _PRUNE_EVERY_SECONDS:
            self._last_prune = now
            cutoff = int(now) - 1
            self._submit(
                _Op(call=lambda c: c.execute("DELETE FROM dedupe WHERE bucket < ?", (cutoff,)))
            )
        if not batch:
            return result
        try:
            await self._commit_rows(batch)
        except BaseException:
            self._dedupe.forget(keys)
            raise
        return result

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
        self._rows().acks.extend((delivery.key,) for delivery in deliveries)

    def reschedule(self, delivery: Delivery, due_at: float) -> None:
        self._rows().reschedules.append(
            (
                due_at,
                delivery.last_outcome,
                delivery.last_error,
                delivery.last_attempt_at,
                delivery.key,
            )
        )

    def release(self, deliveries: Sequence[Delivery], now: float) -> None:
        self._rows().releases.extend((now, delivery.key) for delivery in deliveries)

    async def dead_letter(
        self,
        delivery: Delivery,
        record: DeadLetter | None,
        *,
        announce: Sequence[NewEvent],
        announce_topic: str,
        now: float,
        handoff: Mapping[str, Handoff],
    ) -> AppendResult:
        sub_id = self._subscription_ids.get((delivery.topic, delivery.subscription))
        result = AppendResult([False] * len(announce))
        batch = _Batch()
        self._stage(batch, announce_topic, announce, result.duplicates, now, handoff, result)
        blob = None if record is None else _dead_letter_encoder.encode(record)

        def move(c: sqlite3.Connection) -> None:
            removed = c.execute("DELETE FROM deliveries WHERE id = ?", (delivery.key,)).rowcount
            if not removed or sub_id is None:
                return
            if record is None:
                c.execute("UPDATE subscriptions SET dropped = dropped + 1 WHERE id = ?", (sub_id,))
            else:
                c.execute(
                    "INSERT INTO dead_letters (id, subscription_id, record) VALUES (?, ?, ?)",
                    (record.id, sub_id, blob),
                )
            _write_batch(c, batch)

        await self._call(move)
        return result

    # dead letters ------------------------------------------------------------------------------
    async def list_dead_letters(
        self, topic: str, subscription: str, *, limit: int, after: str | None = None
    ) -> list[DeadLetter]:
        sub_id = self._subscription_ids.get((topic, subscription))
        if sub_id is None:
            return []
        rows = await self._call(
            lambda c: c.execute(
                "SELECT record FROM dead_letters WHERE subscription_id = ? AND seq > "
                "coalesce((SELECT seq FROM dead_letters WHERE id = ?), 0) ORDER BY seq LIMIT ?",
                (sub_id, after, limit),
            ).fetchall()
        )
        return [_dead_letter_decoder.decode(row[0]) for row in rows]

    async def get_dead_letter(
        self, topic: str, subscription: str, record_id: str
    ) -> DeadLetter | None:
        sub_id = self._subscription_ids.get((topic, subscription))
        row = await self._call(
            lambda c: c.execute(
                "SELECT record FROM dead_letters WHERE subscription_id = ? AND id = ?",
                (sub_id, record_id),
            ).fetchone()
        )
        return None if row is None else _dead_letter_decoder.decode(row[0])

    def _where_ids(self, sub_id: int, record_ids: Sequence[str] | None) -> tuple[str, list[Any]]:
        if record_ids is None:
            return "subscription_id = ?", [sub_id]
        marks = ",".join("?" * len(record_ids))
        return f"subscription_id = ? AND id IN ({marks})", [sub_id, *record_ids]

    async def redrive(
        self, topic: str, subscription: str, record_ids: Sequence[str] | None, *, now: float
    ) -> int:
        sub_id = self._subscription_ids.get((topic, subscription))
        if sub_id is None or record_ids == []:
            return 0
        where, params = self._where_ids(sub_id, record_ids)
        ids = self._ids

        def move(c: sqlite3.Connection) -> int:
            rows = c.execute(
                f"SELECT seq, record FROM dead_letters WHERE {where}", params
            ).fetchall()
            inserts = []
            for _, blob in rows:
                record = _dead_letter_decoder.decode(blob)
                encoded = msgspec.json.encode(record.event)
                inserts.append((next(ids), sub_id, encoded, record.publish_time, now, 0, now, 0))
            _write_batch(c, _Batch(inserts=inserts))
            c.executemany("DELETE FROM dead_letters WHERE seq = ?", [(row[0],) for row in rows])
            return len(rows)

        moved: int = await self._call(move)
        return moved

    async def purge(self, topic: str, subscription: str, record_ids: Sequence[str] | None) -> int:
        sub_id = self._subscription_ids.get((topic, subscription))
        if sub_id is None or record_ids == []:
            return 0
        where, params = self._where_ids(sub_id, record_ids)
        count: int = await self._call(
            lambda c: c.execute(f"DELETE FROM dead_letters WHERE {where}", params).rowcount
        )
        return count

    async def counters(self, topic: str, subscription: str) -> dict[str, int]:
        sub_id = self._subscription_ids.get((topic, subscription))

        def count(c: sqlite3.Connection) -> dict[str, int]:
            queued = c.execute(
                "SELECT count(*) FROM deliveries WHERE subscription_id = ?", (sub_id,)
            ).fetchone()[0]
            dead = c.execute(
                "SELECT count(*) FROM dead_letters WHERE subscription_id = ?", (sub_id,)
            ).fetchone()[0]
            row = c.execute("SELECT dropped FROM subscriptions WHERE id = ?", (sub_id,)).fetchone()
            return {"queued": queued, "deadLettered": dead, "dropped": row[0] if row else 0}

        return await self._call(count)


def _write_batch(c: sqlite3.Connection, batch: _Batch) -> None:
    if batch.inserts:
        c.executemany(
            "INSERT INTO deliveries (id, subscription_id, event, published_at, ttl_start, attempts, "
            "due_at, leased) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            batch.inserts,
        )
    if batch.dedupe:
        c.executemany(
            "INSERT OR REPLACE INTO dedupe (bucket, topic, source, event_id, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            batch.dedupe,
        )
    if batch.acks:
        c.executemany("DELETE FROM deliveries WHERE id = ?", batch.acks)
    if batch.reschedules:
        c.executemany(
            "UPDATE deliveries SET due_at = ?, leased = 0, last_outcome = ?, last_error = ?, "
            "last_attempt_at = ? WHERE id = ?",
            batch.reschedules,
        )
    if batch.releases:
        c.executemany(
            "UPDATE deliveries SET due_at = ?, leased = 0, attempts = max(attempts - 1, 0) "
            "WHERE id = ? AND leased = 1",
            batch.releases,
        )


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
