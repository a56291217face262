"""Settings of the Python process a choreograph runtime runs in.

Delivering an event allocates a few hundred short-lived objects (the event, its delivery, the
handler's coroutine, futures, the emitted events), most of which die within the delivery. With
CPython's default thresholds the collector runs its youngest generation every 700 net
allocations, promotes whatever is in flight at that moment, and so walks the whole heap again and
again: in the Drone Delivery benchmark it took about a tenth of the event loop's time.

``choreograph`` commands call :func:`tune_garbage_collector` when they start; a program that
embeds the runtime in its own process may call it too (it changes the whole process).
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["YOUNG_GENERATION_THRESHOLD", "tune_garbage_collector"]

YOUNG_GENERATION_THRESHOLD: Final = 10_000
"""Net allocations between collections of the youngest generation (CPython's default: 700).
Measured in ``bench/drone_delivery.py``: 11-15% more deliveries/s than the default, longest
young collection a few milliseconds."""


def tune_garbage_collector() -> None:
    """Collect the youngest generation after :data:`YOUNG_GENERATION_THRESHOLD` net allocations;
    the older generations keep their default ratios."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)
