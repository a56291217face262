"""Which inbox entries certainly do not exist, without asking SQLite.

Nearly every delivery a service gets is new, and proving that with a query cost a fifth of a
handler run's overhead. :class:`SeenKeys` is a scalable Bloom filter of the inbox keys a store
holds: "not seen" is certain (no query), "maybe seen" is checked in the store (about 1 % of new
keys, and every redelivery). It is loaded when the store opens and told each key it commits; a
filter that fills up gets a larger one beside it. Memory is about 1.3 bytes per key; past
:data:`MAX_KEYS` the filter gives up and every lookup queries the store.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["MAX_KEYS", "SeenKeys"]

BITS_PER_KEY: Final = 10
HASHES: Final = 7
"""With 10 bits per key, 7 hashes give about 1 % false positives."""
MIN_CAPACITY: Final = 1 << 16
MAX_KEYS: Final = 50_000_000
"""Beyond this many keys (about 65 MB of filters) the filter stops answering."""


class _Filter:
    __slots__ = ("bits", "capacity", "count", "size")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = capacity * BITS_PER_KEY
        self.bits = bytearray((self.size + 7) // 8)
        self.count = 0


def _hashes(key: str) -> tuple[int, int]:
    digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1


class SeenKeys:
    """A set of keys that answers ``key in seen`` with no false negatives."""

    __slots__ = ("_filters", "_total")

    def __init__(self, expected: int = 0) -> None:
        self._filters = [_Filter(max(MIN_CAPACITY, 2 * expected))]
        self._total = 0

    @property
    def enabled(self) -> bool:
        """False once more than :data:`MAX_KEYS` were added: then every key may be seen."""
        return bool(self._filters)

    def add(self, key: str) -> None:
        if not self._filters:
            return
        self._total += 1
        if self._total > MAX_KEYS:
            self._filters = []
            return
        last = self._filters[-1]
        if last.count >= last.capacity:
            last = _Filter(2 * last.capacity)
            self._filters.append(last)
        last.count += 1
        first, step = _hashes(key)
        bits, size = last.bits, last.size
        for index in range(HASHES):
            position = (first + index * step) % size
            bits[position >> 3] |= 1 << (position & 7)

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
