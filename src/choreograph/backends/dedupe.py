"""The publish de-duplication window, kept in memory by the embedded backends.

A topic acknowledges without storing again an event whose (``source``, ``id``) it stored within
its window. Entries expire ``window`` seconds after the event was first stored.

Keys are plain strings and the expiry order lives in two deques of floats and strings: none of
that is tracked by the garbage collector, which matters when the window holds millions of events.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from choreograph.backends.base import NewEvent

__all__ = ["DedupeWindow", "dedupe_key"]


def dedupe_key(topic: str, source: str, event_id: str) -> str:
    """One string for (topic, source, id); NUL cannot appear in a topic name."""
    return f"{topic}\x00{source}\x00{event_id}"


class DedupeWindow:
    """Remembers stored (topic, source, id) keys until they expire."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self._order_times: deque[float] = deque()
        self._order_keys: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._expiry)

    def admit(
        self,
        topic: str,
        events: Sequence[NewEvent],
        *,
        now: float,
        window: float,
        admitted: list[str] | None = None,
    ) -> list[bool]:
        """Mark each event duplicate or not, remembering the new ones (also within the batch);
        the keys of the new ones are appended to ``admitted`` when given."""
        if window <= 0:
            return [False] * len(events)
        if self._order_times and self._order_times[0] <= now:
            self.prune(now)
        expiry = self._expiry
        expires_at = now + window
        duplicates = []
        for new in events:
            event = new.event
            key = f"{topic}\x00{event.source}\x00{event.id}"
            seen_until = expiry.get(key)
            if seen_until is not None and seen_until > now:
                duplicates.append(True)
                continue
            expiry[key] = expires_at
            self._order_times.append(expires_at)
            self._order_keys.append(key)
            duplicates.append(False)
            if admitted is not None:
                admitted.append(key)
        return duplicates

    def forget(self, keys: Iterable[str]) -> None:
        """Undo :meth:`admit` for events whose write failed."""
        for key in keys:
            self._expiry.pop(key, None)

    def remember(self, key: str, expires_at: float) -> None:
        """Restore an entry loaded from storage."""
        self._expiry[key] = expires_at
        self._order_times.append(expires_at)
        self._order_keys.append(key)

    def prune(self, now: float) -> None:
        times, keys, expiry = self._order_times, self._order_keys, self._expiry
        while times and times[0] <= now:
            expires_at = times.popleft()
            key = keys.popleft()
            if expiry.get(key) == expires_at:
                del expiry[key]

    def drop_topic(self, topic: str) -> None:
        prefix = f"{topic}\x00"
        for key in [key for key in self._expiry if key.startswith(prefix)]:
            del self._expiry[key]
