"""The inbox: a handler's effects happen once per event id even when the bus delivers the event
again; a redelivery re-emits the same events (same ids) without running the handler."""

from __future__ import annotations

import asyncio
from pathlib import Path

from choreograph.bus import Bus, RetryPolicy
from choreograph.events import CloudEvent
from choreograph.sdk import Context, MemoryServiceStore, Service, emitted_id
from choreograph.sdk.endpoint import event_key
from choreograph.sdk.retention import INBOX_PRUNE_SECONDS
from choreograph.sdk.store import INBOX_RETENTION_SECONDS, SqliteServiceStore
from choreograph.testing.clock import FakeClock
from polling import until

from .support import (
    FAST_RETRIES,
    NO_DEDUPLICATION,
    drain,
    make_event,
    only_dead_letter,
    probe,
    run_for,
    unique,
    wait_for,
)


def counting_service(orders: str, shipments: str, calls: list[str]) -> Service:
    """A service whose handler counts shipments in its state and emits one event per order."""
    service = Service("shipping")

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        calls.append(event.id)
        count = await ctx.state.get("stats", "shipments", 0)
        ctx.state.put("stats", "shipments", count + 1)
        ctx.emit("Shipment.Created", {"order": event.data})

    @service.on("Stats.Asked", topic=orders, emits={"Stats.Told": shipments})
    async def tell(event: CloudEvent, ctx: Context) -> None:
        ctx.emit("Stats.Told", await ctx.state.get("stats", "shipments", 0))

    return service


async def test_a_redelivered_event_is_handled_once_and_re_emits_the_same_events(
    bus: Bus,
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    await bus.put_topic(orders, NO_DEDUPLICATION)
    await bus.put_topic(shipments, NO_DEDUPLICATION)
    shipped = await probe(bus, shipments)
    calls: list[str] = []
    service = counting_service(orders, shipments, calls)
    order = make_event("Order.Placed", data=1)

    async with service.run(bus):
        await bus.publish(orders, order)
        await drain(bus)
        await bus.publish(orders, order)  # stored again: the topic does not de-duplicate
        await drain(bus)
        await bus.publish(orders, make_event("Stats.Asked"))
        await drain(bus)

    expected = emitted_id(event_key(order), "shipping", "ship", "Shipment.Created", 0)
    assert calls == [order.id]
    assert shipped.types == ["Shipment.Created", "Shipment.Created", "Stats.Told"]
    assert shipped.ids[:2] == [expected, expected]
    assert shipped.events[0] == shipped.events[1]
    assert shipped.events[2].data == 1


async def test_the_inbox_is_per_handler(bus: Bus) -> None:
    orders = unique("orders")
    await bus.put_topic(orders, NO_DEDUPLICATION)
    service = Service("shipping")
    seen: list[str] = []

    async def record(event: CloudEvent, ctx: Context) -> None:
        seen.append(ctx.handler)

    service.on("Order.Placed", topic=orders, name="first")(record)
    service.on("Order.Placed", topic=orders, name="second")(record)
    order = make_event("Order.Placed")

    async with service.run(bus):
        await bus.publish(orders, order)
        await bus.publish(orders, order)
        await drain(bus)

    assert sorted(seen) == ["first", "second"]


async def test_a_duplicate_arriving_while_the_first_copy_runs_is_handled_once(
    bus: Bus, clock: FakeClock
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    await bus.put_topic(orders, NO_DEDUPLICATION)
    await bus.put_topic(shipments, NO_DEDUPLICATION)
    shipped = await probe(bus, shipments)
    service = Service("shipping", retry_policy=RetryPolicy(backoff_seconds=(1.0,)))
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[int] = []
    order = make_event("Order.Placed")

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        calls.append(ctx.attempt)
        started.set()
        await release.wait()
        ctx.emit("Shipment.Created")

    async with service.run(bus):
        await bus.publish(orders, order)
        await wait_for(started)
        await bus.publish(orders, order)  # the second copy finds the first one running
        for _ in range(20):
            await asyncio.sleep(0)
        release.set()
        await run_for(bus, clock, 60)
        counters = await bus.counters(orders, "shipping-ship")

    assert calls == [1]
    assert len(shipped.events) == 2
    assert len(set(shipped.ids)) == 1
    assert counters == {"queued": 0, "deadLettered": 0, "dropped": 0}


async def test_a_redriven_dead_letter_of_a_handled_event_re_emits_without_running_again(
    bus: Bus, clock: FakeClock
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    await bus.put_topic(orders)
    calls: list[str] = []
    service = counting_service(orders, shipments, calls)
    service.retry_policy = FAST_RETRIES
    order = make_event("Order.Placed", data=1)

    # The handler succeeds, but its event has nowhere to go: the delivery is dead-lettered.
    async with service.run(bus, create_topics=False):
        await bus.publish(orders, order)
        await run_for(bus, clock, 10)
        record = await only_dead_letter(bus, orders, "shipping-ship")
        assert record.last_delivery_error is not None
        assert "emitted an invalid event" in record.last_delivery_error
        assert calls == [order.id]

        await bus.put_topic(shipments)
        shipped = await probe(bus, shipments)
        assert await bus.redrive(orders, "shipping-ship") == 1
        await drain(bus)

    assert calls == [order.id]
    assert shipped.ids == [emitted_id(event_key(order), "shipping", "ship", "Shipment.Created", 0)]


async def test_the_inbox_survives_closing_and_reopening_a_sqlite_store(
    bus: Bus, tmp_path: Path
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    await bus.put_topic(orders, NO_DEDUPLICATION)
    await bus.put_topic(shipments, NO_DEDUPLICATION)
    shipped = await probe(bus, shipments)
    store = "sqlite:///" + str(tmp_path / "shipping.db")
    calls: list[str] = []
    service = counting_service(orders, shipments, calls)
    order = make_event("Order.Placed", data=1)

    async with service.run(bus, store=store):
        await bus.publish(orders, order)
        await drain(bus)
    async with service.run(bus, store=store):
        await bus.publish(orders, order)
        await drain(bus)
        await bus.publish(orders, make_event("Stats.Asked"))
        await drain(bus)

    assert calls == [order.id]
    assert shipped.types == ["Shipment.Created", "Shipment.Created", "Stats.Told"]
    assert shipped.ids[0] == shipped.ids[1]
    assert shipped.events[2].data == 1


async def test_a_running_service_forgets_inbox_entries_past_their_retention(
    bus: Bus, clock: FakeClock, tmp_path: Path
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    await bus.put_topic(orders, NO_DEDUPLICATION)
    store = SqliteServiceStore(tmp_path / "shipping.db")
    calls: list[str] = []
    service = counting_service(orders, shipments, calls)
    order = make_event("Order.Placed", data=1)

    async with service.run(bus, store=store):
        await bus.publish(orders, order)
        await drain(bus)
        assert await store.handled("ship", event_key(order)) is not None
        await run_for(bus, clock, INBOX_RETENTION_SECONDS - INBOX_PRUNE_SECONDS)
        assert await store.handled("ship", event_key(order)) is not None  # within its retention
        await run_for(bus, clock, 2 * INBOX_PRUNE_SECONDS)

        async def forgotten() -> bool:
            return await store.handled("ship", event_key(order)) is None

        await until(forgotten, "the inbox entry to be forgotten", 10.0)
        await bus.publish(orders, order)  # the same event, a week later: handled again
        await drain(bus)

    assert calls == [order.id, order.id]


async def test_a_memory_store_object_keeps_its_inbox_across_runs(bus: Bus) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    await bus.put_topic(orders, NO_DEDUPLICATION)
    store = MemoryServiceStore()
    calls: list[str] = []
    service = counting_service(orders, shipments, calls)
    order = make_event("Order.Placed", data=1)

    for _ in range(2):
        async with service.run(bus, store=store):
            await bus.publish(orders, order)
            await drain(bus)

    assert calls == [order.id]


async def test_a_failed_handler_leaves_no_inbox_entry_and_its_state_is_undone(
    bus: Bus, clock: FakeClock
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    shipped = await probe(bus, shipments)
    service = Service("shipping", retry_policy=RetryPolicy(backoff_seconds=(10.0,)))
    seen_by_other: list[object] = []
    calls: list[int] = []

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        calls.append(ctx.attempt)
        ctx.state.put("drones", "d1", "busy")
        ctx.state.put("drones", "d2", "busy")
        ctx.state.delete("drones", "d3")
        ctx.state.put("drones", "d1", "very busy")
        ctx.emit("Shipment.Created")
        if ctx.attempt == 1:
            raise RuntimeError("crash after writing")

    @service.on("Fleet.Asked", topic=orders)
    async def look(event: CloudEvent, ctx: Context) -> None:
        seen_by_other.append(dict(await ctx.state.items("drones")))

    @service.on("Fleet.Seeded", topic=orders)
    async def seed(event: CloudEvent, ctx: Context) -> None:
        ctx.state.put("drones", "d1", "free")
        ctx.state.put("drones", "d3", "free")

    async with service.run(bus):
        await bus.publish(orders, make_event("Fleet.Seeded"))
        await drain(bus)
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)
        await bus.publish(orders, make_event("Fleet.Asked"))
        await drain(bus)
        assert shipped.events == []
        await run_for(bus, clock, 10)  # the retry runs the handler again: no inbox entry
        await bus.publish(orders, make_event("Fleet.Asked"))
        await drain(bus)

    assert calls == [1, 2]
    assert seen_by_other == [
        {"d1": "free", "d3": "free"},
        {"d1": "very busy", "d2": "busy"},
    ]
    assert len(shipped.events) == 1


async def test_events_from_two_sources_with_the_same_id_are_both_handled(bus: Bus) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    calls: list[str] = []
    service = counting_service(orders, shipments, calls)
    shipped = await probe(bus, shipments)
    web = make_event("Order.Placed", event_id="1", source="/web", data="web")
    shop = make_event("Order.Placed", event_id="1", source="/shop", data="shop")

    async with service.run(bus):
        await bus.publish(orders, web)
        await bus.publish(orders, shop)  # stored: the topic sees a different event
        await drain(bus)

    assert sorted(event.data["order"] for event in shipped.events) == ["shop", "web"]
    assert len(calls) == 2


async def test_a_delivery_whose_emitted_event_is_refused_changes_nothing(
    bus: Bus, clock: FakeClock
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping", retry_policy=RetryPolicy(max_delivery_attempts=1))
    shipped = await probe(bus, shipments)
    calls: list[int] = []
    too_large = {"label": "x" * 1_100_000}

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        calls.append(len(calls))
        ctx.state.put("orders", event.id, "shipped")
        ctx.emit("Shipment.Created", too_large if len(calls) == 1 else {"label": "ok"})

    @service.on("Order.Asked", topic=orders, emits={"Order.Told": shipments})
    async def tell(event: CloudEvent, ctx: Context) -> None:
        ctx.emit("Order.Told", dict(await ctx.state.items("orders")))

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)
        record = await only_dead_letter(bus, orders, "shipping-ship")
        assert record.last_delivery_error is not None
        assert "EventTooLargeError" in record.last_delivery_error
        await bus.publish(orders, make_event("Order.Asked"))
        await drain(bus)
        assert shipped.only().data == {}  # the failed delivery left no state behind

        await bus.redrive(orders, "shipping-ship")  # the handler is fixed: it runs again
        await drain(bus)

    assert calls == [0, 1]
    assert shipped.types == ["Order.Told", "Shipment.Created"]
