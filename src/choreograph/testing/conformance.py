"""The bus conformance suite: the Event Grid behaviour every backend must show, as pytest tests.

A backend is done when it passes :class:`BusConformance`, subclassed once in its test module::

    class TestMemoryBus(BusConformance):
        durable = False

        @pytest.fixture
        def bus_url(self, tmp_path: Path) -> str:
            return "memory://"

The tests never sleep. A :class:`~choreograph.testing.FakeClock` drives retries, time-to-live and
delivery timeouts: :func:`run_for` advances it one timer at a time and lets the work that came
due happen (``await bus.idle()``) before moving on, so every attempt happens at its exact time.
Waits that a bug could turn into a hang are bounded by :data:`WAIT_SECONDS`. Tests marked
durable-only (reopening the store) are skipped where ``durable`` is False.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import pytest

from choreograph.bus import (
    DEAD_LETTERED_EVENT_TYPE,
    SYSTEM_TOPIC,
    AdvancedFilter,
    Attempt,
    Bus,
    DeadLetter,
    EventFilter,
    InProcessDestination,
    Outcome,
    RetryPolicy,
    SubscriptionSpec,
    TopicSpec,
)
from choreograph.bus.bus import MAX_EVENTS_PER_PUBLISH
from choreograph.bus.retry import outcome_for_status
from choreograph.clock import Clock, format_timestamp
from choreograph.errors import (
    AlreadyExistsError,
    BackendLockedError,
    BusClosedError,
    DeadLetterNotFoundError,
    EventTooLargeError,
    InvalidDeadLetterQueryError,
    InvalidEventError,
    InvalidFilterError,
    InvalidSubscriptionError,
    InvalidTopicError,
    Reject,
    Retry,
    SubscriptionNotFoundError,
    TopicNotFoundError,
)
from choreograph.events import CORRELATION_KEY, MAX_EVENT_BYTES, CloudEvent, EventGridEvent
from choreograph.testing.clock import FakeClock

__all__ = [
    "WAIT_SECONDS",
    "BusConformance",
    "HandlerFailure",
    "Recorder",
    "StatusEndpoint",
    "counts",
    "drain",
    "make_event",
    "make_eventgrid_event",
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


# Property dicts each breaking one rule, and the property the refusal must name.
INVALID_SUBSCRIPTION_PROPERTIES: Final = [
    pytest.param(
        {"retryPolicy": {"maxDeliveryAttempts": 0}}, "maxDeliveryAttempts", id="attempts-0"
    ),
    pytest.param(
        {"retryPolicy": {"maxDeliveryAttempts": 31}}, "maxDeliveryAttempts", id="attempts-31"
    ),
    pytest.param(
        {"retryPolicy": {"eventTimeToLiveInMinutes": 0}}, "eventTimeToLiveInMinutes", id="ttl-0"
    ),
    pytest.param(
        {"retryPolicy": {"eventTimeToLiveInMinutes": 1441}},
        "eventTimeToLiveInMinutes",
        id="ttl-1441",
    ),
    pytest.param({"retryPolicy": {"backoffSeconds": []}}, "backoffSeconds", id="backoff-empty"),
    pytest.param(
        {"retryPolicy": {"backoffSeconds": [10, -1]}}, "backoffSeconds", id="backoff-negative"
    ),
    pytest.param({"deliveryTimeoutSeconds": 0}, "deliveryTimeoutSeconds", id="timeout-0"),
    pytest.param({"colour": "blue"}, "colour", id="unknown-property"),
    pytest.param(
        {"retryPolicy": {"nonRetryableStatusCodes": [200]}},
        "nonRetryableStatusCodes",
        id="non-retryable-200",
    ),
]


# ------------------------------------------------------------------------------------- suite


class BusConformance:
    """The conformance suite; subclass it once per backend (pytest collects only subclasses).

    A subclass sets ``durable`` (whether the store survives a close) and provides the
    ``bus_url`` fixture, a fresh store per test.
    """

    durable: ClassVar[bool]

    # fixtures ----------------------------------------------------------------------------------
    @pytest.fixture
    def bus_url(self, tmp_path: Path) -> str:
        raise NotImplementedError("a BusConformance subclass provides the `bus_url` fixture")

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
    def require_durable(self) -> None:
        if not self.durable:
            pytest.skip("the backend does not keep its store across a close")

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

    # the backend -------------------------------------------------------------------------------
    async def test_backend_declares_its_durability(self, bus: Bus) -> None:
        assert bus.backend.durable is self.durable

    # topics ------------------------------------------------------------------------------------
    async def test_topic_is_created_read_listed_updated_and_deleted(self, bus: Bus) -> None:
        created = await bus.create_topic("crud-topic")
        assert created.name == "crud-topic"
        assert created.spec == TopicSpec()
        assert created.key1
        assert created.key1 != created.key2
        assert await bus.get_topic("crud-topic") == created
        assert "crud-topic" in [topic.name for topic in await bus.list_topics()]

        updated = await bus.update_topic("crud-topic", {"deduplicationWindowSeconds": 0})
        assert updated.spec.deduplication_window_seconds == 0
        assert (updated.key1, updated.key2) == (created.key1, created.key2)
        assert await bus.get_topic("crud-topic") == updated

        await bus.delete_topic("crud-topic")
        with pytest.raises(TopicNotFoundError):
            await bus.get_topic("crud-topic")
        assert "crud-topic" not in [topic.name for topic in await bus.list_topics()]

    async def test_put_topic_creates_then_updates(self, bus: Bus) -> None:
        created = await bus.put_topic("put-topic")
        assert created.spec == TopicSpec()
        updated = await bus.put_topic("put-topic", TopicSpec(deduplication_window_seconds=5))
        assert updated.spec.deduplication_window_seconds == 5
        assert updated.key1 == created.key1
        assert (await bus.get_topic("put-topic")).spec == updated.spec

    async def test_creating_an_existing_topic_raises_already_exists(self, bus: Bus) -> None:
        await bus.create_topic("twice-topic")
        with pytest.raises(AlreadyExistsError, match="twice-topic"):
            await bus.create_topic("twice-topic", {"deduplicationWindowSeconds": 1})
        assert (await bus.get_topic("twice-topic")).spec == TopicSpec()

    async def test_a_missing_topic_raises_topic_not_found(self, bus: Bus) -> None:
        with pytest.raises(TopicNotFoundError, match="no-such-topic"):
            await bus.get_topic("no-such-topic")
        with pytest.raises(TopicNotFoundError, match="no-such-topic"):
            await bus.update_topic("no-such-topic")
        with pytest.raises(TopicNotFoundError, match="no-such-topic"):
            await bus.delete_topic("no-such-topic")
        with pytest.raises(TopicNotFoundError, match="no-such-topic"):
            await bus.list_subscriptions("no-such-topic")
        assert "no-such-topic" not in [topic.name for topic in await bus.list_topics()]

    @pytest.mark.parametrize(
        "name",
        [
            pytest.param("ab", id="too-short"),
            pytest.param("a" * 51, id="too-long"),
            pytest.param("bad_name", id="underscore"),
            pytest.param("bad name", id="space"),
            pytest.param("bad.name", id="dot"),
            pytest.param("café-topic", id="non-ascii"),
        ],
    )
    async def test_an_invalid_topic_name_is_refused(self, bus: Bus, name: str) -> None:
        before = await bus.list_topics()
        with pytest.raises(InvalidTopicError, match="topic name"):
            await bus.create_topic(name)
        with pytest.raises(InvalidTopicError, match="topic name"):
            await bus.put_topic(name)
        assert await bus.list_topics() == before

    async def test_topic_names_of_3_and_50_characters_are_accepted(self, bus: Bus) -> None:
        await bus.create_topic("a-1")
        await bus.create_topic("B" * 49 + "9")
        names = {topic.name for topic in await bus.list_topics()}
        assert {"a-1", "B" * 49 + "9"} <= names

    async def test_the_system_topic_exists_and_cannot_be_deleted(self, bus: Bus) -> None:
        assert SYSTEM_TOPIC in [topic.name for topic in await bus.list_topics()]
        with pytest.raises(InvalidTopicError, match=SYSTEM_TOPIC):
            await bus.delete_topic(SYSTEM_TOPIC)
        assert (await bus.get_topic(SYSTEM_TOPIC)).name == SYSTEM_TOPIC

    async def test_deleting_a_topic_removes_its_subscriptions(self, bus: Bus) -> None:
        await bus.create_topic("doomed-topic")
        await bus.create_subscription("doomed-topic", "first")
        await bus.create_subscription("doomed-topic", "second")
        await bus.publish("doomed-topic", make_event())
        await bus.delete_topic("doomed-topic")
        with pytest.raises(TopicNotFoundError):
            await bus.get_subscription("doomed-topic", "first")
        await bus.create_topic("doomed-topic")
        assert await bus.list_subscriptions("doomed-topic") == []
        await bus.create_subscription("doomed-topic", "first")
        assert await bus.counters("doomed-topic", "first") == counts()

    # subscriptions -----------------------------------------------------------------------------
    async def test_subscription_is_created_read_listed_updated_and_deleted(self, bus: Bus) -> None:
        await bus.create_topic("crud-subs")
        created = await bus.create_subscription(
            "crud-subs", "audit", {"retryPolicy": {"maxDeliveryAttempts": 3}}
        )
        assert (created.topic, created.name) == ("crud-subs", "audit")
        assert created.spec.retry_policy.max_delivery_attempts == 3
        assert await bus.get_subscription("crud-subs", "audit") == created
        await bus.create_subscription("crud-subs", "billing")
        listed = await bus.list_subscriptions("crud-subs")
        assert sorted(record.name for record in listed) == ["audit", "billing"]

        updated = await bus.update_subscription("crud-subs", "audit", {"deliveryTimeoutSeconds": 5})
        assert updated.spec.delivery_timeout_seconds == 5
        # An update replaces the properties: the retry policy is back to its defaults.
        assert updated.spec.retry_policy == RetryPolicy()
        assert (await bus.get_subscription("crud-subs", "audit")).spec == updated.spec

        await bus.delete_subscription("crud-subs", "audit")
        with pytest.raises(SubscriptionNotFoundError, match="audit"):
            await bus.get_subscription("crud-subs", "audit")
        assert [record.name for record in await bus.list_subscriptions("crud-subs")] == ["billing"]

    async def test_put_subscription_creates_then_updates(self, bus: Bus) -> None:
        await bus.create_topic("put-subs")
        created = await bus.put_subscription("put-subs", "audit")
        assert created.spec == SubscriptionSpec()
        updated = await bus.put_subscription(
            "put-subs", "audit", retry_spec(max_delivery_attempts=2)
        )
        assert updated.spec.retry_policy.max_delivery_attempts == 2
        assert (await bus.get_subscription("put-subs", "audit")).spec == updated.spec
        assert len(await bus.list_subscriptions("put-subs")) == 1

    async def test_creating_an_existing_subscription_raises_already_exists(self, bus: Bus) -> None:
        await bus.create_topic("twice-subs")
        await bus.create_subscription("twice-subs", "audit")
        with pytest.raises(AlreadyExistsError, match="audit"):
            await bus.create_subscription("twice-subs", "audit", {"deliveryTimeoutSeconds": 1})
        assert (await bus.get_subscription("twice-subs", "audit")).spec == SubscriptionSpec()

    async def test_a_missing_subscription_raises_subscription_not_found(self, bus: Bus) -> None:
        await bus.create_topic("lonely-topic")
        with pytest.raises(SubscriptionNotFoundError, match="ghost"):
            await bus.get_subscription("lonely-topic", "ghost")
        with pytest.raises(SubscriptionNotFoundError, match="ghost"):
            await bus.update_subscription("lonely-topic", "ghost")
        with pytest.raises(SubscriptionNotFoundError, match="ghost"):
            await bus.delete_subscription("lonely-topic", "ghost")
        with pytest.raises(SubscriptionNotFoundError, match="ghost"):
            await bus.dead_letters("lonely-topic", "ghost")
        with pytest.raises(SubscriptionNotFoundError, match="ghost"):
            await bus.counters("lonely-topic", "ghost")
        with pytest.raises(SubscriptionNotFoundError, match="ghost"):
            await bus.attach("lonely-topic", "ghost", Recorder(bus.clock))
        assert await bus.list_subscriptions("lonely-topic") == []

    async def test_a_subscription_on_a_missing_topic_raises_topic_not_found(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        with pytest.raises(TopicNotFoundError, match="nowhere"):
            await bus.create_subscription("nowhere", "audit")
        with pytest.raises(TopicNotFoundError, match="nowhere"):
            await bus.subscribe("nowhere", "audit", make_recorder())
        with pytest.raises(TopicNotFoundError, match="nowhere"):
            await bus.get_subscription("nowhere", "audit")

    @pytest.mark.parametrize("name", ["ab", "x" * 65, "bad_name", "bad name"])
    async def test_an_invalid_subscription_name_is_refused(self, bus: Bus, name: str) -> None:
        await bus.create_topic("names-subs")
        with pytest.raises(InvalidSubscriptionError, match="subscription name"):
            await bus.create_subscription("names-subs", name)
        assert await bus.list_subscriptions("names-subs") == []

    async def test_a_filter_beyond_event_grid_limits_is_refused(self, bus: Bus) -> None:
        await bus.create_topic("filter-limits")
        too_many = [
            {"operatorType": "NumberIn", "key": f"data.k{n}", "values": [n]} for n in range(26)
        ]
        with pytest.raises(InvalidFilterError, match="advancedFilters"):
            await bus.create_subscription(
                "filter-limits", "greedy", {"filter": {"advancedFilters": too_many}}
            )
        with pytest.raises(InvalidFilterError, match="512"):
            await bus.create_subscription(
                "filter-limits", "wordy", {"filter": {"subjectBeginsWith": "x" * 513}}
            )
        assert await bus.list_subscriptions("filter-limits") == []

    @pytest.mark.parametrize(("properties", "named"), INVALID_SUBSCRIPTION_PROPERTIES)
    def test_invalid_subscription_properties_are_refused_naming_the_property(
        self, properties: dict[str, Any], named: str
    ) -> None:
        with pytest.raises(InvalidSubscriptionError, match=named):
            SubscriptionSpec.from_dict(properties)

    @pytest.mark.parametrize(("properties", "named"), INVALID_SUBSCRIPTION_PROPERTIES)
    async def test_the_bus_refuses_invalid_subscription_properties_and_changes_nothing(
        self, bus: Bus, properties: dict[str, Any], named: str
    ) -> None:
        await bus.create_topic("refusing-subs")
        with pytest.raises(InvalidSubscriptionError, match=named):
            await bus.create_subscription("refusing-subs", "fresh", properties)
        assert await bus.list_subscriptions("refusing-subs") == []
        existing = await bus.create_subscription("refusing-subs", "existing")
        with pytest.raises(InvalidSubscriptionError, match=named):
            await bus.put_subscription("refusing-subs", "existing", properties)
        with pytest.raises(InvalidSubscriptionError, match=named):
            await bus.update_subscription("refusing-subs", "existing", properties)
        assert await bus.get_subscription("refusing-subs", "existing") == existing

    async def test_eventgrid_delivery_from_a_cloudevents_topic_is_refused(self, bus: Bus) -> None:
        await bus.create_topic("ce-only")
        with pytest.raises(InvalidSubscriptionError, match="eventDeliverySchema"):
            await bus.create_subscription(
                "ce-only", "eg-out", {"eventDeliverySchema": "EventGridSchema"}
            )
        assert await bus.list_subscriptions("ce-only") == []
        # Nor may a topic with an Event Grid subscription switch to CloudEvents input.
        await bus.create_topic("eg-then-ce", TopicSpec(input_schema="EventGridSchema"))
        await bus.create_subscription(
            "eg-then-ce", "eg-out", {"eventDeliverySchema": "EventGridSchema"}
        )
        with pytest.raises(InvalidTopicError, match="eg-out"):
            await bus.update_topic("eg-then-ce", {"inputSchema": "CloudEventSchemaV1_0"})
        assert (await bus.get_topic("eg-then-ce")).spec.input_schema == "EventGridSchema"

    async def test_a_subscription_has_event_grid_defaults(self, bus: Bus) -> None:
        await bus.create_topic("defaults-topic")
        spec = (await bus.create_subscription("defaults-topic", "plain")).spec
        policy = spec.retry_policy
        assert policy.max_delivery_attempts == 30
        assert policy.event_time_to_live_in_minutes == 1440
        assert tuple(policy.backoff_seconds) == DEFAULT_BACKOFF
        assert tuple(policy.non_retryable_status_codes) == (400, 401, 403, 413)
        assert spec.delivery_timeout_seconds == 30
        assert spec.dead_letter_enabled is True
        assert spec.event_delivery_schema == "CloudEventSchemaV1_0"
        assert spec.destination == InProcessDestination()
        wire = spec.to_dict()
        assert wire["retryPolicy"]["maxDeliveryAttempts"] == 30
        assert wire["retryPolicy"]["eventTimeToLiveInMinutes"] == 1440
        assert wire["deliveryTimeoutSeconds"] == 30

    async def test_updating_a_subscription_keeps_its_queue_and_dead_letters(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("keep-queue")
        await bus.subscribe("keep-queue", "audit", make_recorder(reject="poison"))
        await bus.publish("keep-queue", make_event())
        await drain(bus)
        await bus.detach("keep-queue", "audit")
        waiting = make_event()
        await bus.publish("keep-queue", waiting)
        await drain(bus)
        assert await bus.counters("keep-queue", "audit") == counts(queued=1, dead_lettered=1)
        await bus.update_subscription("keep-queue", "audit", {"deliveryTimeoutSeconds": 5})
        assert (await bus.counters("keep-queue", "audit"))["queued"] == 1
        assert (await bus.counters("keep-queue", "audit"))["deadLettered"] == 1
        recorder = make_recorder()
        await bus.attach("keep-queue", "audit", recorder)
        await drain(bus)
        assert recorder.ids == [waiting.id]

    async def test_deleting_a_subscription_discards_its_queue_and_dead_letters(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("drop-queue")
        await bus.subscribe("drop-queue", "audit", make_recorder(reject="poison"))
        await bus.publish("drop-queue", make_event())
        await drain(bus)
        await bus.detach("drop-queue", "audit")
        await bus.publish("drop-queue", make_event())
        assert await bus.counters("drop-queue", "audit") == counts(queued=1, dead_lettered=1)
        await bus.delete_subscription("drop-queue", "audit")
        recorder = make_recorder()
        await bus.subscribe("drop-queue", "audit", recorder)
        await drain(bus)
        assert recorder.calls == []
        assert await bus.dead_letters("drop-queue", "audit") == []
        assert await bus.counters("drop-queue", "audit") == counts()

    # publish -----------------------------------------------------------------------------------
    async def test_a_published_event_reaches_the_subscribed_handler(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("publish-one")
        recorder = make_recorder()
        await bus.subscribe("publish-one", "audit", recorder)
        event = make_event(subject="/orders/1", data={"amount": 3}, correlationid="tx-1")
        await bus.publish("publish-one", event)
        await drain(bus)
        assert recorder.calls == [(clock.now(), event)]
        assert await bus.counters("publish-one", "audit") == counts()

    async def test_a_published_batch_reaches_the_subscribed_handler(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("publish-batch")
        recorder = make_recorder()
        await bus.subscribe("publish-batch", "audit", recorder)
        events = [make_event(data={"n": n}) for n in range(5)]
        await bus.publish("publish-batch", events)
        await drain(bus)
        assert sorted(recorder.ids) == sorted(event.id for event in events)
        assert {event.id: event for event in recorder.events} == {e.id: e for e in events}

    async def test_a_handler_may_publish_the_next_event_of_a_choreography(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("chain-orders")
        await bus.create_topic("chain-shipping")

        async def place_shipment(event: CloudEvent) -> None:
            await bus.publish(
                "chain-shipping",
                make_event(
                    "Shipment.Requested",
                    correlationid=event.correlationid or "",
                    causationid=event.id,
                ),
            )

        shipping = make_recorder()
        await bus.subscribe("chain-orders", "shipper", place_shipment)
        await bus.subscribe("chain-shipping", "audit", shipping)
        order = make_event("Order.Placed", correlationid="tx-chain")
        await bus.publish("chain-orders", order)
        await drain(bus)
        [shipment] = shipping.events
        assert (shipment.correlationid, shipment.causationid) == ("tx-chain", order.id)
        assert shipping.times == [clock.now()]

    async def test_a_published_dict_is_parsed_as_a_cloudevent(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("publish-dict")
        recorder = make_recorder()
        await bus.subscribe("publish-dict", "audit", recorder)
        await bus.publish(
            "publish-dict",
            {"specversion": "1.0", "id": "d-1", "source": "/s", "type": "T", "tenant": "acme"},
        )
        await drain(bus)
        [received] = recorder.events
        assert isinstance(received, CloudEvent)
        assert (received.id, received.source, received.type) == ("d-1", "/s", "T")
        assert received.extensions == {"tenant": "acme"}

    async def test_a_batch_with_one_invalid_event_stores_nothing_and_names_its_index(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("publish-refused")
        recorder = make_recorder()
        await bus.subscribe("publish-refused", "audit", recorder)
        first, last = make_event(), make_event()
        no_source = {"specversion": "1.0", "id": "x-1", "type": "T"}
        with pytest.raises(InvalidEventError, match="source") as caught:
            await bus.publish("publish-refused", [first, no_source, last])
        assert caught.value.index == 1
        assert "event 1" in str(caught.value)
        await run_for(bus, clock, HOUR)
        assert recorder.calls == []
        assert (await bus.counters("publish-refused", "audit"))["queued"] == 0
        # Nothing was remembered for de-duplication either: the valid events go through later.
        await bus.publish("publish-refused", [first, last])
        await drain(bus)
        assert sorted(recorder.ids) == sorted([first.id, last.id])

    async def test_publishing_to_a_missing_topic_raises_topic_not_found(self, bus: Bus) -> None:
        with pytest.raises(TopicNotFoundError, match="missing-topic"):
            await bus.publish("missing-topic", make_event())
        with pytest.raises(TopicNotFoundError, match="missing-topic"):
            await bus.publish("missing-topic", [make_event(), make_event()])

    async def test_an_empty_publish_is_refused(self, bus: Bus) -> None:
        await bus.create_topic("publish-empty")
        with pytest.raises(InvalidEventError):
            await bus.publish("publish-empty", [])

    async def test_a_publish_of_more_than_5000_events_is_refused(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("publish-huge")
        await bus.create_subscription("publish-huge", "audit")
        events = [make_event() for _ in range(MAX_EVENTS_PER_PUBLISH + 1)]
        with pytest.raises(InvalidEventError, match="5000"):
            await bus.publish("publish-huge", events)
        assert (await bus.counters("publish-huge", "audit"))["queued"] == 0
        await bus.publish("publish-huge", events[:MAX_EVENTS_PER_PUBLISH])
        assert (await bus.counters("publish-huge", "audit"))["queued"] == MAX_EVENTS_PER_PUBLISH

    async def test_an_event_over_1_mb_in_a_batch_is_refused_and_stores_nothing(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("publish-large")
        recorder = make_recorder()
        await bus.subscribe("publish-large", "audit", recorder)
        large = make_event(data={"blob": "x" * MAX_EVENT_BYTES})
        with pytest.raises(EventTooLargeError) as caught:
            await bus.publish("publish-large", [make_event(), large])
        assert caught.value.index == 1
        await drain(bus)
        assert recorder.calls == []
        assert (await bus.counters("publish-large", "audit"))["queued"] == 0

    # Event Grid schema ------------------------------------------------------------------------
    async def test_an_eventgrid_topic_accepts_eventgrid_events_and_dicts(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("eg-input", TopicSpec(input_schema="EventGridSchema"))
        recorder = make_recorder()
        await bus.subscribe("eg-input", "audit", recorder)
        await bus.publish("eg-input", make_eventgrid_event("eg-1"))
        await bus.publish(
            "eg-input",
            [
                {
                    "id": "eg-2",
                    "subject": "/drones/8",
                    "eventType": "Drone.Assigned",
                    "eventTime": "2026-01-01T00:00:00Z",
                    "data": {"drone": 8},
                    "dataVersion": "1.0",
                }
            ],
        )
        await drain(bus)
        received = {event.id: event for event in recorder.events}
        assert sorted(received) == ["eg-1", "eg-2"]
        for event in received.values():
            # A CloudEvents subscription on an Event Grid topic: topic -> source, eventType -> type.
            assert isinstance(event, CloudEvent)
            assert event.source == "/topics/eg-input"
            assert event.type == "Drone.Assigned"
        assert received["eg-2"].time == "2026-01-01T00:00:00Z"
        assert received["eg-2"].data == {"drone": 8}

    async def test_an_eventgrid_topic_refuses_a_cloudevent(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("eg-strict", TopicSpec(input_schema="EventGridSchema"))
        recorder = make_recorder()
        await bus.subscribe("eg-strict", "audit", recorder)
        with pytest.raises(InvalidEventError):
            await bus.publish("eg-strict", make_event())
        with pytest.raises(InvalidEventError):
            await bus.publish("eg-strict", [make_eventgrid_event("ok"), make_event()])
        await drain(bus)
        assert recorder.calls == []

    async def test_a_cloudevents_topic_refuses_an_eventgrid_event(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("ce-strict")
        recorder = make_recorder()
        await bus.subscribe("ce-strict", "audit", recorder)
        with pytest.raises(InvalidEventError):
            await bus.publish("ce-strict", make_eventgrid_event())
        with pytest.raises(InvalidEventError):
            await bus.publish("ce-strict", [make_event(), make_eventgrid_event()])
        await drain(bus)
        assert recorder.calls == []

    async def test_eventgrid_delivery_stamps_topic_and_metadata_version(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("eg-stamp", {"inputSchema": "EventGridSchema"})
        recorder = make_recorder()
        await bus.subscribe(
            "eg-stamp",
            "eg-out",
            recorder,
            SubscriptionSpec(event_delivery_schema="EventGridSchema"),
        )
        published = make_eventgrid_event("eg-stamped")
        await bus.publish("eg-stamp", published)
        await drain(bus)
        [delivered] = recorder.events
        assert isinstance(delivered, EventGridEvent)
        assert delivered.topic == "/topics/eg-stamp"
        assert delivered.metadata_version == "1"
        assert delivered.data_version == ""
        assert (
            delivered.id,
            delivered.subject,
            delivered.event_type,
            delivered.event_time,
            delivered.data,
        ) == (
            published.id,
            published.subject,
            published.event_type,
            published.event_time,
            published.data,
        )

    async def test_an_eventgrid_event_naming_another_topic_is_refused(self, bus: Bus) -> None:
        await bus.create_topic("eg-named", TopicSpec(input_schema="EventGridSchema"))
        await bus.create_subscription("eg-named", "audit")
        await bus.publish("eg-named", make_eventgrid_event("eg-own", topic="/topics/eg-named"))
        with pytest.raises(InvalidEventError, match="topic"):
            await bus.publish("eg-named", make_eventgrid_event("eg-other", topic="/topics/other"))
        assert (await bus.counters("eg-named", "audit"))["queued"] == 1

    async def test_eventgrid_events_carry_correlation_inside_data(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("eg-correlation", TopicSpec(input_schema="EventGridSchema"))
        as_cloudevents, as_eventgrid = make_recorder(), make_recorder()
        await bus.subscribe("eg-correlation", "ce-out", as_cloudevents)
        await bus.subscribe(
            "eg-correlation",
            "eg-out",
            as_eventgrid,
            SubscriptionSpec(event_delivery_schema="EventGridSchema"),
        )
        carried = {"correlationid": "tx-5", "causationid": "cause-1"}
        await bus.publish(
            "eg-correlation",
            make_eventgrid_event("eg-corr", data={"drone": 7, CORRELATION_KEY: carried}),
        )
        await drain(bus)
        [cloudevent] = as_cloudevents.events
        assert cloudevent.correlationid == "tx-5"
        assert cloudevent.causationid == "cause-1"
        assert cloudevent.data == {"drone": 7}
        [eventgrid] = as_eventgrid.events
        assert eventgrid.data == {"drone": 7, CORRELATION_KEY: carried}

    # de-duplication ----------------------------------------------------------------------------
    async def test_the_same_source_and_id_within_the_window_is_delivered_once(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dedupe-within")
        recorder = make_recorder()
        await bus.subscribe("dedupe-within", "audit", recorder)
        event = make_event(event_id="same-1")
        await bus.publish("dedupe-within", event)
        await run_for(bus, clock, 119)
        await bus.publish("dedupe-within", event)
        await run_for(bus, clock, HOUR)
        assert recorder.ids == ["same-1"]

    async def test_the_same_source_and_id_after_the_window_is_delivered_again(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dedupe-after", TopicSpec(deduplication_window_seconds=60))
        recorder = make_recorder()
        await bus.subscribe("dedupe-after", "audit", recorder)
        event = make_event(event_id="same-2")
        start = clock.now()
        await bus.publish("dedupe-after", event)
        await run_for(bus, clock, 61)
        await bus.publish("dedupe-after", event)
        await drain(bus)
        assert recorder.ids == ["same-2", "same-2"]
        assert recorder.offsets(start) == [0, 61]

    async def test_a_topic_with_window_0_delivers_every_publish(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dedupe-off", TopicSpec(deduplication_window_seconds=0))
        recorder = make_recorder()
        await bus.subscribe("dedupe-off", "audit", recorder)
        event = make_event(event_id="same-3")
        await bus.publish("dedupe-off", event)
        await bus.publish("dedupe-off", event)
        await bus.publish("dedupe-off", [event, event])
        await drain(bus)
        assert recorder.ids == ["same-3"] * 4

    async def test_the_same_id_from_another_source_is_not_a_duplicate(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dedupe-source")
        recorder = make_recorder()
        await bus.subscribe("dedupe-source", "audit", recorder)
        await bus.publish("dedupe-source", make_event(event_id="same-4", source="/a"))
        await bus.publish("dedupe-source", make_event(event_id="same-4", source="/b"))
        await drain(bus)
        assert sorted(event.source for event in recorder.events) == ["/a", "/b"]

    async def test_duplicates_within_one_batch_are_delivered_once(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dedupe-batch")
        recorder = make_recorder()
        await bus.subscribe("dedupe-batch", "audit", recorder)
        event, other = make_event(event_id="same-5"), make_event(event_id="other-5")
        await bus.publish("dedupe-batch", [event, other, event])
        await drain(bus)
        assert sorted(recorder.ids) == ["other-5", "same-5"]

    async def test_eventgrid_events_are_deduplicated_on_the_topic_and_id(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dedupe-eg", TopicSpec(input_schema="EventGridSchema"))
        recorder = make_recorder()
        await bus.subscribe("dedupe-eg", "audit", recorder)
        await bus.publish("dedupe-eg", make_eventgrid_event("eg-dup"))
        await bus.publish("dedupe-eg", make_eventgrid_event("eg-dup", subject="/other"))
        await drain(bus)
        assert recorder.ids == ["eg-dup"]

    async def test_deduplication_is_per_topic(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        first, second = make_recorder(), make_recorder()
        for topic, recorder in (("dedupe-left", first), ("dedupe-right", second)):
            await bus.create_topic(topic)
            await bus.subscribe(topic, "audit", recorder)
        event = make_event(event_id="same-7")
        await bus.publish("dedupe-left", event)
        await bus.publish("dedupe-right", event)
        await drain(bus)
        assert (first.ids, second.ids) == (["same-7"], ["same-7"])

    async def test_a_deleted_topic_forgets_its_deduplication_window(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dedupe-reborn")
        await bus.create_subscription("dedupe-reborn", "audit")
        event = make_event(event_id="same-8")
        await bus.publish("dedupe-reborn", event)
        await bus.delete_topic("dedupe-reborn")
        await bus.create_topic("dedupe-reborn")
        recorder = make_recorder()
        await bus.subscribe("dedupe-reborn", "audit", recorder)
        await bus.publish("dedupe-reborn", event)
        await drain(bus)
        assert recorder.ids == ["same-8"]

    async def test_a_deleted_topic_stays_forgotten_after_reopen(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        self.require_durable()
        await bus.create_topic("dedupe-reborn-durable")
        event = make_event(event_id="same-9")
        await bus.publish("dedupe-reborn-durable", event)
        await bus.delete_topic("dedupe-reborn-durable")
        await bus.create_topic("dedupe-reborn-durable")
        await bus.create_subscription("dedupe-reborn-durable", "audit")
        recorder = make_recorder()
        async with self.reopen(bus) as reopened:
            await reopened.attach("dedupe-reborn-durable", "audit", recorder)
            await reopened.publish("dedupe-reborn-durable", event)
            await drain(reopened)
        assert recorder.ids == ["same-9"]

    async def test_the_deduplication_window_survives_a_reopen(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        self.require_durable()
        await bus.create_topic("dedupe-durable")
        first = make_recorder()
        await bus.subscribe("dedupe-durable", "audit", first)
        event = make_event(event_id="same-6")
        await bus.publish("dedupe-durable", event)
        await drain(bus)
        assert first.ids == ["same-6"]
        clock.advance(60)
        second = make_recorder()
        async with self.reopen(bus) as reopened:
            await reopened.attach("dedupe-durable", "audit", second)
            await reopened.publish("dedupe-durable", event)
            await run_for(reopened, clock, HOUR)
        assert second.calls == []

    # filters -----------------------------------------------------------------------------------
    async def test_included_event_types_select_what_a_subscription_gets(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("filter-types")
        placed, everything = make_recorder(), make_recorder()
        await bus.subscribe(
            "filter-types",
            "placed",
            placed,
            SubscriptionSpec.from_dict({"filter": {"includedEventTypes": ["Order.Placed"]}}),
        )
        await bus.subscribe("filter-types", "everything", everything)
        wanted = make_event("Order.Placed")
        await bus.publish("filter-types", [wanted, make_event("Order.Cancelled")])
        await drain(bus)
        assert placed.ids == [wanted.id]
        assert len(everything.calls) == 2

    async def test_subject_begins_with_matches_case_insensitively(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("filter-subject")
        recorder = make_recorder()
        await bus.subscribe(
            "filter-subject",
            "orders",
            recorder,
            SubscriptionSpec(event_filter=EventFilter(subject_begins_with="/orders/")),
        )
        upper = make_event(subject="/ORDERS/1")
        lower = make_event(subject="/orders/2")
        await bus.publish(
            "filter-subject", [upper, lower, make_event(subject="/carts/3"), make_event()]
        )
        await drain(bus)
        assert sorted(recorder.ids) == sorted([upper.id, lower.id])

    async def test_an_advanced_filter_selects_what_a_subscription_gets(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("filter-advanced")
        recorder = make_recorder()
        big_orders = EventFilter(
            advanced_filters=(
                AdvancedFilter(operator_type="NumberGreaterThan", key="data.amount", value=100),
            )
        )
        await bus.subscribe(
            "filter-advanced", "big", recorder, SubscriptionSpec(event_filter=big_orders)
        )
        big = make_event(data={"amount": 500})
        await bus.publish(
            "filter-advanced",
            [make_event(data={"amount": 50}), big, make_event(data={"other": 1000})],
        )
        await drain(bus)
        assert recorder.ids == [big.id]

    async def test_an_unmatched_event_is_accepted_and_not_delivered(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("filter-none")
        recorder = make_recorder()
        await bus.subscribe(
            "filter-none",
            "picky",
            recorder,
            SubscriptionSpec.from_dict({"filter": {"includedEventTypes": ["Never.Sent"]}}),
        )
        await bus.publish("filter-none", make_event("Something.Else"))
        await bus.create_topic("no-subscribers")
        await bus.publish("no-subscribers", make_event())
        await run_for(bus, clock, HOUR)
        assert recorder.calls == []
        assert await bus.counters("filter-none", "picky") == counts()

    async def test_events_are_matched_when_published(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("filter-at-publish")
        await bus.publish("filter-at-publish", make_event())
        late = make_recorder()
        await bus.subscribe("filter-at-publish", "late", late)
        await drain(bus)
        assert late.calls == []

    async def test_an_updated_filter_applies_to_later_publishes(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("filter-update")
        recorder = make_recorder()
        only = SubscriptionSpec.from_dict({"filter": {"includedEventTypes": ["A"]}})
        await bus.subscribe("filter-update", "audit", recorder, only)
        await bus.publish("filter-update", [make_event("A"), make_event("B")])
        await bus.update_subscription(
            "filter-update",
            "audit",
            SubscriptionSpec.from_dict({"filter": {"includedEventTypes": ["B"]}}),
        )
        await bus.publish("filter-update", [make_event("A"), make_event("B")])
        await drain(bus)
        assert sorted(event.type for event in recorder.events) == ["A", "B"]

    # fan-out -----------------------------------------------------------------------------------
    async def test_each_subscription_gets_its_own_copy(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("fan-out")
        first, second = make_recorder(), make_recorder()
        await bus.subscribe("fan-out", "first", first)
        await bus.subscribe("fan-out", "second", second)
        event = make_event()
        await bus.publish("fan-out", event)
        await drain(bus)
        assert first.events == [event]
        assert second.events == [event]

    async def test_a_failing_subscription_does_not_delay_another(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("fan-out-failing")
        failing, healthy = make_recorder(fail="always"), make_recorder()
        await bus.subscribe("fan-out-failing", "failing", failing)
        await bus.subscribe("fan-out-failing", "healthy", healthy)
        start = clock.now()
        await bus.publish("fan-out-failing", make_event())
        await drain(bus)
        assert healthy.offsets(start) == [0]
        assert failing.offsets(start) == [0]
        assert (await bus.counters("fan-out-failing", "healthy"))["queued"] == 0
        assert (await bus.counters("fan-out-failing", "failing"))["queued"] == 1

        await run_for(bus, clock, 25)
        await bus.publish("fan-out-failing", make_event())
        await drain(bus)
        assert healthy.offsets(start) == [0, 25]
        assert failing.offsets(start) == [0, 10, 25]
        assert (await bus.counters("fan-out-failing", "healthy"))["queued"] == 0
        assert (await bus.counters("fan-out-failing", "failing"))["queued"] == 2

    async def test_a_hanging_subscription_does_not_delay_another(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("fan-out-hanging")
        hanging, healthy = make_recorder(hang=True), make_recorder()
        spec = SubscriptionSpec(max_concurrent_deliveries=1)
        await bus.subscribe("fan-out-hanging", "hanging", hanging, spec)
        await bus.subscribe("fan-out-hanging", "healthy", healthy, spec)
        start = clock.now()
        events = [make_event(data={"n": n}) for n in range(3)]
        await bus.publish("fan-out-hanging", events)
        await hanging.wait_for_calls(1)
        await healthy.wait_for_calls(3)
        assert healthy.offsets(start) == [0, 0, 0]
        assert len(hanging.calls) == 1
        hanging.release()
        await drain(bus)
        assert sorted(hanging.ids) == sorted(event.id for event in events)

    # retry schedule ----------------------------------------------------------------------------
    async def test_failed_delivery_is_retried_on_the_schedule_then_dead_lettered(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("retry-schedule")
        recorder = make_recorder(fail="always")
        await bus.subscribe(
            "retry-schedule", "audit", recorder, retry_spec(max_delivery_attempts=5)
        )
        start = clock.now()
        await bus.publish("retry-schedule", make_event())
        await run_for(bus, clock, 399)
        assert recorder.offsets(start) == [0, 10, 40, 100]
        assert await bus.dead_letters("retry-schedule", "audit") == []
        await run_for(bus, clock, 1)
        assert recorder.offsets(start) == [0, 10, 40, 100, 400]
        record = await self.only_dead_letter(bus, "retry-schedule", "audit")
        assert record.reason == "MaxDeliveryAttemptsExceeded"
        assert record.delivery_attempts == 5
        assert record.dead_letter_time == start + 400
        await run_for(bus, clock, 24 * HOUR)
        assert len(recorder.calls) == 5

    async def test_the_default_policy_retries_for_24_hours_then_dead_letters(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("retry-default")
        recorder = make_recorder(fail="always")
        await bus.subscribe("retry-default", "audit", recorder)
        start = clock.now()
        await bus.publish("retry-default", make_event())
        await run_for(bus, clock, 48 * HOUR)
        # 10 s, 30 s, 1 m, 5 m, 10 m, 30 m, 1 h, 3 h, 6 h, then 12 h; the attempt after the one at
        # 22 h 46 m 40 s would fall past the 24 h time-to-live.
        assert recorder.offsets(start) == [
            0,
            10,
            40,
            100,
            400,
            1000,
            2800,
            6400,
            17200,
            38800,
            82000,
        ]
        record = await self.only_dead_letter(bus, "retry-default", "audit")
        assert record.reason == "TimeToLiveExceeded"
        assert record.delivery_attempts == 11
        assert record.dead_letter_time == start + 125200

    async def test_time_to_live_stops_retries_as_in_the_event_grid_example(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        # Reference §3.4: TTL 30 min and 10 attempts -> 6 attempts, the 7th would be at 46 m 40 s.
        await bus.create_topic("retry-ttl")
        recorder = make_recorder(fail="always")
        await bus.subscribe(
            "retry-ttl",
            "audit",
            recorder,
            retry_spec(max_delivery_attempts=10, event_time_to_live_in_minutes=30),
        )
        start = clock.now()
        await bus.publish("retry-ttl", make_event())
        await run_for(bus, clock, 2799)
        assert recorder.offsets(start) == [0, 10, 40, 100, 400, 1000]
        assert await bus.dead_letters("retry-ttl", "audit") == []
        await run_for(bus, clock, 1)
        record = await self.only_dead_letter(bus, "retry-ttl", "audit")
        assert record.reason == "TimeToLiveExceeded"
        assert record.delivery_attempts == 6
        assert record.dead_letter_time == start + 2800
        assert record.last_delivery_attempt_time == start + 1000
        assert record.last_delivery_outcome == "GenericError"
        assert len(recorder.calls) == 6

    async def test_custom_backoff_is_followed_and_its_last_step_repeats(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("retry-custom")
        recorder = make_recorder(fail="always")
        await bus.subscribe(
            "retry-custom",
            "audit",
            recorder,
            retry_spec(max_delivery_attempts=6, backoff_seconds=(1.0, 2.5)),
        )
        start = clock.now()
        await bus.publish("retry-custom", make_event())
        await run_for(bus, clock, HOUR)
        assert recorder.offsets(start) == [0, 1, 3.5, 6, 8.5, 11]
        record = await self.only_dead_letter(bus, "retry-custom", "audit")
        assert record.delivery_attempts == 6

    async def test_a_retry_delay_longer_than_the_step_postpones_the_next_attempt(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("retry-delay")
        recorder = make_recorder(fail=2, retry_delay_seconds=100)
        await bus.subscribe("retry-delay", "audit", recorder)
        start = clock.now()
        await bus.publish("retry-delay", make_event())
        await run_for(bus, clock, 99)
        assert recorder.offsets(start) == [0]
        await run_for(bus, clock, HOUR)
        assert recorder.offsets(start) == [0, 100, 200]
        assert (await bus.counters("retry-delay", "audit"))["queued"] == 0

    async def test_a_retry_delay_shorter_than_the_step_does_not_hasten_the_next_attempt(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("retry-short-delay")
        recorder = make_recorder(fail=1, retry_delay_seconds=1)
        await bus.subscribe("retry-short-delay", "audit", recorder)
        start = clock.now()
        await bus.publish("retry-short-delay", make_event())
        await run_for(bus, clock, HOUR)
        assert recorder.offsets(start) == [0, 10]

    async def test_jitter_lengthens_each_gap_by_at_most_its_fraction(
        self, bus: Bus, clock: FakeClock
    ) -> None:
        async with self.reopen(bus, retry_jitter=0.1, rng=random.Random(20260101)) as jittery:
            await jittery.create_topic("retry-jitter")
            recorder = Recorder(clock, fail="always")
            await jittery.subscribe(
                "retry-jitter", "audit", recorder, retry_spec(max_delivery_attempts=6)
            )
            await jittery.publish("retry-jitter", make_event())
            await run_for(jittery, clock, 2 * HOUR)
        times = recorder.times
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        steps = DEFAULT_BACKOFF[: len(gaps)]
        assert len(gaps) == 5
        for gap, step in zip(gaps, steps, strict=True):
            assert step <= gap <= step * 1.1 + 1e-6, (gap, step)
        assert any(gap > step for gap, step in zip(gaps, steps, strict=True))

    async def test_updating_a_subscription_keeps_a_pending_retry_under_the_new_policy(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("retry-update")
        recorder = make_recorder(fail="always")
        await bus.subscribe("retry-update", "audit", recorder, retry_spec(max_delivery_attempts=5))
        start = clock.now()
        await bus.publish("retry-update", make_event())
        await run_for(bus, clock, 20)
        assert recorder.offsets(start) == [0, 10]
        await bus.update_subscription("retry-update", "audit", retry_spec(max_delivery_attempts=3))
        await run_for(bus, clock, HOUR)
        assert recorder.offsets(start) == [0, 10, 40]
        record = await self.only_dead_letter(bus, "retry-update", "audit")
        assert record.delivery_attempts == 3

    async def test_deleting_a_subscription_cancels_its_pending_retries(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("retry-delete")
        recorder = make_recorder(fail="always")
        await bus.subscribe("retry-delete", "audit", recorder)
        await bus.publish("retry-delete", make_event())
        await drain(bus)
        await bus.delete_subscription("retry-delete", "audit")
        await run_for(bus, clock, HOUR)
        assert len(recorder.calls) == 1

    async def test_an_event_waiting_past_its_time_to_live_is_dead_lettered_without_an_attempt(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("ttl-waiting")
        await bus.create_subscription(
            "ttl-waiting", "audit", retry_spec(event_time_to_live_in_minutes=1)
        )
        start = clock.now()
        await bus.publish("ttl-waiting", make_event())
        clock.advance(61)
        recorder = make_recorder()
        await bus.attach("ttl-waiting", "audit", recorder)
        await drain(bus)
        assert recorder.calls == []
        record = await self.only_dead_letter(bus, "ttl-waiting", "audit")
        assert record.reason == "TimeToLiveExceeded"
        assert record.delivery_attempts == 0
        assert record.publish_time == start
        assert record.last_delivery_attempt_time is None
        assert record.dead_letter_time == start + 61

    # outcomes ----------------------------------------------------------------------------------
    async def test_a_rejected_event_is_dead_lettered_at_once(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("outcome-reject")
        recorder = make_recorder(reject="bad")
        await bus.subscribe("outcome-reject", "audit", recorder)
        start = clock.now()
        await bus.publish("outcome-reject", make_event())
        await drain(bus)
        record = await self.only_dead_letter(bus, "outcome-reject", "audit")
        assert record.reason == "Rejected"
        assert record.delivery_attempts == 1
        assert record.dead_letter_time == start
        assert record.last_delivery_error is not None
        assert "bad" in record.last_delivery_error
        await run_for(bus, clock, HOUR)
        assert len(recorder.calls) == 1

    @pytest.mark.parametrize("status", [400, 401, 403, 413])
    async def test_a_non_retryable_status_is_dead_lettered_at_once(
        self, bus: Bus, clock: FakeClock, status: int
    ) -> None:
        await bus.create_topic("outcome-fatal")
        endpoint = StatusEndpoint(clock, [status])
        await bus.subscribe("outcome-fatal", "audit", endpoint)
        start = clock.now()
        await bus.publish("outcome-fatal", make_event())
        await drain(bus)
        record = await self.only_dead_letter(bus, "outcome-fatal", "audit")
        assert record.reason == "NonRetryableStatusCode"
        assert record.delivery_attempts == 1
        assert record.last_delivery_outcome == outcome_for_status(status).name
        assert record.last_delivery_attempt_time == start
        await run_for(bus, clock, HOUR)
        assert len(endpoint.calls) == 1

    async def test_a_non_retryable_status_after_retries_counts_every_attempt(
        self, bus: Bus, clock: FakeClock
    ) -> None:
        await bus.create_topic("outcome-late-fatal")
        endpoint = StatusEndpoint(clock, [500, 503, 403])
        await bus.subscribe("outcome-late-fatal", "audit", endpoint)
        start = clock.now()
        await bus.publish("outcome-late-fatal", make_event())
        await run_for(bus, clock, HOUR)
        assert [moment - start for moment in endpoint.times] == [0, 10, 40]
        record = await self.only_dead_letter(bus, "outcome-late-fatal", "audit")
        assert record.reason == "NonRetryableStatusCode"
        assert record.delivery_attempts == 3
        assert record.last_delivery_outcome == "Forbidden"
        assert record.dead_letter_time == start + 40

    @pytest.mark.parametrize("status", [500, 502, 503, 404, 408, 429, 302])
    async def test_a_retryable_status_is_retried(
        self, bus: Bus, clock: FakeClock, status: int
    ) -> None:
        await bus.create_topic("outcome-retry")
        endpoint = StatusEndpoint(clock, [status, 200])
        await bus.subscribe("outcome-retry", "audit", endpoint)
        start = clock.now()
        await bus.publish("outcome-retry", make_event())
        await run_for(bus, clock, HOUR)
        assert [moment - start for moment in endpoint.times] == [0, 10]
        assert await bus.dead_letters("outcome-retry", "audit") == []
        assert (await bus.counters("outcome-retry", "audit"))["queued"] == 0

    async def test_an_empty_non_retryable_list_makes_400_retried(
        self, bus: Bus, clock: FakeClock
    ) -> None:
        await bus.create_topic("outcome-lenient")
        endpoint = StatusEndpoint(clock, [400, 400, 200])
        await bus.subscribe(
            "outcome-lenient",
            "audit",
            endpoint,
            SubscriptionSpec.from_dict({"retryPolicy": {"nonRetryableStatusCodes": []}}),
        )
        start = clock.now()
        await bus.publish("outcome-lenient", make_event())
        await run_for(bus, clock, HOUR)
        assert [moment - start for moment in endpoint.times] == [0, 10, 40]
        assert await bus.dead_letters("outcome-lenient", "audit") == []

    @pytest.mark.parametrize("status", [200, 201, 202, 203, 204])
    async def test_a_2xx_status_counts_as_delivered(
        self, bus: Bus, clock: FakeClock, status: int
    ) -> None:
        await bus.create_topic("outcome-ok")
        endpoint = StatusEndpoint(clock, [status])
        await bus.subscribe("outcome-ok", "audit", endpoint)
        await bus.publish("outcome-ok", make_event())
        await run_for(bus, clock, HOUR)
        assert len(endpoint.calls) == 1
        assert await bus.counters("outcome-ok", "audit") == counts()

    @pytest.mark.parametrize(
        ("statuses", "last_outcome"),
        [
            pytest.param([503, 404, 500], "GenericError", id="generic-last"),
            pytest.param([500, 500, 503], "Busy", id="busy-last"),
            pytest.param([500, 503, 404], "NotFound", id="not-found-last"),
        ],
    )
    async def test_the_last_delivery_outcome_is_that_of_the_last_attempt(
        self, bus: Bus, clock: FakeClock, statuses: list[int], last_outcome: str
    ) -> None:
        await bus.create_topic("outcome-last")
        endpoint = StatusEndpoint(clock, statuses)
        await bus.subscribe("outcome-last", "audit", endpoint, retry_spec(max_delivery_attempts=3))
        await bus.publish("outcome-last", make_event())
        await run_for(bus, clock, HOUR)
        record = await self.only_dead_letter(bus, "outcome-last", "audit")
        assert record.last_delivery_outcome == last_outcome
        assert record.delivery_attempts == 3

    async def test_a_retry_signal_counts_as_a_busy_attempt(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("outcome-retry-signal")
        recorder = make_recorder(fail="always", retry_delay_seconds=0)
        await bus.subscribe(
            "outcome-retry-signal", "audit", recorder, retry_spec(max_delivery_attempts=2)
        )
        await bus.publish("outcome-retry-signal", make_event())
        await run_for(bus, clock, HOUR)
        record = await self.only_dead_letter(bus, "outcome-retry-signal", "audit")
        assert record.last_delivery_outcome == "Busy"
        assert record.reason == "MaxDeliveryAttemptsExceeded"

    async def test_an_endpoint_sees_the_delivery_count_of_each_attempt(
        self, bus: Bus, clock: FakeClock
    ) -> None:
        await bus.create_topic("attempt-count")
        endpoint = StatusEndpoint(clock, [500, 503, 404, 200])
        await bus.subscribe("attempt-count", "audit", endpoint)
        await bus.publish("attempt-count", make_event())
        await run_for(bus, clock, HOUR)
        attempts = [attempt for _, attempt, _ in endpoint.calls]
        assert [attempt.delivery_count for attempt in attempts] == [0, 1, 2, 3]
        assert {(attempt.topic, attempt.subscription) for attempt in attempts} == {
            ("attempt-count", "audit")
        }
        assert not any(attempt.batched for attempt in attempts)

    # delivery timeout --------------------------------------------------------------------------
    async def test_a_handler_past_the_delivery_timeout_is_cancelled_and_retried(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("timeout-topic")
        recorder = make_recorder(hang=True)
        await bus.subscribe(
            "timeout-topic",
            "slow",
            recorder,
            SubscriptionSpec(
                delivery_timeout_seconds=5, retry_policy=RetryPolicy(max_delivery_attempts=2)
            ),
        )
        start = clock.now()
        await bus.publish("timeout-topic", make_event())
        await recorder.wait_for_calls(1)
        clock.advance(5)
        await drain(bus)  # the attempt was cancelled and settled as a failure
        assert recorder.running == 0
        assert (await bus.counters("timeout-topic", "slow"))["queued"] == 1
        await run_for(bus, clock, 9.5)
        assert recorder.offsets(start) == [0]
        clock.advance(0.5)
        await recorder.wait_for_calls(2)
        assert recorder.offsets(start) == [0, 15]
        clock.advance(5)
        await drain(bus)
        record = await self.only_dead_letter(bus, "timeout-topic", "slow")
        assert record.last_delivery_outcome == "TimedOut"
        assert record.reason == "MaxDeliveryAttemptsExceeded"
        assert record.delivery_attempts == 2
        assert recorder.running == 0

    async def test_a_timed_out_attempt_frees_its_worker_for_the_next_event(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("timeout-worker")
        recorder = make_recorder(hang=True)
        spec = SubscriptionSpec(delivery_timeout_seconds=5, max_concurrent_deliveries=1)
        await bus.subscribe("timeout-worker", "single", recorder, spec)
        stuck, waiting = make_event(data={"n": 1}), make_event(data={"n": 2})
        start = clock.now()
        await bus.publish("timeout-worker", [stuck, waiting])
        await recorder.wait_for_calls(1)
        recorder.hang = False  # the first call keeps hanging; later ones return at once
        clock.advance(5)
        await drain(bus)
        await run_for(bus, clock, HOUR)
        assert [(moment - start, event.id) for moment, event in recorder.calls] == [
            (0, stuck.id),
            (5, waiting.id),
            (15, stuck.id),
        ]
        assert (await bus.counters("timeout-worker", "single"))["queued"] == 0

    async def test_a_handler_within_the_delivery_timeout_is_not_cancelled(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("timeout-ok")
        recorder = make_recorder(hang=True)
        await bus.subscribe(
            "timeout-ok", "slow", recorder, SubscriptionSpec(delivery_timeout_seconds=5)
        )
        await bus.publish("timeout-ok", make_event())
        await recorder.wait_for_calls(1)
        clock.advance(4.5)
        recorder.release()
        await drain(bus)
        await run_for(bus, clock, HOUR)
        assert len(recorder.calls) == 1
        assert (await bus.counters("timeout-ok", "slow"))["queued"] == 0

    # batches -----------------------------------------------------------------------------------
    async def test_a_batching_subscription_hands_the_handler_a_list(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("batch-one")
        recorder = make_recorder()
        spec = SubscriptionSpec(destination=InProcessDestination(max_events_per_batch=3))
        await bus.subscribe("batch-one", "audit", recorder, spec)
        event = make_event()
        start = clock.now()
        await bus.publish("batch-one", event)
        await drain(bus)
        # No waiting to fill a batch: the lone event goes out at once, in a list.
        assert recorder.calls == [(start, [event])]

    async def test_a_burst_goes_out_in_batches_of_at_most_the_maximum(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("batch-burst")
        recorder = make_recorder()
        spec = SubscriptionSpec(destination=InProcessDestination(max_events_per_batch=3))
        await bus.subscribe("batch-burst", "audit", recorder, spec)
        events = [make_event(data={"n": n}) for n in range(10)]
        await bus.publish("batch-burst", events)
        for event in events:
            await bus.publish("batch-burst", make_event(data={"single": event.id}))
        await drain(bus)
        sizes = [len(batch) for _, batch in recorder.calls]
        assert all(isinstance(batch, list) for _, batch in recorder.calls)
        assert all(1 <= size <= 3 for size in sizes), sizes
        assert sum(sizes) == 20
        assert len(set(recorder.ids)) == 20

    async def test_a_failing_batch_is_retried_as_a_whole(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("batch-failing")
        recorder = make_recorder(fail="always")
        spec = SubscriptionSpec(
            destination=InProcessDestination(max_events_per_batch=3),
            retry_policy=RetryPolicy(max_delivery_attempts=3),
        )
        await bus.subscribe("batch-failing", "audit", recorder, spec)
        events = [make_event(data={"n": n}) for n in range(7)]
        await bus.publish("batch-failing", events)
        await run_for(bus, clock, HOUR)
        assert all(len(batch) <= 3 for _, batch in recorder.calls)
        attempts = {event.id: recorder.ids.count(event.id) for event in events}
        assert attempts == {event.id: 3 for event in events}
        records = await bus.dead_letters("batch-failing", "audit")
        assert sorted(record.event.id for record in records) == sorted(e.id for e in events)
        assert {record.delivery_attempts for record in records} == {3}

    async def test_a_batching_endpoint_is_told_the_attempt_is_batched(
        self, bus: Bus, clock: FakeClock
    ) -> None:
        await bus.create_topic("batch-attempt")
        endpoint = StatusEndpoint(clock, [500, 200])
        spec = SubscriptionSpec(destination=InProcessDestination(max_events_per_batch=2))
        await bus.subscribe("batch-attempt", "audit", endpoint, spec)
        await bus.publish("batch-attempt", [make_event(), make_event()])
        await run_for(bus, clock, HOUR)
        assert [len(events) for _, _, events in endpoint.calls] == [2, 2]
        assert [attempt.delivery_count for _, attempt, _ in endpoint.calls] == [0, 1]
        assert all(attempt.batched for _, attempt, _ in endpoint.calls)

    # concurrency -------------------------------------------------------------------------------
    async def test_at_most_max_concurrent_deliveries_run_at_once(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("concurrency")
        recorder = make_recorder(hang=True)
        await bus.subscribe(
            "concurrency", "audit", recorder, SubscriptionSpec(max_concurrent_deliveries=2)
        )
        events = [make_event(data={"n": n}) for n in range(5)]
        await bus.publish("concurrency", events)
        await recorder.wait_for_calls(2)
        for _ in range(20):  # let any worker that should not exist get going
            await asyncio.sleep(0)
        assert len(recorder.calls) == 2
        assert recorder.running == 2
        recorder.release()
        await drain(bus)
        assert sorted(recorder.ids) == sorted(event.id for event in events)
        assert recorder.peak == 2

    async def test_a_backlog_beyond_the_dispatchers_capacity_is_delivered_in_full(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("backlog")
        recorder = make_recorder(hang=True)
        await bus.subscribe(
            "backlog", "audit", recorder, SubscriptionSpec(max_concurrent_deliveries=1)
        )
        events = [make_event(data={"n": n}) for n in range(25)]
        for event in events[:10]:
            await bus.publish("backlog", event)
        await bus.publish("backlog", events[10:])
        await recorder.wait_for_calls(1)
        recorder.release()
        await drain(bus)
        assert sorted(recorder.ids) == sorted(event.id for event in events)
        assert recorder.peak == 1
        assert (await bus.counters("backlog", "audit"))["queued"] == 0

    # dead letters ------------------------------------------------------------------------------
    async def test_a_dead_letter_record_describes_the_failure(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-record")
        recorder = make_recorder(fail="always")
        await bus.subscribe("dl-record", "audit", recorder, retry_spec(max_delivery_attempts=2))
        event = make_event(data={"order": 1}, correlationid="tx-9")
        start = clock.now()
        await bus.publish("dl-record", event)
        await run_for(bus, clock, HOUR)
        record = await self.only_dead_letter(bus, "dl-record", "audit")
        assert (record.topic, record.subscription) == ("dl-record", "audit")
        assert record.event == event
        assert record.reason == "MaxDeliveryAttemptsExceeded"
        assert record.delivery_attempts == 2
        assert record.last_delivery_outcome == "GenericError"
        assert record.last_delivery_error is not None
        assert "HandlerFailure" in record.last_delivery_error
        assert "failure 2" in record.last_delivery_error
        assert record.publish_time == start
        assert record.last_delivery_attempt_time == start + 10
        assert record.dead_letter_time == start + 10
        assert await bus.get_dead_letter("dl-record", "audit", record.id) == record

    async def test_a_cloudevents_dead_letter_record_uses_lower_case_names(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-ce-record")
        await bus.subscribe("dl-ce-record", "audit", make_recorder(reject="bad"))
        event = make_event(data={"order": 1}, correlationid="tx-1")
        start = clock.now()
        await bus.publish("dl-ce-record", event)
        await drain(bus)
        record = (await self.only_dead_letter(bus, "dl-ce-record", "audit")).to_record(
            "CloudEventSchemaV1_0"
        )
        assert record["id"] == event.id
        assert record["type"] == event.type
        assert record["correlationid"] == "tx-1"
        assert record["deadletterreason"] == "Rejected"
        assert record["deliveryattempts"] == 1
        assert record["lastdeliveryoutcome"] == "Rejected"
        assert record["publishtime"] == format_timestamp(start)
        assert record["lastdeliveryattempttime"] == format_timestamp(start)
        assert not [name for name in record if name != name.lower()]

    async def test_an_eventgrid_dead_letter_record_uses_camel_case_names(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-eg-record", TopicSpec(input_schema="EventGridSchema"))
        await bus.subscribe(
            "dl-eg-record",
            "audit",
            make_recorder(reject="bad"),
            SubscriptionSpec(event_delivery_schema="EventGridSchema"),
        )
        start = clock.now()
        await bus.publish("dl-eg-record", make_eventgrid_event("eg-dead"))
        await drain(bus)
        record = (await self.only_dead_letter(bus, "dl-eg-record", "audit")).to_record(
            "EventGridSchema"
        )
        assert record["id"] == "eg-dead"
        assert record["eventType"] == "Drone.Assigned"
        assert record["topic"] == "/topics/dl-eg-record"
        assert record["metadataVersion"] == "1"
        assert record["deadLetterReason"] == "Rejected"
        assert record["deliveryAttempts"] == 1
        assert record["lastDeliveryOutcome"] == "Rejected"
        assert record["publishTime"] == format_timestamp(start)
        assert record["lastDeliveryAttemptTime"] == format_timestamp(start)

    async def test_dead_letters_are_listed_in_dead_lettering_order_in_pages(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-pages")
        await bus.subscribe("dl-pages", "audit", make_recorder(reject="bad"))
        events = [make_event(data={"n": n}) for n in range(5)]
        for event in events:
            await bus.publish("dl-pages", event)
            await run_for(bus, clock, 1)
        everything = await bus.dead_letters("dl-pages", "audit")
        assert [record.event.id for record in everything] == [event.id for event in events]
        pages: list[list[DeadLetter]] = []
        after: str | None = None
        while page := await bus.dead_letters("dl-pages", "audit", limit=2, after=after):
            pages.append(page)
            after = page[-1].id
        assert [len(page) for page in pages] == [2, 2, 1]
        assert [record for page in pages for record in page] == everything
        for limit in (0, 10_001):
            with pytest.raises(InvalidDeadLetterQueryError, match="limit"):
                await bus.dead_letters("dl-pages", "audit", limit=limit)

    async def test_a_page_after_a_record_purged_meanwhile_continues_after_it(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-cursor")
        await bus.subscribe("dl-cursor", "audit", make_recorder(reject="bad"))
        for n in range(5):
            await bus.publish("dl-cursor", make_event(data={"n": n}))
            await run_for(bus, clock, 1)
        everything = await bus.dead_letters("dl-cursor", "audit")
        first_page = await bus.dead_letters("dl-cursor", "audit", limit=2)
        assert first_page == everything[:2]
        # Someone purges (or redrives) the cursor record before the next page is read.
        await bus.purge_dead_letters("dl-cursor", "audit", [first_page[-1].id])
        next_page = await bus.dead_letters("dl-cursor", "audit", limit=2, after=first_page[-1].id)
        assert next_page == everything[2:4]

    async def test_an_unknown_dead_letter_raises_dead_letter_not_found(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-unknown")
        await bus.subscribe("dl-unknown", "audit", make_recorder(reject="bad"))
        await bus.create_subscription("dl-unknown", "other")
        await bus.publish("dl-unknown", make_event())
        await drain(bus)
        with pytest.raises(DeadLetterNotFoundError, match="no-such-record"):
            await bus.get_dead_letter("dl-unknown", "audit", "no-such-record")
        # A record belongs to its subscription only.
        record = await self.only_dead_letter(bus, "dl-unknown", "audit")
        with pytest.raises(DeadLetterNotFoundError):
            await bus.get_dead_letter("dl-unknown", "other", record.id)
        assert await bus.redrive("dl-unknown", "other", [record.id]) == 0
        assert await bus.purge_dead_letters("dl-unknown", "other", [record.id]) == 0
        assert await bus.get_dead_letter("dl-unknown", "audit", record.id) == record

    async def test_one_dead_letter_is_redriven_by_id(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-redrive-one")
        recorder = make_recorder(reject="bad")
        await bus.subscribe("dl-redrive-one", "audit", recorder)
        first, second = make_event(), make_event()
        await bus.publish("dl-redrive-one", [first, second])
        await drain(bus)
        records = {r.event.id: r for r in await bus.dead_letters("dl-redrive-one", "audit")}
        recorder.reject = None
        assert await bus.redrive("dl-redrive-one", "audit", [records[first.id].id]) == 1
        await drain(bus)
        assert recorder.ids[2:] == [first.id]
        remaining = await bus.dead_letters("dl-redrive-one", "audit")
        assert [record.id for record in remaining] == [records[second.id].id]

    async def test_dead_letters_selected_by_a_predicate_are_redriven(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-redrive-where")
        recorder = make_recorder(reject="bad")
        await bus.subscribe("dl-redrive-where", "audit", recorder)
        wanted = make_event("Order.Placed")
        await bus.publish(
            "dl-redrive-where", [make_event("Order.Cancelled"), wanted, make_event("Other")]
        )
        await drain(bus)
        recorder.reject = None
        moved = await bus.redrive(
            "dl-redrive-where", "audit", where=lambda record: record.event.type == "Order.Placed"
        )
        assert moved == 1
        await drain(bus)
        assert recorder.ids[3:] == [wanted.id]
        remaining = await bus.dead_letters("dl-redrive-where", "audit")
        assert sorted(record.event.type for record in remaining) == ["Order.Cancelled", "Other"]

    async def test_all_dead_letters_are_redriven(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-redrive-all")
        recorder = make_recorder(reject="bad")
        await bus.subscribe("dl-redrive-all", "audit", recorder)
        events = [make_event(data={"n": n}) for n in range(3)]
        await bus.publish("dl-redrive-all", events)
        await drain(bus)
        recorder.reject = None
        assert await bus.redrive("dl-redrive-all", "audit") == 3
        await drain(bus)
        assert sorted(recorder.ids[3:]) == sorted(event.id for event in events)
        assert await bus.dead_letters("dl-redrive-all", "audit") == []
        assert await bus.counters("dl-redrive-all", "audit") == counts()

    async def test_a_redriven_event_gets_a_fresh_attempt_budget(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-redrive-budget")
        recorder = make_recorder(fail="always")
        await bus.subscribe(
            "dl-redrive-budget", "audit", recorder, retry_spec(max_delivery_attempts=3)
        )
        await bus.publish("dl-redrive-budget", make_event())
        await run_for(bus, clock, HOUR)
        assert len(recorder.calls) == 3
        redriven_at = clock.now()
        assert await bus.redrive("dl-redrive-budget", "audit") == 1
        await run_for(bus, clock, HOUR)
        assert recorder.offsets(redriven_at)[3:] == [0, 10, 40]
        record = await self.only_dead_letter(bus, "dl-redrive-budget", "audit")
        assert record.delivery_attempts == 3
        assert record.reason == "MaxDeliveryAttemptsExceeded"

    async def test_a_redriven_event_gets_a_fresh_time_to_live(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-redrive-ttl")
        recorder = make_recorder(fail="always")
        spec = retry_spec(event_time_to_live_in_minutes=1, backoff_seconds=(30.0,))
        await bus.subscribe("dl-redrive-ttl", "audit", recorder, spec)
        start = clock.now()
        await bus.publish("dl-redrive-ttl", make_event())
        await run_for(bus, clock, HOUR)
        assert recorder.offsets(start) == [0, 30, 60]
        first = await self.only_dead_letter(bus, "dl-redrive-ttl", "audit")
        assert first.reason == "TimeToLiveExceeded"
        assert first.dead_letter_time == start + 90
        redriven_at = clock.now()
        await bus.redrive("dl-redrive-ttl", "audit", [first.id])
        await run_for(bus, clock, HOUR)
        assert recorder.offsets(redriven_at)[3:] == [0, 30, 60]
        second = await self.only_dead_letter(bus, "dl-redrive-ttl", "audit")
        assert second.reason == "TimeToLiveExceeded"
        assert second.publish_time == start
        assert second.delivery_attempts == 3
        assert second.dead_letter_time == redriven_at + 90

    async def test_dead_letters_are_purged_one_by_id_or_all(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-purge")
        recorder = make_recorder(reject="bad")
        await bus.subscribe("dl-purge", "audit", recorder)
        await bus.publish("dl-purge", [make_event(data={"n": n}) for n in range(3)])
        await drain(bus)
        records = await bus.dead_letters("dl-purge", "audit")
        assert await bus.purge_dead_letters("dl-purge", "audit", [records[0].id]) == 1
        with pytest.raises(DeadLetterNotFoundError):
            await bus.get_dead_letter("dl-purge", "audit", records[0].id)
        assert (await bus.counters("dl-purge", "audit"))["deadLettered"] == 2
        chosen = records[1].id
        assert (
            await bus.purge_dead_letters("dl-purge", "audit", where=lambda r: r.id == chosen) == 1
        )
        assert [r.id for r in await bus.dead_letters("dl-purge", "audit")] == [records[2].id]
        assert await bus.purge_dead_letters("dl-purge", "audit") == 1
        assert await bus.dead_letters("dl-purge", "audit") == []
        assert (await bus.counters("dl-purge", "audit"))["deadLettered"] == 0
        # A purged record cannot be redriven.
        assert await bus.redrive("dl-purge", "audit") == 0
        await drain(bus)
        assert len(recorder.calls) == 3

    async def test_counters_report_queued_dead_lettered_and_dropped(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-counters")
        await bus.subscribe(
            "dl-counters",
            "audit",
            make_recorder(fail="always"),
            retry_spec(max_delivery_attempts=2),
        )
        await bus.publish("dl-counters", [make_event(), make_event()])
        await drain(bus)
        assert await bus.counters("dl-counters", "audit") == counts(queued=2)
        await run_for(bus, clock, HOUR)
        assert await bus.counters("dl-counters", "audit") == counts(dead_lettered=2)

    async def test_dead_lettering_announces_a_system_event_with_correlation(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        watcher = make_recorder()
        await bus.subscribe(SYSTEM_TOPIC, "dl-watcher", watcher)
        await bus.create_topic("dl-announce")
        await bus.subscribe("dl-announce", "audit", make_recorder(reject="bad"))
        event = make_event(correlationid="tx-42")
        await bus.publish("dl-announce", event)
        await drain(bus)
        record = await self.only_dead_letter(bus, "dl-announce", "audit")
        [announced] = watcher.events
        assert isinstance(announced, CloudEvent)
        assert announced.type == DEAD_LETTERED_EVENT_TYPE
        assert announced.correlationid == "tx-42"
        assert announced.causationid == event.id
        assert announced.data["deadLetterId"] == record.id
        assert announced.data["reason"] == "Rejected"
        assert (announced.data["topic"], announced.data["subscription"]) == (
            "dl-announce",
            "audit",
        )

    async def test_a_dead_lettered_system_event_is_not_announced_again(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        rejecting = make_recorder(reject="no thanks")
        await bus.subscribe(SYSTEM_TOPIC, "dl-rejecting", rejecting)
        await bus.create_topic("dl-loop")
        await bus.subscribe("dl-loop", "audit", make_recorder(reject="bad"))
        await bus.publish("dl-loop", make_event())
        await drain(bus)
        assert len(rejecting.calls) == 1
        record = await self.only_dead_letter(bus, SYSTEM_TOPIC, "dl-rejecting")
        assert record.event.type == DEAD_LETTERED_EVENT_TYPE

    async def test_without_dead_letters_an_undeliverable_event_is_dropped_and_counted(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        watcher = make_recorder()
        await bus.subscribe(SYSTEM_TOPIC, "drop-watcher", watcher)
        await bus.create_topic("dl-disabled")
        rejecting, failing = make_recorder(reject="bad"), make_recorder(fail="always")
        spec = SubscriptionSpec(
            dead_letter_enabled=False, retry_policy=RetryPolicy(max_delivery_attempts=2)
        )
        await bus.subscribe("dl-disabled", "rejecting", rejecting, spec)
        await bus.subscribe("dl-disabled", "failing", failing, spec)
        await bus.publish("dl-disabled", make_event())
        await run_for(bus, clock, HOUR)
        for name in ("rejecting", "failing"):
            assert await bus.dead_letters("dl-disabled", name) == []
            assert await bus.counters("dl-disabled", name) == counts(dropped=1)
        assert watcher.calls == []

    # durability --------------------------------------------------------------------------------
    async def test_events_published_before_close_are_delivered_after_reopen(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        self.require_durable()
        await bus.create_topic("durable-queue")
        await bus.create_subscription("durable-queue", "audit")
        events = [make_event(data={"n": n}) for n in range(3)]
        await bus.publish("durable-queue", events)
        recorder = make_recorder()
        async with self.reopen(bus) as reopened:
            await reopened.attach("durable-queue", "audit", recorder)
            await drain(reopened)
            assert (await reopened.counters("durable-queue", "audit"))["queued"] == 0
        assert sorted(recorder.ids) == sorted(event.id for event in events)
        assert recorder.events[0] in events

    async def test_a_retry_scheduled_before_close_keeps_its_schedule_after_reopen(
        self, bus: Bus, clock: FakeClock
    ) -> None:
        self.require_durable()
        await bus.create_topic("durable-retry")
        first = StatusEndpoint(clock, [500])
        await bus.subscribe("durable-retry", "audit", first, retry_spec(max_delivery_attempts=3))
        start = clock.now()
        await bus.publish("durable-retry", make_event())
        await drain(bus)
        second = StatusEndpoint(clock, [500])
        async with self.reopen(bus) as reopened:
            await reopened.attach("durable-retry", "audit", second)
            await run_for(reopened, clock, HOUR)
            record = await self.only_dead_letter(reopened, "durable-retry", "audit")
        assert [moment - start for moment in second.times] == [10, 40]
        assert [attempt.delivery_count for _, attempt, _ in second.calls] == [1, 2]
        assert record.delivery_attempts == 3
        assert record.publish_time == start

    async def test_dead_letters_survive_reopen(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        self.require_durable()
        await bus.create_topic("durable-dl")
        recorder = make_recorder(reject="bad")
        await bus.subscribe("durable-dl", "audit", recorder)
        await bus.publish("durable-dl", make_event(correlationid="tx-7"))
        await bus.subscribe(
            "durable-dl",
            "dropping",
            make_recorder(reject="bad"),
            SubscriptionSpec(dead_letter_enabled=False),
        )
        await bus.publish("durable-dl", make_event())
        await drain(bus)
        before = await bus.dead_letters("durable-dl", "audit")
        redriven = make_recorder()
        async with self.reopen(bus) as reopened:
            assert await reopened.dead_letters("durable-dl", "audit") == before
            assert await reopened.counters("durable-dl", "audit") == counts(dead_lettered=2)
            assert await reopened.counters("durable-dl", "dropping") == counts(dropped=1)
            await reopened.attach("durable-dl", "audit", redriven)
            assert await reopened.redrive("durable-dl", "audit") == 2
            await drain(reopened)
        assert sorted(redriven.ids) == sorted(record.event.id for record in before)

    async def test_topics_and_subscription_properties_survive_reopen(self, bus: Bus) -> None:
        self.require_durable()
        topic = await bus.create_topic(
            "durable-catalog",
            TopicSpec(input_schema="EventGridSchema", deduplication_window_seconds=30),
        )
        spec = SubscriptionSpec.from_dict(
            {
                "destination": {
                    "endpointType": "InProcess",
                    "properties": {"maxEventsPerBatch": 4},
                },
                "filter": {
                    "includedEventTypes": ["A.B"],
                    "subjectBeginsWith": "/x",
                    "advancedFilters": [
                        {"operatorType": "NumberIn", "key": "data.n", "values": [1, 2]}
                    ],
                },
                "retryPolicy": {
                    "maxDeliveryAttempts": 7,
                    "eventTimeToLiveInMinutes": 42,
                    "backoffSeconds": [0.5, 2],
                    "nonRetryableStatusCodes": [],
                },
                "deliveryTimeoutSeconds": 2.5,
                "eventDeliverySchema": "EventGridSchema",
                "deadLetterEnabled": False,
                "maxConcurrentDeliveries": 3,
            }
        )
        subscription = await bus.create_subscription("durable-catalog", "tuned", spec)
        await bus.create_topic("durable-gone")
        await bus.create_subscription("durable-gone", "gone")
        await bus.delete_topic("durable-gone")
        await bus.create_subscription("durable-catalog", "also-gone")
        await bus.delete_subscription("durable-catalog", "also-gone")
        async with self.reopen(bus) as reopened:
            assert await reopened.get_topic("durable-catalog") == topic
            assert await reopened.get_subscription("durable-catalog", "tuned") == subscription
            assert [r.name for r in await reopened.list_subscriptions("durable-catalog")] == [
                "tuned"
            ]
            with pytest.raises(TopicNotFoundError):
                await reopened.get_topic("durable-gone")
            assert SYSTEM_TOPIC in [t.name for t in await reopened.list_topics()]

    async def test_a_delivery_in_progress_at_close_is_delivered_after_reopen(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        self.require_durable()
        await bus.create_topic("durable-inflight")
        hanging = make_recorder(hang=True)
        await bus.subscribe("durable-inflight", "audit", hanging)
        event = make_event()
        await bus.publish("durable-inflight", event)
        await hanging.wait_for_calls(1)
        bus.shutdown_grace_seconds = 0.0
        endpoint = StatusEndpoint(clock, [200])
        async with self.reopen(bus) as reopened:
            assert hanging.running == 0  # the close cancelled it
            await reopened.attach("durable-inflight", "audit", endpoint)
            await drain(reopened)
            assert (await reopened.counters("durable-inflight", "audit"))["queued"] == 0
        [(_, attempt, events)] = endpoint.calls
        assert events == [event]
        # The attempt cut short by the close is given back uncounted.
        assert attempt.delivery_count == 0

    async def test_a_second_bus_on_an_open_store_is_refused(
        self, bus: Bus, bus_url: str, clock: FakeClock
    ) -> None:
        self.require_durable()
        await bus.create_topic("locked-store")
        second = Bus(bus_url, clock=clock)
        with pytest.raises(BackendLockedError):
            await second.open()
        await second.close()
        await bus.publish("locked-store", make_event())
        assert (await bus.get_topic("locked-store")).name == "locked-store"

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
