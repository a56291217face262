"""Waiting on a condition another process, server or task brings about: the one place the tests
poll, with a deadline that fails the test instead of hanging it."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

__all__ = ["until"]


async def until(
    condition: Callable[[], Any | Awaitable[Any]],
    what: str,
    seconds: float = 30.0,
    *,
    every: float = 0.02,
    alive: Callable[[], None] | None = None,
) -> Any:
    """Check ``condition()`` (a function or a coroutine function) every ``every`` seconds until
    it returns something truthy, and return that; ``alive()``, when given, fails the test once a
    process the wait depends on has died; after ``seconds`` the test fails naming ``what``."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds:g} s")
        await asyncio.sleep(every)
