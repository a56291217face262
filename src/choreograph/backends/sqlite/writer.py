"""Group commit for one SQLite connection.

Writes queue up while the previous transaction commits, then go in together: a publish shares its
fsync with everything that arrived meanwhile. Statements run on the event loop's thread (they are
short, and running them there avoids fighting the GIL row by row); only ``COMMIT`` — the WAL write
and fsync, during which SQLite releases the GIL — runs on a helper thread, so the loop keeps
delivering while the disk works.

Row writes that commute (appends, acknowledgements, reschedules, releases of distinct deliveries)
are merged into one ``executemany`` per statement; any other operation is a function run in
order inside the same transaction.

After a small transaction the writer waits a few turns of the event loop before the next one
(:data:`GATHER_TURNS`, until :data:`GATHER_ROWS` rows are waiting): the work its commit woke up
(the handlers whose publishes it stored, the deliveries it handed to their dispatchers) then
stages its writes in time to share the next fsync instead of waiting for one more. After a large
transaction the load is high, every turn of the loop is long, and the next transaction starts at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec

from choreograph.errors import BackendError

__all__ = ["DedupeEntry", "RowBatch", "Writer"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Row = tuple[Any, ...]
DedupeEntry = tuple[float, float, list[str]]
"""(stored_at, expires_at, the de-duplication keys stored at that time)"""

_entries_encoder = msgspec.msgpack.Encoder()
_entries_json = msgspec.json.Encoder()

GATHER_TURNS: Final = 3
"""Turns of the event loop the writer waits, after a small transaction, before the next one.
Three: a commit wakes a handler, whose publish hands a delivery to a worker, whose handler writes."""
GATHER_ROWS: Final = 64
"""Rows waiting that end the wait at once."""
LARGE_TRANSACTION_ROWS: Final = 100
"""A transaction of this many rows or more is followed by the next without waiting. Measured in
``bench/bus.py``'s 3-hop chain: 64-275 rows (10th-90th percentile) at peak, 11-37 at half of it."""


@dataclass(slots=True)
class RowBatch:
    """Writes that commute with each other, applied together with ``executemany``."""

    inserts: list[Row] = field(default_factory=list)
    dedupe: list[DedupeEntry] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)
    reschedules: list[Row] = field(default_factory=list)
    releases: list[Row] = field(default_factory=list)
    dedupe_cutoff: float = 0.0
    """Forget de-duplication log rows that expired before this time."""

    def __len__(self) -> int:
        """Rows written (the de-duplication log's one row per commit aside)."""
        return len(self.inserts) + len(self.acks) + len(self.reschedules) + len(self.releases)

    def __bool__(self) -> bool:
        return bool(
            self.inserts
            or self.dedupe
            or self.acks
            or self.reschedules
            or self.releases
            or self.dedupe_cutoff
        )

    def extend(self, other: RowBatch) -> None:
        self.inserts.extend(other.inserts)
        self.dedupe.extend(other.dedupe)
        self.acks.extend(other.acks)
        self.reschedules.extend(other.reschedules)
        self.releases.extend(other.releases)
        self.dedupe_cutoff = max(self.dedupe_cutoff, other.dedupe_cutoff)

    def write(self, connection: sqlite3.Connection) -> None:
        if self.inserts:
            connection.executemany(
                "INSERT INTO deliveries (id, subscription_id, event, published_at, ttl_start, "
                "attempts, due_at, leased) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                self.inserts,
            )
        if self.dedupe:
            connection.execute(
                "INSERT INTO dedupe_log (expires_at, entries) VALUES (?, ?)",
                (max(entry[1] for entry in self.dedupe), _entries_encoder.encode(self.dedupe)),
            )
        if self.acks:  # one statement, no tuple per row
            connection.execute(
                "DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(?))",
                (_entries_json.encode(self.acks),),
            )
        if self.reschedules:
            connection.executemany(
                "UPDATE deliveries SET due_at = ?, leased = 0, last_outcome = ?, last_error = ?, "
                "last_attempt_at = ? WHERE id = ?",
                self.reschedules,
            )
        if self.releases:
            connection.executemany(
                "UPDATE deliveries SET due_at = ?, leased = 0, attempts = max(attempts - 1, 0) "
                "WHERE id = ? AND leased = 1",
                self.releases,
            )
        if self.dedupe_cutoff:
            connection.execute("DELETE FROM dedupe_log WHERE expires_at < ?", (self.dedupe_cutoff,))


@dataclass(slots=True)
class _Call:
    function: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any] | None


class Writer:
    """Owns the connection; every statement goes through :meth:`call` or :meth:`rows`."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._connection = connection
        self._path = path
        self._rows = RowBatch()
        self._row_waiters: list[Callable[[BaseException | None], object]] = []
        self._queue: list[RowBatch | _Call] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="choreograph-sqlite-commit")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"sqlite writer {self._path}"
        )

    async def stop(self) -> None:
        """Commit what is queued, stop, and close the connection."""
        if self._task is not None:
            await self.call(lambda connection: None)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=True)
        self._connection.close()

    # queueing ----------------------------------------------------------------------------------
    def _check_running(self) -> None:
        if self._task is None:
            raise BackendError(f"{self._path} is not open")

    def rows(self) -> RowBatch:
        """The batch of commuting row writes for the next transaction (no waiting)."""
        self._check_running()
        if not self._queue or self._queue[-1] is not self._rows:
            self._rows = RowBatch()
            self._queue.append(self._rows)
        self._wake.set()
        return self._rows

    def when_committed(self, callback: Callable[[BaseException | None], object]) -> None:
        """Call ``callback`` once the transaction holding the rows queued so far has committed
        (with None) or failed (with the error)."""
        self._row_waiters.append(callback)

    def submit(self, function: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``function`` to run in order inside the next transaction (on the loop's thread,
        when the transaction begins); the future gets its result once committed."""
        self._check_running()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Call(function, future))
        self._wake.set()
        return future

    async def call(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``function`` in order inside the next transaction; return its result once committed."""
        return await self.submit(function)

    # the loop ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        written = 0  # rows of the last transaction
        while True:
            if written < LARGE_TRANSACTION_ROWS:
                await self._gather()
            await self._wake.wait()
            self._wake.clear()
            queue, self._queue = self._queue, []
            waiters, self._row_waiters = self._row_waiters, []
            self._rows = RowBatch()
            if not queue:
                continue
            written = sum(len(item) for item in queue if isinstance(item, RowBatch))
            try:
                results = self._execute(queue)
                await loop.run_in_executor(self._executor, self._commit)
            except Exception as error:
                failure = self._failure(error)
                self._rollback()
                if any(isinstance(item, RowBatch) for item in queue) and not waiters:
                    logger.error("lost acknowledgements or reschedules: %s", failure)
                for waiter in waiters:
                    waiter(failure)
                for item in queue:
                    if (
                        isinstance(item, _Call)
                        and item.future is not None
                        and not item.future.done()
                    ):
                        item.future.set_exception(failure)
                continue
            for waiter in waiters:
                waiter(None)
            for item, result in zip(queue, results, strict=True):
                if isinstance(item, _Call) and item.future is not None and not item.future.done():
                    item.future.set_result(result)

    async def _gather(self) -> None:
        """Let the work the last commit woke up stage its writes (see the module docstring)."""
        for _ in range(GATHER_TURNS):
            if len(self._rows) >= GATHER_ROWS:  # staged rows are always queued
                return
            await asyncio.sleep(0)

    def _execute(self, queue: list[RowBatch | _Call]) -> list[Any]:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        results: list[Any] = []
        for item in queue:
            if isinstance(item, RowBatch):
                item.write(connection)
                results.append(None)
            else:
                results.append(item.function(connection))
        return results

    def _commit(self) -> None:
        self._connection.execute("COMMIT")

    def _rollback(self) -> None:
        try:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
        except sqlite3.Error:
            logger.exception("rollback of %s failed", self._path)

    def _failure(self, error: Exception) -> BackendError:
        if isinstance(error, BackendError):
            return error
        failure = BackendError(f"{self._path}: {error}")
        failure.__cause__ = error
        return failure
