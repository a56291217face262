"""At-least-once delivery and no ordering: redelivered, duplicated, late and out-of-order events
produce one package, one drone assignment and one schedule per delivery, and nothing survives a
cancellation."""

from __future__ import annotations

from typing import Any

from drone_helpers import Harness, delivery_body

from choreograph import CloudEvent, TopicSpec
from choreograph.clock import format_timestamp

TOPICS = ("deliveries", "packages", "drones")


def copy_of(event: CloudEvent, new_id: str | None = None, **data: Any) -> CloudEvent:
    """The same event (same id unless ``new_id``), its data changed by ``data``."""
    fields = event.to_dict()
    if new_id is not None:
        fields["id"] = new_id
    fields["data"] = {**event.data, **data}
    return CloudEvent.from_dict(fields)


def request_event(delivery_id: str, event_id: str, **changes: Any) -> CloudEvent:
    """A ``DeliveryRequested`` as Ingestion publishes it, with another id."""
    body = delivery_body(delivery_id, **changes)
    data = {"pickupTime": None, "expedited": False, **body}
    return CloudEvent(
        id=event_id,
        type="DeliveryRequested",
        source="/services/ingestion",
        subject=f"/deliveries/{delivery_id}",
        data=data,
        extensions={"correlationid": delivery_id},
    )


async def without_deduplication(harness: Harness) -> None:
    """Topics deliver every publish, as Event Grid does: repeats reach the services."""
    for topic in TOPICS:
        await harness.bus.put_topic(topic, TopicSpec(deduplication_window_seconds=0))


def assert_one_of_each(harness: Harness, delivery_id: str) -> None:
    assert len(harness.packages_of(delivery_id)) == 1
    assert len(harness.active_packages_of(delivery_id)) == 1
    assert len(harness.drones_held_by(delivery_id)) == 1
    held = sum(1 for drone in harness.items("scheduler", "fleet").values() if drone["heldBy"])
    assert held == 1
    assert len(harness.items("scheduler", "assignments")) == 1
    schedules = harness.items("delivery", "schedules")
    assert list(schedules) == [delivery_id]
    assert schedules[delivery_id]["state"] == "scheduled"


async def test_redelivered_events_are_handled_once(harness: Harness) -> None:
    await without_deduplication(harness)
    await harness.spy(*TOPICS)
    await harness.request("d-1")
    await harness.settle()
    originals = [event for topic in TOPICS for event in harness.spies[topic].events]
    drone = harness.drones_held_by("d-1")

    for topic in TOPICS:  # the bus delivers every event of the transaction again, twice
        for event in list(harness.spies[topic].events):
            await harness.bus.publish(topic, event)
            await harness.bus.publish(topic, event)
    await harness.settle()

    assert_one_of_each(harness, "d-1")
    assert harness.drones_held_by("d-1") == drone
    # the services re-emitted the same ids (their inboxes replayed); the tracker kept one each
    assert len(await harness.history("d-1")) == 4
    replayed = [event for topic in TOPICS for event in harness.spies[topic].events]
    assert {event.id for event in replayed} == {event.id for event in originals}


async def test_duplicate_requests_with_new_ids_make_one_package_drone_and_schedule(
    harness: Harness,
) -> None:
    await harness.spy("packages", "drones")
    await harness.request("d-1")
    await harness.settle()
    drone = harness.drones_held_by("d-1")

    for number in range(3):  # the same request, as if published again under new ids
        await harness.bus.publish("deliveries", request_event("d-1", f"copy-{number}"))
    created = harness.spies["packages"].of_type("PackageCreated")[0]
    for number in range(3):  # and the package's creation announced again
        await harness.bus.publish("packages", copy_of(created, f"created-{number}"))
    await harness.settle()

    assert_one_of_each(harness, "d-1")
    assert harness.drones_held_by("d-1") == drone
    assigned = harness.spies["drones"].of_type("DroneAssigned")
    assert {event.data["droneId"] for event in assigned} == set(drone)
    assert (await harness.delivery("d-1"))["status"] == "Scheduled"


async def test_concurrent_duplicates_make_one_of_each(harness: Harness) -> None:
    for number in range(5):  # all published before any is handled
        await harness.bus.publish("deliveries", request_event("d-1", f"copy-{number}"))
    await harness.settle()

    assert_one_of_each(harness, "d-1")


async def test_a_package_id_belongs_to_one_active_delivery(harness: Harness) -> None:
    await harness.request("d-1", packageInfo={"packageId": "shared"})
    await harness.settle()
    await harness.request("d-2", packageInfo={"packageId": "shared"})
    await harness.settle()

    second = await harness.delivery("d-2")
    assert second["status"] == "Failed"
    assert second["failureReason"] == "package shared already belongs to delivery d-1"
    assert harness.active_packages_of("d-1")[0]["packageId"] == "shared"
    harness.assert_nothing_active("d-2")


async def test_a_request_arriving_after_its_cancellation_creates_nothing(
    harness: Harness,
) -> None:
    cancel = CloudEvent(
        id="d-1:cancelled",
        type="DeliveryCancelled",
        source="/services/ingestion",
        subject="/deliveries/d-1",
        data={"deliveryId": "d-1", "reason": "cancelled by the client"},
        extensions={"correlationid": "d-1"},
    )
    await harness.bus.publish("deliveries", cancel)
    await harness.settle()
    await harness.bus.publish("deliveries", request_event("d-1", "d-1:requested"))
    await harness.settle()

    assert harness.packages_of("d-1") == []
    harness.assert_nothing_active("d-1")
    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Cancelled"
    assert "DeliveryRequested" in [entry["type"] for entry in delivery["history"]]


async def test_late_steps_after_a_cancellation_assign_and_schedule_nothing(
    harness: Harness,
) -> None:
    await harness.spy("packages", "drones", "deliveries")
    await harness.request("d-1")
    await harness.settle()
    await harness.client.delete("/deliveries/d-1")
    await harness.settle()
    harness.assert_nothing_active("d-1")

    created = harness.spies["packages"].of_type("PackageCreated")[0]
    assigned = harness.spies["drones"].of_type("DroneAssigned")[0]
    scheduled = harness.spies["deliveries"].of_type("DeliveryScheduled")[0]
    await harness.bus.publish("deliveries", request_event("d-1", "late-request"))
    await harness.bus.publish("packages", copy_of(created, "late-created"))
    await harness.bus.publish("drones", copy_of(assigned, "late-assigned"))
    await harness.bus.publish("deliveries", copy_of(scheduled, "late-scheduled"))
    await harness.settle()

    harness.assert_nothing_active("d-1")
    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Cancelled"
    late = {entry["eventId"] for entry in delivery["history"]}  # recorded, not obeyed
    assert {"late-request", "late-created", "late-assigned", "late-scheduled"} <= late


async def test_a_cancellation_racing_each_step_leaves_nothing_active(harness: Harness) -> None:
    """Cancel at every point of the flow: before the request is handled, after the package,
    after the drone; each delivery's events interleave differently with its cancellation."""
    await harness.request("a")
    await harness.client.delete("/deliveries/a")
    await harness.request("b")
    await harness.request("c")
    await harness.settle()
    await harness.client.delete("/deliveries/b")
    await harness.client.delete("/deliveries/c")
    await harness.request("d")
    await harness.settle()

    for delivery_id in "abc":
        assert (await harness.delivery(delivery_id))["status"] == "Cancelled", delivery_id
        harness.assert_nothing_active(delivery_id)
    assert (await harness.delivery("d"))["status"] == "Scheduled"
    assert len(harness.drones_held_by("d")) == 1


async def test_an_older_reschedule_arriving_late_is_ignored(harness: Harness) -> None:
    await harness.spy("deliveries")
    await harness.request("d-1")
    await harness.settle()
    now = harness.clock.now()
    for minutes in (10, 20):
        await harness.client.patch(
            "/deliveries/d-1", json={"pickupTime": format_timestamp(now + minutes * 60)}
        )
        await harness.settle()
    first = harness.spies["deliveries"].of_type("DeliveryRescheduled")[0]
    await without_deduplication(harness)

    await harness.bus.publish("deliveries", copy_of(first, "first-again"))
    await harness.settle()

    delivery = await harness.delivery("d-1")
    assert delivery["eta"] == format_timestamp(now + 20 * 60 + 30)
    assert harness.schedule("d-1")["revision"] == 2  # type: ignore[index]
    assert_one_of_each(harness, "d-1")
