"""The monitor's HTTP read API, served in-process through httpx.ASGITransport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from monitor_helpers import advance, service_event, settle
from starlette.applications import Starlette

from choreograph.bus import Bus
from choreograph.monitor import Monitor, TraceStore, monitor_routes
from choreograph.testing import FakeClock


@pytest.fixture
async def client(monitor: Monitor) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=monitor_routes(monitor))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://monitor") as client:
        yield client


async def test_get_transaction_answers_its_timeline(
    bus: Bus, monitor: Monitor, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    requested = service_event("Delivery.Requested", "ingestion", correlation_id="tx/1")
    await bus.publish("deliveries", requested)
    await advance(monitor, clock, 1.5)
    done = service_event("Delivery.Completed", "delivery", correlation_id="tx/1", cause=requested)
    await bus.publish("deliveries", done)
    await settle(monitor)
    response = await client.get("/transactions/tx%2F1")
    assert response.status_code == 200
    body = response.json()
    assert body["correlationId"] == "tx/1"
    assert body["state"] == "Completed"
    assert body["workflow"] == "Delivery"
    assert body["durationMs"] == 1500
    assert body["startedAt"] == "2026-01-01T00:00:00.000000Z"
    assert [
        (hop["type"], hop["service"], hop["offsetMs"], hop["sinceCauseMs"], hop["outcome"])
        for hop in body["hops"]
    ] == [
        ("Delivery.Requested", "ingestion", 0, None, "ok"),
        ("Delivery.Completed", "delivery", 1500, 1500, "ok"),
    ]


async def test_an_unknown_transaction_is_404_with_an_event_grid_error(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/transactions/nope")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "NotFound", "message": "no transaction with correlation id 'nope'"}
    }


async def test_transactions_are_listed_by_state_with_a_limit(
    bus: Bus, monitor: Monitor, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    for number in range(3):
        event = service_event("Delivery.Requested", "ingestion", correlation_id=f"tx-{number}")
        await bus.publish("deliveries", event)
        await advance(monitor, clock, 1)
    await advance(monitor, clock, 60)
    response = await client.get("/transactions", params={"state": "TimedOut", "limit": 2})
    assert response.status_code == 200
    listed = response.json()["value"]
    assert [item["correlationId"] for item in listed] == ["tx-2", "tx-1"]
    assert {item["state"] for item in listed} == {"TimedOut"}
    everything = (await client.get("/transactions")).json()["value"]
    assert len(everything) == 3


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("state=Sleeping", "state must be one of Running, Completed, Failed, TimedOut"),
        ("limit=zero", "limit must be an integer"),
        ("limit=0", "limit must be an integer from 1 to 1000"),
        ("limit=5000", "limit must be an integer from 1 to 1000"),
        ("colour=red", "unknown query parameter 'colour'"),
    ],
)
async def test_a_bad_listing_query_is_400(
    client: httpx.AsyncClient, query: str, message: str
) -> None:
    response = await client.get(f"/transactions?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert message in error["message"]


async def test_the_routes_serve_a_read_only_store_while_the_monitor_writes(
    bus: Bus, monitor: Monitor
) -> None:
    await bus.publish("deliveries", service_event("Delivery.Requested", "x", correlation_id="r"))
    await settle(monitor)
    with TraceStore.open_readonly(monitor.store_path) as store:
        app = Starlette(routes=monitor_routes(store))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            assert (await client.get("/transactions/r")).json()["state"] == "Running"
            await bus.publish(
                "deliveries", service_event("Delivery.Completed", "y", correlation_id="r")
            )
            await settle(monitor)
            assert (await client.get("/transactions/r")).json()["state"] == "Completed"
