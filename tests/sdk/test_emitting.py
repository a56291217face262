"""Emitting: what a handler emits (with ``ctx.emit`` or by returning ``ctx.new_event``) is
published to its declared topic once the handler returned; anything else fails the delivery."""

from __future__ import annotations

import asyncio

import pytest

from choreograph.bus import Bus, RetryPolicy
from choreograph.events import CloudEvent
from choreograph.sdk import Context, Service, UndeclaredEventError
from choreograph.testing.clock import FakeClock

from .support import FAST_RETRIES, drain, make_event, only_dead_letter, probe, run_for, unique


async def test_ctx_emit_publishes_to_the_declared_topic_after_the_handler_returned(
    bus: Bus,
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping")
    published_during_handler: list[int] = []
    shipped = await probe(bus, shipments)

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        emitted = ctx.emit("Shipment.Created", {"order": event.data["order"]})
        assert emitted.type == "Shipment.Created"
        for _ in range(20):  # let the bus run: nothing is published while the handler runs
            await asyncio.sleep(0)
        published_during_handler.append(len(shipped.events))

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed", data={"order": 7}))
        await drain(bus)

    assert published_during_handler == [0]
    event = shipped.only()
    assert event.type == "Shipment.Created"
    assert event.data == {"order": 7}
    assert event.datacontenttype == "application/json"


async def test_a_returned_event_is_published(bus: Bus) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping")
    shipped = await probe(bus, shipments)

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> CloudEvent:
        return ctx.new_event("Shipment.Created", {"order": 1})

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)

    assert shipped.only().data == {"order": 1}


async def test_a_returned_list_of_events_is_published_to_each_declared_topic(bus: Bus) -> None:
    orders, shipments, invoices = unique("orders"), unique("shipments"), unique("invoices")
    service = Service("shipping")
    shipped, invoiced = await probe(bus, shipments), await probe(bus, invoices)

    @service.on(
        "Order.Placed",
        topic=orders,
        emits={"Shipment.Created": shipments, "Invoice.Issued": invoices},
    )
    async def ship(event: CloudEvent, ctx: Context) -> list[CloudEvent]:
        return [
            ctx.new_event("Shipment.Created", {"box": 1}),
            ctx.new_event("Shipment.Created", {"box": 2}),
            ctx.new_event("Invoice.Issued"),
        ]

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)

    assert sorted(event.data["box"] for event in shipped.events) == [1, 2]
    assert invoiced.types == ["Invoice.Issued"]
    assert not invoiced.only().has_data


async def test_an_event_both_emitted_and_returned_is_published_once(bus: Bus) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping")
    shipped = await probe(bus, shipments)

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> CloudEvent:
        return ctx.emit("Shipment.Created")

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)

    assert len(shipped.events) == 1


async def test_an_event_built_but_neither_emitted_nor_returned_is_not_published(
    bus: Bus,
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping")
    shipped = await probe(bus, shipments)

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        ctx.new_event("Shipment.Created")

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)

    assert shipped.events == []


async def test_building_an_undeclared_event_raises_at_once() -> None:
    service = Service("shipping")
    raised: list[Exception] = []

    @service.on("Order.Placed", topic="orders", emits={"Shipment.Created": "shipments"})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        for build in (ctx.new_event, ctx.emit, ctx.topic_of):
            try:
                build("Order.Refunded")
            except UndeclaredEventError as exc:
                raised.append(exc)

    async with Bus("memory://", clock=FakeClock()) as bus, service.run(bus):
        await bus.publish("orders", make_event("Order.Placed"))
        await drain(bus)

    assert len(raised) == 3
    assert str(raised[0]) == (
        "handler shipping.ship emitted 'Order.Refunded', which it does not declare "
        "(declared: Shipment.Created)"
    )


async def test_emitting_an_undeclared_type_fails_the_delivery_and_publishes_nothing(
    bus: Bus, clock: FakeClock
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping")
    shipped = await probe(bus, shipments)
    attempts: list[int] = []

    @service.on(
        "Order.Placed",
        topic=orders,
        emits={"Shipment.Created": shipments},
        retry_policy=FAST_RETRIES,
    )
    async def ship(event: CloudEvent, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        ctx.emit("Shipment.Created")  # declared, but the delivery fails: never published
        ctx.emit("Order.Refunded")

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await run_for(bus, clock, 10)
        record = await only_dead_letter(bus, orders, "shipping-ship")

    assert attempts == [1, 2, 3]
    assert shipped.events == []
    assert record.reason == "MaxDeliveryAttemptsExceeded"
    assert record.delivery_attempts == 3
    assert record.last_delivery_error is not None
    assert record.last_delivery_error.startswith("UndeclaredEventError: ")
    assert "'Order.Refunded', which it does not declare" in record.last_delivery_error


async def test_returning_an_event_of_an_undeclared_type_fails_the_delivery(
    bus: Bus, clock: FakeClock
) -> None:
    orders = unique("orders")
    service = Service("shipping", retry_policy=RetryPolicy(max_delivery_attempts=1))

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": unique("shipments")})
    async def ship(event: CloudEvent, ctx: Context) -> CloudEvent:
        return CloudEvent(type="Order.Refunded", source="/elsewhere")

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)
        record = await only_dead_letter(bus, orders, "shipping-ship")

    assert record.last_delivery_error is not None
    assert "does not declare 'Order.Refunded'" in record.last_delivery_error


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (42, "returned int; return None, an event or a list of events"),
        (["not an event"], "returned str among its events; build them with ctx.new_event"),
        ((1.5,), "returned float among its events"),
    ],
)
async def test_returning_something_other_than_events_is_refused_clearly(
    bus: Bus, clock: FakeClock, returned: object, message: str
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping", retry_policy=RetryPolicy(max_delivery_attempts=1))
    shipped = await probe(bus, shipments)

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> object:
        ctx.emit("Shipment.Created")
        return returned

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)
        record = await only_dead_letter(bus, orders, "shipping-ship")

    assert record.last_delivery_error is not None
    assert f"handler shipping.ship {message}" in record.last_delivery_error
    assert shipped.events == []


async def test_returning_a_dict_is_refused_naming_the_dict(bus: Bus, clock: FakeClock) -> None:
    orders = unique("orders")
    service = Service("shipping", retry_policy=RetryPolicy(max_delivery_attempts=1))

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": unique("shipments")})
    async def ship(event: CloudEvent, ctx: Context) -> object:
        return {"type": "Shipment.Created"}

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)
        record = await only_dead_letter(bus, orders, "shipping-ship")

    assert record.last_delivery_error is not None
    assert "returned dict" in record.last_delivery_error
