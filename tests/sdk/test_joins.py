"""Joins: a function that runs once per transaction (correlation id), after an event of every
joined type arrived, whatever their order, kept in the service's own store."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from choreograph.bus import Bus, RetryPolicy
from choreograph.events import CloudEvent
from choreograph.sdk import Context, Service
from choreograph.testing.clock import FakeClock

from .support import NO_DEDUPLICATION, drain, make_event, probe, run_for, unique


class Dispatch:
    """A service joining ``Package.Ready`` (on ``packages``) and ``Drone.Ready`` (on
    ``drones``) into ``Delivery.Started`` (on ``deliveries``), recording each run."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self.packages, self.drones = unique("packages"), unique("drones")
        self.deliveries = unique("deliveries")
        self.service = Service("dispatch", retry_policy=RetryPolicy(backoff_seconds=(1.0,)))
        self.runs: list[tuple[dict[str, CloudEvent], Context]] = []
        self.attempts: list[int] = []
        self.built: list[str] = []

        @self.service.join(
            {"Package.Ready": self.packages, "Drone.Ready": self.drones},
            emits={"Delivery.Started": self.deliveries},
        )
        async def start_delivery(events: Mapping[str, CloudEvent], ctx: Context) -> CloudEvent:
            self.attempts.append(ctx.attempt)
            started = ctx.new_event(
                "Delivery.Started",
                {
                    "package": events["Package.Ready"].data,
                    "drone": events["Drone.Ready"].data,
                },
            )
            self.built.append(started.id)
            if fail_first and len(self.attempts) == 1:
                raise RuntimeError("no pilot yet")
            self.runs.append((dict(events), ctx))
            return started

    def package(self, transaction: str, data: object = "p1") -> CloudEvent:
        return make_event("Package.Ready", data=data, correlationid=transaction)

    def drone(self, transaction: str, data: object = "d1") -> CloudEvent:
        return make_event("Drone.Ready", data=data, correlationid=transaction)

    async def arrive(self, bus: Bus, *events: CloudEvent) -> None:
        for event in events:
            topic = self.packages if event.type == "Package.Ready" else self.drones
            await bus.publish(topic, event)
            await drain(bus)


async def test_a_join_runs_once_both_events_arrived(bus: Bus) -> None:
    dispatch = Dispatch()
    started = await probe(bus, dispatch.deliveries)
    tx = unique("tx")
    package, drone = dispatch.package(tx), dispatch.drone(tx)

    async with dispatch.service.run(bus):
        await dispatch.arrive(bus, package)
        assert dispatch.runs == []
        await dispatch.arrive(bus, drone)

    [(events, ctx)] = dispatch.runs
    assert events == {"Package.Ready": package, "Drone.Ready": drone}
    assert ctx.events == events
    assert ctx.event == drone  # the event that completed the join
    assert ctx.correlation_id == tx
    delivery = started.only()
    assert delivery.data == {"package": "p1", "drone": "d1"}
    assert delivery.correlationid == tx
    assert delivery.causationid == drone.id


async def test_a_join_runs_whatever_the_order_of_arrival(bus: Bus) -> None:
    dispatch = Dispatch()
    started = await probe(bus, dispatch.deliveries)
    tx = unique("tx")

    async with dispatch.service.run(bus):
        await dispatch.arrive(bus, dispatch.drone(tx), dispatch.package(tx))

    assert len(dispatch.runs) == 1
    assert started.only().data == {"package": "p1", "drone": "d1"}


async def test_a_join_never_runs_again_for_its_transaction(bus: Bus) -> None:
    dispatch = Dispatch()
    for topic in (dispatch.packages, dispatch.drones):
        await bus.put_topic(topic, NO_DEDUPLICATION)
    started = await probe(bus, dispatch.deliveries)
    tx = unique("tx")
    package, drone = dispatch.package(tx), dispatch.drone(tx)

    async with dispatch.service.run(bus):
        await dispatch.arrive(bus, package, drone)
        # The same events again, and new events of the joined types in the same transaction.
        await dispatch.arrive(bus, package, drone, dispatch.package(tx, "p2"))
        await dispatch.arrive(bus, dispatch.drone(tx, "d2"))

    assert len(dispatch.runs) == 1
    assert started.only().data == {"package": "p1", "drone": "d1"}


async def test_a_second_event_of_one_type_before_the_join_does_not_replace_the_first(
    bus: Bus,
) -> None:
    dispatch = Dispatch()
    tx = unique("tx")

    async with dispatch.service.run(bus):
        await dispatch.arrive(
            bus, dispatch.package(tx, "p1"), dispatch.package(tx, "p2"), dispatch.drone(tx)
        )

    [(events, _)] = dispatch.runs
    assert events["Package.Ready"].data == "p1"


async def test_each_transaction_joins_separately(bus: Bus) -> None:
    dispatch = Dispatch()
    started = await probe(bus, dispatch.deliveries)
    one, two = unique("tx"), unique("tx")

    async with dispatch.service.run(bus):
        await dispatch.arrive(bus, dispatch.package(one, "p-one"), dispatch.package(two, "p-two"))
        await dispatch.arrive(bus, dispatch.drone(one, "d-one"))
        assert [event.correlationid for event in started.events] == [one]
        await dispatch.arrive(bus, dispatch.drone(two, "d-two"))

    assert [event.data for event in started.events] == [
        {"package": "p-one", "drone": "d-one"},
        {"package": "p-two", "drone": "d-two"},
    ]
    assert len(set(started.ids)) == 2


async def test_events_without_a_correlation_id_never_join(bus: Bus) -> None:
    dispatch = Dispatch()

    async with dispatch.service.run(bus):
        await dispatch.arrive(bus, make_event("Package.Ready"), make_event("Drone.Ready"))

    assert dispatch.runs == []


async def test_a_join_emits_the_same_ids_whatever_the_order_of_arrival(
    clock: FakeClock,
) -> None:
    ids = []
    tx = unique("tx")
    for order in ("package-first", "drone-first"):
        async with Bus("memory://", clock=clock, retry_jitter=0) as bus:
            dispatch = Dispatch()
            started = await probe(bus, dispatch.deliveries)
            events = [dispatch.package(tx), dispatch.drone(tx)]
            if order == "drone-first":
                events.reverse()
            async with dispatch.service.run(bus):
                await dispatch.arrive(bus, *events)
            ids.append(started.only().id)

    assert ids[0] == ids[1]


async def test_a_retried_join_emits_the_same_ids(bus: Bus, clock: FakeClock) -> None:
    dispatch = Dispatch(fail_first=True)
    started = await probe(bus, dispatch.deliveries)
    tx = unique("tx")

    async with dispatch.service.run(bus):
        await dispatch.arrive(bus, dispatch.package(tx), dispatch.drone(tx))
        assert dispatch.runs == []
        await run_for(bus, clock, 2)

    assert dispatch.attempts == [1, 2]
    assert dispatch.built[0] == dispatch.built[1]
    assert started.ids == dispatch.built[:1]


async def test_a_join_s_partial_state_survives_a_restart_with_a_sqlite_store(
    bus: Bus, tmp_path: Path
) -> None:
    dispatch = Dispatch()
    started = await probe(bus, dispatch.deliveries)
    store = "sqlite:///" + str(tmp_path / "dispatch.db")
    tx = unique("tx")
    package, drone = dispatch.package(tx), dispatch.drone(tx)

    async with dispatch.service.run(bus, store=store):
        await dispatch.arrive(bus, package)
    async with dispatch.service.run(bus, store=store):
        await dispatch.arrive(bus, drone)
        await dispatch.arrive(bus, dispatch.drone(tx, "d2"))
    async with dispatch.service.run(bus, store=store):
        await dispatch.arrive(bus, dispatch.package(tx, "p2"))

    [(events, _)] = dispatch.runs
    assert events == {"Package.Ready": package, "Drone.Ready": drone}
    assert started.only().data == {"package": "p1", "drone": "d1"}


async def test_a_join_of_two_types_on_one_topic_uses_one_subscription(bus: Bus) -> None:
    topic, out = unique("ready"), unique("out")
    service = Service("dispatch")
    started = await probe(bus, out)
    tx = unique("tx")

    @service.join({"Package.Ready": topic, "Drone.Ready": topic}, emits={"Delivery.Started": out})
    async def start(events: Mapping[str, CloudEvent], ctx: Context) -> None:
        ctx.emit("Delivery.Started", sorted(events))

    async with service.run(bus):
        record = bus.get_subscription_record(topic, "dispatch-start")
        await bus.publish(topic, make_event("Drone.Ready", correlationid=tx))
        await bus.publish(topic, make_event("Package.Ready", correlationid=tx))
        await drain(bus)

    assert record.spec.event_filter.included_event_types == ("Package.Ready", "Drone.Ready")
    assert started.only().data == ["Drone.Ready", "Package.Ready"]
