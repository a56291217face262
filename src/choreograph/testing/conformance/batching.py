"""Conformance tests for batches, concurrent deliveries and attempt metadata."""

from __future__ import annotations

import asyncio

from choreograph.bus import Bus, InProcessDestination, RetryPolicy, SubscriptionSpec
from choreograph.testing.clock import FakeClock
from choreograph.testing.conformance.harness import (
    HOUR,
    ConformanceHarness,
    RecorderFactory,
    StatusEndpoint,
    drain,
    make_event,
    run_for,
)

__all__ = ["BatchingTests"]


class BatchingTests(ConformanceHarness):
    """Batches, concurrent deliveries and the attempt metadata an endpoint sees."""

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

    # attempt metadata --------------------------------------------------------------------------
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
