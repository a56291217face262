"""Event ids: random (version 4) UUIDs from a generator reseeded in every forked child."""

from __future__ import annotations

import os
import random
from typing import Final

_random = random.Random()  # seeded from os.urandom
_random_bits = _random.getrandbits
os.register_at_fork(after_in_child=_random.seed)  # a forked child must not repeat its parent's ids
_UUID4_MASK: Final = 0xFFFFFFFF_FFFF_0FFF_3FFF_FFFFFFFFFFFF
_UUID4_BITS: Final = 0x00000000_0000_4000_8000_000000000000


def _new_id() -> str:
    """A random (version 4) UUID string, several times faster than ``str(uuid.uuid4())``.

    Event ids must be unique, not secret, so the standard generator serves."""
    h = "%032x" % (_random_bits(128) & _UUID4_MASK | _UUID4_BITS)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
