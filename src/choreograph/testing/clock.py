"""A clock that moves only when the test says so."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FakeClock"]


@dataclass(order=True, slots=True)
class _Timer:
    when: float
    order: int
    callback: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Deterministic time for tests.

    ``advance(seconds)`` moves time forward and runs, in time order, every callback that came
    due, each seeing ``now()`` equal to its own due time. Callbacks only wake tasks; let those
    tasks run (``await bus.idle()``) before advancing again.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = float(start)
        self._timers: list[_Timer] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], object]) -> _Timer:
        timer = _Timer(float(when), next(self._order), callback)
        if when <= self._now:
            # Already due: run it from the loop, as a real timer would, not inline.
            asyncio.get_running_loop().call_soon(self._fire, timer)
            return timer
        heapq.heappush(self._timers, timer)
        return timer

    @staticmethod
    def _fire(timer: _Timer) -> None:
        if not timer.cancelled:
            timer.cancelled = True
            timer.callback()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0), running the callbacks that come due."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back; got {seconds}")
        self.advance_to(self._now + seconds)

    def advance_to(self, when: float) -> None:
        """Move time forward to ``when``, running the callbacks that come due."""
        if when < self._now:
            raise ValueError(f"a clock cannot go back from {self._now} to {when}")
        timers = self._timers
        while timers and timers[0].when <= when:
            timer = heapq.heappop(timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, timer.when)
            self._fire(timer)
        self._now = when

    def next_deadline(self) -> float | None:
        """When the earliest pending callback is due, if any."""
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0].when if self._timers else None
