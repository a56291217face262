"""Helpers of the monitor tests: the delivery workflow, service events, waiting on the fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from choreograph.bus import Bus, TopicSpec
from choreograph.events import CloudEvent
from choreograph.monitor import Monitor, Workflow
from choreograph.testing import FakeClock

MonitorFactory = Callable[..., Monitor]
"""The ``make_monitor`` fixture: a Monitor on the test's bus, store and clock."""

WAIT_SECONDS = 10.0
DEADLINE = 60.0

WATCHED_TOPICS = ("deliveries", "drones")
TIMEOUT_TOPIC = "compensations"


def delivery_workflow(**changes: Any) -> Workflow:
    fields: dict[str, Any] = {
        "name": "Delivery",
        "start": "Delivery.Requested",
        "success": ["Delivery.Completed"],
        "failure": ["Delivery.Failed"],
        "topics": list(WATCHED_TOPICS),
        "deadline_seconds": DEADLINE,
        "timeout_topic": TIMEOUT_TOPIC,
        **changes,
    }
    return Workflow(**fields)


def service_event(
    event_type: str,
    service: str,
    *,
    correlation_id: str | None,
    cause: CloudEvent | None = None,
    attempt: int | None = 1,
    event_id: str | None = None,
    data: Any = None,
) -> CloudEvent:
    """An event as the SDK stamps it: source /services/<name>, correlation, causation, attempt."""
    extensions: dict[str, str | int | bool] = {}
    if correlation_id is not None:
        extensions["correlationid"] = correlation_id
    if cause is not None:
        extensions["causationid"] = cause.id
    if attempt is not None:
        extensions["deliveryattempt"] = attempt
    fields: dict[str, Any] = {
        "type": event_type,
        "source": f"/services/{service}",
        "extensions": extensions,
    }
    if event_id is not None:
        fields["id"] = event_id
    if data is not None:
        fields["data"] = data
    return CloudEvent(**fields)


class Inbox:
    """An in-process handler keeping every event it receives (a compensating service)."""

    def __init__(self) -> None:
        self.events: list[CloudEvent] = []

    async def __call__(self, event: CloudEvent) -> None:
        self.events.append(event)


async def settle(monitor: Monitor) -> None:
    """Let every delivery and timeout due at the clock's current time happen."""
    async with asyncio.timeout(WAIT_SECONDS):
        await monitor.idle()


async def advance(monitor: Monitor, clock: FakeClock, seconds: float) -> None:
    """Let what is due now happen, move the clock, and let what came due happen."""
    await settle(monitor)
    clock.advance(seconds)
    await settle(monitor)


async def create_topics(bus: Bus) -> None:
    """The watched topics deliver duplicates (no de-duplication window), so that the tests see
    the monitor's own idempotence; the timeout topic keeps the default window."""
    for topic in WATCHED_TOPICS:
        await bus.create_topic(topic, TopicSpec(deduplication_window_seconds=0))
    await bus.create_topic(TIMEOUT_TOPIC)
