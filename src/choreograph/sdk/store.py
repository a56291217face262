"""Where a service keeps its inbox (the events it has handled) and its state.

``sqlite:///path/service.db`` (the default, one file per service), ``memory://``, or
``postgresql://…?schema=<name>`` (:mod:`choreograph.sdk.postgres`, shared by every process of a
service). A handler's state changes and its inbox entry are written in one transaction; writes
from concurrent handlers share a commit.

A handler runs in a unit of work, :meth:`ServiceStore.work`: the memory and SQLite stores keep
the state in this process (:class:`~choreograph.sdk.state.State`), apply its changes at once and
undo them if the handler fails; the PostgreSQL store runs it as one database transaction.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import IO, Final

import msgspec

from choreograph.backends.sqlite.files import acquire_lock, connect, migrate
from choreograph.backends.sqlite.writer import Writer
from choreograph.errors import BackendError, ConfigError
from choreograph.events import CloudEvent
from choreograph.sdk.seen import SeenKeys
from choreograph.sdk.state import Key, State, StateView, Unit

__all__ = [
    "MemoryServiceStore",
    "ServiceStore",
    "SqliteServiceStore",
    "Work",
    "open_service_store",
]

Emitted = list[tuple[str, CloudEvent]]
InboxEntry = tuple[str, str, float, bytes]
"""(handler, event id, processed at, the emitted events encoded)"""
_emitted_decoder = msgspec.json.Decoder(list[tuple[str, CloudEvent]])
_emitted_encoder = msgspec.json.Encoder()

INBOX_RETENTION_SECONDS: Final = 7 * 86_400.0
"""How long a handled event id is remembered; far beyond the bus's longest retry (24 h)."""

# Rowid tables: their rows (state values and emitted events of a kilobyte or more) are written
# where the row id puts them, only the small key goes into the key's index. Version 1 kept them
# in WITHOUT ROWID tables, i.e. in the key's B-tree itself: each upsert of a grown value moved
# it between pages, and writing the store took a sixth of the event loop in the Drone Delivery
# benchmark (six times the time of rowid tables for state upserts, twice for inbox inserts).
SCHEMA_VERSION: Final = 2
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS state (
    collection  TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       BLOB NOT NULL,
    PRIMARY KEY (collection, key)
);
CREATE TABLE IF NOT EXISTS inbox (
    handler       TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    processed_at  REAL NOT NULL,
    emitted       BLOB NOT NULL,
    PRIMARY KEY (handler, event_id)
);
CREATE INDEX IF NOT EXISTS inbox_age ON inbox (processed_at);
"""
UPGRADES: Final = {
    1: """
ALTER TABLE state RENAME TO state_v1;
ALTER TABLE inbox RENAME TO inbox_v1;
DROP INDEX inbox_age;
"""
    + SCHEMA
    + """
INSERT INTO state (collection, key, value) SELECT collection, key, value FROM state_v1;
INSERT INTO inbox (handler, event_id, processed_at, emitted)
    SELECT handler, event_id, processed_at, emitted FROM inbox_v1;
DROP TABLE state_v1;
DROP TABLE inbox_v1;
""",
}
"""The scripts bringing a store file of version ``n`` to ``n + 1``."""


def encode_emitted(emitted: Emitted, encoded: Sequence[bytes] | None = None) -> bytes:
    """The inbox form of what a handler emitted: ``[[topic, event], ...]``. ``encoded``, the
    events' JSON from :func:`~choreograph.events.encode_event` when the caller has it, is
    spliced in instead of encoding the events again (the same encoder, the same bytes)."""
    if encoded is None:
        return _emitted_encoder.encode(emitted)
    pairs = [
        b"[" + _emitted_encoder.encode(topic) + b"," + event + b"]"
        for (topic, _), event in zip(emitted, encoded, strict=True)
    ]
    return b"[" + b",".join(pairs) + b"]"


def decode_emitted(encoded: bytes) -> Emitted:
    return _emitted_decoder.decode(encoded)


class Work:
    """One handler run in its unit of work: the state it sees (``ctx.state``) and the ``unit``
    recording its changes, whose ``inbox`` entry the runtime sets before the block ends.

    ``replay`` is what the handler emitted when it already handled the event: a store shared
    by several processes finds out only once the run has begun (another process committed it
    meanwhile); the runtime then returns it and runs nothing."""

    __slots__ = ("replay", "state", "unit")

    def __init__(self, state: StateView, unit: Unit, replay: Emitted | None = None) -> None:
        self.state = state
        self.unit = unit
        self.replay = replay


class _LocalWork:
    """:meth:`ServiceStore.work` of a store whose state is in this process: the changes apply at
    once, are committed when the block exits and undone if it raises; the lock, if any, is held
    until then. (A class rather than a generator: this runs for every delivery.)"""

    __slots__ = ("_lock", "_lock_name", "_store", "_work")

    def __init__(self, store: ServiceStore, lock_name: str | None) -> None:
        self._store = store
        self._lock_name = lock_name
        self._lock: asyncio.Lock | None = None
        self._work: Work | None = None

    async def __aenter__(self) -> Work:
        state = self._store.state
        if self._lock_name is not None:
            lock = state.take_lock(self._lock_name)
            try:
                await lock.acquire()
            except BaseException:
                state.drop_lock(self._lock_name)
                raise
            self._lock = lock
        unit = Unit()
        self._work = Work(StateView(state, unit), unit)
        return self._work

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._work is not None
        unit = self._work.unit
        try:
            if kind is None:
                try:
                    await self._store.commit(unit)
                except BaseException:
                    await self._store.undo(unit)
                    raise
            else:
                await self._store.undo(unit)
        finally:
            if self._lock is not None and self._lock_name is not None:
                self._lock.release()
                self._store.state.drop_lock(self._lock_name)


class ServiceStore(abc.ABC):
    """A service's inbox and state."""

    def __init__(self) -> None:
        self.state = State()
        """The state in this process: all of it for the memory and SQLite stores; a store that
        keeps it elsewhere (PostgreSQL) uses only its in-process locks."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Open the store and load the state."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def handled(self, handler: str, event_id: str) -> Emitted | None:
        """What ``handler`` emitted when it handled ``event_id``, or None if it has not."""

    @abc.abstractmethod
    async def commit(self, unit: Unit) -> None:
        """Make the unit's state changes and inbox entry durable, together."""

    @abc.abstractmethod
    async def forget_before(self, processed_before: float) -> int:
        """Drop inbox entries older than ``processed_before``; returns how many."""

    def view(self) -> StateView:
        """Read the state outside a handler (writes through this view are not committed)."""
        return StateView(self.state, Unit())

    def work(
        self, handler: str, event_id: str, *, lock: str | None = None
    ) -> AbstractAsyncContextManager[Work]:
        """Run ``handler`` on ``event_id`` in a unit of work (see :class:`Work`), holding the
        lock named ``lock`` through the commit when given: the unit (with the inbox entry set
        in the block) is committed when the block exits, undone if it raises."""
        return _LocalWork(self, lock)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[StateView]:
        """Change the state outside a handler (an HTTP API, seeding at start-up):

            async with store.transaction() as state:
                state.put("fleet", "drone-001", {...})

        The changes are visible at once, durable when the block exits, undone if it raises."""
        unit = Unit()
        try:
            yield StateView(self.state, unit)
            await self.commit(unit)
        except BaseException:
            await self.undo(unit)
            raise

    async def undo(self, unit: Unit) -> None:
        """Undo a failed unit in memory, and durably where another commit wrote it meanwhile."""
        restored = self.state.rollback(unit)
        if restored is not None:
            await self.commit(restored)


class MemoryServiceStore(ServiceStore):
    """Everything in memory: for tests and the in-memory bus."""

    def __init__(self) -> None:
        super().__init__()
        self._inbox: dict[tuple[str, str], tuple[float, bytes]] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def handled(self, handler: str, event_id: str) -> Emitted | None:
        entry = self._inbox.get((handler, event_id))
        return None if entry is None else _emitted_decoder.decode(entry[1])

    async def commit(self, unit: Unit) -> None:
        if unit.inbox is not None:
            handler, event_id, processed_at, emitted = unit.inbox
            self._inbox[(handler, event_id)] = (processed_at, emitted)

    async def forget_before(self, processed_before: float) -> int:
        old = [key for key, (at, _) in self._inbox.items() if at < processed_before]
        for key in old:
            del self._inbox[key]
        return len(old)


class _CommitBatch:
    """The units a SQLite store commits in one transaction: the latest value of each key they
    touched (a unit records the values current when it commits, so the last one is the state
    then) and their inbox entries."""

    __slots__ = ("inbox", "state", "written")

    def __init__(self, written: asyncio.Future[None]) -> None:
        self.state: dict[Key, bytes | None] = {}
        self.inbox: list[InboxEntry] = []
        self.written = written
        """Done once the transaction holding the batch committed (or failed)."""

    def add(self, current: dict[Key, bytes | None], inbox: InboxEntry | None) -> None:
        self.state.update(current)
        if inbox is not None:
            self.inbox.append(inbox)

    def write(self, c: sqlite3.Connection) -> None:
        state = self.state.items()
        upserts = [(col, key, value) for (col, key), value in state if value is not None]
        if upserts:
            c.executemany(
                "INSERT INTO state (collection, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value",
                upserts,
            )
        deletes = [slot for slot, value in state if value is None]
        if deletes:
            c.executemany("DELETE FROM state WHERE collection = ? AND key = ?", deletes)
        if self.inbox:
            c.executemany(
                "INSERT OR REPLACE INTO inbox (handler, event_id, processed_at, emitted) "
                "VALUES (?, ?, ?, ?)",
                self.inbox,
            )


class SqliteServiceStore(ServiceStore):
    """One SQLite file per service (WAL, ``synchronous=FULL``), group-committed."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        super().__init__()
        self.path = Path(path)
        self.synchronous = synchronous
        self._writer: Writer | None = None
        self._batch: _CommitBatch | None = None
        self._seen = SeenKeys()
        """The inbox keys (:func:`_inbox_key`) this store may hold."""
        self._reader: sqlite3.Connection | None = None
        self._lock_file: IO[str] | None = None

    async def open(self) -> None:
        self._lock_file = acquire_lock(self.path, "service store")
        try:
            connection = connect(self.path, synchronous=self.synchronous)
            migrate(connection, self.path, SCHEMA, SCHEMA_VERSION, UPGRADES)
            for collection, key, value in connection.execute(
                "SELECT collection, key, value FROM state"
            ):
                self.state.load(collection, key, value)
            # Inbox lookups read committed rows on their own connection, at once, instead of
            # waiting for the writer's next commit; an entry being committed is still guarded by
            # the endpoint's in-progress set. Most lookups are of new keys: the filter answers.
            self._reader = connect(self.path, synchronous=self.synchronous)
            (count,) = connection.execute("SELECT count(*) FROM inbox").fetchone()
            self._seen = SeenKeys(count)
            for handler, event_id, processed_at in connection.execute(
                "SELECT handler, event_id, processed_at FROM inbox"
            ):
                self._seen.add(_inbox_key(handler, event_id), processed_at)
        except BaseException:
            self._lock_file.close()
            raise
        self._writer = Writer(connection, self.path)
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _open_writer(self) -> Writer:
        if self._writer is None:
            raise ConfigError(f"service store {self.path} is not open")
        return self._writer

    async def handled(self, handler: str, event_id: str) -> Emitted | None:
        if self._reader is None:
            raise ConfigError(f"service store {self.path} is not open")
        if _inbox_key(handler, event_id) not in self._seen:
            return None
        try:
            row = self._reader.execute(
                "SELECT emitted FROM inbox WHERE handler = ? AND event_id = ?", (handler, event_id)
            ).fetchone()
        except sqlite3.Error as exc:
            raise BackendError(f"{self.path}: {exc}") from exc
        return None if row is None else _emitted_decoder.decode(row[0])

    async def commit(self, unit: Unit) -> None:
        batch = self._batch
        if batch is None:
            batch = self._batch = _CommitBatch(self._open_writer().submit(self._write_batch))
        batch.add(self.state.current(unit), unit.inbox)
        if unit.inbox is not None:
            handler, event_id, processed_at, _ = unit.inbox
            self._seen.add(_inbox_key(handler, event_id), processed_at)
        await asyncio.shield(batch.written)

    def _write_batch(self, c: sqlite3.Connection) -> None:
        """Write the units committed since the last transaction began, in this one."""
        batch, self._batch = self._batch, None
        if batch is not None:
            batch.write(c)

    async def forget_before(self, processed_before: float) -> int:
        count: int = await self._open_writer().call(
            lambda c: (
                c.execute("DELETE FROM inbox WHERE processed_at < ?", (processed_before,)).rowcount
            )
        )
        self._seen.forget_before(processed_before)
        return count


def _inbox_key(handler: str, event_id: str) -> str:
    return f"{handler}\n{event_id}"


def open_service_store(url: str) -> ServiceStore:
    """The store for ``url``: ``memory://``, ``sqlite:///relative.db`` / ``sqlite:////abs.db``,
    or ``postgresql://user@host:5432/database?schema=name`` (install ``choreograph[postgres]``)."""
    if url == "memory://":
        return MemoryServiceStore()
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return SqliteServiceStore(url[len("sqlite:///") :])
    if url.startswith("postgresql://"):
        try:
            from choreograph.sdk.postgres import PostgresServiceStore
        except ImportError as exc:
            raise ConfigError(
                "the PostgreSQL service store needs asyncpg: pip install 'choreograph[postgres]'"
            ) from exc
        return PostgresServiceStore(url)
    raise ConfigError(
        "a service store URL is memory:// or sqlite:///path (or postgresql://host/database"
        f"?schema=name), got {url!r}"
    )
