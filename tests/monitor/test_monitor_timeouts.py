"""Stalled transactions: the timeout fires at the deadline, once, and survives a restart."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from monitor_helpers import (
    DEADLINE,
    TIMEOUT_TOPIC,
    Inbox,
    MonitorFactory,
    advance,
    create_topics,
    delivery_workflow,
    service_event,
    settle,
)

from choreograph.bus import Bus
from choreograph.errors import TopicNotFoundError
from choreograph.events import CloudEvent
from choreograph.monitor import Monitor
from choreograph.testing import FakeClock
from polling import until


async def start_transaction(
    bus: Bus, monitor: Monitor, clock: FakeClock, correlation_id: str = "tx-1"
) -> tuple[CloudEvent, CloudEvent]:
    """A delivery that starts and takes one more hop 2 s later, then stalls."""
    requested = service_event("Delivery.Requested", "ingestion", correlation_id=correlation_id)
    await bus.publish("deliveries", requested)
    await advance(monitor, clock, 2)
    package = service_event(
        "Package.Created", "package", correlation_id=correlation_id, cause=requested
    )
    await bus.publish("deliveries", package)
    await settle(monitor)
    return requested, package


async def test_the_timeout_fires_at_the_deadline_and_only_once(
    bus: Bus, monitor: Monitor, clock: FakeClock, compensator: Inbox
) -> None:
    start = clock.now()
    _, package = await start_transaction(bus, monitor, clock)
    await advance(monitor, clock, start + DEADLINE - 1 - clock.now())
    assert compensator.events == []
    assert monitor.timeline("tx-1").state == "Running"
    await advance(monitor, clock, 1)
    assert len(compensator.events) == 1
    timeout = compensator.events[0]
    assert timeout.id == "tx-1:DeliveryTimedOut"
    assert timeout.type == "DeliveryTimedOut"
    assert timeout.source == "/services/monitor"
    assert timeout.subject == "tx-1"
    assert timeout.correlationid == "tx-1"
    assert timeout.causationid == package.id
    assert timeout.time == "2026-01-01T00:01:00.000000Z"
    assert timeout.data == {
        "correlationId": "tx-1",
        "workflow": "Delivery",
        "startedAt": "2026-01-01T00:00:00.000000Z",
        "deadline": "2026-01-01T00:01:00.000000Z",
        "lastEventType": "Package.Created",
        "lastEventSource": "/services/package",
    }
    await advance(monitor, clock, 3600)
    assert len(compensator.events) == 1
    timeline = monitor.timeline("tx-1")
    assert timeline.state == "TimedOut"
    assert timeline.transaction.ended_at == start + DEADLINE
    assert timeline.transaction.failure_reason == "no success or failure event within 60 s"
    last = timeline.hops[-1]
    assert (last.type, last.outcome, last.service, last.offset_ms) == (
        "DeliveryTimedOut",
        "timed-out",
        "monitor",
        60_000,
    )
    assert last.since_cause_ms == 58_000


async def test_a_completed_transaction_never_times_out(
    bus: Bus, monitor: Monitor, clock: FakeClock, compensator: Inbox
) -> None:
    _, package = await start_transaction(bus, monitor, clock)
    done = service_event("Delivery.Completed", "delivery", correlation_id="tx-1", cause=package)
    await bus.publish("deliveries", done)
    await advance(monitor, clock, 10 * DEADLINE)
    assert compensator.events == []
    assert monitor.timeline("tx-1").state == "Completed"
    assert clock.next_deadline() is None


async def test_a_late_outcome_is_recorded_but_the_transaction_stays_timed_out(
    bus: Bus, monitor: Monitor, clock: FakeClock, compensator: Inbox
) -> None:
    _, package = await start_transaction(bus, monitor, clock)
    await advance(monitor, clock, DEADLINE)
    done = service_event("Delivery.Completed", "delivery", correlation_id="tx-1", cause=package)
    await bus.publish("deliveries", done)
    await settle(monitor)
    timeline = monitor.timeline("tx-1")
    assert timeline.state == "TimedOut"
    assert timeline.transaction.late_outcome == "Delivery.Completed"
    assert [hop.type for hop in timeline.hops][-2:] == ["DeliveryTimedOut", "Delivery.Completed"]
    assert timeline.to_dict()["lateOutcome"] == "Delivery.Completed"


async def test_a_watched_timeout_topic_shows_the_timeout_once(
    bus: Bus, make_monitor: MonitorFactory, clock: FakeClock
) -> None:
    workflow = delivery_workflow(timeout_topic="deliveries")
    async with make_monitor(workflow) as monitor:
        await start_transaction(bus, monitor, clock)
        await advance(monitor, clock, DEADLINE)
        types = [hop.type for hop in monitor.timeline("tx-1").hops]
    assert types.count("DeliveryTimedOut") == 1


async def test_a_restarted_monitor_fires_an_overdue_timeout_once(
    bus: Bus, make_monitor: MonitorFactory, clock: FakeClock, compensator: Inbox
) -> None:
    async with make_monitor() as monitor:
        await start_transaction(bus, monitor, clock)
    # While the monitor is down its subscriptions keep the events for it.
    late_hop = service_event("Drone.Assigned", "drone-scheduler", correlation_id="tx-1")
    await bus.publish("drones", late_hop)
    clock.advance(DEADLINE + 30)
    await bus.idle()
    assert compensator.events == []
    async with make_monitor() as monitor:
        await settle(monitor)
        assert [event.id for event in compensator.events] == ["tx-1:DeliveryTimedOut"]
        assert compensator.events[0].causationid == late_hop.id
        timeline = monitor.timeline("tx-1")
        assert timeline.state == "TimedOut"
        assert timeline.transaction.ended_at == clock.now()
    async with make_monitor() as monitor:
        await advance(monitor, clock, DEADLINE)
    assert len(compensator.events) == 1


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_restarted_monitor_records_its_backlog_before_timing_out(
    backend: str, tmp_path: Path, clock: FakeClock, store_path: Path
) -> None:
    """The transaction completed while the monitor was down: no false timeout on restart."""
    url = "memory://" if backend == "memory" else "sqlite:///" + str(tmp_path / "bus.db")
    compensator = Inbox()
    async with Bus(url, clock=clock, retry_jitter=0.0) as bus:
        await create_topics(bus)
        await bus.subscribe(TIMEOUT_TOPIC, "compensator", compensator)
        async with Monitor(bus, [delivery_workflow()], store_path=store_path) as monitor:
            _, package = await start_transaction(bus, monitor, clock)
        # A backlog of several delivery batches, the completion last.
        noise = [service_event("Noise.Made", "noise", correlation_id="tx-9") for _ in range(1500)]
        await bus.publish("deliveries", noise)
        done = service_event("Delivery.Completed", "delivery", correlation_id="tx-1", cause=package)
        await bus.publish("deliveries", done)
        clock.advance(DEADLINE * 2)
        await bus.idle()
        async with Monitor(bus, [delivery_workflow()], store_path=store_path) as monitor:
            await advance(monitor, clock, DEADLINE)
            timeline = monitor.timeline("tx-1")
    assert compensator.events == []
    assert timeline.state == "Completed"
    assert timeline.hops[-1].event_id == done.id


async def test_a_restarted_monitor_rearms_a_pending_deadline(
    bus: Bus, make_monitor: MonitorFactory, clock: FakeClock, compensator: Inbox
) -> None:
    start = clock.now()
    async with make_monitor() as monitor:
        await start_transaction(bus, monitor, clock)
    clock.advance(30)
    async with make_monitor() as monitor:
        await advance(monitor, clock, start + DEADLINE - clock.now() - 0.5)
        assert compensator.events == []
        await advance(monitor, clock, 0.5)
        assert len(compensator.events) == 1


async def test_on_a_sqlite_bus_a_republished_timeout_is_deduplicated(
    tmp_path: Path, clock: FakeClock, store_path: Path
) -> None:
    """A crash between publishing the timeout and recording it: the restarted monitor publishes
    the same event id again, and the topic's de-duplication window absorbs it."""
    url = "sqlite:///" + str(tmp_path / "bus.db")
    workflow = delivery_workflow()
    compensator = Inbox()
    async with Bus(url, clock=clock, retry_jitter=0.0) as bus:
        await create_topics(bus)
        await bus.subscribe(TIMEOUT_TOPIC, "compensator", compensator)
        async with Monitor(bus, [workflow], store_path=store_path, clock=clock) as monitor:
            await start_transaction(bus, monitor, clock)
            await advance(monitor, clock, DEADLINE)
    assert [event.id for event in compensator.events] == ["tx-1:DeliveryTimedOut"]
    # Undo the record of the timeout, as if the monitor died right after publishing it.
    with sqlite3.connect(store_path) as connection:
        connection.execute("UPDATE transactions SET state = 'Running', ended_at = NULL")
        connection.execute("DELETE FROM events WHERE type = 'DeliveryTimedOut'")
    connection.close()
    clock.advance(5)
    async with Bus(url, clock=clock, retry_jitter=0.0) as bus:
        await bus.attach(TIMEOUT_TOPIC, "compensator", compensator)
        async with Monitor(bus, [workflow], store_path=store_path, clock=clock) as monitor:
            await settle(monitor)
            timeline = monitor.timeline("tx-1")
    assert [event.id for event in compensator.events] == ["tx-1:DeliveryTimedOut"]
    assert timeline.state == "TimedOut"
    assert [hop.type for hop in timeline.hops].count("DeliveryTimedOut") == 1


async def test_the_monitor_refuses_to_start_when_a_topic_is_missing(
    bus: Bus, make_monitor: MonitorFactory, store_path: Path
) -> None:
    workflow = delivery_workflow(timeout_topic="no-such-topic")
    with pytest.raises(TopicNotFoundError, match=r"'no-such-topic'.*create it before"):
        async with make_monitor(workflow):
            pass
    assert await bus.list_subscriptions("deliveries") == []
    assert not await asyncio.to_thread(store_path.exists)


async def test_a_start_recorded_after_its_delivery_timed_out_still_arms_the_timeout(
    bus: Bus,
    monitor: Monitor,
    clock: FakeClock,
    compensator: Inbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recording runs on the monitor's own thread: when it outlasts the delivery's timeout, the
    attempt is cancelled (and retried), but the transaction it recorded still gets its timer."""
    recording, release = threading.Event(), threading.Event()
    record = monitor.store.record

    def slow_record(*args: Any) -> Any:
        recording.set()
        release.wait(timeout=30)
        return record(*args)

    monkeypatch.setattr(monitor.store, "record", slow_record)
    start = clock.now()
    await bus.publish(
        "deliveries", service_event("Delivery.Requested", "ingestion", correlation_id="tx-1")
    )
    await until(recording.is_set, "the monitor recording the start event")
    clock.advance(31)  # past the observer's 30 s delivery timeout: the attempt is cancelled
    monkeypatch.setattr(monitor.store, "record", record)
    release.set()
    await settle(monitor)  # the retried attempt records a duplicate

    await advance(monitor, clock, start + DEADLINE - clock.now())

    assert [event.id for event in compensator.events] == ["tx-1:DeliveryTimedOut"]
    assert monitor.timeline("tx-1").state == "TimedOut"
