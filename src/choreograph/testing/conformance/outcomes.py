"""Conformance tests for the outcome of an attempt."""

from __future__ import annotations

import pytest

from choreograph.bus import Bus, SubscriptionSpec
from choreograph.bus.retry import outcome_for_status
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

__all__ = ["OutcomeTests"]


class OutcomeTests(ConformanceHarness):
    """How an attempt's outcome decides what follows: delivered, retried or dead-lettered."""

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
