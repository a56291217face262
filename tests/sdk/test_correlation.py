"""Correlation without effort: emitted events carry the transaction, the cause and the trace
of the event that produced them, with nothing written by the handler."""

from __future__ import annotations

from typing import Any

import pytest

from choreograph.bus import Bus, RetryPolicy
from choreograph.events import CloudEvent
from choreograph.sdk import Context, Service
from choreograph.sdk.tracing import TraceContext
from choreograph.testing.clock import FakeClock

from .support import PARENT_SPAN, TRACE_ID, TRACEPARENT, drain, make_event, probe, run_for, unique


async def emit_once(
    bus: Bus, consumed: CloudEvent, *, subject: str | None = None
) -> tuple[CloudEvent, Context]:
    """Run a service that emits one event on ``consumed``; return it and the handler's ctx."""
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping")
    contexts: list[Context] = []
    shipped = await probe(bus, shipments)

    @service.on(consumed.type, topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        contexts.append(ctx)
        ctx.emit("Shipment.Created", {"ok": True}, subject=subject)

    async with service.run(bus):
        await bus.publish(orders, consumed)
        await drain(bus)
    return shipped.only(), contexts[0]


async def test_an_emitted_event_carries_the_transaction_the_cause_and_the_trace(
    bus: Bus,
) -> None:
    consumed = make_event(
        "Order.Placed",
        subject="/orders/7",
        correlationid="tx-7",
        traceparent=TRACEPARENT,
        tracestate="vendor=opaque",
    )

    emitted, ctx = await emit_once(bus, consumed)

    assert emitted.correlationid == "tx-7"
    assert emitted.causationid == consumed.id
    assert emitted.extensions["tracestate"] == "vendor=opaque"
    assert emitted.extensions["deliveryattempt"] == 1
    assert emitted.source == "/services/shipping"
    assert emitted.subject == "/orders/7"
    trace = TraceContext.parse(emitted.traceparent)
    assert trace is not None
    assert trace.trace_id == TRACE_ID
    assert trace.span_id != PARENT_SPAN
    assert trace.flags == "01"
    assert emitted.traceparent == ctx.trace.traceparent
    assert ctx.correlation_id == "tx-7"


async def test_the_span_a_handler_reads_before_emitting_is_the_one_its_events_carry(
    bus: Bus,
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping")
    read: list[str] = []
    shipped = await probe(bus, shipments)

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        read.append(ctx.trace.traceparent)
        ctx.emit("Shipment.Created", {"n": 1})
        ctx.emit("Shipment.Created", {"n": 2})

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed", traceparent=TRACEPARENT))
        await drain(bus)
    assert {event.traceparent for event in shipped.events} == set(read)


async def test_an_emitted_event_is_stamped_with_the_clock(bus: Bus, clock: FakeClock) -> None:
    emitted, _ = await emit_once(bus, make_event("Order.Placed"))
    assert emitted.time == "2026-01-01T00:00:00.000000Z"


async def test_a_given_subject_replaces_the_inherited_one(bus: Bus) -> None:
    consumed = make_event("Order.Placed", subject="/orders/7")
    emitted, _ = await emit_once(bus, consumed, subject="/shipments/1")
    assert emitted.subject == "/shipments/1"


async def test_the_transaction_starts_at_the_consumed_event_when_it_has_no_correlation_id(
    bus: Bus,
) -> None:
    consumed = make_event("Order.Placed")
    emitted, ctx = await emit_once(bus, consumed)
    assert emitted.correlationid == consumed.id
    assert ctx.correlation_id == consumed.id
    assert emitted.subject is None
    assert "tracestate" not in emitted.extensions


async def test_an_event_without_a_trace_starts_a_new_one(bus: Bus) -> None:
    emitted, _ = await emit_once(bus, make_event("Order.Placed"))
    trace = TraceContext.parse(emitted.traceparent)
    assert trace is not None
    assert trace.trace_id != TRACE_ID


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        f"ff-{TRACE_ID}-{PARENT_SPAN}-01",
        f"00-{'0' * 32}-{PARENT_SPAN}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-{TRACE_ID[:-1]}-{PARENT_SPAN}-01",
    ],
)
async def test_an_event_with_a_malformed_trace_starts_a_new_one(bus: Bus, traceparent: str) -> None:
    emitted, _ = await emit_once(bus, make_event("Order.Placed", traceparent=traceparent))
    trace = TraceContext.parse(emitted.traceparent)
    assert trace is not None
    assert trace.trace_id not in (TRACE_ID, TRACE_ID[:-1], "0" * 32)
    assert emitted.traceparent != traceparent


async def test_an_unsampled_trace_stays_unsampled(bus: Bus) -> None:
    consumed = make_event("Order.Placed", traceparent=f"00-{TRACE_ID}-{PARENT_SPAN}-00")
    emitted, _ = await emit_once(bus, consumed)
    assert emitted.traceparent is not None
    assert emitted.traceparent.endswith("-00")


async def test_each_delivery_of_an_event_is_its_own_span(bus: Bus) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping")
    shipped = await probe(bus, shipments)

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        ctx.emit("Shipment.Created")

    async with service.run(bus):
        for _ in range(2):
            await bus.publish(orders, make_event("Order.Placed", traceparent=TRACEPARENT))
        await drain(bus)

    spans = {TraceContext.parse(event.traceparent).span_id for event in shipped.events}  # type: ignore[union-attr]
    assert len(spans) == 2


async def test_the_delivery_attempt_of_a_retried_handler_is_carried(
    bus: Bus, clock: FakeClock
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping", retry_policy=RetryPolicy(backoff_seconds=(1.0,)))
    shipped = await probe(bus, shipments)

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        if ctx.attempt < 3:
            raise RuntimeError("not yet")
        ctx.emit("Shipment.Created")

    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Placed"))
        await run_for(bus, clock, 5)

    assert shipped.only().extensions["deliveryattempt"] == 3


async def test_extensions_given_to_emit_are_kept_but_cannot_override_correlation(
    bus: Bus,
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("shipping")
    shipped = await probe(bus, shipments)
    consumed = make_event("Order.Placed", correlationid="tx-1")

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        ctx.emit(
            "Shipment.Created",
            extensions={"priority": "high", "correlationid": "forged", "causationid": "forged"},
        )

    async with service.run(bus):
        await bus.publish(orders, consumed)
        await drain(bus)

    emitted = shipped.only()
    assert emitted.extensions["priority"] == "high"
    assert emitted.correlationid == "tx-1"
    assert emitted.causationid == consumed.id


async def test_a_chain_of_three_services_is_one_trace_and_one_transaction(bus: Bus) -> None:
    hops = [unique("hop") for _ in range(4)]
    services = []
    for index in range(3):
        service = Service(f"step{index + 1}")

        async def forward(event: CloudEvent, ctx: Context, index: int = index) -> CloudEvent:
            return ctx.new_event(f"Step{index + 1}.Done", {"step": index + 1})

        service.on(
            f"Step{index}.Done", topic=hops[index], emits={f"Step{index + 1}.Done": hops[index + 1]}
        )(forward)
        services.append(service)
    probes = [await probe(bus, topic) for topic in hops]
    start = make_event("Step0.Done", correlationid="tx-chain", traceparent=TRACEPARENT)

    async with services[0].run(bus), services[1].run(bus), services[2].run(bus):
        await bus.publish(hops[0], start)
        await drain(bus)

    chain = [start, *(recorder.only() for recorder in probes[1:])]
    traces: list[Any] = [TraceContext.parse(event.traceparent) for event in chain]
    assert [event.type for event in chain] == [
        "Step0.Done",
        "Step1.Done",
        "Step2.Done",
        "Step3.Done",
    ]
    assert {trace.trace_id for trace in traces} == {TRACE_ID}
    assert len({trace.span_id for trace in traces}) == 4
    assert {event.correlationid for event in chain} == {"tx-chain"}
    assert [event.causationid for event in chain[1:]] == [event.id for event in chain[:-1]]
    assert [event.source for event in chain[1:]] == [
        "/services/step1",
        "/services/step2",
        "/services/step3",
    ]


@pytest.mark.parametrize("traceparent", [None, "garbage"])
async def test_a_tracestate_is_not_carried_into_a_new_trace(
    bus: Bus, traceparent: str | None
) -> None:
    extensions = {"tracestate": "vendor=opaque"}
    if traceparent is not None:
        extensions["traceparent"] = traceparent
    emitted, _ = await emit_once(bus, make_event("Order.Placed", **extensions))
    assert "tracestate" not in emitted.extensions
