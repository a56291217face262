"""The monitor records each transaction's events and derives its state and timeline."""

from __future__ import annotations

import pytest
from monitor_helpers import advance, service_event, settle

from choreograph.bus import Bus, SubscriptionSpec
from choreograph.errors import NotFoundError, Reject
from choreograph.events import CloudEvent
from choreograph.monitor import Monitor
from choreograph.testing import FakeClock


async def run_delivery(
    bus: Bus, monitor: Monitor, clock: FakeClock, *, outcome: str = "Delivery.Completed"
) -> list[CloudEvent]:
    """Publish a four-hop delivery, 250 ms, 500 ms and 1 s apart; return its events."""
    requested = service_event("Delivery.Requested", "ingestion", correlation_id="tx-1")
    await bus.publish("deliveries", requested)
    await settle(monitor)
    await advance(monitor, clock, 0.25)
    package = service_event("Package.Created", "package", correlation_id="tx-1", cause=requested)
    await bus.publish("deliveries", package)
    await advance(monitor, clock, 0.5)
    drone = service_event(
        "Drone.Assigned", "drone-scheduler", correlation_id="tx-1", cause=package, attempt=2
    )
    await bus.publish("drones", drone)
    await advance(monitor, clock, 1.0)
    data = {"reason": "no drone can fly"} if outcome == "Delivery.Failed" else {"ok": True}
    last = service_event(outcome, "delivery", correlation_id="tx-1", cause=drone, data=data)
    await bus.publish("deliveries", last)
    await settle(monitor)
    return [requested, package, drone, last]


async def test_a_transaction_timeline_lists_its_hops_in_order(
    bus: Bus, monitor: Monitor, clock: FakeClock
) -> None:
    start = clock.now()
    events = await run_delivery(bus, monitor, clock)
    timeline = monitor.timeline("tx-1")
    assert timeline.state == "Completed"
    assert timeline.transaction.workflow == "Delivery"
    assert timeline.transaction.started_at == start
    assert timeline.transaction.deadline == start + 60
    assert timeline.transaction.duration_ms == 1750
    assert timeline.transaction.outcome_type == "Delivery.Completed"
    hops = timeline.hops
    assert [hop.event_id for hop in hops] == [event.id for event in events]
    assert [hop.type for hop in hops] == [
        "Delivery.Requested",
        "Package.Created",
        "Drone.Assigned",
        "Delivery.Completed",
    ]
    assert [hop.service for hop in hops] == ["ingestion", "package", "drone-scheduler", "delivery"]
    assert [hop.attempt for hop in hops] == [1, 1, 2, 1]
    assert [hop.offset_ms for hop in hops] == [0, 250, 750, 1750]
    assert [hop.since_cause_ms for hop in hops] == [None, 250, 500, 1000]
    assert [hop.outcome for hop in hops] == ["ok"] * 4
    assert [hop.topic for hop in hops] == ["deliveries", "deliveries", "drones", "deliveries"]
    assert hops[3].data == {"ok": True}


async def test_a_failure_event_ends_the_transaction_failed_with_its_reason(
    bus: Bus, monitor: Monitor, clock: FakeClock
) -> None:
    await run_delivery(bus, monitor, clock, outcome="Delivery.Failed")
    timeline = monitor.timeline("tx-1")
    assert timeline.state == "Failed"
    assert timeline.transaction.failure_reason == "no drone can fly"
    assert timeline.transaction.outcome_type == "Delivery.Failed"
    assert timeline.hops[-1].outcome == "failed"
    assert timeline.hops[-1].detail == "no drone can fly"


async def test_the_first_terminal_event_decides_the_state(
    bus: Bus, monitor: Monitor, clock: FakeClock
) -> None:
    events = await run_delivery(bus, monitor, clock)
    failed = service_event("Delivery.Failed", "delivery", correlation_id="tx-1", cause=events[2])
    await bus.publish("deliveries", failed)
    await settle(monitor)
    timeline = monitor.timeline("tx-1")
    assert timeline.state == "Completed"
    assert [hop.outcome for hop in timeline.hops][-1] == "failed"
    assert len(timeline.hops) == 5


async def test_a_duplicate_delivery_is_recorded_once(
    bus: Bus, monitor: Monitor, clock: FakeClock
) -> None:
    requested = service_event("Delivery.Requested", "ingestion", correlation_id="tx-2")
    # The watched topics have no de-duplication window: the bus delivers every copy.
    for _ in range(3):
        await bus.publish("deliveries", requested)
    await settle(monitor)
    done = service_event("Delivery.Completed", "delivery", correlation_id="tx-2", cause=requested)
    await advance(monitor, clock, 2)
    await bus.publish("deliveries", [done, done])
    await settle(monitor)
    timeline = monitor.timeline("tx-2")
    assert [hop.event_id for hop in timeline.hops] == [requested.id, done.id]
    assert timeline.transaction.ended_at == clock.now()


async def test_a_start_event_without_correlation_id_is_its_own_transaction(
    bus: Bus, monitor: Monitor
) -> None:
    requested = service_event("Delivery.Requested", "ingestion", correlation_id=None)
    await bus.publish("deliveries", requested)
    await settle(monitor)
    package = service_event(
        "Package.Created", "package", correlation_id=requested.id, cause=requested
    )
    await bus.publish("deliveries", package)
    await settle(monitor)
    timeline = monitor.timeline(requested.id)
    assert [hop.type for hop in timeline.hops] == ["Delivery.Requested", "Package.Created"]


async def test_events_outside_any_transaction_are_not_attached(bus: Bus, monitor: Monitor) -> None:
    stray = service_event("Drone.Assigned", "drone-scheduler", correlation_id=None)
    await bus.publish("drones", stray)
    await settle(monitor)
    assert monitor.transactions() == []
    with pytest.raises(NotFoundError, match="no transaction with correlation id"):
        monitor.timeline(stray.id)


async def test_hops_that_arrive_before_the_start_event_join_its_transaction(
    bus: Bus, monitor: Monitor, clock: FakeClock
) -> None:
    requested = service_event("Delivery.Requested", "ingestion", correlation_id="tx-3")
    failed = service_event(
        "Delivery.Failed", "delivery", correlation_id="tx-3", data={"reason": "storm"}
    )
    await bus.publish("drones", failed)
    await advance(monitor, clock, 1)
    await bus.publish("deliveries", requested)
    await settle(monitor)
    timeline = monitor.timeline("tx-3")
    assert timeline.state == "Failed"
    assert timeline.transaction.failure_reason == "storm"
    assert [(hop.type, hop.offset_ms, hop.outcome) for hop in timeline.hops] == [
        ("Delivery.Failed", -1000, "failed"),
        ("Delivery.Requested", 0, "ok"),
    ]


async def test_a_dead_lettered_event_is_a_hop_of_its_transaction(
    bus: Bus, monitor: Monitor, clock: FakeClock
) -> None:
    async def refuse(event: CloudEvent) -> None:
        raise Reject("drone 7 is not registered")

    await bus.subscribe("drones", "drone-scheduler", refuse, SubscriptionSpec())
    requested = service_event("Delivery.Requested", "ingestion", correlation_id="tx-4")
    await bus.publish("deliveries", requested)
    await advance(monitor, clock, 0.1)
    assign = service_event(
        "Drone.AssignRequested", "package", correlation_id="tx-4", cause=requested
    )
    await bus.publish("drones", assign)
    await settle(monitor)
    timeline = monitor.timeline("tx-4")
    assert timeline.state == "Running"
    dead = timeline.hops[-1]
    assert dead.type == "Choreograph.DeadLettered"
    assert dead.outcome == "dead-lettered"
    assert dead.causation_id == assign.id
    assert dead.since_cause_ms == 0
    assert dead.attempt == 1
    assert dead.detail is not None
    assert dead.detail.startswith("Rejected at drones/drone-scheduler")
    assert "drone 7 is not registered" in dead.detail


async def test_a_dead_lettered_start_event_without_correlation_id_finds_its_transaction(
    bus: Bus, monitor: Monitor
) -> None:
    async def refuse(event: CloudEvent) -> None:
        raise Reject("malformed request")

    await bus.subscribe("deliveries", "package", refuse)
    requested = service_event("Delivery.Requested", "ingestion", correlation_id=None)
    await bus.publish("deliveries", requested)
    await settle(monitor)
    hops = monitor.timeline(requested.id).hops
    assert [hop.outcome for hop in hops] == ["ok", "dead-lettered"]


async def test_transactions_are_listed_most_recent_first_and_by_state(
    bus: Bus, monitor: Monitor, clock: FakeClock
) -> None:
    for number in range(3):
        event = service_event("Delivery.Requested", "ingestion", correlation_id=f"tx-{number}")
        await bus.publish("deliveries", event)
        await advance(monitor, clock, 1)
    done = service_event("Delivery.Completed", "delivery", correlation_id="tx-1")
    await bus.publish("deliveries", done)
    await settle(monitor)
    assert [t.correlation_id for t in monitor.transactions()] == ["tx-2", "tx-1", "tx-0"]
    assert [t.correlation_id for t in monitor.transactions(limit=1)] == ["tx-2"]
    assert [t.correlation_id for t in monitor.transactions("Completed")] == ["tx-1"]
    assert [t.correlation_id for t in monitor.transactions("Running")] == ["tx-2", "tx-0"]


async def test_the_monitor_subscribes_as_an_observer(bus: Bus, monitor: Monitor) -> None:
    for topic in ("deliveries", "drones", "choreograph-system"):
        record = await bus.get_subscription(topic, f"monitor-{topic}")
        assert record.spec.retry_policy.backoff_seconds[0] == 1.0
        # Its own failures must not look like a failed transaction to compensating services.
        assert record.spec.dead_letter_enabled is False
    system = await bus.get_subscription("choreograph-system", "monitor-choreograph-system")
    assert system.spec.event_filter.included_event_types == ("Choreograph.DeadLettered",)
