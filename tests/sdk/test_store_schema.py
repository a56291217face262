"""The SQLite service store's file: a store written by an earlier version of its schema is
upgraded in place when it opens, keeping every state value and inbox entry; a file of a version
this choreograph does not know is refused, and a failed upgrade leaves the file as it was."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from choreograph.backends.sqlite.files import migrate
from choreograph.errors import BackendError
from choreograph.sdk import SqliteServiceStore
from choreograph.sdk.store import SCHEMA_VERSION

VERSION_1 = """
CREATE TABLE state (
    collection  TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       BLOB NOT NULL,
    PRIMARY KEY (collection, key)
) WITHOUT ROWID;
CREATE TABLE inbox (
    handler       TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    processed_at  REAL NOT NULL,
    emitted       BLOB NOT NULL,
    PRIMARY KEY (handler, event_id)
) WITHOUT ROWID;
CREATE INDEX inbox_age ON inbox (processed_at);
PRAGMA user_version=1;
"""
EMITTED = b'[["orders",{"specversion":"1.0","id":"e-2","source":"/s","type":"T"}]]'


def write_version_1(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.executescript(VERSION_1)
        connection.execute("INSERT INTO state VALUES ('packages', 'p-1', ?)", (b'{"weight": 2.5}',))
        connection.execute("INSERT INTO inbox VALUES ('ship', 'e-1', 1.5, ?)", (EMITTED,))
    connection.close()


def tables(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
        found = {name: sql for name, sql in rows}
    connection.close()
    return found


async def test_a_version_1_store_is_upgraded_and_keeps_its_state_and_inbox(
    tmp_path: Path,
) -> None:
    path = tmp_path / "service.db"
    write_version_1(path)

    store = SqliteServiceStore(path)
    await store.open()
    try:
        assert await store.view().get("packages", "p-1") == {"weight": 2.5}
        replay = await store.handled("ship", "e-1")
        assert replay is not None
        assert [(topic, event.id) for topic, event in replay] == [("orders", "e-2")]
    finally:
        await store.close()

    found = tables(path)
    assert set(found) == {"state", "inbox"}
    assert all("WITHOUT ROWID" not in sql for sql in found.values())
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("SELECT processed_at FROM inbox").fetchall() == [(1.5,)]
    connection.close()


async def test_a_store_of_an_unknown_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "service.db"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version=99")
    connection.close()

    store = SqliteServiceStore(path)
    with pytest.raises(
        BackendError, match=f"schema version 99; this choreograph reads {SCHEMA_VERSION}"
    ):
        await store.open()


def test_a_failed_upgrade_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "service.db"
    write_version_1(path)
    broken = {1: "ALTER TABLE state RENAME TO state_v1;\nINSERT INTO missing VALUES (1);"}
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(BackendError, match="no such table: missing"):
            migrate(connection, path, "", SCHEMA_VERSION, broken)
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 1
        assert not connection.in_transaction
    finally:
        connection.close()
    assert set(tables(path)) == {"state", "inbox"}
