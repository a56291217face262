"""Outcomes: a handler asks for a retry with ``Retry``, refuses a poison event with ``Reject``,
and any other exception is retried by the bus on the subscription's policy."""

from __future__ import annotations

import asyncio

from choreograph.bus import Bus, RetryPolicy
from choreograph.errors import Reject, Retry
from choreograph.events import CloudEvent
from choreograph.sdk import Context, Service
from choreograph.testing.clock import FakeClock

from .support import (
    FAST_RETRIES,
    drain,
    make_event,
    only_dead_letter,
    probe,
    run_for,
    unique,
    wait_for,
)


async def test_retry_with_a_delay_is_retried_no_sooner_than_the_delay(
    bus: Bus, clock: FakeClock
) -> None:
    orders = unique("orders")
    service = Service("shipping", retry_policy=RetryPolicy(backoff_seconds=(1.0,)))
    calls: list[tuple[int, float]] = []
    start = clock.now()

    @service.on("Order.Placed", topic=orders)
    async def ship(event: CloudEvent, ctx: Context) -> None:
        calls.append((ctx.attempt, clock.now() - start))
        if ctx.attempt == 1:
            raise Retry("the warehouse is closed", delay_seconds=30)

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await run_for(bus, clock, 29.9)
        assert calls == [(1, 0.0)]
        await run_for(bus, clock, 0.1)

    assert calls == [(1, 0.0), (2, 30.0)]


async def test_a_retry_delay_shorter_than_the_policy_waits_for_the_policy(
    bus: Bus, clock: FakeClock
) -> None:
    orders = unique("orders")
    service = Service("shipping", retry_policy=RetryPolicy(backoff_seconds=(20.0,)))
    times: list[float] = []
    start = clock.now()

    @service.on("Order.Placed", topic=orders)
    async def ship(event: CloudEvent, ctx: Context) -> None:
        times.append(clock.now() - start)
        if ctx.attempt == 1:
            raise Retry(delay_seconds=5)

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await run_for(bus, clock, 60)

    assert times == [0.0, 20.0]


async def test_retry_is_reported_as_busy_and_dead_lettered_past_the_attempts(
    bus: Bus, clock: FakeClock
) -> None:
    orders = unique("orders")
    service = Service("shipping", retry_policy=FAST_RETRIES)

    @service.on("Order.Placed", topic=orders)
    async def ship(event: CloudEvent, ctx: Context) -> None:
        raise Retry("still closed")

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await run_for(bus, clock, 10)
        record = await only_dead_letter(bus, orders, "shipping-ship")

    assert record.reason == "MaxDeliveryAttemptsExceeded"
    assert record.delivery_attempts == 3
    assert record.last_delivery_outcome == "Busy"
    assert record.last_delivery_error == "still closed"


async def test_reject_dead_letters_the_event_at_once(bus: Bus, clock: FakeClock) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping")
    shipped = await probe(bus, shipments)
    attempts: list[int] = []
    poison = make_event("Order.Placed", data={"weight": -1})

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        ctx.emit("Shipment.Created")
        raise Reject("a package cannot weigh less than nothing")

    async with service.run(bus):
        await bus.publish(orders, poison)
        await drain(bus)
        record = await only_dead_letter(bus, orders, "shipping-ship")
        await run_for(bus, clock, 3600)

    assert attempts == [1]
    assert shipped.events == []
    assert record.event == poison
    assert record.reason == "Rejected"
    assert record.delivery_attempts == 1
    assert record.last_delivery_outcome == "Rejected"
    assert record.last_delivery_error == "a package cannot weigh less than nothing"


async def test_any_other_exception_is_retried_on_the_policy(bus: Bus, clock: FakeClock) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    policy = RetryPolicy(max_delivery_attempts=4, backoff_seconds=(5.0, 10.0))
    service = Service("shipping", retry_policy=policy)
    shipped = await probe(bus, shipments)
    times: list[float] = []
    start = clock.now()

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        times.append(clock.now() - start)
        ctx.emit("Shipment.Created")
        if ctx.attempt < 4:
            raise KeyError("drone")

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await run_for(bus, clock, 100)
        counters = await bus.counters(orders, "shipping-ship")

    assert times == [0.0, 5.0, 15.0, 25.0]
    assert len(shipped.events) == 1
    assert counters == {"queued": 0, "deadLettered": 0, "dropped": 0}


async def test_an_exception_past_the_policy_is_dead_lettered_with_the_error(
    bus: Bus, clock: FakeClock
) -> None:
    orders = unique("orders")
    service = Service("shipping")

    @service.on("Order.Placed", topic=orders, retry_policy=FAST_RETRIES)
    async def ship(event: CloudEvent, ctx: Context) -> None:
        raise ValueError("no drone fits")

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await run_for(bus, clock, 10)
        record = await only_dead_letter(bus, orders, "shipping-ship")

    assert record.reason == "MaxDeliveryAttemptsExceeded"
    assert record.delivery_attempts == 3
    assert record.last_delivery_outcome == "GenericError"
    assert record.last_delivery_error == "ValueError: no drone fits"


async def test_a_handler_retry_policy_overrides_the_service_one(bus: Bus, clock: FakeClock) -> None:
    orders = unique("orders")
    service = Service("shipping", retry_policy=RetryPolicy(max_delivery_attempts=30))
    attempts: list[int] = []

    @service.on(
        "Order.Placed",
        topic=orders,
        retry_policy=RetryPolicy(max_delivery_attempts=2, backoff_seconds=(1.0,)),
    )
    async def ship(event: CloudEvent, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("down")

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await run_for(bus, clock, 60)
        record = await only_dead_letter(bus, orders, "shipping-ship")

    assert attempts == [1, 2]
    assert record.delivery_attempts == 2


async def test_a_compensating_handler_reacts_to_the_dead_lettering_in_the_transaction(
    bus: Bus,
) -> None:
    orders, refunds = unique("orders"), unique("refunds")
    shipping, billing = Service("shipping"), Service("billing")
    refunded = await probe(bus, refunds)
    poison = make_event("Order.Placed", correlationid="tx-poison")

    @shipping.on("Order.Placed", topic=orders)
    async def ship(event: CloudEvent, ctx: Context) -> None:
        raise Reject("no such address")

    @billing.on(
        "Choreograph.DeadLettered", topic="choreograph-system", emits={"Order.Refunded": refunds}
    )
    async def refund(event: CloudEvent, ctx: Context) -> None:
        ctx.emit("Order.Refunded", {"reason": event.data["reason"]})

    async with shipping.run(bus), billing.run(bus):
        await bus.publish(orders, poison)
        await drain(bus)

    compensation = refunded.only()
    assert compensation.data == {"reason": "Rejected"}
    assert compensation.correlationid == "tx-poison"


async def test_a_handler_past_its_delivery_timeout_is_retried_with_its_state_undone(
    bus: Bus, clock: FakeClock
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping", retry_policy=RetryPolicy(backoff_seconds=(1.0,)))
    shipped = await probe(bus, shipments)
    started, never = asyncio.Event(), asyncio.Event()
    seen: list[object] = []

    @service.on(
        "Order.Placed",
        topic=orders,
        emits={"Shipment.Created": shipments},
        delivery_timeout_seconds=5,
    )
    async def ship(event: CloudEvent, ctx: Context) -> None:
        seen.append(await ctx.state.get("orders", event.id))
        ctx.state.put("orders", event.id, f"attempt {ctx.attempt}")
        ctx.emit("Shipment.Created")
        if ctx.attempt == 1:
            started.set()
            await never.wait()

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await wait_for(started)
        clock.advance(5)  # the delivery timeout cancels the first attempt
        await drain(bus)
        assert shipped.events == []
        await run_for(bus, clock, 1)

    assert seen == [None, None]
    assert len(shipped.events) == 1
