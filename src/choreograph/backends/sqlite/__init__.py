"""The embedded durable backend: one SQLite file in WAL mode, owned by one process."""

from choreograph.backends.sqlite.backend import SqliteBackend

__all__ = ["SqliteBackend"]
