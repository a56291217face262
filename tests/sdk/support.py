"""What the SDK tests share: a probe that records a topic's events, clock-driven waits and
event builders. Every wait has a safety-net timeout so that a bug fails a test instead of
hanging it."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Final

from choreograph.bus import Bus, DeadLetter, RetryPolicy, TopicSpec
from choreograph.events import CloudEvent
from choreograph.testing.clock import FakeClock

WAIT_SECONDS: Final = 10.0

FAST_RETRIES: Final = RetryPolicy(max_delivery_attempts=3, backoff_seconds=(1.0,))
"""Three attempts, one second apart: a failing handler is dead-lettered after ``run_for(2)``."""

NO_DEDUPLICATION: Final = TopicSpec(deduplication_window_seconds=0)
"""Topic properties under which publishing the same event twice stores it twice."""

TRACE_ID: Final = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN: Final = "00f067aa0ba902b7"
TRACEPARENT: Final = f"00-{TRACE_ID}-{PARENT_SPAN}-01"

_numbers = itertools.count(1)


def unique(name: str) -> str:
    """``name`` with a suffix no other test uses (topic and correlation ids)."""
    return f"{name}-{next(_numbers)}"


class Probe:
    """A plain handler that records the events arriving on a topic."""

    def __init__(self) -> None:
        self.events: list[CloudEvent] = []

    async def __call__(self, event: CloudEvent) -> None:
        self.events.append(event)

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.events]

    @property
    def types(self) -> list[str]:
        return [event.type for event in self.events]

    def only(self) -> CloudEvent:
        assert len(self.events) == 1, self.events
        return self.events[0]


async def probe(bus: Bus, topic: str) -> Probe:
    """Subscribe a :class:`Probe` to every event of ``topic`` (creating the topic if needed)."""
    if topic not in {record.name for record in await bus.list_topics()}:
        await bus.put_topic(topic)
    recorder = Probe()
    await bus.subscribe(topic, "probe", recorder)
    return recorder


async def drain(bus: Bus) -> None:
    """Let everything due at the clock's current time happen."""
    async with asyncio.timeout(WAIT_SECONDS):
        await bus.idle()


async def run_for(bus: Bus, clock: FakeClock, seconds: float) -> None:
    """Advance ``clock`` by ``seconds``, stopping at every timer on the way so that each piece
    of due work happens at its own time."""
    target = clock.now() + seconds
    async with asyncio.timeout(WAIT_SECONDS):
        await bus.idle()
        while (deadline := clock.next_deadline()) is not None and deadline <= target:
            clock.advance_to(max(deadline, clock.now()))
            await bus.idle()
        clock.advance_to(target)
        await bus.idle()


async def wait_for(flag: asyncio.Event) -> None:
    """Wait until a handler sets ``flag``."""
    async with asyncio.timeout(WAIT_SECONDS):
        await flag.wait()


def make_event(
    event_type: str,
    *,
    event_id: str | None = None,
    source: str = "/tests",
    subject: str | None = None,
    data: Any = None,
    **extensions: str,
) -> CloudEvent:
    """A CloudEvent with a fresh id unless ``event_id`` is given."""
    fields: dict[str, Any] = {"type": event_type, "source": source, "extensions": extensions}
    if event_id is not None:
        fields["id"] = event_id
    if subject is not None:
        fields["subject"] = subject
    if data is not None:
        fields["data"] = data
    return CloudEvent(**fields)


async def only_dead_letter(bus: Bus, topic: str, subscription: str) -> DeadLetter:
    records = await bus.dead_letters(topic, subscription)
    assert len(records) == 1, records
    return records[0]
