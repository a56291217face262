"""The publish de-duplication window, kept in memory by the embedded backends.

A topic acknowledges without storing again an event whose (``source``, ``id``) it stored within
its window. Entries expire ``window`` seconds after the event was first stored.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from choreograph.backends.base import NewEvent

__all__ = ["DedupeWindow"]

Key = tuple[str, str, str]


class DedupeWindow:
    """Remembers stored (topic, source, id) keys until they expire."""

    def __init__(self) -> None:
        self._expiry: dict[Key, float] = {}
        self._order: deque[tuple[float, Key]] = deque()

    def __len__(self) -> int:
        return len(self._expiry)

    def admit(
        self, topic: str, events: Sequence[NewEvent], *, now: float, window: float
    ) -> list[bool]:
        """Mark each event duplicate or not, remembering the new ones (also within the batch)."""
        if window <= 0:
            return [False] * len(events)
        self.prune(now)
        expiry = self._expiry
        expires_at = now + window
        duplicates = []
        for new in events:
            key = (topic, new.event.source, new.event.id)
            seen_until = expiry.get(key)
            if seen_until is not None and seen_until > now:
                duplicates.append(True)
                continue
            expiry[key] = expires_at
            self._order.append((expires_at, key))
            duplicates.append(False)
        return duplicates

    def forget(self, keys: Iterable[Key]) -> None:
        """Undo :meth:`admit` for events whose write failed."""
        for key in keys:
            self._expiry.pop(key, None)

    def remember(self, key: Key, expires_at: float) -> None:
        """Restore an entry loaded from storage."""
        self._expiry[key] = expires_at
        self._order.append((expires_at, key))

    def prune(self, now: float) -> None:
        order, expiry = self._order, self._expiry
        while order and order[0][0] <= now:
            expires_at, key = order.popleft()
            if expiry.get(key) == expires_at:
                del expiry[key]

    def drop_topic(self, topic: str) -> None:
        for key in [key for key in self._expiry if key[0] == topic]:
            del self._expiry[key]
