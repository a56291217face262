"""Deterministic ids: an emitted event's id depends only on its cause, the service, the
handler, its type and its position, so a retried handler re-emits exactly the same ids."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from choreograph.bus import Bus, RetryPolicy
from choreograph.events import CloudEvent
from choreograph.sdk import Context, Service, emitted_id
from choreograph.sdk.context import ID_NAMESPACE
from choreograph.sdk.endpoint import event_key
from choreograph.testing.clock import FakeClock

from .support import drain, make_event, probe, run_for, unique

_TEXT = st.text(st.characters(exclude_categories=("Cs",)))  # what UTF-8 can carry


@given(*[_TEXT] * 4, st.integers(min_value=0, max_value=10**6))
def test_emitted_id_is_uuid5_of_the_cause_service_handler_type_and_position(
    cause: str, service: str, handler: str, event_type: str, position: int
) -> None:
    name = f"{cause}\n{service}\n{handler}\n{event_type}\n{position}"
    expected = str(uuid.uuid5(ID_NAMESPACE, name))
    assert emitted_id(cause, service, handler, event_type, position) == expected


def test_emitted_id_is_a_stable_version_5_uuid() -> None:
    first = emitted_id("cause-1", "svc", "handler", "Thing.Done", 0)
    assert first == emitted_id("cause-1", "svc", "handler", "Thing.Done", 0)
    assert uuid.UUID(first).version == 5
    others = {
        emitted_id("cause-2", "svc", "handler", "Thing.Done", 0),
        emitted_id("cause-1", "svc2", "handler", "Thing.Done", 0),
        emitted_id("cause-1", "svc", "handler2", "Thing.Done", 0),
        emitted_id("cause-1", "svc", "handler", "Thing.Undone", 0),
        emitted_id("cause-1", "svc", "handler", "Thing.Done", 1),
    }
    assert first not in others
    assert len(others) == 5


async def test_a_retried_handler_re_emits_the_ids_of_its_first_attempt(
    bus: Bus, clock: FakeClock
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping", retry_policy=RetryPolicy(backoff_seconds=(1.0,)))
    shipped = await probe(bus, shipments)
    built: dict[int, list[str]] = {}
    consumed = make_event("Order.Placed")

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def create_shipments(event: CloudEvent, ctx: Context) -> list[CloudEvent]:
        first = ctx.emit("Shipment.Created", {"box": 1})
        second = ctx.new_event("Shipment.Created", {"box": 2})
        built[ctx.attempt] = [first.id, second.id]
        if ctx.attempt == 1:
            raise RuntimeError("the warehouse is busy")
        return [second]

    async with service.run(bus):
        await bus.publish(orders, consumed)
        await run_for(bus, clock, 2)

    expected = [
        emitted_id(
            event_key(consumed), "shipping", "create-shipments", "Shipment.Created", position
        )
        for position in (0, 1)
    ]
    assert built == {1: expected, 2: expected}
    assert sorted(shipped.ids) == sorted(expected)


async def test_events_of_one_type_in_one_run_get_different_ids(bus: Bus) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping")
    shipped = await probe(bus, shipments)

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        for box in range(3):
            ctx.emit("Shipment.Created", {"box": box})

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)

    assert len(set(shipped.ids)) == 3


async def test_positions_count_per_type(bus: Bus) -> None:
    orders, out = unique("orders"), unique("out")
    service = Service("shipping")
    consumed = make_event("Order.Placed")
    emitted: list[CloudEvent] = []

    @service.on("Order.Placed", topic=orders, emits={"A.Done": out, "B.Done": out})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        emitted.extend([ctx.emit("A.Done"), ctx.emit("B.Done"), ctx.emit("A.Done")])

    async with service.run(bus):
        await bus.publish(orders, consumed)
        await drain(bus)

    assert [event.id for event in emitted] == [
        emitted_id(event_key(consumed), "shipping", "ship", "A.Done", 0),
        emitted_id(event_key(consumed), "shipping", "ship", "B.Done", 0),
        emitted_id(event_key(consumed), "shipping", "ship", "A.Done", 1),
    ]


async def test_two_handlers_reacting_to_one_event_emit_different_ids(bus: Bus) -> None:
    orders, out = unique("orders"), unique("out")
    service = Service("shipping")
    emitted = await probe(bus, out)

    async def react(event: CloudEvent, ctx: Context) -> None:
        ctx.emit("Reaction.Done")

    service.on("Order.Placed", topic=orders, emits={"Reaction.Done": out}, name="first")(react)
    service.on("Order.Placed", topic=orders, emits={"Reaction.Done": out}, name="second")(react)

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)

    assert len(emitted.events) == 2
    assert len(set(emitted.ids)) == 2


async def test_two_services_reacting_to_one_event_emit_different_ids(bus: Bus) -> None:
    orders, out = unique("orders"), unique("out")
    emitted = await probe(bus, out)
    services = [Service("billing"), Service("audit")]

    async def react(event: CloudEvent, ctx: Context) -> None:
        ctx.emit("Reaction.Done")

    for service in services:
        service.on("Order.Placed", topic=orders, emits={"Reaction.Done": out}, name="react")(react)

    async with services[0].run(bus), services[1].run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)

    assert len(emitted.events) == 2
    assert len(set(emitted.ids)) == 2
    assert {event.source for event in emitted.events} == {"/services/billing", "/services/audit"}


async def test_different_consumed_events_give_different_ids(bus: Bus) -> None:
    orders, out = unique("orders"), unique("out")
    service = Service("shipping")
    emitted = await probe(bus, out)

    @service.on("Order.Placed", topic=orders, emits={"Reaction.Done": out})
    async def react(event: CloudEvent, ctx: Context) -> None:
        ctx.emit("Reaction.Done")

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)

    assert len(set(emitted.ids)) == 2
