"""The bus counts what happens to published events, per topic and subscription."""

from __future__ import annotations

import pytest

from choreograph import Bus, CloudEvent, InvalidEventError, Reject, RetryPolicy, SubscriptionSpec
from choreograph.bus.metrics import LATENCY_BUCKETS_SECONDS
from choreograph.testing import FakeClock


async def test_publishes_deliveries_retries_dead_letters_and_drops_are_counted() -> None:
    clock = FakeClock()
    async with Bus("memory://", clock=clock, retry_jitter=0) as bus:
        await bus.put_topic("metered")
        failures = {"fail-once": 1}

        async def handler(event: CloudEvent) -> None:
            if event.id == "poison":
                raise Reject("poison")
            if failures.get(event.id, 0) > 0:
                failures[event.id] -= 1
                raise RuntimeError("once")

        policy = RetryPolicy(backoff_seconds=(2.0,))
        await bus.subscribe("metered", "kept", handler, SubscriptionSpec(retry_policy=policy))
        await bus.subscribe(
            "metered",
            "dropping",
            handler,
            SubscriptionSpec(retry_policy=policy, dead_letter_enabled=False),
        )
        for event_id in ("ok", "fail-once", "poison"):
            await bus.publish("metered", CloudEvent(type="T", source="/s", id=event_id))
            failures["fail-once"] = 1 if event_id == "fail-once" else failures["fail-once"]
        await bus.idle()
        clock.advance(2)
        await bus.idle()

        snapshot = bus.metrics.snapshot()
        assert snapshot["topics"]["metered"] == {"published": 3, "refused": 0}
        kept = snapshot["subscriptions"]["metered/kept"]
        assert (kept["delivered"], kept["retried"], kept["deadLettered"], kept["dropped"]) == (
            2,
            1,
            1,
            0,
        )
        dropping = snapshot["subscriptions"]["metered/dropping"]
        assert (dropping["deadLettered"], dropping["dropped"]) == (0, 1)


async def test_delivery_latency_is_measured_from_publish_on_the_bus_clock() -> None:
    clock = FakeClock()
    async with Bus("memory://", clock=clock, retry_jitter=0) as bus:
        await bus.put_topic("latency")
        attempts: list[int] = []

        async def handler(event: CloudEvent) -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("first attempt fails")

        policy = RetryPolicy(backoff_seconds=(0.02,))
        await bus.subscribe("latency", "timed", handler, SubscriptionSpec(retry_policy=policy))
        await bus.publish("latency", CloudEvent(type="T", source="/s"))
        await bus.idle()
        clock.advance(0.02)
        await bus.idle()

        metrics = bus.metrics.subscription("latency", "timed")
        assert metrics.latency_count == 1
        assert metrics.latency_sum == pytest.approx(0.02)
        bucket = LATENCY_BUCKETS_SECONDS.index(0.025)
        assert metrics.latency[bucket] == 1


async def test_a_refused_publish_is_counted_and_stores_nothing() -> None:
    async with Bus("memory://") as bus:
        await bus.put_topic("refusing")
        with pytest.raises(InvalidEventError):
            await bus.publish("refusing", [{"type": "T"}])
        assert bus.metrics.snapshot()["topics"]["refusing"] == {"published": 0, "refused": 1}
