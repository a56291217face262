"""Every failure path ends compensated, with the client told: no package active, no drone held,
nothing scheduled, and the delivery ``Failed`` or ``Cancelled`` with a reason."""

from __future__ import annotations

import asyncio

from drone_helpers import Harness, HarnessFactory, ScriptedRandom, parse_server_sent

from choreograph import RetryPolicy
from choreograph.clock import format_timestamp
from drone_delivery.faults import Faults
from drone_delivery.settings import Settings

LONG_RETRIES = RetryPolicy(backoff_seconds=(60.0,), max_delivery_attempts=30)
"""A policy under which a failing step is still being retried when the monitor's deadline passes."""


async def test_an_overweight_package_is_rejected_and_the_delivery_fails(harness: Harness) -> None:
    await harness.request("d-1", packageInfo={"weight": 30})
    await harness.settle()

    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Failed"
    assert delivery["failureReason"] == "package pkg-d-1: weight 30 kg is over the 25 kg limit"
    assert await harness.history("d-1") == ["DeliveryRequested", "PackageRejected"]
    assert harness.packages_of("d-1") == []
    harness.assert_nothing_active("d-1")
    trace = (await harness.client.get("/transactions/d-1")).json()
    assert trace["state"] == "Failed"
    assert trace["outcomeType"] == "PackageRejected"


async def test_a_package_of_unknown_size_is_rejected(harness: Harness) -> None:
    await harness.request("d-1", packageInfo={"size": "huge"})
    await harness.settle()

    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Failed"
    assert "size 'huge' is not one of small, medium, large" in delivery["failureReason"]
    harness.assert_nothing_active("d-1")


async def test_no_drone_strong_enough_retries_on_the_schedule_then_fails_compensated(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(Settings(fleet_size=1))  # drone-001 carries 5 kg
    start = harness.clock.now()
    await harness.request("d-1", packageInfo={"weight": 10})
    await harness.run_for(14.9)  # attempts at 0, 1, 3, 7; the fifth comes at 15 s

    assert (await harness.delivery("d-1"))["status"] == "PackageCreated"
    assert len(harness.active_packages_of("d-1")) == 1

    await harness.run_for(0.1)

    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Failed"
    assert delivery["failureReason"] == (
        "assigning a drone failed after 5 attempts: "
        "no drone can carry 10 kg (the largest carries 5 kg)"
    )
    dead = await harness.bus.dead_letters("packages", "scheduler-assign-drone")
    assert [(record.delivery_attempts, record.dead_letter_time) for record in dead] == [
        (5, start + 15)
    ]
    assert await harness.history("d-1") == [
        "DeliveryRequested",
        "PackageCreated",
        "DroneAssignmentFailed",
        "PackageCancelled",
    ]
    harness.assert_nothing_active("d-1")
    assert harness.packages_of("d-1")[0]["status"] == "cancelled"
    assert (await harness.client.get("/transactions/d-1")).json()["state"] == "Failed"


async def test_no_free_drone_fails_the_second_delivery_and_keeps_the_first(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(Settings(fleet_size=1))
    await harness.request("d-1")
    await harness.settle()
    await harness.request("d-2")
    await harness.run_for(20)

    first, second = await harness.delivery("d-1"), await harness.delivery("d-2")
    assert first["status"] == "Scheduled"
    assert harness.drones_held_by("d-1") == ["drone-001"]
    assert second["status"] == "Failed"
    assert "no free drone can carry 2.5 kg" in second["failureReason"]
    harness.assert_nothing_active("d-2")


async def test_a_drone_is_free_again_once_released_or_back_from_its_flight(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(Settings(fleet_size=1))
    await harness.request("d-1")
    await harness.settle()
    await harness.client.delete("/deliveries/d-1")
    await harness.settle()
    await harness.request("d-2")  # gets the drone d-1 released
    await harness.settle()
    assert (await harness.delivery("d-2"))["droneId"] == "drone-001"

    await harness.run_for(30)  # d-2's flight is over
    await harness.request("d-3")
    await harness.settle()
    assert (await harness.delivery("d-3"))["droneId"] == "drone-001"
    assert harness.drones_held_by("d-3") == ["drone-001"]


async def test_a_failing_delivery_service_releases_the_drone_and_cancels_the_package(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(Settings(faults=Faults.parse("delivery:error:1.0")))
    await harness.request("d-1")
    await harness.run_for(14)
    assert (await harness.delivery("d-1"))["status"] == "DroneAssigned"
    assert harness.drones_held_by("d-1") == ["drone-001"]

    await harness.run_for(1)

    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Failed"
    assert delivery["failureReason"] == (
        "scheduling the delivery failed after 5 attempts: "
        "InjectedFault: injected fault: delivery.schedule-delivery failed"
    )
    history = await harness.history("d-1")
    assert history[:4] == [
        "DeliveryRequested",
        "PackageCreated",
        "DroneAssigned",
        "DeliverySchedulingFailed",
    ]
    assert sorted(history[4:]) == ["DroneReleased", "PackageCancelled"]
    harness.assert_nothing_active("d-1")
    assert harness.assignment("d-1")["state"] == "released"  # type: ignore[index]


async def test_a_rejecting_delivery_service_fails_at_once(make_harness: HarnessFactory) -> None:
    harness = await make_harness(Settings(faults=Faults.parse("delivery:reject:1")))
    await harness.request("d-1")
    await harness.settle()

    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Failed"
    assert delivery["failureReason"] == (
        "scheduling the delivery failed once: injected fault: delivery.schedule-delivery "
        "rejected the event"
    )
    harness.assert_nothing_active("d-1")


async def test_a_failing_package_service_reports_the_package_rejected(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(Settings(faults=Faults.parse("package:error:1")))
    await harness.request("d-1")
    await harness.run_for(15)

    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Failed"
    assert delivery["failureReason"].startswith("creating the package failed after 5 attempts")
    harness.assert_nothing_active("d-1")
    assert harness.packages_of("d-1") == []


async def test_the_monitor_times_out_a_stalled_delivery_and_everything_is_compensated(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(
        Settings(faults=Faults.parse("scheduler:error:1"), retry_policy=LONG_RETRIES)
    )
    await harness.request("d-1")
    stream = asyncio.create_task(harness.client.get("/deliveries/d-1/events"))
    await harness.run_for(44.9)
    assert (await harness.delivery("d-1"))["status"] == "PackageCreated"

    await harness.run_for(0.1)  # the 45 s deadline

    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Failed"
    assert delivery["failureReason"] == "timed out: no outcome within 45 s"
    assert await harness.history("d-1") == [
        "DeliveryRequested",
        "PackageCreated",
        "DroneDeliveryTimedOut",
        "PackageCancelled",
    ]
    harness.assert_nothing_active("d-1")
    assert harness.assignment("d-1")["state"] == "cancelled"  # type: ignore[index]
    assert harness.schedule("d-1")["state"] == "cancelled"  # type: ignore[index]
    trace = (await harness.client.get("/transactions/d-1")).json()
    assert trace["state"] == "TimedOut"
    async with asyncio.timeout(10):
        events = parse_server_sent((await stream).text)
    assert events[-1]["event"] == "DroneDeliveryTimedOut"
    assert events[-1]["data"]["detail"] == "timed out: no outcome within 45 s"

    await harness.run_for(300)  # the failing step keeps being retried, then dead-lettered
    assert (await harness.delivery("d-1"))["failureReason"] == "timed out: no outcome within 45 s"
    harness.assert_nothing_active("d-1")


async def test_a_late_success_after_the_timeout_assigns_no_drone(
    make_harness: HarnessFactory,
) -> None:
    # The scheduler fails its first attempt (0.0 < 0.5), then succeeds (0.9): at 60 s, after
    # the monitor timed the delivery out at 45 s and every service compensated.
    harness = await make_harness(
        Settings(faults=Faults.parse("scheduler:error:0.5"), retry_policy=LONG_RETRIES),
        rng=ScriptedRandom([0.0, 0.9]),
    )
    await harness.request("d-1")
    await harness.run_for(61)

    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Failed"
    assert harness.drones_held_by("d-1") == []
    assert "DroneAssigned" not in await harness.history("d-1")
    harness.assert_nothing_active("d-1")


async def test_default_settings_end_an_unrecoverable_delivery_within_60_seconds(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(Settings(faults=Faults.parse("scheduler:error:1")))
    await harness.request("d-1")
    await harness.run_for(60)

    assert (await harness.delivery("d-1"))["status"] == "Failed"
    harness.assert_nothing_active("d-1")


async def test_cancelling_a_scheduled_delivery_undoes_every_step(harness: Harness) -> None:
    await harness.request("d-1")
    await harness.settle()

    response = await harness.client.delete("/deliveries/d-1", params={"reason": "changed my mind"})
    await harness.settle()

    assert response.status_code == 202
    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Cancelled"
    assert delivery["failureReason"] == "changed my mind"
    history = await harness.history("d-1")
    assert history[:5] == [
        "DeliveryRequested",
        "PackageCreated",
        "DroneAssigned",
        "DeliveryScheduled",
        "DeliveryCancelled",
    ]
    assert sorted(history[5:]) == ["DroneReleased", "PackageCancelled", "ScheduleCancelled"]
    harness.assert_nothing_active("d-1")

    again = await harness.client.delete("/deliveries/d-1")
    assert again.status_code == 202
    assert again.json()["status"] == "Cancelled"


async def test_cancelling_before_any_step_ran_leaves_nothing_behind(harness: Harness) -> None:
    await harness.request("d-1")
    response = await harness.client.delete("/deliveries/d-1")  # in the same instant
    await harness.settle()

    assert response.status_code == 202
    assert (await harness.delivery("d-1"))["status"] == "Cancelled"
    harness.assert_nothing_active("d-1")
    assert (await harness.client.get("/transactions/d-1")).json()["state"] == "Failed"


async def test_cancelling_while_the_delivery_step_is_failing_releases_the_drone(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(
        Settings(faults=Faults.parse("delivery:error:1"), retry_policy=LONG_RETRIES)
    )
    await harness.request("d-1")
    await harness.settle()
    assert harness.drones_held_by("d-1") == ["drone-001"]

    await harness.client.delete("/deliveries/d-1")
    await harness.run_for(120)

    assert (await harness.delivery("d-1"))["status"] == "Cancelled"
    harness.assert_nothing_active("d-1")
    assert harness.schedule("d-1")["state"] == "cancelled"  # type: ignore[index]


async def test_a_failed_delivery_cannot_be_cancelled_or_rescheduled(harness: Harness) -> None:
    await harness.request("d-1", packageInfo={"weight": 99})
    await harness.settle()

    cancel = await harness.client.delete("/deliveries/d-1")
    reschedule = await harness.client.patch(
        "/deliveries/d-1", json={"pickupTime": "2026-01-02T00:00:00Z"}
    )

    assert cancel.status_code == 409
    assert reschedule.status_code == 409
    assert reschedule.json()["error"]["message"] == (
        "delivery d-1 is Failed; it cannot be rescheduled"
    )


async def test_rescheduling_moves_the_flight_of_the_same_drone(harness: Harness) -> None:
    await harness.request("d-1")
    await harness.settle()
    pickup = harness.clock.now() + 600

    response = await harness.client.patch(
        "/deliveries/d-1", json={"pickupTime": format_timestamp(pickup)}
    )
    await harness.settle()

    assert response.status_code == 202
    assert response.json()["revision"] == 1
    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Scheduled"
    assert delivery["droneId"] == "drone-001"
    assert delivery["pickupTime"] == format_timestamp(pickup)
    assert delivery["eta"] == format_timestamp(pickup + 30)
    assert harness.items("scheduler", "fleet")["drone-001"]["busyUntil"] == pickup + 30
    assert harness.schedule("d-1")["eta"] == delivery["eta"]  # type: ignore[index]
    assert (await harness.history("d-1"))[4:] == [
        "DeliveryRescheduled",
        "DroneAssigned",
        "DeliveryScheduled",
    ]


async def test_a_reschedule_before_the_drone_is_assigned_is_used_for_the_assignment(
    harness: Harness,
) -> None:
    pickup = harness.clock.now() + 900
    await harness.request("d-1")
    await harness.client.patch("/deliveries/d-1", json={"pickupTime": format_timestamp(pickup)})
    await harness.settle()

    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Scheduled"
    assert delivery["eta"] == format_timestamp(pickup + 30)
    assert len(harness.drones_held_by("d-1")) == 1


async def test_an_invalid_reschedule_is_refused(harness: Harness) -> None:
    await harness.request("d-1")
    for body, message in [
        ({}, "pickupTime is required"),
        ({"pickupTime": "soon"}, "pickupTime must be an RFC 3339 timestamp"),
        ({"pickupTime": "2026-01-01T00:00:00Z", "eta": 1}, "eta is not a known field"),
    ]:
        response = await harness.client.patch("/deliveries/d-1", json=body)
        assert response.status_code == 400
        assert response.json()["error"]["message"].startswith(message)


async def test_a_reschedule_that_finds_no_drone_fails_the_delivery_compensated(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(Settings(fleet_size=1))
    await harness.request("d-1")
    await harness.run_for(30)  # d-1's drone is back from the flight it was booked for...
    await harness.request("d-2")  # ...and taken by d-2
    await harness.settle()
    assert harness.drones_held_by("d-2") == ["drone-001"]

    later = format_timestamp(harness.clock.now() + 600)
    await harness.client.patch("/deliveries/d-1", json={"pickupTime": later})
    await harness.run_for(15)

    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Failed"
    assert delivery["failureReason"].startswith("assigning a drone failed after 5 attempts")
    assert "ScheduleCancelled" in await harness.history("d-1")
    harness.assert_nothing_active("d-1")
    assert (await harness.delivery("d-2"))["status"] == "Scheduled"
    assert harness.drones_held_by("d-2") == ["drone-001"]
