"""The dead-letter queue of the SQLite backend: listing, redrive, purge and the counters.

A mixin of :class:`~choreograph.backends.sqlite.backend.SqliteBackend`, which moves deliveries
into the ``dead_letters`` table; these operations read and empty it through the backend's writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import msgspec

from choreograph.backends.sqlite.writer import RowBatch
from choreograph.bus.deadletter import DeadLetter

__all__ = ["SqliteDeadLetters"]

_dead_letter_decoder = msgspec.json.Decoder(DeadLetter)


class SqliteDeadLetters:
    """The dead-letter operations of the :class:`~choreograph.backends.base.Backend` contract."""

    _subscription_ids: dict[tuple[str, str], int]
    _ids: Iterator[int]
    _call: Callable[[Any], Awaitable[Any]]

    async def list_dead_letters(
        self, topic: str, subscription: str, *, limit: int, after: str | None = None
    ) -> list[DeadLetter]:
        sub_id = self._subscription_ids.get((topic, subscription))
        if sub_id is None:
            return []
        rows = await self._call(
            lambda c: c.execute(
                "SELECT record FROM dead_letters WHERE subscription_id = ? AND id > ? "
                "ORDER BY id LIMIT ?",
                (sub_id, after or "", limit),
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
            RowBatch(inserts=inserts).write(c)
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

        counts: dict[str, int] = await self._call(count)
        return counts
