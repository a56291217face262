"""Fixtures of the Drone Delivery tests: a fake clock, and running systems on the embedded bus
(in memory unless a test asks for SQLite), each driven over HTTP in-process."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from drone_helpers import Harness, HarnessFactory

from choreograph import Bus
from choreograph.testing import FakeClock
from drone_delivery.settings import Settings
from drone_delivery.system import DroneDeliverySystem


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_harness(clock: FakeClock) -> AsyncIterator[HarnessFactory]:
    """``await make_harness(settings, bus_url=..., data_dir=..., rng=...)``: a running system,
    closed at the end of the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            settings: Settings | None = None,
            *,
            bus_url: str = "memory://",
            data_dir: Path | None = None,
            rng: random.Random | None = None,
        ) -> Harness:
            bus = await stack.enter_async_context(Bus(bus_url, clock=clock, retry_jitter=0))
            system = await stack.enter_async_context(
                DroneDeliverySystem(
                    bus,
                    data_dir=data_dir,
                    settings=settings or Settings(),
                    clock=clock,
                    rng=rng or random.Random(7),
                )
            )
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=system.app), base_url="http://test"
                )
            )
            return Harness(bus=bus, clock=clock, system=system, client=client)

        yield make


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    """A system with the default settings, in memory."""
    return await make_harness()
