"""Settings of the Python process a choreograph runtime runs in.

Delivering an event allocates a few hundred short-lived objects (the event, its delivery, the
handler's coroutine, futures, the emitted events), most of which die within the delivery. With
CPython's default thresholds the collector runs its youngest generation every 700 net
allocations, promotes whatever is in flight at that moment, and so walks the whole heap again and
again: in the Drone Delivery benchmark it took about a tenth of the event loop's time.

The SQLite backend commits on a helper thread: the fsync runs without the GIL, and the thread
needs the GIL back to report the commit. While the event loop is busy, CPython makes a waiting
thread wait up to the switch interval (5 ms by default) before the running thread gives the GIL
up, so every group commit looked up to 5 ms longer to the handlers awaiting it, and the loop
went idle waiting for them.

``choreograph`` commands call :func:`tune_process` when they start; a program that embeds the
runtime in its own process may call it too (it changes the whole process).
"""

from __future__ import annotations

import gc
import sys
from typing import Final

__all__ = [
    "SWITCH_INTERVAL_SECONDS",
    "YOUNG_GENERATION_THRESHOLD",
    "tune_garbage_collector",
    "tune_process",
    "tune_thread_switching",
]

YOUNG_GENERATION_THRESHOLD: Final = 10_000
"""Net allocations between collections of the youngest generation (CPython's default: 700).
Measured in ``bench/drone_delivery.py``: 11-15% more deliveries/s than the default, longest
young collection a few milliseconds."""

SWITCH_INTERVAL_SECONDS: Final = 0.001
"""Longest wait of a thread for the GIL before the running thread is asked to give it up
(CPython's default: 0.005). Measured in ``bench/bus.py``: 18-24% more SQLite 3-hop chains/s
than the default, the event loop idle 0.2 s instead of 1.0 s in a 5 s run; in
``bench/drone_delivery.py`` no change beyond the run-to-run noise."""


def tune_garbage_collector() -> None:
    """Collect the youngest generation after :data:`YOUNG_GENERATION_THRESHOLD` net allocations;
    the older generations keep their default ratios."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)


def tune_thread_switching() -> None:
    """Hand the GIL to a waiting thread after :data:`SWITCH_INTERVAL_SECONDS`."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


def tune_process() -> None:
    """Every tuning of this module: what ``choreograph`` commands apply at start."""
    tune_garbage_collector()
    tune_thread_switching()
