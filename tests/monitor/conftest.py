"""Fixtures for the monitor tests: a fake clock, a memory bus with the delivery topics, a monitor
on a trace store under tmp_path, and a compensating subscriber on the timeout topic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from monitor_helpers import TIMEOUT_TOPIC, Inbox, MonitorFactory, create_topics, delivery_workflow

from choreograph.bus import Bus
from choreograph.monitor import Monitor, Workflow
from choreograph.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def bus(clock: FakeClock) -> AsyncIterator[Bus]:
    async with Bus("memory://", clock=clock, retry_jitter=0.0) as bus:
        await create_topics(bus)
        yield bus


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "monitor.db"


@pytest.fixture
def make_monitor(bus: Bus, store_path: Path, clock: FakeClock) -> MonitorFactory:
    def make(*workflows: Workflow, on: Bus | None = None) -> Monitor:
        return Monitor(
            on or bus, list(workflows) or [delivery_workflow()], store_path=store_path, clock=clock
        )

    return make


@pytest.fixture
async def monitor(make_monitor: MonitorFactory) -> AsyncIterator[Monitor]:
    async with make_monitor() as monitor:
        yield monitor


@pytest.fixture
async def compensator(bus: Bus) -> Inbox:
    inbox = Inbox()
    await bus.subscribe(TIMEOUT_TOPIC, "compensator", inbox)
    return inbox
