"""The trace store: every transaction and every event of it, in one SQLite file of the monitor's.

It runs in WAL mode so that other processes (``choreograph trace``, a dashboard) read it while
the monitor writes, each reader opening it read-only (``file:…?mode=ro``). ``synchronous=NORMAL``
is enough for a trace: a power cut may lose the last transactions committed, never corrupt the
file, and the bus redelivers an event whose acknowledgement was lost with them. Each call of
:meth:`TraceStore.record` is one SQLite transaction however many events it carries; the monitor
hands it every event of one delivery batch at once. The schema and the recording rules are in
:mod:`choreograph.monitor.recording`. Times are seconds since the epoch on the monitor's clock.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from choreograph.errors import BackendError, NotFoundError, ValidationError
from choreograph.monitor.observation import Observation
from choreograph.monitor.recording import (
    HOP_COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    TRANSACTION_COLUMNS,
    Recorded,
    record_events,
    record_timeout,
)
from choreograph.monitor.timeline import Timeline, Transaction, build_hops
from choreograph.monitor.workflow import TRANSACTION_STATES, WorkflowCatalog

__all__ = ["MAX_LIST_LIMIT", "SCHEMA_VERSION", "TRACE_STORE_FILE", "Recorded", "TraceStore"]

TRACE_STORE_FILE: Final = "monitor.db"
"""The store's file name inside a data directory (``choreograph trace --data-dir``)."""
MAX_LIST_LIMIT: Final = 1000


def _transaction(row: tuple[Any, ...]) -> Transaction:
    return Transaction(
        correlation_id=row[0],
        workflow=row[1],
        state=row[2],
        started_at=row[3],
        deadline=row[4],
        ended_at=row[5],
        outcome_type=row[6],
        failure_reason=row[7],
        late_outcome=row[8],
    )


class TraceStore:
    """The monitor's SQLite file. One monitor writes it; any number of processes read it.

    ``TraceStore(path)`` opens (creating) it for writing; :meth:`open_readonly` opens an
    existing one for reading only, as the CLI and dashboards do.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.Lock()
        try:
            if read_only:
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                connection = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open trace store {self.path}: {exc}") from exc
        self._connection = connection
        try:
            connection.execute("PRAGMA busy_timeout=5000")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION) or (read_only and version == 0):
                raise BackendError(
                    f"{self.path} is not a trace store of this choreograph (schema version "
                    f"{version}, expected {SCHEMA_VERSION})"
                )
            if not read_only:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.executescript(SCHEMA)
                connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            connection.close()
            raise BackendError(f"cannot open trace store {self.path}: {exc}") from exc
        except BaseException:
            connection.close()
            raise

    @classmethod
    def open_readonly(cls, path: str | Path) -> TraceStore:
        """Open an existing store for reading; NotFoundError when there is no file."""
        if not Path(path).is_file():
            raise NotFoundError(f"no trace store at {path}")
        return cls(path, read_only=True)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self, action: str, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One SQLite transaction under the lock; driver errors become BackendError."""
        connection = self._connection
        with self._lock:
            try:
                connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield connection
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            except sqlite3.Error as exc:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise BackendError(f"trace store {self.path}: {action} failed: {exc}") from exc

    # writing -----------------------------------------------------------------------------------
    def record(self, observations: Sequence[Observation], workflows: WorkflowCatalog) -> Recorded:
        """Record events (one SQLite transaction) and apply what they mean to their transactions.

        A start event opens a transaction (unless its correlation id has one); the first success
        or failure event ends a running one; a success or failure after a timeout is noted as the
        transaction's ``late_outcome``. A duplicate (same ``source`` and ``id``) changes nothing.
        """
        with self._transaction("recording events", write=True) as connection:
            return record_events(connection, observations, workflows)

    def time_out(self, correlation_id: str, event: Observation, *, reason: str) -> bool:
        """Mark a running transaction TimedOut at ``event.observed_at`` and record the timeout
        event as its hop, in one SQLite transaction. False if it was no longer running."""
        with self._transaction("recording a timeout", write=True) as connection:
            return record_timeout(connection, correlation_id, event, reason)

    # reading -----------------------------------------------------------------------------------
    def running(self) -> list[tuple[str, str, float]]:
        """(correlation id, workflow, deadline) of every running transaction, soonest first."""
        with self._transaction("listing running transactions", write=False) as connection:
            return connection.execute(
                "SELECT correlation_id, workflow, deadline FROM transactions "
                "WHERE state = 'Running' ORDER BY deadline"
            ).fetchall()

    def transaction(self, correlation_id: str) -> Transaction | None:
        """The transaction with this correlation id, if the monitor saw it start."""
        with self._transaction("reading a transaction", write=False) as connection:
            row = connection.execute(
                f"SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE correlation_id = ?",
                (correlation_id,),
            ).fetchone()
        return None if row is None else _transaction(row)

    def last_event(self, correlation_id: str) -> tuple[str, str, str, str | None] | None:
        """(id, type, source, traceparent) of the transaction's last observed event."""
        with self._transaction("reading the last event", write=False) as connection:
            row = connection.execute(
                "SELECT event_id, type, source, traceparent FROM events WHERE correlation_id = ? "
                "ORDER BY observed_at DESC, seq DESC LIMIT 1",
                (correlation_id,),
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def timeline(self, correlation_id: str) -> Timeline:
        """The transaction and its hops in order; NotFoundError if the monitor never saw it."""
        with self._transaction("reading a timeline", write=False) as connection:
            row = connection.execute(
                f"SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE correlation_id = ?",
                (correlation_id,),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no transaction with correlation id {correlation_id!r}")
            rows = connection.execute(
                f"SELECT {HOP_COLUMNS} FROM events WHERE correlation_id = ? "
                "ORDER BY observed_at, seq",
                (correlation_id,),
            ).fetchall()
        transaction = _transaction(row)
        return Timeline(transaction=transaction, hops=build_hops(transaction, rows))

    def transactions(self, state: str | None = None, limit: int = 50) -> list[Transaction]:
        """The most recently started transactions, in ``state`` if given."""
        if state is not None and state not in TRANSACTION_STATES:
            raise ValidationError(
                f"state must be one of {', '.join(TRANSACTION_STATES)}, got {state!r}"
            )
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_LIST_LIMIT
        ):
            raise ValidationError(
                f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {limit!r}"
            )
        where, parameters = ("WHERE state = ? ", (state, limit)) if state else ("", (limit,))
        with self._transaction("listing transactions", write=False) as connection:
            rows = connection.execute(
                f"SELECT {TRANSACTION_COLUMNS} FROM transactions {where}"
                "ORDER BY started_at DESC, correlation_id LIMIT ?",
                parameters,
            ).fetchall()
        return [_transaction(row) for row in rows]
