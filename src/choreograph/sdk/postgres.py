"""``postgresql://``: one service store shared by every process of a service (install
``choreograph[postgres]``), so that a service scales out as competing consumers.

    postgresql://postgres@127.0.0.1:5432/test?schema=package[&pool_size=10]

``schema`` (required) is the PostgreSQL schema holding the service's tables, created when
missing; ``pool_size`` caps the connections of this process (a handler run holds one). Other
query options (``sslmode``...) go to the driver. The tables:

- ``state (collection, key, value)``: each value the JSON bytes the handler stored, exactly (as
  in the SQLite store; ``convert_from(value, 'UTF8')::jsonb`` reads them in SQL);
- ``inbox (handler, event_id, processed_at, emitted, handled_by)``: one row per event a handler
  handled, with what it emitted (replayed on a redelivery) and the process that handled it
  (``host:pid``);
- ``meta (version)``: the version of this layout.

The process's connections show in ``pg_stat_activity`` as ``choreograph <schema> <host:pid>``.

A handler's run is **one transaction** (READ COMMITTED), nothing is cached in the process (the
other processes change the state):

1. ``BEGIN``, and the inbox row is claimed (``INSERT … ON CONFLICT DO NOTHING``): a process
   running the same event meanwhile waits there until the other ends, then finds the row and
   replays what it emitted (or, if the other rolled back, runs the handler);
2. the handler reads on the transaction's connection (each read sees what was committed before
   it, and the run's own writes); ``ctx.state.lock(name)`` is ``pg_advisory_xact_lock``: one
   holder across every process, **held until the commit** (joins take their lock so too);
3. the writes, buffered meanwhile, are written in key order with the inbox row's emitted
   events, then ``COMMIT``. Any failure rolls back everything, the claim included.

Because a lock is held until the commit, a handler that takes two locks one after the other
holds both: take them in the same order everywhere (PostgreSQL breaks a deadlock by failing one
transaction, which the bus then retries). ``store.transaction()`` is one transaction too, and
``store.view()`` reads committed values outside any.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]
import msgspec

from choreograph.errors import ChoreographError, ConfigError, Retry
from choreograph.sdk.postgres_sql import (
    DRIVER_ERRORS,
    SCHEMA_VERSION,
    PostgresStoreSettings,
    Statements,
    lock_key,
    translated,
)
from choreograph.sdk.state import StateView, Unit
from choreograph.sdk.store import Emitted, ServiceStore, Work, decode_emitted

__all__ = ["PostgresServiceStore", "PostgresStateView", "PostgresStoreSettings"]

logger = logging.getLogger(__name__)

CONNECT_SECONDS: Final = 10.0
CLOSE_SECONDS: Final = 10.0


class _TransactionLock:
    """``pg_advisory_xact_lock``: taken on enter, released by the commit or the rollback."""

    __slots__ = ("_connection", "_key", "_where")

    def __init__(self, connection: Any, key: int, where: str) -> None:
        self._connection = connection
        self._key = key
        self._where = where

    async def __aenter__(self) -> None:
        with translated(self._where, "taking a state lock"):
            await self._connection.execute("SELECT pg_advisory_xact_lock($1)", self._key)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class PostgresStateView(StateView):
    """``ctx.state`` on PostgreSQL: reads go to the database (on the run's transaction, or on
    the pool outside one), writes wait in the unit until the commit."""

    __slots__ = ("_executor", "_in_transaction", "_schema", "_sql", "_where")

    def __init__(
        self,
        executor: Any,
        unit: Unit,
        *,
        schema: str,
        where: str,
        in_transaction: bool,
        sql: Statements | None = None,
    ) -> None:
        # The values live in PostgreSQL, not in a State: the base's ``_state`` stays unset.
        self._unit = unit
        self._executor = executor
        self._schema = schema
        self._where = where
        self._in_transaction = in_transaction
        self._sql = sql or Statements(schema)

    async def get(self, collection: str, key: str, default: Any = None) -> Any:
        """The value stored under ``key`` (this run's own write if it made one), or ``default``."""
        writes = self._unit.writes
        if (collection, key) in writes:
            raw = writes[(collection, key)]
        else:
            with translated(self._where, f"reading {collection}/{key}"):
                raw = await self._executor.fetchval(self._sql.get, collection, key)
        return default if raw is None else msgspec.json.decode(raw)

    async def keys(self, collection: str) -> list[str]:
        """The keys of a collection, sorted, with this run's own writes."""
        with translated(self._where, f"reading the keys of {collection}"):
            rows = await self._executor.fetch(self._sql.keys, collection)
        keys = {row[0] for row in rows}
        for (written, key), raw in self._unit.writes.items():
            if written == collection:
                if raw is None:
                    keys.discard(key)
                else:
                    keys.add(key)
        return sorted(keys)

    async def items(self, collection: str) -> list[tuple[str, Any]]:
        """Every (key, value) of a collection, with this run's own writes."""
        with translated(self._where, f"reading {collection}"):
            rows = await self._executor.fetch(self._sql.scan, collection)
        values: dict[str, bytes] = {row[0]: row[1] for row in rows}
        for (written, key), raw in self._unit.writes.items():
            if written != collection:
                continue
            if raw is None:
                values.pop(key, None)
            else:
                values[key] = raw
        return [(key, msgspec.json.decode(raw)) for key, raw in values.items()]

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """A lock across every process of the service, held until this run commits."""
        if not self._in_transaction:
            raise ChoreographError(
                f"state lock {name!r}: a PostgreSQL store locks within a handler or a "
                "store.transaction(), not through store.view()"
            )
        return _TransactionLock(self._executor, lock_key(self._schema, name), self._where)

    def _write(self, collection: str, key: str, value: bytes | None) -> None:
        self._unit.writes[(collection, key)] = value


class PostgresServiceStore(ServiceStore):
    """A service's inbox and state in PostgreSQL, shared by its processes (see the module)."""

    def __init__(self, url: str, *, handled_by: str | None = None) -> None:
        super().__init__()
        self.settings = PostgresStoreSettings.from_url(url)
        self.schema = self.settings.schema
        self.handled_by = handled_by or f"{socket.gethostname()}:{os.getpid()}"
        """Recorded with each inbox entry: which process handled the event."""
        self.application_name = f"choreograph {self.schema} {self.handled_by}"[:63]
        """What ``pg_stat_activity`` shows of this process's connections."""
        self._sql = Statements(self.schema)
        self._pool: Any = None

    @property
    def _where(self) -> str:
        return self.settings.shown

    # lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, and create the schema and its tables when missing (one process at a time)."""
        with translated(self._where, "connecting"):
            try:
                self._pool = await asyncpg.create_pool(
                    self.settings.dsn,
                    min_size=1,
                    max_size=self.settings.pool_size,
                    timeout=CONNECT_SECONDS,
                    server_settings={"application_name": self.application_name},
                )
            except ValueError as exc:  # the driver refused the URL's options
                raise ConfigError(f"PostgreSQL store {self._where}: {exc}") from exc
        try:
            async with self._begin("creating the tables") as connection:
                with translated(self._where, "creating the tables"):
                    await connection.execute(
                        "SELECT pg_advisory_xact_lock($1)", lock_key(self.schema, "_migrate")
                    )
                    for statement in self._sql.create:
                        await connection.execute(statement)
                    version = await connection.fetchval(self._sql.version)
                    if version is None:
                        await connection.execute(self._sql.set_version, SCHEMA_VERSION)
                if version is not None and version != SCHEMA_VERSION:
                    raise ConfigError(
                        f"PostgreSQL store {self._where} has layout version {version}; this "
                        f"choreograph reads version {SCHEMA_VERSION}"
                    )
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await pool.close()
        except DRIVER_ERRORS as exc:
            logger.warning(
                "PostgreSQL store %s: closing failed (%r); terminating", self._where, exc
            )
            pool.terminate()

    def _open_pool(self) -> Any:
        if self._pool is None:
            raise ConfigError(f"service store {self._where} is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _begin(self, doing: str) -> AsyncIterator[Any]:
        """A connection in a transaction, committed when the block exits, rolled back if it
        raises."""
        pool = self._open_pool()
        with translated(self._where, doing):
            connection = await pool.acquire()
        try:
            transaction = connection.transaction()
            with translated(self._where, doing):
                await transaction.start()
            try:
                yield connection
                with translated(self._where, f"{doing} (commit)"):
                    await transaction.commit()
            except BaseException:
                try:
                    await transaction.rollback()
                except DRIVER_ERRORS as exc:  # the connection broke: the pool replaces it
                    logger.debug("PostgreSQL store %s: rollback failed: %r", self._where, exc)
                raise
        finally:
            try:
                await pool.release(connection, timeout=CLOSE_SECONDS)
            except DRIVER_ERRORS as exc:
                logger.debug("PostgreSQL store %s: release failed: %r", self._where, exc)

    async def _flush(self, connection: Any, unit: Unit) -> None:
        """Write the unit's changes (in key order, so that concurrent runs lock rows in one
        order) and its inbox entry."""
        writes = sorted(unit.writes.items(), key=lambda item: item[0])
        upserts = [(c, k, value) for (c, k), value in writes if value is not None]
        deletes = [(c, k) for (c, k), value in writes if value is None]
        with translated(self._where, "writing the state"):
            if upserts:
                await connection.executemany(self._sql.upsert, upserts)
            if deletes:
                await connection.executemany(self._sql.delete, deletes)
            if unit.inbox is not None:
                handler, event_id, processed_at, emitted = unit.inbox
                await connection.execute(
                    self._sql.record, handler, event_id, processed_at, emitted, self.handled_by
                )

    def _view(self, executor: Any, unit: Unit, *, in_transaction: bool) -> PostgresStateView:
        return PostgresStateView(
            executor,
            unit,
            schema=self.schema,
            where=self._where,
            in_transaction=in_transaction,
            sql=self._sql,
        )

    # the inbox ---------------------------------------------------------------------------------
    async def handled(self, handler: str, event_id: str) -> Emitted | None:
        with translated(self._where, "reading the inbox"):
            raw = await self._open_pool().fetchval(self._sql.handled, handler, event_id)
        return None if raw is None else decode_emitted(raw)

    async def forget_before(self, processed_before: float) -> int:
        with translated(self._where, "forgetting old inbox entries"):
            status: str = await self._open_pool().execute(self._sql.forget, processed_before)
        return int(status.rsplit(" ", 1)[-1])

    # units of work -----------------------------------------------------------------------------
    def work(
        self, handler: str, event_id: str, *, lock: str | None = None
    ) -> AbstractAsyncContextManager[Work]:
        """The handler's run as one transaction (see the module docstring)."""
        return self._handler_run(handler, event_id, lock)

    @contextlib.asynccontextmanager
    async def _handler_run(
        self, handler: str, event_id: str, lock: str | None
    ) -> AsyncIterator[Work]:
        async with self._begin(f"handling an event in {handler}") as connection:
            unit = Unit()
            view = self._view(connection, unit, in_transaction=True)
            with translated(self._where, "claiming the inbox entry"):
                status: str = await connection.execute(
                    self._sql.claim, handler, event_id, time.time(), self.handled_by
                )
                claimed = status.rsplit(" ", 1)[-1] == "1"
                raw = (
                    None
                    if claimed
                    else await connection.fetchval(self._sql.handled, handler, event_id)
                )
            if not claimed:
                if raw is None:  # forgotten between the claim and the read
                    raise Retry(f"the inbox entry of {event_id} in {handler} changed; again")
                yield Work(view, unit, decode_emitted(raw))
                return
            if lock is not None:
                await view.lock(lock).__aenter__()  # released by the commit or the rollback
            yield Work(view, unit)
            if unit.inbox is None:
                raise ChoreographError(f"a run of {handler} ended without its inbox entry")
            await self._flush(connection, unit)

    async def commit(self, unit: Unit) -> None:
        async with self._begin("committing") as connection:
            await self._flush(connection, unit)

    async def undo(self, unit: Unit) -> None:
        """Nothing to undo: the failed run's transaction was rolled back."""
        return None

    def view(self) -> StateView:
        """Read the committed state outside a handler (writes through it are not committed)."""
        return self._view(self._open_pool(), Unit(), in_transaction=False)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[StateView]:
        """Change the state outside a handler, in one transaction: committed when the block
        exits, rolled back if it raises."""
        async with self._begin("a state transaction") as connection:
            unit = Unit()
            yield self._view(connection, unit, in_transaction=True)
            await self._flush(connection, unit)
