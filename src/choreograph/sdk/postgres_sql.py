"""What the PostgreSQL service store says to the server: its URL, its tables and statements,
its lock keys, and the translation of the driver's errors (see :mod:`choreograph.sdk.postgres`)."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

from choreograph.errors import BackendError, ConfigError
from choreograph.urls import without_password

__all__ = [
    "DRIVER_ERRORS",
    "SCHEMA_VERSION",
    "PostgresStoreSettings",
    "Statements",
    "lock_key",
    "translated",
]

SCHEMA_VERSION: Final = 1
"""The version of the tables' layout, kept in ``meta``."""
DEFAULT_POOL_SIZE: Final = 10
_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}")
_OPTIONS: Final = ("schema", "pool_size")
DRIVER_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
"""What the driver raises when the server or the connection fails."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PostgresStoreSettings:
    """A ``postgresql://`` store URL, parsed and validated."""

    dsn: str
    """The URL for the driver (without this store's options)."""
    schema: str
    pool_size: int = DEFAULT_POOL_SIZE
    shown: str = ""
    """The URL without its password, for messages."""

    @classmethod
    def from_url(cls, url: str) -> PostgresStoreSettings:
        parts = urlsplit(url)
        if parts.scheme != "postgresql" or not parts.hostname or parts.path in ("", "/"):
            raise ConfigError(
                f"a PostgreSQL store URL is postgresql://user@host:port/database?schema=name, "
                f"got {without_password(url)!r}"
            )
        options = parse_qsl(parts.query, keep_blank_values=True)
        ours = {key: value for key, value in options if key in _OPTIONS}
        schema = ours.get("schema", "")
        if not _SCHEMA.fullmatch(schema):
            raise ConfigError(
                "a PostgreSQL store URL names the service's schema (?schema=name: a letter or "
                f"'_', then up to 62 letters, digits, '_' or '-'), got {schema!r}"
            )
        size_text = ours.get("pool_size", str(DEFAULT_POOL_SIZE))
        if not size_text.isdigit() or not 1 <= int(size_text) <= 1000:
            raise ConfigError(f"pool_size must be an integer from 1 to 1000, got {size_text!r}")
        rest = urlencode([(key, value) for key, value in options if key not in _OPTIONS])
        dsn = urlunsplit(parts._replace(query=rest, fragment=""))
        return cls(
            dsn=dsn,
            schema=schema,
            pool_size=int(size_text),
            shown=f"{without_password(dsn)} (schema {schema})",
        )


def lock_key(schema: str, name: str) -> int:
    """The advisory lock (a signed 64-bit key) of the lock ``name`` of the service in
    ``schema``: services sharing a database never share a lock."""
    digest = hashlib.blake2b(f"{schema}\n{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.contextmanager
def translated(where: str, doing: str) -> Iterator[None]:
    """Translate the driver's errors while ``doing`` something into BackendError."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise BackendError(f"PostgreSQL store {where}: {doing} failed: {exc}") from exc


class Statements:
    """The statements of the store of one service (its tables in ``schema``)."""

    def __init__(self, schema: str) -> None:
        q = f'"{schema}"'
        self.create = (
            f"CREATE SCHEMA IF NOT EXISTS {q}",
            f"CREATE TABLE IF NOT EXISTS {q}.meta (version INTEGER NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {q}.state (collection TEXT NOT NULL, key TEXT NOT NULL, "
            "value BYTEA NOT NULL, PRIMARY KEY (collection, key))",
            f"CREATE TABLE IF NOT EXISTS {q}.inbox (handler TEXT NOT NULL, event_id TEXT NOT NULL, "
            "processed_at DOUBLE PRECISION NOT NULL, emitted BYTEA NOT NULL, "
            "handled_by TEXT NOT NULL, PRIMARY KEY (handler, event_id))",
            f"CREATE INDEX IF NOT EXISTS inbox_age ON {q}.inbox (processed_at)",
        )
        self.version = f"SELECT max(version) FROM {q}.meta"
        self.set_version = f"INSERT INTO {q}.meta (version) VALUES ($1)"
        self.get = f"SELECT value FROM {q}.state WHERE collection = $1 AND key = $2"
        self.scan = f"SELECT key, value FROM {q}.state WHERE collection = $1 ORDER BY key"
        self.keys = f"SELECT key FROM {q}.state WHERE collection = $1"
        self.upsert = (
            f"INSERT INTO {q}.state (collection, key, value) VALUES ($1, $2, $3) "
            "ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value"
        )
        self.delete = f"DELETE FROM {q}.state WHERE collection = $1 AND key = $2"
        self.claim = (
            f"INSERT INTO {q}.inbox (handler, event_id, processed_at, emitted, handled_by) "
            "VALUES ($1, $2, $3, '', $4) ON CONFLICT DO NOTHING"
        )
        self.handled = f"SELECT emitted FROM {q}.inbox WHERE handler = $1 AND event_id = $2"
        self.record = (
            f"INSERT INTO {q}.inbox (handler, event_id, processed_at, emitted, handled_by) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (handler, event_id) DO UPDATE SET "
            "processed_at = excluded.processed_at, emitted = excluded.emitted, "
            "handled_by = excluded.handled_by"
        )
        self.forget = f"DELETE FROM {q}.inbox WHERE processed_at < $1"
