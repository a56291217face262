"""When the events a handler emitted cannot be stored, the attempt failed: the delivery is retried
on its subscription's policy at once (or dead-lettered once its attempts are spent), not left
leased until its lease runs out.

The failure is the real SQLite backend's: a trigger, added through a connection of the test's
own, refuses the rows of the emitted event's deliveries until the test drops it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from choreograph import Bus, CloudEvent, RetryPolicy, SubscriptionSpec
from choreograph.bus.endpoint import Emit
from choreograph.testing import FakeClock

REFUSAL = "the disk refused"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "bus.db"


@pytest.fixture
def disk(path: Path) -> Iterator[sqlite3.Connection]:
    """A second connection to the bus's file (WAL: it reads what the bus committed)."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    yield connection
    connection.close()


def refuse_shipments(disk: sqlite3.Connection) -> None:
    disk.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON deliveries WHEN NEW.subscription_id = "
        "(SELECT id FROM subscriptions WHERE topic = 'shipments') "
        f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
    )


def order_delivery(disk: sqlite3.Connection) -> tuple[int, int, str, str]:
    """(attempts, leased, last outcome, last error) of the order's delivery row."""
    row = disk.execute(
        "SELECT attempts, leased, last_outcome, last_error FROM deliveries WHERE subscription_id "
        "= (SELECT id FROM subscriptions WHERE topic = 'orders')"
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3]


async def start(bus: Bus, policy: RetryPolicy) -> tuple[list[str], list[str]]:
    """orders -> ship (emits a shipment) -> shipments -> record; the ids each handler saw."""
    shipped: list[str] = []
    recorded: list[str] = []
    await bus.put_topic("orders")
    await bus.put_topic("shipments")

    async def ship(event: CloudEvent) -> Emit:
        shipped.append(event.id)
        return Emit("shipments", CloudEvent(id=f"{event.id}:shipped", type="Shipped", source="/s"))

    async def record(event: CloudEvent) -> None:
        recorded.append(event.id)

    await bus.subscribe("orders", "ship", ship, SubscriptionSpec(retry_policy=policy))
    await bus.subscribe("shipments", "record", record)
    return shipped, recorded


async def test_a_delivery_whose_emitted_events_were_not_stored_is_retried_on_its_policy(
    path: Path, disk: sqlite3.Connection
) -> None:
    clock = FakeClock()
    async with Bus(f"sqlite:///{path}", clock=clock, retry_jitter=0) as bus:
        shipped, recorded = await start(bus, RetryPolicy(backoff_seconds=(5.0,)))
        refuse_shipments(disk)

        await bus.publish("orders", CloudEvent(id="o-1", type="Ordered", source="/s"))
        await bus.idle()

        assert shipped == ["o-1"]
        assert recorded == []
        attempts, leased, outcome, error = order_delivery(disk)
        assert (attempts, leased, outcome) == (1, 0, "GenericError")
        assert "storing the emitted events failed" in error
        assert REFUSAL in error

        disk.execute("DROP TRIGGER refuse")
        clock.advance(5.0)  # the policy's delay, far short of the 30 s delivery timeout's lease
        await bus.idle()

        assert shipped == ["o-1", "o-1"]
        assert recorded == ["o-1:shipped"]
        assert (await bus.counters("orders", "ship"))["queued"] == 0


async def test_a_delivery_out_of_attempts_when_its_events_were_not_stored_is_dead_lettered(
    path: Path, disk: sqlite3.Connection
) -> None:
    clock = FakeClock()
    async with Bus(f"sqlite:///{path}", clock=clock, retry_jitter=0) as bus:
        shipped, recorded = await start(bus, RetryPolicy(max_delivery_attempts=1))
        refuse_shipments(disk)

        await bus.publish("orders", CloudEvent(id="o-1", type="Ordered", source="/s"))
        await bus.idle()

        [letter] = await bus.dead_letters("orders", "ship")
        assert letter.reason == "MaxDeliveryAttemptsExceeded"
        assert letter.delivery_attempts == 1
        assert letter.last_delivery_outcome == "GenericError"
        assert letter.event.id == "o-1"
        assert (shipped, recorded) == (["o-1"], [])
