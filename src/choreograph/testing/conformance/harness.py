"""What every conformance test shares: fixtures, recording handlers and clock-driven waits.

:class:`ConformanceHarness` holds the fixtures (``bus_url``, ``clock``, ``bus``,
``make_recorder``) and helper methods that the test mixins of this package build on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import pytest

from choreograph.bus import Attempt, Bus, DeadLetter, Outcome, RetryPolicy, SubscriptionSpec
from choreograph.bus.retry import outcome_for_status
from choreograph.clock import Clock
from choreograph.errors import Reject, Retry
from choreograph.events import CloudEvent, EventGridEvent
from choreograph.testing.clock import FakeClock

__all__ = [
    "DEFAULT_BACKOFF",
    "HOUR",
    "WAIT_SECONDS",
    "ConformanceHarness",
    "HandlerFailure",
    "Recorder",
    "RecorderFactory",
    "StatusEndpoint",
    "counts",
    "drain",
    "make_event",
    "make_eventgrid_event",
    "retry_spec",
    "run_for",
]

WAIT_SECONDS: Final = 10.0
"""Safety net for every wait: a bug fails the test after this long instead of hanging it."""

DEFAULT_BACKOFF: Final = (10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 43200)
HOUR: Final = 3600.0

RecorderFactory = Callable[..., "Recorder"]


# ------------------------------------------------------------------------------------ helpers


class HandlerFailure(Exception):
    """What a :class:`Recorder` raises when told to fail."""


class Recorder:
    """An in-process handler that records ``(clock.now(), event)`` per call.

    It fails the first ``fail`` calls (every call with ``"always"``) by raising
    :class:`HandlerFailure`, or :class:`~choreograph.errors.Retry` when ``retry_delay_seconds`` is
    set; rejects every call when ``reject`` is set; and with ``hang`` waits in each call until
    :meth:`release`. ``started`` is set whenever a call begins. For a batching subscription the
    recorded event is the list the handler was given. The attributes may be changed mid-test.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        fail: int | Literal["always"] = 0,
        retry_delay_seconds: float | None = None,
        reject: str | None = None,
        hang: bool = False,
    ) -> None:
        self.clock = clock
        self.fail = fail
        self.retry_delay_seconds = retry_delay_seconds
        self.reject = reject
        self.hang = hang
        self.calls: list[tuple[float, Any]] = []
        self.failures = 0
        self.running = 0
        self.peak = 0
        self.started = asyncio.Event()
        self._released = asyncio.Event()

    async def __call__(self, event: Any) -> None:
        self.calls.append((self.clock.now(), event))
        self.started.set()
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if self.hang:
                await self._released.wait()
            if self.reject is not None:
                raise Reject(self.reject)
            if self.fail == "always" or self.failures < self.fail:
                self.failures += 1
                if self.retry_delay_seconds is not None:
                    raise Retry("asked to retry", delay_seconds=self.retry_delay_seconds)
                raise HandlerFailure(f"failure {self.failures}")
        finally:
            self.running -= 1

    def release(self) -> None:
        """Let every hanging call (and every later one) go on."""
        self._released.set()

    async def wait_for_calls(self, count: int) -> None:
        """Wait until ``count`` calls have begun (hanging ones included)."""
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.calls) < count:
                self.started.clear()
                await self.started.wait()

    @property
    def times(self) -> list[float]:
        return [moment for moment, _ in self.calls]

    def offsets(self, start: float) -> list[float]:
        """The call times relative to ``start``."""
        return [moment - start for moment in self.times]

    @property
    def events(self) -> list[Any]:
        """Every event received, batches flattened, in call order."""
        flat: list[Any] = []
        for _, received in self.calls:
            flat.extend(received if isinstance(received, list) else [received])
        return flat

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.events]


class StatusEndpoint:
    """An endpoint answering HTTP-like statuses: ``statuses[i]`` on call i, the last repeating.

    It records ``(clock.now(), attempt, events)`` per call.
    """

    def __init__(self, clock: Clock, statuses: Sequence[int]) -> None:
        self.clock = clock
        self.statuses = list(statuses)
        self.calls: list[tuple[float, Attempt, list[CloudEvent | EventGridEvent]]] = []

    async def deliver(
        self, events: Sequence[CloudEvent | EventGridEvent], attempt: Attempt
    ) -> Outcome:
        status = self.statuses[min(len(self.calls), len(self.statuses) - 1)]
        self.calls.append((self.clock.now(), attempt, list(events)))
        return outcome_for_status(status)

    @property
    def times(self) -> list[float]:
        return [moment for moment, _, _ in self.calls]


def make_event(
    event_type: str = "Conformance.Happened",
    *,
    event_id: str | None = None,
    source: str = "/conformance",
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


def make_eventgrid_event(event_id: str = "eg-1", **changes: Any) -> EventGridEvent:
    """An Event Grid-schema event; ``changes`` override its fields (Python names)."""
    fields: dict[str, Any] = {
        "id": event_id,
        "subject": "/drones/7",
        "event_type": "Drone.Assigned",
        "event_time": "2026-01-01T00:00:00.000000Z",
        "data": {"drone": 7},
        **changes,
    }
    return EventGridEvent(**fields)


async def drain(bus: Bus) -> None:
    """Let everything due at the clock's current time happen."""
    async with asyncio.timeout(WAIT_SECONDS):
        await bus.idle()


async def run_for(bus: Bus, clock: FakeClock, seconds: float) -> None:
    """Advance ``clock`` by ``seconds``, stopping at every timer on the way so each piece of due
    work happens at its own time."""
    target = clock.now() + seconds
    async with asyncio.timeout(WAIT_SECONDS):
        await bus.idle()
        while (deadline := clock.next_deadline()) is not None and deadline <= target:
            clock.advance_to(max(deadline, clock.now()))
            await bus.idle()
        clock.advance_to(target)
        await bus.idle()


def counts(queued: int = 0, dead_lettered: int = 0, dropped: int = 0) -> dict[str, int]:
    """A subscription's expected ``Bus.counters``."""
    return {"queued": queued, "deadLettered": dead_lettered, "dropped": dropped}


def retry_spec(**policy: Any) -> SubscriptionSpec:
    """A subscription spec with this retry policy."""
    return SubscriptionSpec(retry_policy=RetryPolicy(**policy))


# ------------------------------------------------------------------------------------ harness


class ConformanceHarness:
    """The fixtures and helpers of the suite; each test mixin of this package subclasses it.

    A concrete suite sets ``durable`` and a backend's test class provides the ``bus_url``
    fixture, a fresh store per test.
    """

    durable: ClassVar[bool]
    exclusive_store: ClassVar[bool] = True
    """One process owns the store (SQLite); a shared engine (NATS) sets False."""
    """Whether the backend keeps its store across a close."""

    # fixtures ----------------------------------------------------------------------------------
    @pytest.fixture
    def bus_url(self, tmp_path: Path) -> str:
        pytest.fail("a BusConformance subclass must override the `bus_url` fixture")

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    async def bus(self, bus_url: str, clock: FakeClock) -> AsyncIterator[Bus]:
        bus = Bus(bus_url, clock=clock, retry_jitter=0.0)
        await bus.open()
        try:
            yield bus
        finally:
            await bus.close()

    @pytest.fixture
    def make_recorder(self, clock: FakeClock, bus: Bus) -> Iterator[RecorderFactory]:
        """Make :class:`Recorder` handlers; hanging ones are released before the bus closes."""
        made: list[Recorder] = []

        def make(**options: Any) -> Recorder:
            recorder = Recorder(clock, **options)
            made.append(recorder)
            return recorder

        yield make
        for recorder in made:
            recorder.release()

    # helpers -----------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def reopen(self, bus: Bus, **options: Any) -> AsyncIterator[Bus]:
        """Close ``bus`` and open a new bus on the same URL and clock (with other ``options``)."""
        await bus.close()
        async with Bus(bus.url, clock=bus.clock, **{"retry_jitter": 0.0, **options}) as new:
            yield new

    async def only_dead_letter(self, bus: Bus, topic: str, subscription: str) -> DeadLetter:
        records = await bus.dead_letters(topic, subscription)
        assert len(records) == 1, records
        return records[0]
