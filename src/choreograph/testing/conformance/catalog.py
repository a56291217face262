"""Conformance tests for managing topics and subscriptions."""

from __future__ import annotations

from typing import Any, Final

import pytest

from choreograph.bus import (
    SYSTEM_TOPIC,
    Bus,
    InProcessDestination,
    RetryPolicy,
    SubscriptionSpec,
    TopicSpec,
)
from choreograph.errors import (
    AlreadyExistsError,
    InvalidFilterError,
    InvalidSubscriptionError,
    InvalidTopicError,
    SubscriptionNotFoundError,
    TopicNotFoundError,
)
from choreograph.testing.conformance.harness import (
    DEFAULT_BACKOFF,
    ConformanceHarness,
    Recorder,
    RecorderFactory,
    counts,
    drain,
    make_event,
    retry_spec,
)

__all__ = ["CatalogTests"]


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


class CatalogTests(ConformanceHarness):
    """Topics and subscriptions: create, read, list, update, delete and validation."""

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
