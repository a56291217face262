"""Conformance tests for publishing, in the CloudEvents and Event Grid schemas."""

from __future__ import annotations

import pytest

from choreograph.bus import Bus, SubscriptionSpec, TopicSpec
from choreograph.bus.bus import MAX_EVENTS_PER_PUBLISH
from choreograph.errors import EventTooLargeError, InvalidEventError, TopicNotFoundError
from choreograph.events import CORRELATION_KEY, MAX_EVENT_BYTES, CloudEvent, EventGridEvent
from choreograph.testing.clock import FakeClock
from choreograph.testing.conformance.harness import (
    HOUR,
    ConformanceHarness,
    RecorderFactory,
    counts,
    drain,
    make_event,
    make_eventgrid_event,
    run_for,
)

__all__ = ["PublishingTests"]


class PublishingTests(ConformanceHarness):
    """Publishing events, in the CloudEvents and Event Grid schemas."""

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

    # Event Grid schema -------------------------------------------------------------------------
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
