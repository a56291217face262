"""Processes sharing a NATS bus share one catalog: a topic or subscription another process
creates, changes or deletes after this one opened reaches this one (its publish routes, its
dispatchers), and its own writes coming back change nothing.

Two buses on one URL stand for two processes. Real time and a deadline, as JetStream runs on
real time; each test works in a namespace of its own, deleted at the end. Without a server the
tests are skipped, unless ``CHOREOGRAPH_REQUIRE_SERVICES=1`` (CI), which makes them fail.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from choreograph.bus import Attempt, Bus, Outcome, SubscriptionSpec
from choreograph.bus.retry import outcome_for_status
from choreograph.errors import SubscriptionNotFoundError, TopicNotFoundError
from choreograph.events import CloudEvent, EventGridEvent
from polling import until

DEADLINE_SECONDS = 30.0

pytestmark = pytest.mark.requires_service("nats")


@pytest.fixture
def url(nats_url: str) -> str:
    """A bus URL with a namespace of its own, deleted afterwards."""
    return nats_url


def knows(bus: Bus, topic: str, subscription: str | None = None) -> bool:
    """Whether ``bus`` has the topic (and the subscription) in its catalog."""
    try:
        if subscription is None:
            return bus._topic_state(topic) is not None
        return bus.get_subscription_record(topic, subscription) is not None
    except (TopicNotFoundError, SubscriptionNotFoundError):
        return False


class Recording:
    """An endpoint recording the ids it is given."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    async def deliver(
        self, events: Sequence[CloudEvent | EventGridEvent], attempt: Attempt
    ) -> Outcome:
        self.ids.extend(event.id for event in events)
        return outcome_for_status(200)


def event() -> CloudEvent:
    return CloudEvent(type="Watch.Tested", source="/watch-tests")


async def test_a_subscription_another_process_creates_gets_what_this_one_publishes(
    url: str,
) -> None:
    async with Bus(url) as publisher, Bus(url) as consumer:
        await consumer.create_topic("orders")
        recording = Recording()
        await consumer.subscribe("orders", "billing", recording)
        await until(lambda: knows(publisher, "orders", "billing"), "the publisher sees it")

        sent = event()
        await publisher.publish("orders", sent)
        await until(lambda: recording.ids, "the delivery")
        assert recording.ids == [sent.id]


async def test_a_process_attaches_to_a_subscription_another_one_created(url: str) -> None:
    async with Bus(url) as creator, Bus(url) as worker:
        await creator.create_topic("orders")
        await creator.create_subscription("orders", "billing")
        await until(lambda: knows(worker, "orders", "billing"), "the worker sees it")
        recording = Recording()
        await worker.attach("orders", "billing", recording)

        sent = event()
        await creator.publish("orders", sent)
        await until(lambda: recording.ids, "the delivery")
        assert recording.ids == [sent.id]


async def test_a_subscription_another_process_deletes_is_detached_and_no_longer_routed(
    url: str,
) -> None:
    async with Bus(url) as first, Bus(url) as second:
        await first.create_topic("orders")
        recording = Recording()
        await first.subscribe("orders", "billing", recording)
        await first.create_subscription("orders", "audit")
        await until(lambda: knows(second, "orders", "audit"), "the second bus sees both")

        await second.delete_subscription("orders", "billing")
        await until(lambda: not knows(first, "orders", "billing"), "the deletion reaches it")
        assert ("orders", "billing") not in first._dispatchers
        await first.publish("orders", event())
        assert (await first.counters("orders", "audit"))["queued"] == 1
        assert [s.name for s in await first.list_subscriptions("orders")] == ["audit"]
    async with Bus(url) as reopened:  # the deletion stays
        assert [s.name for s in await reopened.list_subscriptions("orders")] == ["audit"]


async def test_a_topic_another_process_creates_or_deletes_shows_here(url: str) -> None:
    async with Bus(url) as first, Bus(url) as second:
        await second.create_topic("orders")
        await until(lambda: knows(first, "orders"), "the topic reaches the first bus")
        await first.publish("orders", event())

        await second.delete_topic("orders")
        await until(lambda: not knows(first, "orders"), "the deletion reaches the first bus")
        with pytest.raises(TopicNotFoundError):
            await first.publish("orders", event())
    async with Bus(url) as reopened:
        assert "orders" not in [topic.name for topic in await reopened.list_topics()]


async def test_the_same_subscription_saved_by_another_process_leaves_the_dispatcher_alone(
    url: str,
) -> None:
    """The second process of a service subscribes with the same properties on start: the
    first keeps dispatching without a restart; a change of properties restarts it."""
    spec = SubscriptionSpec(max_concurrent_deliveries=4)
    async with Bus(url) as first, Bus(url) as second:
        await first.create_topic("orders")
        await first.subscribe("orders", "billing", Recording(), spec)
        dispatcher = first._dispatchers[("orders", "billing")]
        await until(lambda: knows(second, "orders", "billing"), "the second bus sees it")

        await second.subscribe("orders", "billing", Recording(), spec)
        await second.create_topic("marker")  # written after: seen after, in order
        await until(lambda: knows(first, "marker"), "the first bus caught up")
        assert first._dispatchers[("orders", "billing")] is dispatcher

        changed = SubscriptionSpec(max_concurrent_deliveries=8)
        await second.put_subscription("orders", "billing", changed)

        def restarted() -> bool:
            running = first._dispatchers.get(("orders", "billing"))
            return running is not None and running.record.spec == changed

        await until(restarted, "the first bus dispatches with the new properties")
        assert first.get_subscription_record("orders", "billing").spec == changed
