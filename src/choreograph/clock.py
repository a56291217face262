"""Injected time. Everything that waits (retries, TTLs, delivery timeouts, monitors) asks a clock.

:class:`SystemClock` is wall-clock time on the running event loop; tests use
:class:`choreograph.testing.FakeClock`, which only moves when the test advances it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol, TypeVar

__all__ = ["Clock", "SystemClock", "TimerHandle", "format_timestamp", "sleep_until", "within"]

_T = TypeVar("_T")


class TimerHandle(Protocol):
    """A scheduled callback that can be cancelled."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Tells the time (seconds since the epoch) and runs callbacks at a time."""

    def now(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback`` on the event loop once ``now() >= when``."""
        ...


class SystemClock:
    """Wall-clock time; callbacks run on the current event loop."""

    def now(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - time.time()), callback)


async def sleep_until(clock: Clock, when: float) -> None:
    """Wait until ``clock`` reaches ``when``."""
    if clock.now() >= when:
        return
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    handle = clock.call_at(when, wake)
    try:
        await future
    finally:
        handle.cancel()


async def within(clock: Clock, seconds: float, awaitable: Awaitable[_T]) -> _T:
    """Await ``awaitable``; TimeoutError once ``clock`` passed ``seconds`` from now.

    :func:`asyncio.timeout` on the injected clock: the awaiting task is cancelled when the time
    comes, and the cancellation becomes a TimeoutError unless someone else also cancelled it.
    """
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    handle = clock.call_at(clock.now() + seconds, expire)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if expired and task.uncancel() == 0:
            raise TimeoutError from None
        raise
    finally:
        handle.cancel()


_last_second: tuple[float, str] = (math.nan, "")
"""The whole second last formatted and its text up to the seconds (events come many a second)."""


def format_timestamp(epoch_seconds: float) -> str:
    """RFC 3339 UTC timestamp with microseconds, as Event Grid writes them (the microseconds
    rounded as ``datetime.fromtimestamp`` rounds them)."""
    global _last_second
    fraction, whole = math.modf(epoch_seconds)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    second, prefix = _last_second
    if second != whole:
        prefix = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = (whole, prefix)
    return f"{prefix}.{micros:06d}Z"
