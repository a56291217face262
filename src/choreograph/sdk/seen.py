"""Which inbox entries certainly do not exist, without asking SQLite.

Nearly every delivery a service gets is new, and proving that with a query cost a fifth of a
handler run's overhead. :class:`SeenKeys` is a scalable Bloom filter of the inbox keys a store
holds: "not seen" is certain (no query), "maybe seen" is checked in the store (about 1 % of new
keys, and every redelivery). It is loaded when the store opens and told each key it commits, with
the time the key was processed.

Keys go into generations, each holding the keys processed within :data:`GENERATION_SECONDS` (a
generation that fills up gets a larger one after it). When the inbox forgets the entries
processed before some time, every generation whose newest key is older than that is dropped: all
of its keys were forgotten. With the inbox's 7-day retention, about eight generations are held.
Memory is about 1.3 bytes per key the inbox holds; past :data:`MAX_KEYS` of them the filter gives
up and every lookup queries the store.
"""

from __future__ import annotations

import hashlib
import math
from typing import Final

__all__ = ["MAX_KEYS", "SeenKeys"]

BITS_PER_KEY: Final = 10
HASHES: Final = 7
"""With 10 bits per key, 7 hashes give about 1 % false positives."""
MIN_CAPACITY: Final = 1 << 16
MAX_KEYS: Final = 50_000_000
"""Beyond this many keys held at once (about 65 MB of filters) the filter stops answering."""
GENERATION_SECONDS: Final = 86_400.0
"""The processing times one generation spans."""


class _Filter:
    __slots__ = ("bits", "capacity", "count", "newest", "oldest", "size")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = capacity * BITS_PER_KEY
        self.bits = bytearray((self.size + 7) // 8)
        self.count = 0
        self.oldest = math.inf
        self.newest = -math.inf
        """The processing times of the keys in this generation span ``oldest`` to ``newest``."""


def _hashes(key: str) -> tuple[int, int]:
    digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1


class SeenKeys:
    """A set of keys that answers ``key in seen`` with no false negatives."""

    __slots__ = ("_filters", "_held")

    def __init__(self, expected: int = 0) -> None:
        self._filters = [_Filter(max(MIN_CAPACITY, 2 * expected))]
        self._held = 0
        """Keys in the generations kept (some may have been forgotten by the inbox already)."""

    @property
    def enabled(self) -> bool:
        """False once more than :data:`MAX_KEYS` were held at once: then every key may be seen."""
        return bool(self._filters)

    def __len__(self) -> int:
        """Keys in the generations kept."""
        return self._held

    def add(self, key: str, processed_at: float) -> None:
        filters = self._filters
        if not filters:
            return
        if self._held >= MAX_KEYS:
            self._filters = []
            return
        last = filters[-1]
        full = last.count >= last.capacity
        if full or processed_at - last.oldest >= GENERATION_SECONDS:
            last = _Filter(2 * last.capacity if full else last.capacity)
            filters.append(last)
        last.count += 1
        self._held += 1
        if processed_at > last.newest:
            last.newest = processed_at
        if processed_at < last.oldest:
            last.oldest = processed_at
        first, step = _hashes(key)
        bits, size = last.bits, last.size
        for index in range(HASHES):
            position = (first + index * step) % size
            bits[position >> 3] |= 1 << (position & 7)

    def forget_before(self, processed_before: float) -> None:
        """The inbox forgot the keys processed before ``processed_before``: drop the generations
        holding only such keys."""
        if not self._filters:
            return
        kept = [generation for generation in self._filters if generation.newest >= processed_before]
        if not kept:
            kept = [_Filter(max(MIN_CAPACITY, self._filters[-1].capacity))]
        self._filters = kept
        self._held = sum(generation.count for generation in kept)

    def __contains__(self, key: object) -> bool:
        if not self._filters or not isinstance(key, str):
            return True
        first, step = _hashes(key)
        for last in self._filters:
            bits, size = last.bits, last.size
            for index in range(HASHES):
                position = (first + index * step) % size
                if not bits[position >> 3] & (1 << (position & 7)):
                    break
            else:
                return True
        return False
