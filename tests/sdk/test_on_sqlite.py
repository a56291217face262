"""Services on the embedded default: a SQLite bus and SQLite service stores, both surviving a
restart of the whole process (here: closing and reopening bus and services)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from choreograph.bus import Bus, RetryPolicy
from choreograph.events import CloudEvent
from choreograph.sdk import Context, Service, emitted_id
from choreograph.sdk.endpoint import event_key
from choreograph.sdk.tracing import TraceContext
from choreograph.testing.clock import FakeClock

from .support import (
    NO_DEDUPLICATION,
    TRACE_ID,
    TRACEPARENT,
    drain,
    make_event,
    probe,
    run_for,
    unique,
)


@pytest.fixture
def bus_url(tmp_path: Path) -> str:
    return "sqlite:///" + str(tmp_path / "bus.db")


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return "sqlite:///" + str(tmp_path / "service.db")


@pytest.fixture
async def sqlite_bus(bus_url: str, clock: FakeClock) -> AsyncIterator[Bus]:
    async with Bus(bus_url, clock=clock, retry_jitter=0) as bus:
        yield bus


def shipping(orders: str, shipments: str) -> Service:
    service = Service("shipping", retry_policy=RetryPolicy(backoff_seconds=(1.0,)))

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        if event.data == "flaky" and ctx.attempt == 1:
            raise RuntimeError("the warehouse is busy")
        count = await ctx.state.get("stats", "shipped", 0)
        ctx.state.put("stats", "shipped", count + 1)
        ctx.emit("Shipment.Created", {"order": event.data, "shipped": count + 1})

    return service


async def test_a_service_on_a_sqlite_bus_emits_correlated_events(
    sqlite_bus: Bus, store_url: str
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    bus = sqlite_bus
    await bus.put_topic(orders)
    shipped = await probe(bus, shipments)
    order = make_event("Order.Placed", data="o1", correlationid="tx-sq", traceparent=TRACEPARENT)

    async with shipping(orders, shipments).run(bus, store=store_url):
        await bus.publish(orders, order)
        await drain(bus)

    event = shipped.only()
    assert event.id == emitted_id(event_key(order), "shipping", "ship", "Shipment.Created", 0)
    assert event.data == {"order": "o1", "shipped": 1}
    assert event.correlationid == "tx-sq"
    assert event.causationid == order.id
    assert TraceContext.parse(event.traceparent).trace_id == TRACE_ID  # type: ignore[union-attr]


async def test_a_retried_handler_on_a_sqlite_bus_re_emits_the_same_id(
    sqlite_bus: Bus, store_url: str, clock: FakeClock
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    bus = sqlite_bus
    await bus.put_topic(orders)
    shipped = await probe(bus, shipments)
    order = make_event("Order.Placed", data="flaky")

    async with shipping(orders, shipments).run(bus, store=store_url):
        await bus.publish(orders, order)
        await drain(bus)
        assert shipped.events == []
        await run_for(bus, clock, 1)

    event = shipped.only()
    assert event.id == emitted_id(event_key(order), "shipping", "ship", "Shipment.Created", 0)
    assert event.extensions["deliveryattempt"] == 2


async def test_the_inbox_and_state_survive_a_restart_of_bus_and_service(
    bus_url: str, store_url: str, clock: FakeClock
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    order = make_event("Order.Placed", data="o1")
    ids: list[list[str]] = []
    for _ in range(2):
        async with Bus(bus_url, clock=clock, retry_jitter=0) as bus:
            await bus.put_topic(orders, NO_DEDUPLICATION)
            await bus.put_topic(shipments, NO_DEDUPLICATION)
            shipped = await probe(bus, shipments)
            async with shipping(orders, shipments).run(bus, store=store_url):
                await bus.publish(orders, order)
                await drain(bus)
                await bus.publish(orders, make_event("Order.Placed", data="o2"))
                await drain(bus)
            ids.append(shipped.ids)

    first, second = ids
    assert first[0] == second[0]  # the same order, handled once: its event re-emitted
    assert [event.data for event in shipped.events] == [
        {"order": "o1", "shipped": 1},
        {"order": "o2", "shipped": 3},
    ]


async def test_an_event_published_while_the_service_was_down_is_handled_after_restart(
    bus_url: str, store_url: str, clock: FakeClock
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    async with Bus(bus_url, clock=clock, retry_jitter=0) as bus:
        await bus.put_topic(orders)
        async with shipping(orders, shipments).run(bus, store=store_url):
            pass
        await bus.publish(orders, make_event("Order.Placed", data="while-down"))
    async with Bus(bus_url, clock=clock, retry_jitter=0) as bus:
        shipped = await probe(bus, shipments)
        async with shipping(orders, shipments).run(bus, store=store_url):
            await drain(bus)

    assert shipped.only().data == {"order": "while-down", "shipped": 1}


async def test_a_join_completes_across_a_restart_of_bus_and_service(
    bus_url: str, store_url: str, clock: FakeClock
) -> None:
    packages, drones, deliveries = unique("packages"), unique("drones"), unique("deliveries")
    service = Service("dispatch")
    runs: list[dict[str, object]] = []

    @service.join(
        {"Package.Ready": packages, "Drone.Ready": drones},
        emits={"Delivery.Started": deliveries},
    )
    async def start(events: Mapping[str, CloudEvent], ctx: Context) -> None:
        runs.append({name: event.data for name, event in events.items()})
        ctx.emit("Delivery.Started")

    async with Bus(bus_url, clock=clock, retry_jitter=0) as bus, service.run(bus, store=store_url):
        await bus.publish(packages, make_event("Package.Ready", data="p", correlationid="tx"))
        await drain(bus)
    async with Bus(bus_url, clock=clock, retry_jitter=0) as bus:
        started = await probe(bus, deliveries)
        async with service.run(bus, store=store_url):
            await bus.publish(drones, make_event("Drone.Ready", data="d", correlationid="tx"))
            await drain(bus)

    assert runs == [{"Package.Ready": "p", "Drone.Ready": "d"}]
    assert started.only().correlationid == "tx"
