"""Fixtures of the SDK tests: a fake clock and an in-memory bus driven by it, without jitter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from choreograph.bus import Bus
from choreograph.testing.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def bus(clock: FakeClock) -> AsyncIterator[Bus]:
    async with Bus("memory://", clock=clock, retry_jitter=0) as bus:
        yield bus
