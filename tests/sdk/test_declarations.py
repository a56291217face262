"""Declaring services: validation with clear ``ConfigError``s, the declaration as data, and the
subscriptions the runtime derives from it."""

from __future__ import annotations

import pytest

from choreograph.bus import Bus, EventFilter, RetryPolicy
from choreograph.errors import ConfigError
from choreograph.events import CloudEvent
from choreograph.sdk import Context, Service
from choreograph.testing.clock import FakeClock

from .support import drain, make_event, probe, unique


async def ignore(event: CloudEvent, ctx: Context) -> None:
    return None


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("name", ["", "-leading-dash", "has space", "under_score", "x" * 42, "é"])
def test_a_service_name_must_be_letters_digits_and_dashes(name: str) -> None:
    with pytest.raises(ConfigError, match=r"service name .* must be 1-41 letters, digits and '-'"):
        Service(name)


@pytest.mark.parametrize("name", ["a", "package", "drone-scheduler", "x" * 41, "9lives"])
def test_a_valid_service_name_is_accepted(name: str) -> None:
    assert Service(name).name == name


def test_a_handler_must_consume_at_least_one_event_type() -> None:
    service = Service("svc")
    with pytest.raises(ConfigError, match="must consume at least one event type"):
        service.on(topic="orders")(ignore)
    assert service.handlers == []


@pytest.mark.parametrize("event_type", ["", None, 7])
def test_event_types_must_be_non_empty_strings(event_type: object) -> None:
    service = Service("svc")
    with pytest.raises(ConfigError, match="event types are non-empty strings"):
        service.on(event_type, topic="orders")(ignore)  # type: ignore[arg-type]
    assert service.handlers == []


@pytest.mark.parametrize("name", ["has space", "dot.ted", "__", "x" * 42, "é"])
def test_a_bad_handler_name_is_refused(name: str) -> None:
    service = Service("svc")
    with pytest.raises(ConfigError, match=r"handler name .* must be letters, digits, '-' or '_'"):
        service.on("Order.Placed", topic="orders", name=name)(ignore)
    assert service.handlers == []


def test_a_handler_name_comes_from_the_function_with_underscores_as_dashes() -> None:
    service = Service("svc")

    @service.on("Order.Placed", topic="orders")
    async def reserve_stock(event: CloudEvent, ctx: Context) -> None:
        return None

    assert [spec.name for spec in service.handlers] == ["reserve-stock"]


def test_two_handlers_with_the_same_name_are_refused() -> None:
    service = Service("svc")
    service.on("Order.Placed", topic="orders", name="handle_order")(ignore)
    with pytest.raises(
        ConfigError, match="service 'svc' already has a handler named 'handle-order'"
    ):
        service.on("Order.Cancelled", topic="orders", name="handle-order")(ignore)
    assert len(service.handlers) == 1


def test_a_handler_needs_a_topic_for_what_it_consumes() -> None:
    service = Service("svc")
    with pytest.raises(
        ConfigError, match=r"handler 'ignore': 'Order\.Placed' \(consumes\) needs a topic name"
    ):
        service.on("Order.Placed", topic="")(ignore)
    assert service.handlers == []


def test_a_handler_needs_a_topic_for_what_it_emits() -> None:
    service = Service("svc")
    with pytest.raises(ConfigError, match=r"'Order\.Shipped' \(emits\) needs a topic name"):
        service.on("Order.Placed", topic="orders", emits={"Order.Shipped": ""})(ignore)
    assert service.handlers == []


def test_an_empty_consumed_topic_is_refused_even_when_the_type_is_also_emitted() -> None:
    service = Service("svc")
    with pytest.raises(ConfigError, match="needs a topic name"):
        service.on("Order.Placed", topic="", emits={"Order.Placed": "orders"})(ignore)


def test_a_join_needs_at_least_two_event_types() -> None:
    with pytest.raises(ConfigError, match="a join needs at least two event types"):
        Service("svc").join({"Order.Placed": "orders"})


def test_a_join_needs_a_topic_per_event_type() -> None:
    service = Service("svc")
    with pytest.raises(ConfigError, match=r"'Payment\.Taken' \(consumes\) needs a topic name"):
        service.join({"Order.Placed": "orders", "Payment.Taken": ""})(ignore)  # type: ignore[arg-type]
    assert service.handlers == []


def test_a_join_and_a_handler_share_one_namespace_of_names() -> None:
    service = Service("svc")
    service.on("Order.Placed", topic="orders", name="ship")(ignore)
    with pytest.raises(ConfigError, match="already has a handler named 'ship'"):
        service.join({"Order.Placed": "orders", "Payment.Taken": "payments"}, name="ship")(
            ignore  # type: ignore[arg-type]
        )


# ----------------------------------------------------------------------------- declaration


def test_the_declaration_lists_what_each_handler_consumes_and_emits() -> None:
    service = Service(
        "shipping", description="Ships orders", publishes={"Order.Received": "intake"}
    )

    @service.on(
        "Order.Placed",
        "Order.Amended",
        topic="orders",
        emits={"Shipment.Created": "shipments", "Shipment.Failed": "failures"},
    )
    async def create_shipment(event: CloudEvent, ctx: Context) -> None:
        """Create a shipment.

        More text that is not part of the description."""

    @service.join({"Shipment.Created": "shipments", "Payment.Taken": "payments"}, name="dispatch")
    async def dispatch(events: object, ctx: Context) -> None:
        return None

    assert service.declaration() == {
        "service": "shipping",
        "description": "Ships orders",
        "publishes": [{"type": "Order.Received", "topic": "intake"}],
        "handlers": [
            {
                "name": "create-shipment",
                "kind": "handler",
                "consumes": [
                    {"type": "Order.Placed", "topic": "orders"},
                    {"type": "Order.Amended", "topic": "orders"},
                ],
                "emits": [
                    {"type": "Shipment.Created", "topic": "shipments"},
                    {"type": "Shipment.Failed", "topic": "failures"},
                ],
                "description": "Create a shipment.",
            },
            {
                "name": "dispatch",
                "kind": "join",
                "consumes": [
                    {"type": "Shipment.Created", "topic": "shipments"},
                    {"type": "Payment.Taken", "topic": "payments"},
                ],
                "emits": [],
                "description": "",
            },
        ],
    }


def test_a_service_with_no_handlers_declares_empty_lists() -> None:
    assert Service("quiet").declaration() == {
        "service": "quiet",
        "description": "",
        "publishes": [],
        "handlers": [],
    }


def test_the_subscription_of_a_handler_is_named_service_dash_handler() -> None:
    service = Service("drone-scheduler")
    service.on("Package.Created", topic="packages", name="assign_drone")(ignore)
    assert service.subscription_name(service.handlers[0]) == "drone-scheduler-assign-drone"


# --------------------------------------------------------------------------- subscriptions


async def test_running_a_service_subscribes_each_handler_filtered_on_its_types(bus: Bus) -> None:
    orders, payments = unique("orders"), unique("payments")
    service = Service("svc", retry_policy=RetryPolicy(max_delivery_attempts=5))
    service.on("Order.Placed", "Order.Amended", topic=orders, name="take_order")(ignore)
    service.join({"Order.Placed": orders, "Payment.Taken": payments}, name="settle")(
        ignore  # type: ignore[arg-type]
    )

    async with service.run(bus):
        take = bus.get_subscription_record(orders, "svc-take-order")
        settle_orders = bus.get_subscription_record(orders, "svc-settle")
        settle_payments = bus.get_subscription_record(payments, "svc-settle")

    assert take.spec.event_filter.included_event_types == ("Order.Placed", "Order.Amended")
    assert settle_orders.spec.event_filter.included_event_types == ("Order.Placed",)
    assert settle_payments.spec.event_filter.included_event_types == ("Payment.Taken",)
    assert take.spec.retry_policy.max_delivery_attempts == 5
    assert take.spec.event_delivery_schema == "CloudEventSchemaV1_0"


async def test_running_a_service_creates_the_topics_it_consumes_from_and_emits_to(
    bus: Bus,
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    service = Service("svc")
    service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})(ignore)

    async with service.run(bus):
        names = {topic.name for topic in await bus.list_topics()}

    assert {orders, shipments} <= names


async def test_a_handler_never_sees_an_event_of_a_type_it_does_not_consume(
    bus: Bus, clock: FakeClock
) -> None:
    orders = unique("orders")
    seen: list[str] = []
    service = Service("svc")

    @service.on("Order.Placed", topic=orders)
    async def take_order(event: CloudEvent, ctx: Context) -> None:
        seen.append(event.type)

    everything = await probe(bus, orders)
    async with service.run(bus):
        await bus.publish(orders, make_event("Order.Cancelled"))
        await bus.publish(orders, make_event("Order.Placed"))
        await drain(bus)
        counters = await bus.counters(orders, "svc-take-order")

    assert seen == ["Order.Placed"]
    assert everything.types == ["Order.Cancelled", "Order.Placed"]
    assert counters == {"queued": 0, "deadLettered": 0, "dropped": 0}


def test_a_handler_whose_subscription_name_would_be_too_long_is_refused_at_declaration() -> None:
    service = Service("s" * 41)
    with pytest.raises(ConfigError):
        service.on("Order.Placed", topic="orders", name="h" * 41)(ignore)


async def test_a_handler_s_own_filter_is_kept_beside_its_types(bus: Bus) -> None:
    orders = unique("orders")
    seen: list[str | None] = []
    service = Service("svc")

    @service.on("Order.Placed", topic=orders, event_filter=EventFilter(subject_begins_with="/eu/"))
    async def take_order(event: CloudEvent, ctx: Context) -> None:
        seen.append(event.subject)

    async with service.run(bus):
        for subject in ("/us/1", "/eu/2"):
            await bus.publish(orders, make_event("Order.Placed", subject=subject))
        await bus.publish(orders, make_event("Order.Cancelled", subject="/eu/3"))
        await drain(bus)

    assert seen == ["/eu/2"]
