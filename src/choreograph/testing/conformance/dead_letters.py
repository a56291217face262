"""Conformance tests for the dead-letter queue."""

from __future__ import annotations

import pytest

from choreograph.bus import (
    DEAD_LETTERED_EVENT_TYPE,
    SYSTEM_TOPIC,
    Bus,
    DeadLetter,
    RetryPolicy,
    SubscriptionSpec,
    TopicSpec,
)
from choreograph.clock import format_timestamp
from choreograph.errors import DeadLetterNotFoundError, InvalidDeadLetterQueryError
from choreograph.events import CloudEvent
from choreograph.testing.clock import FakeClock
from choreograph.testing.conformance.harness import (
    HOUR,
    ConformanceHarness,
    RecorderFactory,
    counts,
    drain,
    make_event,
    make_eventgrid_event,
    retry_spec,
    run_for,
)

__all__ = ["DeadLetterTests"]


class DeadLetterTests(ConformanceHarness):
    """Dead-letter records, listing, redrive, purge, counters, the system event, drops."""

    async def test_a_dead_letter_record_describes_the_failure(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-record")
        recorder = make_recorder(fail="always")
        await bus.subscribe("dl-record", "audit", recorder, retry_spec(max_delivery_attempts=2))
        event = make_event(data={"order": 1}, correlationid="tx-9")
        start = clock.now()
        await bus.publish("dl-record", event)
        await run_for(bus, clock, HOUR)
        record = await self.only_dead_letter(bus, "dl-record", "audit")
        assert (record.topic, record.subscription) == ("dl-record", "audit")
        assert record.event == event
        assert record.reason == "MaxDeliveryAttemptsExceeded"
        assert record.delivery_attempts == 2
        assert record.last_delivery_outcome == "GenericError"
        assert record.last_delivery_error is not None
        assert "HandlerFailure" in record.last_delivery_error
        assert "failure 2" in record.last_delivery_error
        assert record.publish_time == start
        assert record.last_delivery_attempt_time == start + 10
        assert record.dead_letter_time == start + 10
        assert await bus.get_dead_letter("dl-record", "audit", record.id) == record

    async def test_a_cloudevents_dead_letter_record_uses_lower_case_names(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-ce-record")
        await bus.subscribe("dl-ce-record", "audit", make_recorder(reject="bad"))
        event = make_event(data={"order": 1}, correlationid="tx-1")
        start = clock.now()
        await bus.publish("dl-ce-record", event)
        await drain(bus)
        record = (await self.only_dead_letter(bus, "dl-ce-record", "audit")).to_record(
            "CloudEventSchemaV1_0"
        )
        assert record["id"] == event.id
        assert record["type"] == event.type
        assert record["correlationid"] == "tx-1"
        assert record["deadletterreason"] == "Rejected"
        assert record["deliveryattempts"] == 1
        assert record["lastdeliveryoutcome"] == "Rejected"
        assert record["publishtime"] == format_timestamp(start)
        assert record["lastdeliveryattempttime"] == format_timestamp(start)
        assert not [name for name in record if name != name.lower()]

    async def test_an_eventgrid_dead_letter_record_uses_camel_case_names(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-eg-record", TopicSpec(input_schema="EventGridSchema"))
        await bus.subscribe(
            "dl-eg-record",
            "audit",
            make_recorder(reject="bad"),
            SubscriptionSpec(event_delivery_schema="EventGridSchema"),
        )
        start = clock.now()
        await bus.publish("dl-eg-record", make_eventgrid_event("eg-dead"))
        await drain(bus)
        record = (await self.only_dead_letter(bus, "dl-eg-record", "audit")).to_record(
            "EventGridSchema"
        )
        assert record["id"] == "eg-dead"
        assert record["eventType"] == "Drone.Assigned"
        assert record["topic"] == "/topics/dl-eg-record"
        assert record["metadataVersion"] == "1"
        assert record["deadLetterReason"] == "Rejected"
        assert record["deliveryAttempts"] == 1
        assert record["lastDeliveryOutcome"] == "Rejected"
        assert record["publishTime"] == format_timestamp(start)
        assert record["lastDeliveryAttemptTime"] == format_timestamp(start)

    async def test_dead_letters_are_listed_in_dead_lettering_order_in_pages(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-pages")
        await bus.subscribe("dl-pages", "audit", make_recorder(reject="bad"))
        events = [make_event(data={"n": n}) for n in range(5)]
        for event in events:
            await bus.publish("dl-pages", event)
            await run_for(bus, clock, 1)
        everything = await bus.dead_letters("dl-pages", "audit")
        assert [record.event.id for record in everything] == [event.id for event in events]
        pages: list[list[DeadLetter]] = []
        after: str | None = None
        while page := await bus.dead_letters("dl-pages", "audit", limit=2, after=after):
            pages.append(page)
            after = page[-1].id
        assert [len(page) for page in pages] == [2, 2, 1]
        assert [record for page in pages for record in page] == everything
        for limit in (0, 10_001):
            with pytest.raises(InvalidDeadLetterQueryError, match="limit"):
                await bus.dead_letters("dl-pages", "audit", limit=limit)

    async def test_a_page_after_a_record_purged_meanwhile_continues_after_it(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-cursor")
        await bus.subscribe("dl-cursor", "audit", make_recorder(reject="bad"))
        for n in range(5):
            await bus.publish("dl-cursor", make_event(data={"n": n}))
            await run_for(bus, clock, 1)
        everything = await bus.dead_letters("dl-cursor", "audit")
        first_page = await bus.dead_letters("dl-cursor", "audit", limit=2)
        assert first_page == everything[:2]
        # Someone purges (or redrives) the cursor record before the next page is read.
        await bus.purge_dead_letters("dl-cursor", "audit", [first_page[-1].id])
        next_page = await bus.dead_letters("dl-cursor", "audit", limit=2, after=first_page[-1].id)
        assert next_page == everything[2:4]

    async def test_an_unknown_dead_letter_raises_dead_letter_not_found(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-unknown")
        await bus.subscribe("dl-unknown", "audit", make_recorder(reject="bad"))
        await bus.create_subscription("dl-unknown", "other")
        await bus.publish("dl-unknown", make_event())
        await drain(bus)
        with pytest.raises(DeadLetterNotFoundError, match="no-such-record"):
            await bus.get_dead_letter("dl-unknown", "audit", "no-such-record")
        # A record belongs to its subscription only.
        record = await self.only_dead_letter(bus, "dl-unknown", "audit")
        with pytest.raises(DeadLetterNotFoundError):
            await bus.get_dead_letter("dl-unknown", "other", record.id)
        assert await bus.redrive("dl-unknown", "other", [record.id]) == 0
        assert await bus.purge_dead_letters("dl-unknown", "other", [record.id]) == 0
        assert await bus.get_dead_letter("dl-unknown", "audit", record.id) == record

    async def test_one_dead_letter_is_redriven_by_id(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-redrive-one")
        recorder = make_recorder(reject="bad")
        await bus.subscribe("dl-redrive-one", "audit", recorder)
        first, second = make_event(), make_event()
        await bus.publish("dl-redrive-one", [first, second])
        await drain(bus)
        records = {r.event.id: r for r in await bus.dead_letters("dl-redrive-one", "audit")}
        recorder.reject = None
        assert await bus.redrive("dl-redrive-one", "audit", [records[first.id].id]) == 1
        await drain(bus)
        assert recorder.ids[2:] == [first.id]
        remaining = await bus.dead_letters("dl-redrive-one", "audit")
        assert [record.id for record in remaining] == [records[second.id].id]

    async def test_dead_letters_selected_by_a_predicate_are_redriven(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-redrive-where")
        recorder = make_recorder(reject="bad")
        await bus.subscribe("dl-redrive-where", "audit", recorder)
        wanted = make_event("Order.Placed")
        await bus.publish(
            "dl-redrive-where", [make_event("Order.Cancelled"), wanted, make_event("Other")]
        )
        await drain(bus)
        recorder.reject = None
        moved = await bus.redrive(
            "dl-redrive-where", "audit", where=lambda record: record.event.type == "Order.Placed"
        )
        assert moved == 1
        await drain(bus)
        assert recorder.ids[3:] == [wanted.id]
        remaining = await bus.dead_letters("dl-redrive-where", "audit")
        assert sorted(record.event.type for record in remaining) == ["Order.Cancelled", "Other"]

    async def test_all_dead_letters_are_redriven(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-redrive-all")
        recorder = make_recorder(reject="bad")
        await bus.subscribe("dl-redrive-all", "audit", recorder)
        events = [make_event(data={"n": n}) for n in range(3)]
        await bus.publish("dl-redrive-all", events)
        await drain(bus)
        recorder.reject = None
        assert await bus.redrive("dl-redrive-all", "audit") == 3
        await drain(bus)
        assert sorted(recorder.ids[3:]) == sorted(event.id for event in events)
        assert await bus.dead_letters("dl-redrive-all", "audit") == []
        assert await bus.counters("dl-redrive-all", "audit") == counts()

    async def test_a_redriven_event_gets_a_fresh_attempt_budget(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-redrive-budget")
        recorder = make_recorder(fail="always")
        await bus.subscribe(
            "dl-redrive-budget", "audit", recorder, retry_spec(max_delivery_attempts=3)
        )
        await bus.publish("dl-redrive-budget", make_event())
        await run_for(bus, clock, HOUR)
        assert len(recorder.calls) == 3
        redriven_at = clock.now()
        assert await bus.redrive("dl-redrive-budget", "audit") == 1
        await run_for(bus, clock, HOUR)
        assert recorder.offsets(redriven_at)[3:] == [0, 10, 40]
        record = await self.only_dead_letter(bus, "dl-redrive-budget", "audit")
        assert record.delivery_attempts == 3
        assert record.reason == "MaxDeliveryAttemptsExceeded"

    async def test_a_redriven_event_gets_a_fresh_time_to_live(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-redrive-ttl")
        recorder = make_recorder(fail="always")
        spec = retry_spec(event_time_to_live_in_minutes=1, backoff_seconds=(30.0,))
        await bus.subscribe("dl-redrive-ttl", "audit", recorder, spec)
        start = clock.now()
        await bus.publish("dl-redrive-ttl", make_event())
        await run_for(bus, clock, HOUR)
        assert recorder.offsets(start) == [0, 30, 60]
        first = await self.only_dead_letter(bus, "dl-redrive-ttl", "audit")
        assert first.reason == "TimeToLiveExceeded"
        assert first.dead_letter_time == start + 90
        redriven_at = clock.now()
        await bus.redrive("dl-redrive-ttl", "audit", [first.id])
        await run_for(bus, clock, HOUR)
        assert recorder.offsets(redriven_at)[3:] == [0, 30, 60]
        second = await self.only_dead_letter(bus, "dl-redrive-ttl", "audit")
        assert second.reason == "TimeToLiveExceeded"
        assert second.publish_time == start
        assert second.delivery_attempts == 3
        assert second.dead_letter_time == redriven_at + 90

    async def test_dead_letters_are_purged_one_by_id_or_all(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-purge")
        recorder = make_recorder(reject="bad")
        await bus.subscribe("dl-purge", "audit", recorder)
        await bus.publish("dl-purge", [make_event(data={"n": n}) for n in range(3)])
        await drain(bus)
        records = await bus.dead_letters("dl-purge", "audit")
        assert await bus.purge_dead_letters("dl-purge", "audit", [records[0].id]) == 1
        with pytest.raises(DeadLetterNotFoundError):
            await bus.get_dead_letter("dl-purge", "audit", records[0].id)
        assert (await bus.counters("dl-purge", "audit"))["deadLettered"] == 2
        chosen = records[1].id
        assert (
            await bus.purge_dead_letters("dl-purge", "audit", where=lambda r: r.id == chosen) == 1
        )
        assert [r.id for r in await bus.dead_letters("dl-purge", "audit")] == [records[2].id]
        assert await bus.purge_dead_letters("dl-purge", "audit") == 1
        assert await bus.dead_letters("dl-purge", "audit") == []
        assert (await bus.counters("dl-purge", "audit"))["deadLettered"] == 0
        # A purged record cannot be redriven.
        assert await bus.redrive("dl-purge", "audit") == 0
        await drain(bus)
        assert len(recorder.calls) == 3

    async def test_counters_report_queued_dead_lettered_and_dropped(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        await bus.create_topic("dl-counters")
        await bus.subscribe(
            "dl-counters",
            "audit",
            make_recorder(fail="always"),
            retry_spec(max_delivery_attempts=2),
        )
        await bus.publish("dl-counters", [make_event(), make_event()])
        await drain(bus)
        assert await bus.counters("dl-counters", "audit") == counts(queued=2)
        await run_for(bus, clock, HOUR)
        assert await bus.counters("dl-counters", "audit") == counts(dead_lettered=2)

    async def test_dead_lettering_announces_a_system_event_with_correlation(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        watcher = make_recorder()
        await bus.subscribe(SYSTEM_TOPIC, "dl-watcher", watcher)
        await bus.create_topic("dl-announce")
        await bus.subscribe("dl-announce", "audit", make_recorder(reject="bad"))
        event = make_event(correlationid="tx-42")
        await bus.publish("dl-announce", event)
        await drain(bus)
        record = await self.only_dead_letter(bus, "dl-announce", "audit")
        [announced] = watcher.events
        assert isinstance(announced, CloudEvent)
        assert announced.type == DEAD_LETTERED_EVENT_TYPE
        assert announced.correlationid == "tx-42"
        assert announced.causationid == event.id
        assert announced.data["deadLetterId"] == record.id
        assert announced.data["reason"] == "Rejected"
        assert (announced.data["topic"], announced.data["subscription"]) == (
            "dl-announce",
            "audit",
        )

    async def test_a_dead_lettered_system_event_is_not_announced_again(
        self, bus: Bus, make_recorder: RecorderFactory
    ) -> None:
        rejecting = make_recorder(reject="no thanks")
        await bus.subscribe(SYSTEM_TOPIC, "dl-rejecting", rejecting)
        await bus.create_topic("dl-loop")
        await bus.subscribe("dl-loop", "audit", make_recorder(reject="bad"))
        await bus.publish("dl-loop", make_event())
        await drain(bus)
        assert len(rejecting.calls) == 1
        record = await self.only_dead_letter(bus, SYSTEM_TOPIC, "dl-rejecting")
        assert record.event.type == DEAD_LETTERED_EVENT_TYPE

    async def test_without_dead_letters_an_undeliverable_event_is_dropped_and_counted(
        self, bus: Bus, clock: FakeClock, make_recorder: RecorderFactory
    ) -> None:
        watcher = make_recorder()
        await bus.subscribe(SYSTEM_TOPIC, "drop-watcher", watcher)
        await bus.create_topic("dl-disabled")
        rejecting, failing = make_recorder(reject="bad"), make_recorder(fail="always")
        spec = SubscriptionSpec(
            dead_letter_enabled=False, retry_policy=RetryPolicy(max_delivery_attempts=2)
        )
        await bus.subscribe("dl-disabled", "rejecting", rejecting, spec)
        await bus.subscribe("dl-disabled", "failing", failing, spec)
        await bus.publish("dl-disabled", make_event())
        await run_for(bus, clock, HOUR)
        for name in ("rejecting", "failing"):
            assert await bus.dead_letters("dl-disabled", name) == []
            assert await bus.counters("dl-disabled", name) == counts(dropped=1)
        assert watcher.calls == []
