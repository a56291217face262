"""The management API: topics, keys, subscriptions and dead letters as resources; health, metrics
and the OpenAPI document. In memory, plus one end-to-end run on SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Mount, Route

from choreograph.bus import Bus, SubscriptionRecord, SubscriptionSpec
from choreograph.errors import Reject
from choreograph.events import CloudEvent
from choreograph.gateway import GatewaySettings, create_app
from choreograph.testing import FakeClock

ADMIN_TOKEN = "management-tests-admin-token"
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
BASE = "http://gateway"
WEBHOOK = {
    "destination": {
        "endpointType": "WebHook",
        "properties": {"endpointUrl": "https://hooks.example.com/in?code=secret-42"},
    }
}

Hook = Callable[[SubscriptionRecord], Awaitable[None]]


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    async with Bus("memory://", clock=FakeClock(), retry_jitter=0) as bus:
        yield bus


def make_client(bus: Bus, hook: Hook | None = None) -> httpx.AsyncClient:
    app = create_app(bus, GatewaySettings(admin_token=ADMIN_TOKEN), on_webhook_subscription=hook)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, headers=AUTH)


@pytest.fixture
async def client(bus: Bus) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(bus) as client:
        yield client


def assert_error(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    for fragment in fragments:
        assert fragment in error["message"]
    return error


async def put_topic(client: httpx.AsyncClient, name: str, **properties: Any) -> httpx.Response:
    return await client.put(f"/management/topics/{name}", json={"properties": properties})


# topics ----------------------------------------------------------------------------------------
async def test_a_topic_is_created_read_listed_updated_and_deleted(
    client: httpx.AsyncClient,
) -> None:
    created = await put_topic(client, "orders", inputSchema="EventGridSchema")
    assert created.status_code == 201
    resource = created.json()
    assert resource == {
        "id": "/topics/orders",
        "name": "orders",
        "type": "Microsoft.EventGrid/topics",
        "properties": {
            "inputSchema": "EventGridSchema",
            "deduplicationWindowSeconds": 120.0,
            "endpoint": f"{BASE}/topics/orders/api/events",
            "provisioningState": "Succeeded",
        },
    }
    assert (await client.get("/management/topics/orders")).json() == resource
    listed = (await client.get("/management/topics")).json()["value"]
    assert "orders" in [topic["name"] for topic in listed]
    updated = await put_topic(client, "orders", inputSchema="CloudEventSchemaV1_0")
    assert updated.status_code == 200
    assert updated.json()["properties"]["inputSchema"] == "CloudEventSchemaV1_0"
    deleted = await client.delete("/management/topics/orders")
    assert deleted.status_code == 200
    assert deleted.content == b""
    assert_error(await client.get("/management/topics/orders"), 404, "orders")
    assert_error(await client.delete("/management/topics/orders"), 404)


async def test_a_topic_read_back_can_be_put_again(client: httpx.AsyncClient) -> None:
    resource = (await put_topic(client, "orders", inputSchema="EventGridSchema")).json()
    response = await client.put("/management/topics/orders", json=resource)
    assert response.status_code == 200
    assert response.json() == resource


async def test_an_empty_body_creates_a_topic_with_the_defaults(client: httpx.AsyncClient) -> None:
    response = await client.put("/management/topics/plain")
    assert response.status_code == 201
    assert response.json()["properties"]["inputSchema"] == "CloudEventSchemaV1_0"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"properties": {"inputSchema": "CustomInputSchema"}}, "inputSchema"),
        ({"properties": {"deduplicationWindowSeconds": -1}}, "deduplicationWindowSeconds"),
        ({"properties": {"color": "red"}}, "color"),
        ({"location": "westus"}, "location"),
        ({"name": "else"}, "name"),
        ({"properties": []}, "properties"),
        ([1, 2], "JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
async def test_an_invalid_topic_body_is_400_naming_the_property(
    client: httpx.AsyncClient, body: object, fragment: str
) -> None:
    if isinstance(body, str):
        response = await client.put("/management/topics/orders", content=body)
    else:
        response = await client.put("/management/topics/orders", json=body)
    assert_error(response, 400, fragment)
    assert_error(await client.get("/management/topics/orders"), 404)


async def test_an_invalid_topic_name_is_400_with_the_rule(client: httpx.AsyncClient) -> None:
    assert_error(await client.put("/management/topics/ab"), 400, "3-50 characters")


async def test_the_system_topic_cannot_be_deleted(client: httpx.AsyncClient) -> None:
    assert_error(await client.delete("/management/topics/choreograph-system"), 400, "belongs")


# keys ------------------------------------------------------------------------------------------
async def test_keys_are_listed_and_one_is_regenerated_at_a_time(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    await put_topic(client, "orders")
    before = (await client.post("/management/topics/orders/listKeys")).json()
    record = await bus.get_topic("orders")
    assert before == {"key1": record.key1, "key2": record.key2}
    after = await client.post("/management/topics/orders/regenerateKey", json={"keyName": "key2"})
    assert after.status_code == 200
    assert after.json()["key1"] == before["key1"]
    assert after.json()["key2"] != before["key2"]
    assert after.json()["key2"] == (await bus.get_topic("orders")).key2


@pytest.mark.parametrize("body", [{}, {"keyName": "key3"}, {"keyName": 1}, {"key": "key1"}])
async def test_regenerate_key_needs_a_valid_key_name(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    await put_topic(client, "orders")
    response = await client.post("/management/topics/orders/regenerateKey", json=body)
    assert_error(response, 400, "keyName")


async def test_keys_of_an_unknown_topic_are_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/management/topics/missing/listKeys"), 404)
    assert_error(
        await client.post("/management/topics/missing/regenerateKey", json={"keyName": "key1"}),
        404,
    )


# subscriptions ---------------------------------------------------------------------------------
async def test_a_webhook_subscription_is_created_and_shown_without_its_secret_query(
    client: httpx.AsyncClient,
) -> None:
    await put_topic(client, "orders")
    path = "/management/topics/orders/eventSubscriptions/audit"
    response = await client.put(path, json={"properties": WEBHOOK})
    assert response.status_code == 201
    resource = response.json()
    assert resource["id"] == "/topics/orders/eventSubscriptions/audit"
    assert resource["type"] == "Microsoft.EventGrid/eventSubscriptions"
    properties = resource["properties"]
    assert properties["topic"] == "/topics/orders"
    assert properties["provisioningState"] == "Creating"
    assert properties["destination"] == {
        "endpointType": "WebHook",
        "properties": {
            "endpointBaseUrl": "https://hooks.example.com/in",
            "maxEventsPerBatch": 1,
            "preferredBatchSizeInKilobytes": 64,
        },
    }
    assert properties["retryPolicy"]["maxDeliveryAttempts"] == 30
    assert "secret-42" not in response.text
    full = await client.post(path + "/getFullUrl")
    assert full.json() == {"endpointUrl": "https://hooks.example.com/in?code=secret-42"}
    assert (await client.get(path)).json() == resource
    listed = (await client.get("/management/topics/orders/eventSubscriptions")).json()
    assert listed == {"value": [resource]}
    deleted = await client.delete(path)
    assert deleted.status_code == 200
    assert_error(await client.get(path), 404, "audit")


async def test_creating_a_webhook_subscription_calls_the_validation_hook_once(
    bus: Bus,
) -> None:
    calls: list[SubscriptionRecord] = []

    async def validate(record: SubscriptionRecord) -> None:
        calls.append(record)
        await bus.set_provisioning_state(record.topic, record.name, "Succeeded")

    async with make_client(bus, validate) as client:
        await put_topic(client, "orders")
        path = "/management/topics/orders/eventSubscriptions/audit"
        created = await client.put(path, json={"properties": WEBHOOK})
        assert created.json()["properties"]["provisioningState"] == "Succeeded"
        retried = {**WEBHOOK, "retryPolicy": {"maxDeliveryAttempts": 3}}
        updated = await client.put(path, json={"properties": retried})
        assert updated.status_code == 200
        assert updated.json()["properties"]["provisioningState"] == "Succeeded"
        await client.put("/management/topics/orders/eventSubscriptions/local", json={})
    assert [(record.name, record.provisioning_state) for record in calls] == [("audit", "Creating")]


async def test_a_subscription_read_back_can_be_put_again(client: httpx.AsyncClient) -> None:
    await put_topic(client, "orders")
    path = "/management/topics/orders/eventSubscriptions/local"
    resource = (await client.put(path, json={"properties": {"deadLetterEnabled": False}})).json()
    again = await client.put(path, json=resource)
    assert again.status_code == 200
    assert again.json() == resource


@pytest.mark.parametrize(
    ("properties", "fragment"),
    [
        ({"retryPolicy": {"maxDeliveryAttempts": 31}}, "retryPolicy.maxDeliveryAttempts"),
        ({"retryPolicy": {"eventTimeToLiveInMinutes": 0}}, "eventTimeToLiveInMinutes"),
        ({"destination": {"endpointType": "Queue"}}, "destination.endpointType"),
        (
            {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": "ftp://x"}}},
            "endpointUrl",
        ),
        ({"filter": {"includedEventTypes": []}}, "includedEventTypes"),
        ({"deliveryTimeoutSeconds": 0}, "deliveryTimeoutSeconds"),
        ({"eventDeliverySchema": "EventGridSchema"}, "eventDeliverySchema"),
        ({"colour": "blue"}, "colour"),
    ],
)
async def test_an_invalid_subscription_is_400_naming_the_property(
    client: httpx.AsyncClient, properties: dict[str, Any], fragment: str
) -> None:
    await put_topic(client, "orders")  # CloudEvents input: Event Grid output is refused
    path = "/management/topics/orders/eventSubscriptions/audit"
    response = await client.put(path, json={"properties": properties})
    assert_error(response, 400, fragment)
    assert_error(await client.get(path), 404)


async def test_subscriptions_of_an_unknown_topic_are_404(client: httpx.AsyncClient) -> None:
    path = "/management/topics/missing/eventSubscriptions"
    assert_error(await client.get(path), 404, "missing")
    assert_error(await client.put(path + "/audit", json={"properties": WEBHOOK}), 404)
    await put_topic(client, "orders")
    assert_error(await client.get("/management/topics/orders/eventSubscriptions/nope"), 404)
    assert_error(await client.delete("/management/topics/orders/eventSubscriptions/nope"), 404)


# dead letters ----------------------------------------------------------------------------------
async def poisoned(bus: Bus, client: httpx.AsyncClient, count: int, schema: str) -> str:
    """A topic whose subscription ``audit`` rejected ``count`` events published through the
    gateway; returns the subscription's management path."""
    await put_topic(client, "orders", inputSchema="EventGridSchema", deduplicationWindowSeconds=0)

    async def reject(event: object) -> None:
        raise Reject("poison")

    spec = SubscriptionSpec.from_dict({"eventDeliverySchema": schema})
    await bus.subscribe("orders", "audit", reject, spec)
    key = (await client.post("/management/topics/orders/listKeys")).json()["key1"]
    events = [
        {"id": f"e{n}", "subject": "s", "eventType": "T", "eventTime": "2026-01-01T00:00:00Z"}
        for n in range(count)
    ]
    request = client.build_request(
        "POST", "/topics/orders/api/events", json=events, headers={"aeg-sas-key": key}
    )
    del request.headers["authorization"]  # every credential a publish presents must be valid
    response = await client.send(request)
    assert response.status_code == 200
    await bus.idle()
    return "/management/topics/orders/eventSubscriptions/audit/deadLetters"


async def test_dead_letters_are_listed_in_pages_in_the_delivery_schema(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    path = await poisoned(bus, client, 3, "CloudEventSchemaV1_0")
    first = (await client.get(path, params={"limit": 2})).json()
    assert len(first["value"]) == 2
    record = first["value"][0]
    assert record["deadletterreason"] == "Rejected"
    assert record["deliveryattempts"] == 1
    assert record["source"] == "/topics/orders"
    assert "deadletterid" in record
    second = (await client.get(first["nextLink"].removeprefix(BASE))).json()
    assert len(second["value"]) == 1
    assert "nextLink" not in second
    ids = [r["id"] for r in first["value"] + second["value"]]
    assert sorted(ids) == ["e0", "e1", "e2"]
    one = await client.get(f"{path}/{record['deadletterid']}")
    assert one.json() == record


async def test_event_grid_dead_letters_use_the_event_grid_names(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    path = await poisoned(bus, client, 1, "EventGridSchema")
    [record] = (await client.get(path)).json()["value"]
    assert record["eventType"] == "T"
    assert record["deadLetterReason"] == "Rejected"
    assert record["lastDeliveryOutcome"] == "Rejected"
    assert {"deadLetterId", "publishTime", "deliveryAttempts"} <= set(record)


async def test_dead_letters_are_redriven_by_id_or_all_and_purged(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    path = await poisoned(bus, client, 4, "CloudEventSchemaV1_0")
    delivered: list[str] = []

    async def accept(event: Any) -> None:
        delivered.append(event.id)

    await bus.attach("orders", "audit", accept)
    records = (await client.get(path)).json()["value"]
    one = await client.post(path + "/redrive", json={"ids": [records[0]["deadletterid"]]})
    assert one.json() == {"redriven": 1}
    await bus.idle()
    assert delivered == [records[0]["id"]]
    purged_one = await client.delete(f"{path}/{records[1]['deadletterid']}")
    assert purged_one.json() == {"purged": 1}
    assert_error(await client.delete(f"{path}/{records[1]['deadletterid']}"), 404)
    rest = await client.post(path + "/redrive", json={})
    assert rest.json() == {"redriven": 2}
    await bus.idle()
    assert sorted(delivered) == sorted([records[0]["id"], records[2]["id"], records[3]["id"]])
    assert (await client.get(path)).json() == {"value": []}
    assert (await client.delete(path)).json() == {"purged": 0}


async def test_purge_deletes_every_dead_letter(bus: Bus, client: httpx.AsyncClient) -> None:
    path = await poisoned(bus, client, 3, "CloudEventSchemaV1_0")
    assert (await client.delete(path)).json() == {"purged": 3}
    assert (await client.get(path)).json()["value"] == []


@pytest.mark.parametrize(
    ("method", "suffix", "kwargs", "status", "fragment"),
    [
        ("GET", "", {"params": {"limit": "0"}}, 400, "limit"),
        ("GET", "", {"params": {"limit": "lots"}}, 400, "limit"),
        ("GET", "", {"params": {"limit": "10001"}}, 400, "limit"),
        ("POST", "/redrive", {"json": {"ids": "abc"}}, 400, "ids"),
        ("POST", "/redrive", {"json": {"where": "all"}}, 400, "where"),
        ("GET", "/no-such-record", {}, 404, "no-such-record"),
    ],
)
async def test_dead_letter_requests_are_checked(
    bus: Bus,
    client: httpx.AsyncClient,
    method: str,
    suffix: str,
    kwargs: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    path = await poisoned(bus, client, 1, "CloudEventSchemaV1_0")
    response = await client.request(method, path + suffix, **kwargs)
    assert_error(response, status, fragment)


async def test_dead_letters_of_an_unknown_subscription_are_404(client: httpx.AsyncClient) -> None:
    await put_topic(client, "orders")
    path = "/management/topics/orders/eventSubscriptions/nope/deadLetters"
    assert_error(await client.get(path), 404)
    assert_error(await client.post(path + "/redrive", json={}), 404)
    assert_error(await client.delete(path), 404)


# health, metrics, OpenAPI ---------------------------------------------------------------------
async def test_health_is_ok_while_the_bus_serves_and_503_once_it_is_closed() -> None:
    bus = Bus("memory://")
    await bus.open()
    async with make_client(bus) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        await bus.close()
        response = await client.get("/healthz")
        assert response.status_code == 503
        assert_error(await client.get("/management/topics"), 503, "unavailable")


async def test_metrics_show_queues_and_dead_letters_per_subscription(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    await poisoned(bus, client, 2, "CloudEventSchemaV1_0")
    response = await client.get("/metrics", headers={})
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    labels = '{topic="orders",subscription="audit"}'
    assert f"choreograph_subscription_dead_letters{labels} 2" in text
    assert f"choreograph_subscription_queued_events{labels} 0" in text
    assert f"choreograph_dead_lettered_events_total{labels} 2" in text
    assert 'choreograph_published_events_total{topic="orders"} 2' in text


async def test_delivery_counters_and_latency_come_from_the_bus() -> None:
    clock = FakeClock()
    async with Bus("memory://", clock=clock, retry_jitter=0) as bus:
        await bus.put_topic("orders", {"deduplicationWindowSeconds": 0})
        seen: set[str] = set()

        async def flaky(event: Any) -> None:
            if event.id not in seen:
                seen.add(event.id)
                raise RuntimeError("first attempts fail")

        async def reject(event: Any) -> None:
            raise Reject("poison")

        retry = {"retryPolicy": {"backoffSeconds": [1.0]}}
        await bus.subscribe("orders", "flaky", flaky, SubscriptionSpec.from_dict(retry))
        no_store = SubscriptionSpec.from_dict({"deadLetterEnabled": False})
        await bus.subscribe("orders", "dropper", reject, no_store)
        for number in range(2):
            await bus.publish("orders", CloudEvent(id=f"e{number}", source="/s", type="T"))
        await bus.idle()
        clock.advance(1.0)
        await bus.idle()
        async with make_client(bus) as client:
            text = (await client.get("/metrics")).text
    flaky_labels = '{topic="orders",subscription="flaky"}'
    assert f"choreograph_delivered_events_total{flaky_labels} 2" in text
    assert f"choreograph_delivery_retries_total{flaky_labels} 2" in text
    assert f"choreograph_dead_lettered_events_total{flaky_labels} 0" in text
    assert 'choreograph_dropped_events_total{topic="orders",subscription="dropper"} 2' in text
    assert 'choreograph_published_events_total{topic="orders"} 2' in text
    bucket = 'choreograph_delivery_latency_seconds_bucket{topic="orders",subscription="flaky",'
    assert f'{bucket}le="0.5"}} 0' in text
    assert f'{bucket}le="1"}} 2' in text
    assert f'{bucket}le="+Inf"}} 2' in text
    assert f"choreograph_delivery_latency_seconds_sum{flaky_labels} 2" in text
    assert f"choreograph_delivery_latency_seconds_count{flaky_labels} 2" in text


async def test_the_openapi_document_describes_every_route(bus: Bus) -> None:
    app = create_app(bus, GatewaySettings(admin_token=ADMIN_TOKEN))
    served: set[tuple[str, str]] = set()
    for route in app.routes:
        children = route.routes if isinstance(route, Mount) else [route]
        prefix = route.path if isinstance(route, Mount) else ""
        for child in children:
            assert isinstance(child, Route)
            for method in child.methods or ():
                if method != "HEAD":
                    served.add((prefix + child.path, method.lower()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    # the validationUrl route is served once webhook validation is wired (extra_routes)
    assert described - served == {("/validate/{topic}/{subscription}", "get")}
    assert served <= described


# SQLite ----------------------------------------------------------------------------------------
async def test_the_gateway_works_end_to_end_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/bus.db"
    async with Bus(url, retry_jitter=0) as bus, make_client(bus) as client:
        path = await poisoned(bus, client, 2, "EventGridSchema")
        records = (await client.get(path)).json()["value"]
        assert [record["id"] for record in records] == ["e0", "e1"]
        assert (await client.delete(path)).json() == {"purged": 2}
    async with Bus(url) as bus, make_client(bus) as client:
        topic = (await client.get("/management/topics/orders")).json()
        assert topic["properties"]["inputSchema"] == "EventGridSchema"
        subs = (await client.get("/management/topics/orders/eventSubscriptions")).json()
        assert [sub["name"] for sub in subs["value"]] == ["audit"]
