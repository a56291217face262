"""Conformance tests for filters and fan-out."""

from __future__ import annotations

from choreograph.bus import AdvancedFilter, Bus, EventFilter, SubscriptionSpec
from choreograph.testing.clock import FakeClock
from choreograph.testing.conformance.harness import (
    HOUR,
    ConformanceHarness,
    RecorderFactory,
    counts,
    drain,
    make_event,
    run_for,
)

__all__ = ["RoutingTests"]


class RoutingTests(ConformanceHarness):
    """Which subscriptions get an event: filters, and fan-out to every subscription."""

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
