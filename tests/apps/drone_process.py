"""The crash test's reading of the services' stores once the ``choreograph up`` process (see
``up_process``) is gone."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec


def read_collection(store: Path, collection: str) -> dict[str, Any]:
    """Every key and (decoded) value of a collection in a service's SQLite store, read-only."""
    connection = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT key, value FROM state WHERE collection = ?", (collection,)
        ).fetchall()
    finally:
        connection.close()
    return {key: msgspec.json.decode(value) for key, value in rows}
