"""Reading and writing a service's state outside its handlers (the Ingestion API).

Handlers get ``ctx.state``; other code goes through the service store's ``view()`` and
``transaction()``, with the same unit of work: the change is visible at once in the process,
durable when :func:`write_state` returns, and undone if the write fails.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any, Final

from choreograph.sdk import ServiceStore

__all__ = ["LOCK_STRIPES", "lock_name", "read_state", "read_states", "write_state"]


async def read_state(store: ServiceStore, collection: str, key: str) -> Any:
    """The value under ``collection``/``key`` (a fresh copy), or None."""
    return await store.view().get(collection, key)


async def read_states(store: ServiceStore, collection: str) -> list[tuple[str, Any]]:
    """Every (key, value) of ``collection``."""
    return await store.view().items(collection)


async def write_state(store: ServiceStore, changes: Iterable[tuple[str, str, Any]]) -> None:
    """Store each (collection, key, value) durably, together; a value of None deletes."""
    async with store.transaction() as state:
        for collection, key, value in changes:
            if value is None:
                state.delete(collection, key)
            else:
                state.put(collection, key, value)


LOCK_STRIPES: Final = 64


def lock_name(kind: str, key: str) -> str:
    """The name of the ``ctx.state.lock`` guarding ``key``: one of :data:`LOCK_STRIPES` per
    kind, since a service keeps every lock it ever named (one per delivery would grow forever)."""
    return f"{kind}:{zlib.crc32(key.encode()) % LOCK_STRIPES}"
