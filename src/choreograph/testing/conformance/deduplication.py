"""Conformance tests for de-duplication."""

from __future__ import annotations

from choreograph.bus import Bus, TopicSpec
from choreograph.testing.clock import FakeClock
from choreograph.testing.conformance.harness import (
    HOUR,
    ConformanceHarness,
    RecorderFactory,
    drain,
    make_event,
    make_eventgrid_event,
    run_for,
)

__all__ = ["DeduplicationTests"]


class DeduplicationTests(ConformanceHarness):
    """De-duplication of events on their source and id within a topic's window."""

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
