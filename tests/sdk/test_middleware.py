"""Middleware: ``async def middleware(ctx, call_next)`` runs around every handler of a service,
the first given outermost; it sees the context and may stop a delivery by raising."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from choreograph.bus import Bus, RetryPolicy
from choreograph.errors import Retry
from choreograph.events import CloudEvent
from choreograph.sdk import Context, Service
from choreograph.testing.clock import FakeClock

from .support import drain, make_event, probe, run_for, unique

CallNext = Callable[[Context], Awaitable[None]]


def recording(name: str, log: list[str]) -> Callable[[Context, CallNext], Awaitable[None]]:
    async def middleware(ctx: Context, call_next: CallNext) -> None:
        log.append(f"{name} before {ctx.handler}")
        try:
            await call_next(ctx)
        finally:
            log.append(f"{name} after {ctx.handler}")

    return middleware


async def test_middleware_runs_around_every_handler_outermost_first(bus: Bus) -> None:
    orders = unique("orders")
    log: list[str] = []
    service = Service("shipping", middleware=[recording("outer", log), recording("inner", log)])

    async def handle(event: CloudEvent, ctx: Context) -> None:
        log.append(f"handler {ctx.handler}")

    service.on("Order.Placed", topic=orders, name="ship")(handle)
    service.on("Order.Cancelled", topic=orders, name="cancel")(handle)

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)
        await bus.publish(orders, make_event("Order.Cancelled"))
        await drain(bus)

    assert log == [
        "outer before ship",
        "inner before ship",
        "handler ship",
        "inner after ship",
        "outer after ship",
        "outer before cancel",
        "inner before cancel",
        "handler cancel",
        "inner after cancel",
        "outer after cancel",
    ]


async def test_middleware_sees_the_context_of_the_delivery(bus: Bus) -> None:
    orders, out = unique("orders"), unique("out")
    seen: list[tuple[str, str, str, int, str, int]] = []

    async def observe(ctx: Context, call_next: CallNext) -> None:
        await call_next(ctx)
        seen.append(
            (
                ctx.service,
                ctx.handler,
                ctx.event.id,
                ctx.attempt,
                ctx.correlation_id,
                len(ctx.emitted),
            )
        )

    service = Service("shipping", middleware=[observe])
    order = make_event("Order.Placed", correlationid="tx-1")

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": out})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        ctx.emit("Shipment.Created")

    async with service.run(bus):
        await bus.publish(orders, order)
        await drain(bus)

    assert seen == [("shipping", "ship", order.id, 1, "tx-1", 1)]


async def test_middleware_can_emit_and_write_state_for_the_handler(bus: Bus) -> None:
    orders, out = unique("orders"), unique("out")
    audited = await probe(bus, out)

    async def audit(ctx: Context, call_next: CallNext) -> None:
        await call_next(ctx)
        ctx.emit("Audit.Recorded", {"handled": ctx.event.type})

    service = Service("shipping", middleware=[audit])

    @service.on("Order.Placed", topic=orders, emits={"Audit.Recorded": out})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        return None

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)

    assert audited.only().data == {"handled": "Order.Placed"}


async def test_middleware_can_short_circuit_with_retry(bus: Bus, clock: FakeClock) -> None:
    orders = unique("orders")
    handled: list[int] = []
    gated: list[int] = []

    async def not_on_first_attempt(ctx: Context, call_next: CallNext) -> None:
        gated.append(ctx.attempt)
        if ctx.attempt == 1:
            raise Retry("warming up", delay_seconds=5)
        await call_next(ctx)

    service = Service(
        "shipping",
        middleware=[not_on_first_attempt],
        retry_policy=RetryPolicy(backoff_seconds=(1.0,)),
    )

    @service.on("Order.Placed", topic=orders)
    async def ship(event: CloudEvent, ctx: Context) -> None:
        handled.append(ctx.attempt)

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await run_for(bus, clock, 4)
        assert (gated, handled) == ([1], [])
        await run_for(bus, clock, 1)

    assert (gated, handled) == ([1, 2], [2])


async def test_middleware_that_does_not_call_next_skips_the_handler(bus: Bus) -> None:
    orders = unique("orders")
    handled: list[str] = []

    async def drop_tests(ctx: Context, call_next: CallNext) -> None:
        if ctx.event.subject != "/test":
            await call_next(ctx)

    service = Service("shipping", middleware=[drop_tests])

    @service.on("Order.Placed", topic=orders)
    async def ship(event: CloudEvent, ctx: Context) -> None:
        handled.append(event.subject or "")

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed", subject="/test"))
        await bus.publish(orders, make_event("Order.Placed", subject="/real"))
        await drain(bus)
        counters = await bus.counters(orders, "shipping-ship")

    assert handled == ["/real"]
    assert counters == {"queued": 0, "deadLettered": 0, "dropped": 0}


async def test_middleware_runs_around_each_event_a_join_receives(bus: Bus) -> None:
    packages, drones = unique("packages"), unique("drones")
    log: list[str] = []
    service = Service("dispatch", middleware=[recording("mw", log)])

    @service.join({"Package.Ready": packages, "Drone.Ready": drones})
    async def start(events: Mapping[str, CloudEvent], ctx: Context) -> None:
        log.append("join")

    async with service.run(bus):
        await bus.publish(packages, make_event("Package.Ready", correlationid="tx"))
        await drain(bus)
        await bus.publish(drones, make_event("Drone.Ready", correlationid="tx"))
        await drain(bus)

    assert log == ["mw before start", "mw after start", "mw before start", "join", "mw after start"]
