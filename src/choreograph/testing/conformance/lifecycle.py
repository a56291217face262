"""Conformance tests for the backend's declared durability and a bus that is not open."""

from __future__ import annotations

import pytest

from choreograph.bus import SYSTEM_TOPIC, Bus
from choreograph.errors import BusClosedError
from choreograph.testing.clock import FakeClock
from choreograph.testing.conformance.harness import ConformanceHarness, make_event

__all__ = ["LifecycleTests"]


class LifecycleTests(ConformanceHarness):
    """The backend's declared durability, and a bus that is not open."""

    # the backend -------------------------------------------------------------------------------
    async def test_backend_declares_its_durability(self, bus: Bus) -> None:
        assert bus.backend.durable is self.durable

    # a closed bus ------------------------------------------------------------------------------
    async def test_publishing_before_open_raises_bus_closed(
        self, bus_url: str, clock: FakeClock
    ) -> None:
        unopened = Bus(bus_url, clock=clock)
        with pytest.raises(BusClosedError):
            await unopened.publish("any-topic", make_event())
        with pytest.raises(BusClosedError):
            await unopened.publish("any-topic", [make_event(), make_event()])

    async def test_publishing_after_close_raises_bus_closed(self, bus: Bus) -> None:
        await bus.create_topic("closing-topic")
        await bus.close()
        with pytest.raises(BusClosedError):
            await bus.publish("closing-topic", make_event())
        with pytest.raises(BusClosedError):
            await bus.publish(SYSTEM_TOPIC, make_event())

    async def test_managing_topics_before_open_raises_bus_closed(
        self, bus_url: str, clock: FakeClock
    ) -> None:
        unopened = Bus(bus_url, clock=clock)
        with pytest.raises(BusClosedError):
            await unopened.create_topic("before-open")
        with pytest.raises(BusClosedError):
            await unopened.list_topics()

    async def test_managing_topics_after_close_raises_bus_closed(self, bus: Bus) -> None:
        await bus.create_topic("closing-managed")
        await bus.close()
        with pytest.raises(BusClosedError):
            await bus.create_topic("after-close")
        with pytest.raises(BusClosedError):
            await bus.put_topic("after-close")
        with pytest.raises(BusClosedError):
            await bus.update_topic("closing-managed", {"deduplicationWindowSeconds": 1})
        with pytest.raises(BusClosedError):
            await bus.list_topics()
