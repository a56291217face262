"""A service's own state: JSON values by collection and key, changed in units of work.

Values are kept encoded, so what a handler reads is its own copy. A handler's changes apply at
once to the state every handler of the service in this process sees (so a handler that takes a
lock, decides and releases it leaves the next one a consistent view, without holding the lock
through a disk write). If the handler fails, its changes are undone, except where another
handler has changed the same key since (its value stands). A unit makes durable the current
value of every key it touched, so whatever order units commit in, the store ends with what the
process sees.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec

from choreograph.errors import InvalidEventError, ValidationError
from choreograph.events import check_json

__all__ = ["State", "StateView", "Unit"]

_encoder = msgspec.json.Encoder()
Key = tuple[str, str]


class Unit:
    """The changes of one handler run: final values for the store, old values for undo."""

    __slots__ = ("inbox", "undo", "writes")

    def __init__(self) -> None:
        self.writes: dict[Key, bytes | None] = {}
        self.undo: dict[Key, bytes | None] = {}
        self.inbox: tuple[str, str, float, bytes] | None = None
        """(handler, event id, processed at, emitted events) recorded with the changes."""


class State:
    """The in-process view of a service's state, loaded from its store when it opens."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}

    def load(self, collection: str, key: str, value: bytes) -> None:
        self._values.setdefault(collection, {})[key] = value

    def raw(self, collection: str, key: str) -> bytes | None:
        values = self._values.get(collection)
        return None if values is None else values.get(key)

    def raw_items(self, collection: str) -> list[tuple[str, bytes]]:
        """Every (key, encoded value) of a collection, as they are now."""
        values = self._values.get(collection)
        return [] if values is None else list(values.items())

    def set_raw(self, collection: str, key: str, value: bytes | None) -> None:
        values = self._values.setdefault(collection, {})
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value

    def lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    def rollback(self, unit: Unit) -> Unit | None:
        """Undo a failed unit's writes that no other unit has overwritten since.

        Returns a unit of the restored keys, to commit in case another handler's commit made
        the failed writes durable meanwhile (None when nothing was restored)."""
        restored = Unit()
        for (collection, key), value in unit.undo.items():
            if self.raw(collection, key) == unit.writes.get((collection, key)):
                self.set_raw(collection, key, value)
                restored.writes[(collection, key)] = value
        return restored if restored.writes else None

    def current(self, unit: Unit) -> dict[Key, bytes | None]:
        """The values to make durable for ``unit``: the current ones of the keys it touched."""
        return {slot: self.raw(*slot) for slot in unit.writes}

    def take_lock(self, name: str) -> asyncio.Lock:
        """The lock ``name`` for a short-lived use (a join's transaction): counted, so that
        :meth:`drop_lock` forgets it once its last user is done (such locks would pile up)."""
        self._lock_users[name] = self._lock_users.get(name, 0) + 1
        return self.lock(name)

    def drop_lock(self, name: str) -> None:
        """A user of :meth:`take_lock` is done (released the lock, or never got it)."""
        users = self._lock_users.pop(name, 1) - 1
        if users > 0:
            self._lock_users[name] = users
        else:
            self._locks.pop(name, None)


class StateView:
    """What a handler sees as ``ctx.state``: reads and writes recorded in its unit of work.

    This one reads and writes the process's :class:`State`; a store that keeps its state
    elsewhere (PostgreSQL) gives handlers a subclass overriding ``get``, ``items``, ``_write``
    and ``lock``."""

    __slots__ = ("_state", "_unit")

    def __init__(self, state: State, unit: Unit) -> None:
        self._state = state
        self._unit = unit

    async def get(self, collection: str, key: str, default: Any = None) -> Any:
        """The value stored under ``key`` (a fresh copy), or ``default``."""
        raw = self._state.raw(collection, key)
        return default if raw is None else msgspec.json.decode(raw)

    async def keys(self, collection: str) -> list[str]:
        """The keys of a collection, sorted (to read values one by one, as far as needed)."""
        return sorted(key for key, _ in self._state.raw_items(collection))

    async def items(self, collection: str) -> list[tuple[str, Any]]:
        """Every (key, value) of a collection."""
        decode = msgspec.json.decode
        return [(key, decode(raw)) for key, raw in self._state.raw_items(collection)]

    def put(self, collection: str, key: str, value: Any) -> None:
        """Store ``value`` (JSON) under ``key``; visible at once, durable with the handler."""
        try:
            check_json(value, f"state {collection}/{key}")
            encoded = _encoder.encode(value)
        except (InvalidEventError, TypeError, ValueError, OverflowError) as exc:
            raise ValidationError(f"state {collection}/{key} must be JSON: {exc}") from exc
        self._write(collection, key, encoded)

    def delete(self, collection: str, key: str) -> None:
        """Remove ``key``; visible at once, durable with the handler."""
        self._write(collection, key, None)

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """A lock shared by every handler of this service in this process, for a
        read-decide-write section (``async with ctx.state.lock("fleet"): ...``). A store shared
        by several processes makes it a lock across them, held until the handler commits."""
        return self._state.lock(name)

    def _write(self, collection: str, key: str, value: bytes | None) -> None:
        slot = (collection, key)
        unit = self._unit
        if slot not in unit.undo:
            unit.undo[slot] = self._state.raw(collection, key)
        unit.writes[slot] = value
        self._state.set_raw(collection, key, value)
