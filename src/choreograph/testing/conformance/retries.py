"""Conformance tests for the retry schedule, time-to-live, jitter and delivery timeout."""

from __future__ import annotations

import itertools
import random

from choreograph.bus import Bus, RetryPolicy, SubscriptionSpec
from choreograph.testing.clock import FakeClock
from choreograph.testing.conformance.harness import (
    DEFAULT_BACKOFF,
    HOUR,
    ConformanceHarness,
    Recorder,
    RecorderFactory,
    drain,
    make_event,
    retry_spec,
    run_for,
)

__all__ = ["RetryTests"]


class RetryTests(ConformanceHarness):
    """The retry schedule, time-to-live, jitter and the delivery timeout."""

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
