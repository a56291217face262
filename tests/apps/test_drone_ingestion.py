"""Drone Delivery end to end on the embedded bus: the happy path, the Ingestion API (idempotent
requests, validation, notifications) and durability on SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from drone_helpers import Harness, HarnessFactory, delivery_body, parse_server_sent

from choreograph import Bus
from choreograph.clock import format_timestamp
from drone_delivery.faults import Faults
from drone_delivery.settings import Settings
from drone_delivery.system import DroneDeliverySystem


def file_names(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


HAPPY_PATH = ["DeliveryRequested", "PackageCreated", "DroneAssigned", "DeliveryScheduled"]


async def test_happy_path_schedules_the_delivery_with_a_drone_and_eta(harness: Harness) -> None:
    start = harness.clock.now()
    response = await harness.request("d-1")
    assert response.status_code == 202
    assert response.headers["location"] == "/deliveries/d-1"
    assert response.json() == {"deliveryId": "d-1", "status": "Requested"}

    await harness.settle()

    delivery = await harness.delivery("d-1")
    assert delivery["status"] == "Scheduled"
    assert delivery["droneId"] == "drone-001"
    assert delivery["eta"] == format_timestamp(start + 30)
    assert delivery["failureReason"] is None
    assert [entry["type"] for entry in delivery["history"]] == HAPPY_PATH
    assert [entry["status"] for entry in delivery["history"]] == [
        "Requested",
        "PackageCreated",
        "DroneAssigned",
        "Scheduled",
    ]
    assert delivery["packageInfo"] == {"packageId": "pkg-d-1", "size": "small", "weight": 2.5}
    assert len(harness.packages_of("d-1")) == 1
    assert harness.drones_held_by("d-1") == ["drone-001"]
    schedule = harness.schedule("d-1")
    assert schedule is not None
    assert schedule["state"] == "scheduled"
    assert schedule["eta"] == delivery["eta"]

    trace = (await harness.client.get("/transactions/d-1")).json()
    assert trace["state"] == "Completed"
    assert trace["outcomeType"] == "DeliveryScheduled"


async def test_every_event_carries_the_delivery_as_correlation_and_subject(
    harness: Harness,
) -> None:
    await harness.spy("deliveries", "packages", "drones")
    await harness.request("d-1")
    await harness.settle()

    events = [event for spy in harness.spies.values() for event in spy.events]
    assert sorted(event.type for event in events) == sorted(HAPPY_PATH)
    for event in events:
        assert event.correlationid == "d-1"
        assert event.subject == "/deliveries/d-1"
        assert event.data["deliveryId"] == "d-1"
        assert event.source.startswith("/services/")
    requested = harness.spies["deliveries"].of_type("DeliveryRequested")[0]
    assert requested.id == "d-1:requested"


async def test_expedited_delivery_flies_in_half_the_time(harness: Harness) -> None:
    start = harness.clock.now()
    await harness.request("d-1", expedited=True)
    await harness.settle()

    assert (await harness.delivery("d-1"))["eta"] == format_timestamp(start + 15)


async def test_a_pickup_time_in_the_future_delays_the_eta(harness: Harness) -> None:
    pickup = harness.clock.now() + 3600
    await harness.request("d-1", pickupTime=format_timestamp(pickup))
    await harness.settle()

    delivery = await harness.delivery("d-1")
    assert delivery["eta"] == format_timestamp(pickup + 30)
    assert delivery["pickupTime"] == format_timestamp(pickup)


async def test_notification_stream_sends_each_event_live_and_ends_when_scheduled(
    harness: Harness,
) -> None:
    await harness.request("d-1")
    stream = asyncio.create_task(harness.client.get("/deliveries/d-1/events"))
    await harness.settle()
    async with asyncio.timeout(10):
        response = await stream

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_server_sent(response.text)
    assert [event["event"] for event in events] == HAPPY_PATH
    assert len({event["id"] for event in events}) == 4
    assert events[-1]["data"]["status"] == "Scheduled"
    assert events[-1]["data"]["droneId"] == "drone-001"
    assert all(event["data"]["deliveryId"] == "d-1" for event in events)


async def test_notification_stream_of_a_settled_delivery_replays_its_history(
    harness: Harness,
) -> None:
    await harness.request("d-1")
    await harness.settle()

    response = await harness.client.get("/deliveries/d-1/events")

    assert [event["event"] for event in parse_server_sent(response.text)] == HAPPY_PATH


async def test_a_repeated_request_with_the_same_delivery_id_starts_one_transaction(
    harness: Harness,
) -> None:
    await harness.spy("deliveries")
    first = await harness.request("d-1")
    second = await harness.request("d-1")  # before anything was handled
    await harness.settle()
    third = await harness.request("d-1")  # after
    await harness.settle()

    assert [r.status_code for r in (first, second, third)] == [202, 202, 202]
    assert third.json() == {"deliveryId": "d-1", "status": "Scheduled"}
    assert len(harness.spies["deliveries"].of_type("DeliveryRequested")) == 1
    assert len(harness.packages_of("d-1")) == 1
    assert await harness.history("d-1") == HAPPY_PATH


async def test_the_same_delivery_id_with_another_body_is_a_conflict(harness: Harness) -> None:
    await harness.request("d-1")
    response = await harness.request("d-1", ownerId="someone-else")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "Conflict"


async def test_a_request_without_delivery_id_gets_one(harness: Harness) -> None:
    response = await harness.request(None)
    await harness.settle()

    delivery_id = response.json()["deliveryId"]
    assert response.headers["location"] == f"/deliveries/{delivery_id}"
    assert (await harness.delivery(delivery_id))["status"] == "Scheduled"


def _without(field: str) -> dict[str, Any]:
    body = delivery_body("d-1")
    if field.startswith("packageInfo."):
        del body["packageInfo"][field.split(".", 1)[1]]
    else:
        del body[field]
    return body


def _with(field: str, value: Any) -> dict[str, Any]:
    body = delivery_body("d-1")
    if field.startswith("packageInfo."):
        body["packageInfo"][field.split(".", 1)[1]] = value
    else:
        body[field] = value
    return body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_without("ownerId"), "ownerId is required"),
        (_with("ownerId", 42), "ownerId must be a non-empty string"),
        (_with("ownerId", "  "), "ownerId must be a non-empty string"),
        (_without("pickupLocation"), "pickupLocation is required"),
        (_with("dropoffLocation", ""), "dropoffLocation must be a non-empty string"),
        (_with("pickupTime", "tomorrow"), "pickupTime must be an RFC 3339 timestamp"),
        (_with("pickupTime", "2026-01-01T10:00:00"), "pickupTime must be an RFC 3339 timestamp"),
        (_with("expedited", "yes"), "expedited must be true or false"),
        (_without("packageInfo"), "packageInfo is required"),
        (_with("packageInfo", [1]), "packageInfo must be an object"),
        (_without("packageInfo.packageId"), "packageInfo.packageId is required"),
        (_with("packageInfo.size", 3), "packageInfo.size must be a non-empty string"),
        (_without("packageInfo.weight"), "packageInfo.weight must be a positive number"),
        (_with("packageInfo.weight", -1), "packageInfo.weight must be a positive number"),
        (_with("packageInfo.weight", 0), "packageInfo.weight must be a positive number"),
        (_with("packageInfo.weight", "heavy"), "packageInfo.weight must be a positive number"),
        (_with("packageInfo.weight", True), "packageInfo.weight must be a positive number"),
        (_with("packageInfo.tag", 7), "packageInfo.tag must be a non-empty string"),
        (_with("packageInfo.colour", "red"), "packageInfo.colour is not a known field"),
        (_with("deliveryId", "no spaces"), "deliveryId must be 1-64 letters"),
        (_with("deliveryId", 12), "deliveryId must be 1-64 letters"),
        (_with("priority", 1), "priority is not a known field"),
    ],
)
async def test_an_invalid_request_is_refused_naming_the_field_and_publishes_nothing(
    harness: Harness, body: dict[str, Any], message: str
) -> None:
    await harness.spy("deliveries")
    response = await harness.client.post("/deliveries", json=body)
    await harness.settle()

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "InvalidRequest"
    assert error["message"].startswith(message), error["message"]
    assert harness.spies["deliveries"].events == []
    assert harness.items("ingestion", "deliveries") == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the request body is empty"),
        (b"{not json", "the request body is not valid JSON"),
        (b"[1, 2]", "the request body must be a JSON object"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_refused(
    harness: Harness, content: bytes, message: str
) -> None:
    response = await harness.client.post(
        "/deliveries", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)


async def test_a_body_over_the_size_limit_is_refused(harness: Harness) -> None:
    body = delivery_body("d-1", ownerId="x" * 70_000)
    response = await harness.client.post("/deliveries", json=body)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PayloadTooLarge"


async def test_unknown_deliveries_are_not_found(harness: Harness) -> None:
    for method, path in [
        ("GET", "/deliveries/nope"),
        ("GET", "/deliveries/nope/events"),
        ("DELETE", "/deliveries/nope"),
    ]:
        response = await harness.client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "NotFound"
    response = await harness.client.patch(
        "/deliveries/nope", json={"pickupTime": "2026-01-01T00:00:00Z"}
    )
    assert response.status_code == 404


async def test_health_and_unknown_routes_answer_json(harness: Harness) -> None:
    health = await harness.client.get("/healthz")
    missing = await harness.client.get("/nothing-here")

    assert health.json()["status"] == "ok"
    assert health.json()["services"] == ["delivery", "ingestion", "package", "scheduler"]
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NotFound"


async def test_ingestion_faults_answer_503_and_publish_nothing(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(Settings(faults=Faults.parse("ingestion:error:1")))
    await harness.spy("deliveries")
    response = await harness.request("d-1")
    await harness.settle()

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert harness.spies["deliveries"].events == []


async def test_the_system_on_sqlite_keeps_every_store_across_a_restart(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    harness = await make_harness(bus_url=f"sqlite:///{tmp_path}/bus.db", data_dir=tmp_path)
    await harness.request("d-1")
    await harness.settle()
    assert (await harness.delivery("d-1"))["status"] == "Scheduled"
    names = file_names(tmp_path)
    assert {"bus.db", "ingestion.db", "package.db", "scheduler.db", "delivery.db"} <= names
    assert "monitor.db" in names
    await harness.system.__aexit__(None, None, None)
    await harness.bus.close()

    async with contextlib.AsyncExitStack() as stack:
        bus = await stack.enter_async_context(
            Bus(f"sqlite:///{tmp_path}/bus.db", clock=harness.clock, retry_jitter=0)
        )
        system = await stack.enter_async_context(
            DroneDeliverySystem(
                bus,
                data_dir=tmp_path,
                settings=Settings(fleet_size=60),
                clock=harness.clock,
                rng=random.Random(1),
            )
        )
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=system.app), base_url="http://t")
        )
        again = Harness(bus=bus, clock=harness.clock, system=system, client=client)
        assert (await again.delivery("d-1"))["status"] == "Scheduled"
        assert len(again.items("scheduler", "fleet")) == 60  # the fleet grew; nothing reset
        assert again.drones_held_by("d-1") == ["drone-001"]
        repeated = await again.request("d-1")
        await again.settle()
        assert repeated.json()["status"] == "Scheduled"
        assert await again.history("d-1") == HAPPY_PATH
        assert (await again.client.get("/transactions/d-1")).json()["state"] == "Completed"


async def test_notification_streams_end_when_the_system_stops(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(Settings(faults=Faults.parse("scheduler:error:1")))
    await harness.request("d-1")
    stream = asyncio.create_task(harness.client.get("/deliveries/d-1/events"))
    await harness.settle()
    assert not stream.done()

    await harness.system.__aexit__(None, None, None)

    async with asyncio.timeout(10):
        events = parse_server_sent((await stream).text)
    assert [event["event"] for event in events] == ["DeliveryRequested", "PackageCreated"]
