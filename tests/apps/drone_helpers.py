"""Helpers of the Drone Delivery tests: a running system driven over HTTP on a fake clock, and
views of what each service holds in its own store."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from choreograph import Bus, CloudEvent
from choreograph.sdk import ServiceStore
from choreograph.testing import FakeClock
from drone_delivery.system import DroneDeliverySystem

WAIT_SECONDS = 10.0
"""Safety net for every wait: a bug fails the test after this long instead of hanging it."""


def delivery_body(delivery_id: str | None = "d-1", **changes: Any) -> dict[str, Any]:
    """A valid ``POST /deliveries`` body; ``changes`` replace fields (``packageInfo`` merges)."""
    body: dict[str, Any] = {
        "ownerId": "owner-1",
        "pickupLocation": "47.64,-122.13",
        "dropoffLocation": "47.61,-122.33",
        "packageInfo": {"packageId": f"pkg-{delivery_id}", "size": "small", "weight": 2.5},
    }
    if delivery_id is not None:
        body["deliveryId"] = delivery_id
    package = changes.pop("packageInfo", None)
    if package is not None:
        body["packageInfo"] = {**body["packageInfo"], **package}
    body.update(changes)
    return body


class Spy:
    """A subscriber keeping every event published on a topic."""

    def __init__(self) -> None:
        self.events: list[CloudEvent] = []

    async def __call__(self, event: CloudEvent) -> None:
        self.events.append(event)

    def of_type(self, event_type: str, delivery_id: str | None = None) -> list[CloudEvent]:
        return [
            event
            for event in self.events
            if event.type == event_type
            and (delivery_id is None or event.correlationid == delivery_id)
        ]


class ScriptedRandom(random.Random):
    """A random source answering ``random()`` from a script (then its last value forever)."""

    def __init__(self, values: Sequence[float]) -> None:
        super().__init__(0)
        self.values = list(values)
        self.calls = 0

    def random(self) -> float:
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return value


def parse_server_sent(text: str) -> list[dict[str, Any]]:
    """The events of a ``text/event-stream`` body: ``{"id", "event", "data"}`` each."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        fields["data"] = msgspec.json.decode(fields["data"])
        events.append(fields)
    return events


@dataclass
class Harness:
    """A Drone Delivery system on a bus with a fake clock, and an HTTP client for its app."""

    bus: Bus
    clock: FakeClock
    system: DroneDeliverySystem
    client: httpx.AsyncClient
    spies: dict[str, Spy] = field(default_factory=dict)

    # driving -----------------------------------------------------------------------------------
    async def settle(self) -> None:
        """Let every delivery and timeout due at the current time happen."""
        async with asyncio.timeout(WAIT_SECONDS):
            await self.system.monitor.idle()

    async def run_for(self, seconds: float) -> None:
        """Advance the clock by ``seconds``, stopping at each timer so that every retry and
        timeout happens at its own time."""
        target = self.clock.now() + seconds
        async with asyncio.timeout(WAIT_SECONDS):
            await self.system.monitor.idle()
            while (deadline := self.clock.next_deadline()) is not None and deadline <= target:
                self.clock.advance_to(max(deadline, self.clock.now()))
                await self.system.monitor.idle()
            self.clock.advance_to(target)
            await self.system.monitor.idle()

    async def spy(self, *topics: str) -> None:
        """Record what is published on ``topics`` from now on (``self.spies[topic]``)."""
        for topic in topics:
            self.spies[topic] = Spy()
            await self.bus.subscribe(topic, f"test-spy-{topic}", self.spies[topic])

    async def request(self, delivery_id: str | None = "d-1", **changes: Any) -> httpx.Response:
        return await self.client.post("/deliveries", json=delivery_body(delivery_id, **changes))

    async def delivery(self, delivery_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/deliveries/{delivery_id}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def history(self, delivery_id: str) -> list[str]:
        return [entry["type"] for entry in (await self.delivery(delivery_id))["history"]]

    # the services' stores ----------------------------------------------------------------------
    def store(self, service: str) -> ServiceStore:
        return self.system.services[service].store

    def items(self, service: str, collection: str) -> dict[str, Any]:
        state = self.store(service).state
        return {key: msgspec.json.decode(raw) for key, raw in state.raw_items(collection)}

    def packages_of(self, delivery_id: str) -> list[dict[str, Any]]:
        return [
            p for p in self.items("package", "packages").values() if p["deliveryId"] == delivery_id
        ]

    def active_packages_of(self, delivery_id: str) -> list[dict[str, Any]]:
        return [p for p in self.packages_of(delivery_id) if p["status"] == "active"]

    def drones_held_by(self, delivery_id: str) -> list[str]:
        return sorted(
            drone["droneId"]
            for drone in self.items("scheduler", "fleet").values()
            if drone["heldBy"] == delivery_id
        )

    def assignment(self, delivery_id: str) -> dict[str, Any] | None:
        return self.items("scheduler", "assignments").get(delivery_id)

    def schedule(self, delivery_id: str) -> dict[str, Any] | None:
        return self.items("delivery", "schedules").get(delivery_id)

    def assert_nothing_active(self, delivery_id: str) -> None:
        """The compensation invariant: no package active, no drone held, nothing scheduled."""
        assert self.active_packages_of(delivery_id) == []
        assert self.drones_held_by(delivery_id) == []
        schedule = self.schedule(delivery_id)
        assert schedule is None or schedule["state"] != "scheduled", schedule


HarnessFactory = Callable[..., Awaitable[Harness]]
"""``await make_harness(settings, bus_url=..., data_dir=..., rng=...)`` (the fixture)."""
