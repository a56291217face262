"""The publish endpoint over httpx.ASGITransport: Event Grid and CloudEvents bodies, the limits,
and the publish-side items of the reference's conformance checklist (§11, items 1-16).

Each topic has a ``probe`` subscription with no handler attached: what a publish stored waits
in its queue, so ``stored()`` tells whether a refused request stored anything.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from choreograph.bus import Bus, SubscriptionSpec
from choreograph.events import CloudEvent, EventGridEvent
from choreograph.gateway import GatewaySettings, create_app
from choreograph.testing import FakeClock

ADMIN_TOKEN = "publish-tests-admin-token"
EG_TOPIC = "orders-eg"
CE_TOPIC = "orders-ce"
EG_URL = f"/topics/{EG_TOPIC}/api/events?api-version=2018-01-01"
CE_URL = f"/topics/{CE_TOPIC}/api/events?api-version=2018-01-01"


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    async with Bus("memory://", clock=FakeClock(), retry_jitter=0) as bus:
        await bus.put_topic(
            EG_TOPIC, {"inputSchema": "EventGridSchema", "deduplicationWindowSeconds": 0}
        )
        await bus.put_topic(CE_TOPIC, {"deduplicationWindowSeconds": 0})
        for topic in (EG_TOPIC, CE_TOPIC):
            await bus.put_subscription(topic, "probe")
        yield bus


def make_client(bus: Bus, **settings: Any) -> httpx.AsyncClient:
    app = create_app(bus, GatewaySettings(admin_token=ADMIN_TOKEN, **settings))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


@pytest.fixture
async def client(bus: Bus) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(bus) as client:
        yield client


async def key(bus: Bus, topic: str) -> dict[str, str]:
    return {"aeg-sas-key": (await bus.get_topic(topic)).key1}


async def stored(bus: Bus, topic: str) -> int:
    return (await bus.counters(topic, "probe"))["queued"]


def eg_event(number: int = 1, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": f"eg-{number}",
        "subject": f"orders/{number}",
        "eventType": "Order.Placed",
        "eventTime": "2026-01-01T10:00:00.1234567Z",
        "data": {"number": number, "items": ["a", "b"]},
        "dataVersion": "2.0",
    }
    event.update(fields)
    return {name: value for name, value in event.items() if value is not None}


def ce_event(number: int = 1, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"ce-{number}",
        "source": "/shop",
        "type": "Order.Placed",
        "time": "2026-01-01T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {"number": number},
        "correlationid": "tx-1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    event.update(fields)
    return {name: value for name, value in event.items() if value is not None}


def cloudevents_json(
    body: object, credentials: dict[str, str], *, batch: bool = False
) -> dict[str, Any]:
    """Keyword arguments of a structured (or batched) CloudEvents POST."""
    media = "application/cloudevents-batch+json" if batch else "application/cloudevents+json"
    headers = {**credentials, "content-type": f"{media}; charset=utf-8"}
    return {"content": json.dumps(body), "headers": headers}


async def reader(bus: Bus, topic: str, schema: str) -> list[Any]:
    """Attach an in-process subscription delivering in ``schema``; returns its inbox."""
    received: list[Any] = []

    async def handle(event: Any) -> None:
        received.append(event)

    spec = SubscriptionSpec.from_dict({"eventDeliverySchema": schema})
    await bus.subscribe(topic, "reader", handle, spec)
    return received


def assert_error(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["details"]
    assert error["details"][0]["message"]
    for fragment in fragments:
        assert fragment in error["message"]
    return error


# Event Grid schema ------------------------------------------------------------------------------
async def test_an_event_grid_array_is_answered_exactly_200_with_an_empty_body(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        EG_URL, json=[eg_event(1), eg_event(2)], headers=await key(bus, EG_TOPIC)
    )
    assert response.status_code == 200
    assert response.content == b""
    assert await stored(bus, EG_TOPIC) == 2


async def test_a_delivered_event_grid_event_is_stamped_and_otherwise_unchanged(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    received = await reader(bus, EG_TOPIC, "EventGridSchema")
    published = [eg_event(1, dataVersion=None), eg_event(2, topic=f"/topics/{EG_TOPIC}")]
    response = await client.post(EG_URL, json=published, headers=await key(bus, EG_TOPIC))
    assert response.status_code == 200
    await bus.idle()
    delivered = {event.id: event.to_dict() for event in received}
    assert all(isinstance(event, EventGridEvent) for event in received)
    for event in published:
        got = delivered[event["id"]]
        assert got["topic"] == f"/topics/{EG_TOPIC}"
        assert got["metadataVersion"] == "1"
        assert got["dataVersion"] == event.get("dataVersion", "")
        for field in ("id", "subject", "eventType", "eventTime", "data"):
            assert got[field] == event[field]


async def test_event_grid_input_is_delivered_as_cloudevents_with_the_documented_mapping(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    received = await reader(bus, EG_TOPIC, "CloudEventSchemaV1_0")
    event = eg_event(7)
    response = await client.post(EG_URL, json=[event], headers=await key(bus, EG_TOPIC))
    assert response.status_code == 200
    await bus.idle()
    [delivered] = received
    assert isinstance(delivered, CloudEvent)
    assert (delivered.id, delivered.source, delivered.type, delivered.time, delivered.subject) == (
        "eg-7",
        f"/topics/{EG_TOPIC}",
        "Order.Placed",
        event["eventTime"],
        "orders/7",
    )
    assert delivered.data == event["data"]


async def test_a_single_object_on_an_event_grid_topic_is_400(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    response = await client.post(EG_URL, json=eg_event(), headers=await key(bus, EG_TOPIC))
    assert_error(response, 400, "JSON array")
    assert await stored(bus, EG_TOPIC) == 0


@pytest.mark.parametrize("body", [b"not json", b"[{]", b"", b"\xff\xfe"])
async def test_a_body_that_is_not_json_is_400(
    bus: Bus, client: httpx.AsyncClient, body: bytes
) -> None:
    headers = {**await key(bus, EG_TOPIC), "content-type": "application/json"}
    response = await client.post(EG_URL, content=body, headers=headers)
    assert_error(response, 400, "not valid JSON")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"id": None}, "`id` is required"),
        ({"subject": None}, "`subject` is required"),
        ({"eventType": None}, "`eventType` is required"),
        ({"eventTime": None}, "`eventTime` is required"),
        ({"eventTime": "yesterday"}, "eventTime"),
        ({"eventTime": "2026-13-01T00:00:00Z"}, "eventTime"),
        ({"metadataVersion": "2"}, "metadataVersion"),
        ({"topic": "/topics/elsewhere"}, "topic"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_an_invalid_event_refuses_the_whole_request(
    bus: Bus, client: httpx.AsyncClient, change: dict[str, Any], fragment: str
) -> None:
    body = [eg_event(1), eg_event(2, **change), eg_event(3)]
    response = await client.post(EG_URL, json=body, headers=await key(bus, EG_TOPIC))
    error = assert_error(response, 400, "event 1", fragment)
    assert error["code"] == "BadRequest"
    assert await stored(bus, EG_TOPIC) == 0


async def test_an_empty_array_is_400(bus: Bus, client: httpx.AsyncClient) -> None:
    response = await client.post(EG_URL, json=[], headers=await key(bus, EG_TOPIC))
    assert_error(response, 400, "at least one event")


async def test_publishing_the_same_id_twice_is_accepted_and_delivered_twice_without_dedupe(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    for _ in range(2):
        response = await client.post(EG_URL, json=[eg_event(1)], headers=await key(bus, EG_TOPIC))
        assert response.status_code == 200
    assert await stored(bus, EG_TOPIC) == 2


async def test_a_topic_with_a_dedupe_window_accepts_a_repeat_without_storing_it(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    await bus.put_topic("dedupe", {"inputSchema": "EventGridSchema"})
    await bus.put_subscription("dedupe", "probe")
    url = "/topics/dedupe/api/events"
    for _ in range(2):
        response = await client.post(url, json=[eg_event(1)], headers=await key(bus, "dedupe"))
        assert response.status_code == 200
    assert await stored(bus, "dedupe") == 1


# routing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    ["/topics/missing/api/events", "/topics/no/api/events", "/", "/api", "/topics/orders-eg/api"],
)
async def test_an_unknown_topic_or_path_is_404(
    bus: Bus, client: httpx.AsyncClient, path: str
) -> None:
    response = await client.post(path, json=[eg_event()], headers=await key(bus, EG_TOPIC))
    assert_error(response, 404)


async def test_without_a_default_topic_api_events_is_404(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    response = await client.post("/api/events", json=[eg_event()], headers=await key(bus, EG_TOPIC))
    assert_error(response, 404, "no default topic")


async def test_api_events_publishes_to_the_configured_default_topic(bus: Bus) -> None:
    async with make_client(bus, default_topic=EG_TOPIC) as client:
        response = await client.post(
            "/api/events?api-version=2018-01-01",
            json=[eg_event()],
            headers=await key(bus, EG_TOPIC),
        )
    assert response.status_code == 200
    assert await stored(bus, EG_TOPIC) == 1


async def test_another_api_version_is_400(bus: Bus, client: httpx.AsyncClient) -> None:
    url = f"/topics/{EG_TOPIC}/api/events?api-version=2024-06-01"
    response = await client.post(url, json=[eg_event()], headers=await key(bus, EG_TOPIC))
    assert_error(response, 400, "api-version")


async def test_get_on_the_publish_path_is_405_with_an_error_body(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(EG_URL), 405)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"/topics/{EG_TOPIC}/x/api/events", 404),
        ("/topics//api/events", 404),
        ("/topics/no-such-topic/api/events", 404),
    ],
)
async def test_paths_that_only_look_like_publish_paths_get_an_error_body(
    bus: Bus, client: httpx.AsyncClient, path: str, status: int
) -> None:
    response = await client.post(path, json=[eg_event()], headers=await key(bus, EG_TOPIC))
    assert_error(response, status)
    assert await stored(bus, EG_TOPIC) == 0


async def test_publish_under_a_root_path_reaches_the_topic(bus: Bus) -> None:
    app = create_app(bus, GatewaySettings(admin_token=ADMIN_TOKEN))
    transport = httpx.ASGITransport(app=app, root_path="/eventgrid")
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.post(
            f"/eventgrid{EG_URL}", json=[eg_event()], headers=await key(bus, EG_TOPIC)
        )
    assert response.status_code == 200, response.text
    assert await stored(bus, EG_TOPIC) == 1


async def test_a_bug_under_publish_is_a_500_error_body_and_raised_for_the_server_to_log(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(bus, "publish", broken)
    app = create_app(bus, GatewaySettings(admin_token=ADMIN_TOKEN))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.post(EG_URL, json=[eg_event()], headers=await key(bus, EG_TOPIC))
    error = assert_error(response, 500, "internal error")
    assert error["details"][0]["code"] == "InternalError"
    raising = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=raising, base_url="http://gateway") as client:
        with pytest.raises(RuntimeError, match="a bug"):
            await client.post(EG_URL, json=[eg_event()], headers=await key(bus, EG_TOPIC))


# input schema and content types -----------------------------------------------------------------
async def test_an_event_grid_array_to_a_cloudevents_topic_names_the_schema_it_takes(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    response = await client.post(CE_URL, json=[eg_event()], headers=await key(bus, CE_TOPIC))
    error = assert_error(response, 400, "takes CloudEvents", "application/cloudevents+json")
    assert error["details"][0]["code"] == "InputSchemaMismatch"
    assert await stored(bus, CE_TOPIC) == 0


@pytest.mark.parametrize("batch", [False, True])
async def test_cloudevents_to_an_event_grid_topic_names_the_schema_it_takes(
    bus: Bus, client: httpx.AsyncClient, batch: bool
) -> None:
    body = [ce_event()] if batch else ce_event()
    response = await client.post(
        EG_URL, **cloudevents_json(body, await key(bus, EG_TOPIC), batch=batch)
    )
    assert_error(response, 400, "takes the Event Grid schema")


async def test_an_unknown_content_type_on_an_event_grid_topic_is_400(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    headers = {**await key(bus, EG_TOPIC), "content-type": "text/plain"}
    response = await client.post(EG_URL, content=json.dumps([eg_event()]), headers=headers)
    assert_error(response, 400, "text/plain")


async def test_a_compressed_body_is_refused(bus: Bus, client: httpx.AsyncClient) -> None:
    headers = {**await key(bus, EG_TOPIC), "content-encoding": "gzip"}
    response = await client.post(EG_URL, json=[eg_event()], headers=headers)
    assert_error(response, 400, "Content-Encoding")


# CloudEvents: structured and batched ------------------------------------------------------------
async def test_a_structured_cloudevent_is_accepted_with_its_extensions(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    received = await reader(bus, CE_TOPIC, "CloudEventSchemaV1_0")
    event = ce_event(1, tracestate="vendor=1", subject="orders/1")
    response = await client.post(CE_URL, **cloudevents_json(event, await key(bus, CE_TOPIC)))
    assert response.status_code == 200
    assert response.content == b""
    await bus.idle()
    [delivered] = received
    assert delivered.to_dict() == event


async def test_a_cloudevents_batch_is_accepted(bus: Bus, client: httpx.AsyncClient) -> None:
    body = [ce_event(n) for n in range(3)]
    response = await client.post(
        CE_URL, **cloudevents_json(body, await key(bus, CE_TOPIC), batch=True)
    )
    assert response.status_code == 200
    assert await stored(bus, CE_TOPIC) == 3


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"id": None}, "`id` is required"),
        ({"source": None}, "`source` is required"),
        ({"type": None}, "`type` is required"),
        ({"specversion": None}, "`specversion` is required"),
        ({"specversion": "0.3"}, "specversion"),
        ({"data_base64": "aGVsbG8="}, "only one of `data` and `data_base64`"),
        ({"time": "noon"}, "time"),
        ({"Bad-Name": "x"}, "extension attribute name"),
    ],
)
async def test_an_invalid_cloudevent_refuses_the_whole_batch(
    bus: Bus, client: httpx.AsyncClient, change: dict[str, Any], fragment: str
) -> None:
    body = [ce_event(1), ce_event(2, **change)]
    response = await client.post(
        CE_URL, **cloudevents_json(body, await key(bus, CE_TOPIC), batch=True)
    )
    assert_error(response, 400, fragment)
    assert await stored(bus, CE_TOPIC) == 0


async def test_a_batch_content_type_needs_an_array(bus: Bus, client: httpx.AsyncClient) -> None:
    response = await client.post(
        CE_URL, **cloudevents_json(ce_event(), await key(bus, CE_TOPIC), batch=True)
    )
    assert_error(response, 400, "JSON array")


# CloudEvents: binary mode -----------------------------------------------------------------------
def binary_headers(**extra: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": "bin-1",
        "ce-source": "/shop",
        "ce-type": "Order.Placed",
        "ce-time": "2026-01-01T10:00:00Z",
        "ce-correlationid": "tx-9",
        **extra,
    }


async def test_binary_mode_json_data_is_parsed_into_data(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    received = await reader(bus, CE_TOPIC, "CloudEventSchemaV1_0")
    headers = {
        **await key(bus, CE_TOPIC),
        **binary_headers(**{"ce-subject": "caf%C3%A9 %2F 1"}),
        "content-type": "application/json; charset=utf-8",
    }
    response = await client.post(CE_URL, content=b'{"weight": 2.5}', headers=headers)
    assert response.status_code == 200, response.text
    await bus.idle()
    [event] = received
    assert event.data == {"weight": 2.5}
    assert event.data_base64 is None
    assert event.datacontenttype == "application/json; charset=utf-8"
    assert event.subject == "café / 1"
    assert event.extensions == {"correlationid": "tx-9"}
    assert (event.id, event.source, event.type) == ("bin-1", "/shop", "Order.Placed")


@pytest.mark.parametrize("content_type", ["application/octet-stream", "text/plain", None])
async def test_binary_mode_other_data_goes_to_data_base64(
    bus: Bus, client: httpx.AsyncClient, content_type: str | None
) -> None:
    received = await reader(bus, CE_TOPIC, "CloudEventSchemaV1_0")
    headers = {**await key(bus, CE_TOPIC), **binary_headers()}
    if content_type is not None:
        headers["content-type"] = content_type
    payload = bytes(range(256))
    response = await client.post(CE_URL, content=payload, headers=headers)
    assert response.status_code == 200, response.text
    await bus.idle()
    [event] = received
    assert event.data_bytes == payload
    assert event.datacontenttype == content_type


@pytest.mark.parametrize(
    ("headers", "body", "fragment"),
    [
        ({"ce-id": None}, b"{}", "ce-id is required"),
        ({"ce-type": None}, b"{}", "ce-type is required"),
        ({"ce-source": None}, b"{}", "ce-source is required"),
        ({"ce-datacontenttype": "application/json"}, b"{}", "ce-datacontenttype"),
        ({"ce-data": "x"}, b"{}", "ce-data"),
        ({"ce-specversion": "0.3"}, b"{}", "specversion"),
        ({}, b"{not json", "not valid JSON"),
        ({"ce-subject": "%FF"}, b"{}", "UTF-8"),
    ],
)
async def test_binary_mode_refusals(
    bus: Bus,
    client: httpx.AsyncClient,
    headers: dict[str, str | None],
    body: bytes,
    fragment: str,
) -> None:
    sent = {**binary_headers(), "content-type": "application/json", **await key(bus, CE_TOPIC)}
    for name, value in headers.items():
        if value is None:
            del sent[name]
        else:
            sent[name] = value
    response = await client.post(CE_URL, content=body, headers=sent)
    assert_error(response, 400, fragment)
    assert await stored(bus, CE_TOPIC) == 0


async def test_binary_mode_to_an_event_grid_topic_is_400(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    headers = {**binary_headers(), "content-type": "application/json", **await key(bus, EG_TOPIC)}
    response = await client.post(EG_URL, content=b"{}", headers=headers)
    assert_error(response, 400, "binary-mode")


# limits ----------------------------------------------------------------------------------------
def padded_events(total_bytes: int) -> list[dict[str, Any]]:
    """Event Grid events adding up to about ``total_bytes`` of JSON, each well under 1 MB."""
    count = total_bytes // 200_000 + 1
    return [eg_event(n, data={"pad": "x" * 200_000}) for n in range(count)]


async def test_a_request_over_1_mb_is_413_by_its_content_length(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    body = json.dumps(padded_events(1_100_000)).encode()
    assert len(body) > 1_048_576
    headers = {**await key(bus, EG_TOPIC), "content-type": "application/json"}
    response = await client.post(EG_URL, content=body, headers=headers)
    error = assert_error(response, 413, "1048576")
    assert error["details"][0]["code"] == "RequestTooLarge"
    assert await stored(bus, EG_TOPIC) == 0


async def test_a_streamed_request_over_1_mb_is_413_and_not_read_to_the_end(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b"["
        for number in range(100):  # 100 x 64 KB: far more than the limit
            sent += 1
            yield json.dumps(eg_event(number, data={"pad": "x" * 65_000})).encode() + b","
        yield b"]"

    headers = {**await key(bus, EG_TOPIC), "content-type": "application/json"}
    response = await client.post(EG_URL, content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    assert_error(response, 413)
    assert sent < 25
    assert await stored(bus, EG_TOPIC) == 0


async def test_an_event_over_1_mb_is_413_and_nothing_is_stored(bus: Bus) -> None:
    async with make_client(bus, max_request_bytes=3_000_000) as client:
        body = [eg_event(1), eg_event(2, data={"pad": "x" * 1_050_000})]
        response = await client.post(EG_URL, json=body, headers=await key(bus, EG_TOPIC))
    error = assert_error(response, 413, "event 1", "1048576")
    assert error["details"][0]["code"] == "EventTooLarge"
    assert await stored(bus, EG_TOPIC) == 0


async def test_binary_data_over_1_mb_once_encoded_is_413(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    headers = {
        **binary_headers(),
        "content-type": "application/octet-stream",
        **await key(bus, CE_TOPIC),
    }
    response = await client.post(CE_URL, content=b"\0" * 900_000, headers=headers)
    assert_error(response, 413, "1048576")
    assert await stored(bus, CE_TOPIC) == 0


async def test_more_than_5000_events_is_400_naming_the_limit(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    body = [
        {"id": str(n), "subject": "", "eventType": "T", "eventTime": "2026-01-01T00:00:00Z"}
        for n in range(5001)
    ]
    response = await client.post(EG_URL, json=body, headers=await key(bus, EG_TOPIC))
    assert_error(response, 400, "5001", "5000")
    assert await stored(bus, EG_TOPIC) == 0
    response = await client.post(EG_URL, json=body[:5000], headers=await key(bus, EG_TOPIC))
    assert response.status_code == 200
    assert await stored(bus, EG_TOPIC) == 5000


async def test_a_bad_content_length_is_400(bus: Bus, client: httpx.AsyncClient) -> None:
    headers = {**await key(bus, EG_TOPIC), "content-length": "-5"}
    request = client.build_request("POST", EG_URL, content=b"[]", headers=headers)
    response = await client.send(request)
    assert_error(response, 400, "Content-Length")


# metrics of publishing ------------------------------------------------------------------------
async def test_publishes_and_refusals_are_counted_per_topic(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    await client.post(EG_URL, json=[eg_event(1), eg_event(2)], headers=await key(bus, EG_TOPIC))
    await client.post(EG_URL, json=eg_event(1), headers=await key(bus, EG_TOPIC))
    await client.post(EG_URL, json=[eg_event(1)])
    await client.post("/topics/nowhere/api/events", json=[eg_event(1)])
    text = (await client.get("/metrics")).text
    assert f'choreograph_published_events_total{{topic="{EG_TOPIC}"}} 2' in text
    assert f'choreograph_publish_requests_total{{topic="{EG_TOPIC}",code="200"}} 1' in text
    assert f'choreograph_publish_requests_total{{topic="{EG_TOPIC}",code="400"}} 1' in text
    assert f'choreograph_publish_requests_total{{topic="{EG_TOPIC}",code="401"}} 1' in text
    assert "nowhere" not in text
    assert (
        f'choreograph_subscription_queued_events{{topic="{EG_TOPIC}",subscription="probe"}} 2'
        in text
    )


async def test_a_published_binary_event_round_trips_base64(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    received = await reader(bus, CE_TOPIC, "CloudEventSchemaV1_0")
    event = ce_event(5, data=None, data_base64=base64.b64encode(b"\x00\x01").decode())
    event.pop("datacontenttype")
    response = await client.post(CE_URL, **cloudevents_json(event, await key(bus, CE_TOPIC)))
    assert response.status_code == 200
    await bus.idle()
    assert received[0].data_bytes == b"\x00\x01"


@pytest.mark.parametrize("depth", [950, 2_000, 100_000])
async def test_deeply_nested_data_is_400_not_a_server_error(
    bus: Bus, client: httpx.AsyncClient, depth: int
) -> None:
    data = "[" * depth + "]" * depth
    event = json.dumps(eg_event()).replace(
        '"data": {"number": 1, "items": ["a", "b"]}', f'"data": {data}'
    )
    headers = {**await key(bus, EG_TOPIC), "content-type": "application/json"}
    response = await client.post(EG_URL, content=f"[{event}]", headers=headers)
    assert response.status_code in (200, 400), response.text
    if depth > 1_000:
        assert_error(response, 400, "nested too deeply")


async def test_an_absurd_content_length_is_413_without_reading(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    headers = {**await key(bus, EG_TOPIC), "content-length": "9" * 5000}
    request = client.build_request("POST", EG_URL, content=b"[]", headers=headers)
    assert_error(await client.send(request), 413)
