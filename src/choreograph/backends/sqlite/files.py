"""Owning a SQLite file: an exclusive lock beside it, and a connection set up for WAL."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from choreograph.errors import BackendError, BackendLockedError

__all__ = ["acquire_lock", "connect", "migrate"]


def acquire_lock(path: Path, owner: str) -> IO[str]:
    """Hold ``<path>.lock`` exclusively until the returned file is closed; it records our pid.

    ``owner`` names what holds it in the error another process gets ("bus", "service store").
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = open(f"{path}.lock", "a+")  # noqa: SIM115 - held until the caller closes it
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        lock_file.close()
        raise BackendLockedError(
            f"{path} is in use by another {owner} process (lock {path}.lock is held)"
        ) from exc
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    return lock_file


def connect(path: Path, *, synchronous: str) -> sqlite3.Connection:
    """A connection in WAL mode that the caller drives (autocommit; explicit BEGIN/COMMIT)."""
    try:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={synchronous}")
    except sqlite3.Error as exc:
        raise BackendError(f"cannot open {path}: {exc}") from exc
    return connection


def migrate(
    connection: sqlite3.Connection,
    path: Path,
    schema: str,
    version: int,
    upgrades: Mapping[int, str] | None = None,
) -> None:
    """Create the tables of ``schema`` (at ``version``) in a new file, or bring an existing one
    to it: ``upgrades[n]`` is the script taking a file from version ``n`` to ``n + 1``, run in
    one transaction with the version change (a failed upgrade leaves the file as it was)."""
    upgrades = upgrades or {}
    try:
        found = connection.execute("PRAGMA user_version").fetchone()[0]
        if 0 < found < version and all(n in upgrades for n in range(found, version)):
            for n in range(found, version):
                _upgrade(connection, upgrades[n], n + 1)
        elif found not in (0, version):
            raise BackendError(
                f"{path} has schema version {found}; this choreograph reads {version}"
            )
        connection.executescript(schema)
        connection.execute(f"PRAGMA user_version={version}")
    except sqlite3.Error as exc:
        raise BackendError(f"cannot open {path}: {exc}") from exc


def _upgrade(connection: sqlite3.Connection, script: str, version: int) -> None:
    try:
        connection.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={version};\nCOMMIT;"
        )
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
