"""The SQLite writer's group commit: which writes share a transaction (counted by the COMMIT
statements the connection runs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from choreograph.backends.sqlite.files import connect, migrate
from choreograph.backends.sqlite.schema import SCHEMA, SCHEMA_VERSION
from choreograph.backends.sqlite.writer import GATHER_ROWS, LARGE_TRANSACTION_ROWS, Writer


@dataclass
class Store:
    writer: Writer
    commits: list[str]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    path = tmp_path / "bus.db"
    connection = connect(path, synchronous="NORMAL")
    migrate(connection, path, SCHEMA, SCHEMA_VERSION)
    commits: list[str] = []
    connection.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    writer = Writer(connection, path)
    writer.start()
    yield Store(writer, commits)
    await writer.stop()


def stage(writer: Writer, rows: int) -> asyncio.Future[BaseException | None]:
    """Queue ``rows`` acknowledgements (of deliveries that do not exist: each deletes nothing);
    the future gets the outcome of the transaction that holds them."""
    done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    writer.rows().acks.extend(range(rows))
    writer.when_committed(done.set_result)
    return done


async def stage_when(released: asyncio.Event, writer: Writer, *, turns: int) -> None:
    """Once ``released``, wait ``turns`` turns of the loop, write one row and see it committed."""
    await released.wait()
    for _ in range(turns):
        await asyncio.sleep(0)
    assert await stage(writer, 1) is None


async def transactions_for_woken_writes(store: Store, first_rows: int) -> int:
    """Commit ``first_rows`` rows; its commit wakes two writers, one writing at once, the other
    a turn of the loop later. How many transactions hold their two rows?"""
    released = asyncio.Event()
    woken = [
        asyncio.create_task(stage_when(released, store.writer, turns=turns)) for turns in (0, 1)
    ]
    first = stage(store.writer, first_rows)
    first.add_done_callback(lambda _: released.set())
    assert await first is None
    before = len(store.commits)
    await asyncio.gather(*woken)
    return len(store.commits) - before


async def test_writes_woken_by_a_small_commit_share_the_next_transaction(store: Store) -> None:
    assert await transactions_for_woken_writes(store, first_rows=1) == 1


async def test_after_a_large_transaction_the_next_starts_at_once(store: Store) -> None:
    assert await transactions_for_woken_writes(store, first_rows=LARGE_TRANSACTION_ROWS) == 2


async def test_enough_waiting_rows_start_the_next_transaction_without_waiting(
    store: Store,
) -> None:
    released = asyncio.Event()
    late = asyncio.create_task(stage_when(released, store.writer, turns=1))
    first = stage(store.writer, 1)

    def wake(_: object) -> None:
        stage(store.writer, GATHER_ROWS)  # already enough for a transaction of its own
        released.set()

    first.add_done_callback(wake)
    assert await first is None
    before = len(store.commits)
    await late

    assert len(store.commits) - before == 2


async def test_a_failed_transaction_fails_every_write_it_held(store: Store) -> None:
    def fail(connection: object) -> None:
        raise RuntimeError("the statement failed")

    rows = stage(store.writer, 3)
    call = store.writer.submit(fail)

    assert isinstance(await rows, Exception)
    with pytest.raises(Exception, match="the statement failed"):
        await call
    assert await stage(store.writer, 1) is None  # the writer goes on
