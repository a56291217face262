"""Conformance tests that only a durable backend runs: they reopen or lock the store."""

from __future__ import annotations

import pytest

from choreograph.bus import SYSTEM_TOPIC, Bus, SubscriptionSpec, TopicSpec
from choreograph.errors import BackendLockedError, TopicNotFoundError
from choreograph.testing.clock import FakeClock
from choreograph.testing.conformance.harness import (
    HOUR,
    ConformanceHarness,
    RecorderFactory,
    StatusEndpoint,
    counts,
    drain,
    make_event,
    retry_spec,
    run_for,
)

__all__ = ["DurabilityTests"]


class DurabilityTests(ConformanceHarness):
    """What a durable backend keeps across a close and reopen, and how it guards its store."""

    # durability --------------------------------------------------------------------------------
    async def test_events_published_before_close_are_delivered_after_reopen(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
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

    # de-duplication ----------------------------------------------------------------------------
    async def test_a_deleted_topic_stays_forgotten_after_reopen(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
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

    # locking -----------------------------------------------------------------------------------
    async def test_a_second_bus_on_an_open_store_is_refused_or_shares_it(
        self, bus: Bus, bus_url: str, clock: FakeClock
    ) -> None:
        """An embedded store has one owner: a second bus is refused. A shared engine (NATS) is
        shared by design: a second bus opens, sees the catalog and publishes."""
        await bus.create_topic("second-bus")
        second = Bus(bus_url, clock=clock)
        if self.exclusive_store:
            with pytest.raises(BackendLockedError):
                await second.open()
            await second.close()
        else:
            async with second:
                assert (await second.get_topic("second-bus")).name == "second-bus"
                await second.publish("second-bus", make_event())
        await bus.publish("second-bus", make_event())
        assert (await bus.get_topic("second-bus")).name == "second-bus"
