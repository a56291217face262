"""Interoperability: clients nobody here wrote publish to the gateway served by uvicorn on a
loopback port — the official ``azure-eventgrid`` publisher (sync and aio; access key and SAS
credentials) and the CNCF ``cloudevents`` SDK (structured and binary mode over httpx).

The gateway and its in-memory bus run on their own event loop in a background thread; tests reach
the bus through :meth:`LiveGateway.call`, and each test gets its own topics.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from azure.core.credentials import AzureKeyCredential, AzureSasCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.core.messaging import CloudEvent as AzureCloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient, generate_sas
from azure.eventgrid.aio import EventGridPublisherClient as AsyncEventGridPublisherClient
from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent as CoreCloudEvent
from cloudevents.v1.conversion import to_binary, to_structured
from cloudevents.v1.http import CloudEvent as CncfCloudEvent

from choreograph.bus import Bus, SubscriptionSpec
from choreograph.gateway import GatewaySettings, create_app

T = TypeVar("T")
ADMIN_TOKEN = "interop-tests-admin-token"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_names = itertools.count()


class LiveGateway:
    """The gateway on a real socket, its bus on the server's loop in another thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.received: dict[str, list[Any]] = {}
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        async with Bus("memory://", retry_jitter=0) as bus:
            self.bus = bus
            app = create_app(bus, GatewaySettings(admin_token=ADMIN_TOKEN))
            config = uvicorn.Config(app, log_level="warning", lifespan="off")
            self._server = uvicorn.Server(config)
            startup = self._server.startup

            async def started(sockets: list[socket.socket] | None = None) -> None:
                await startup(sockets)
                self._ready.set()

            self._server.startup = started  # type: ignore[method-assign]
            try:
                await self._server.serve(sockets=[self.sock])
            finally:
                self._ready.set()

    def __enter__(self) -> LiveGateway:
        self._thread.start()
        assert self._ready.wait(10), "the gateway did not start"
        assert self._server is not None
        assert self._server.started, "the gateway did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.should_exit = True
        self._thread.join(10)
        self.sock.close()

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine on the gateway's loop and return its result."""
        assert self._loop is not None

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def topic(self, schema: str, delivery_schema: str | None = None) -> tuple[str, str, str]:
        """A new topic with a recording subscription; returns (name, endpoint, key1)."""
        name = f"interop-{next(_names)}"
        received: list[Any] = []
        self.received[name] = received

        async def record(event: Any) -> None:
            received.append(event)

        async def create() -> str:
            properties = {"inputSchema": schema, "deduplicationWindowSeconds": 0}
            record_ = await self.bus.put_topic(name, properties)
            spec = SubscriptionSpec.from_dict({"eventDeliverySchema": delivery_schema or schema})
            await self.bus.subscribe(name, "recorder", record, spec)
            return record_.key1

        key = self.call(create)
        return name, f"{self.base_url}/topics/{name}/api/events", key

    def wait_for(self, name: str, count: int) -> list[Any]:
        """The events recorded on topic ``name`` once there are ``count`` (10 s safety net)."""
        deadline = time.monotonic() + 10
        while len(self.received[name]) < count:
            assert time.monotonic() < deadline, f"{len(self.received[name])} of {count} arrived"
            time.sleep(0.005)
        return list(self.received[name])


@pytest.fixture(scope="module")
def gateway() -> Iterator[LiveGateway]:
    with LiveGateway() as live:
        yield live


def eventgrid_events(count: int) -> list[EventGridEvent]:
    return [
        EventGridEvent(
            subject=f"orders/{n}",
            event_type="Order.Placed",
            data={"number": n, "lines": [{"sku": "A-1", "qty": 2}]},
            data_version="2.0",
        )
        for n in range(count)
    ]


def azure_cloudevents(count: int) -> list[AzureCloudEvent]:
    return [
        AzureCloudEvent(
            source="/shop",
            type="Order.Placed",
            subject=f"orders/{n}",
            data={"number": n},
            extensions={"correlationid": f"tx-{n}", "traceparent": TRACEPARENT},
        )
        for n in range(count)
    ]


def assert_eventgrid_arrived(sent: list[EventGridEvent], arrived: list[Any], topic: str) -> None:
    by_id = {event.id: event for event in arrived}
    assert set(by_id) == {str(event.id) for event in sent}  # the SDK's ids are UUID objects
    for event in sent:
        got = by_id[str(event.id)]
        assert (got.subject, got.event_type, got.data, got.data_version) == (
            event.subject,
            event.event_type,
            event.data,
            event.data_version,
        )
        assert datetime.fromisoformat(got.event_time) == datetime.fromisoformat(event.event_time)
        assert got.topic == f"/topics/{topic}"


def assert_cloudevents_arrived(sent: list[AzureCloudEvent], arrived: list[Any]) -> None:
    by_id = {event.id: event for event in arrived}
    assert set(by_id) == {event.id for event in sent}
    for event in sent:
        got = by_id[event.id]
        assert (got.source, got.type, got.subject, got.data) == (
            event.source,
            event.type,
            event.subject,
            event.data,
        )
        assert got.extensions == event.extensions
        assert event.time is not None
        assert got.time is not None
        assert datetime.fromisoformat(got.time) == event.time


# azure-eventgrid, sync -------------------------------------------------------------------------
def test_the_azure_client_publishes_event_grid_events_with_an_access_key(
    gateway: LiveGateway,
) -> None:
    name, endpoint, key = gateway.topic("EventGridSchema")
    client = EventGridPublisherClient(endpoint, AzureKeyCredential(key))
    single, batch = eventgrid_events(1), eventgrid_events(3)
    client.send(single[0], retry_total=0)
    client.send(batch, retry_total=0)
    client.close()
    assert_eventgrid_arrived(single + batch, gateway.wait_for(name, 4), name)


def test_the_azure_client_publishes_cloudevents_with_an_access_key(gateway: LiveGateway) -> None:
    name, endpoint, key = gateway.topic("CloudEventSchemaV1_0")
    client = EventGridPublisherClient(endpoint, AzureKeyCredential(key))
    single, batch = azure_cloudevents(1), azure_cloudevents(2)
    client.send(single[0], retry_total=0)
    client.send(batch, retry_total=0)
    client.close()
    assert_cloudevents_arrived(single + batch, gateway.wait_for(name, 3))


def test_the_azure_client_publishes_binary_cloudevent_data(gateway: LiveGateway) -> None:
    name, endpoint, key = gateway.topic("CloudEventSchemaV1_0")
    event = AzureCloudEvent(source="/shop", type="Blob.Stored", data=b"\x00\x01\xff")
    with EventGridPublisherClient(endpoint, AzureKeyCredential(key)) as client:
        client.send(event, retry_total=0)
    [got] = gateway.wait_for(name, 1)
    assert got.data_bytes == b"\x00\x01\xff"


@pytest.mark.parametrize("schema", ["EventGridSchema", "CloudEventSchemaV1_0"])
def test_the_azure_client_publishes_with_a_sas_token_from_generate_sas(
    gateway: LiveGateway, schema: str
) -> None:
    name, endpoint, key = gateway.topic(schema)
    token = generate_sas(endpoint, key, datetime.now(UTC) + timedelta(hours=1))
    with EventGridPublisherClient(endpoint, AzureSasCredential(token)) as client:
        if schema == "EventGridSchema":
            events: list[Any] = eventgrid_events(2)
            client.send(events, retry_total=0)
            assert_eventgrid_arrived(events, gateway.wait_for(name, 2), name)
        else:
            events = azure_cloudevents(2)
            client.send(events, retry_total=0)
            assert_cloudevents_arrived(events, gateway.wait_for(name, 2))


@pytest.mark.parametrize("credential", ["key", "expired-sas", "foreign-sas"])
def test_the_azure_client_raises_client_authentication_error_when_refused(
    gateway: LiveGateway, credential: str
) -> None:
    name, endpoint, key = gateway.topic("EventGridSchema")
    _, _, other_key = gateway.topic("EventGridSchema")
    now = datetime.now(UTC)
    chosen: AzureKeyCredential | AzureSasCredential
    if credential == "key":
        chosen = AzureKeyCredential(other_key)
    elif credential == "expired-sas":
        chosen = AzureSasCredential(generate_sas(endpoint, key, now - timedelta(minutes=1)))
    else:
        chosen = AzureSasCredential(generate_sas(endpoint, other_key, now + timedelta(hours=1)))
    with (
        EventGridPublisherClient(endpoint, chosen) as client,
        pytest.raises(ClientAuthenticationError),
    ):
        client.send(eventgrid_events(1), retry_total=0)
    assert gateway.received[name] == []


# azure-eventgrid, aio --------------------------------------------------------------------------
async def test_the_async_azure_client_publishes_both_kinds_of_event(gateway: LiveGateway) -> None:
    eg_name, eg_endpoint, eg_key = gateway.topic("EventGridSchema")
    ce_name, ce_endpoint, ce_key = gateway.topic("CloudEventSchemaV1_0")
    eg_events, ce_events = eventgrid_events(2), azure_cloudevents(2)
    async with AsyncEventGridPublisherClient(eg_endpoint, AzureKeyCredential(eg_key)) as client:
        await client.send(eg_events, retry_total=0)
    token = generate_sas(ce_endpoint, ce_key, datetime.now(UTC) + timedelta(hours=1))
    async with AsyncEventGridPublisherClient(ce_endpoint, AzureSasCredential(token)) as client:
        await client.send(ce_events, retry_total=0)
    assert_eventgrid_arrived(
        eg_events, await asyncio.to_thread(gateway.wait_for, eg_name, 2), eg_name
    )
    assert_cloudevents_arrived(ce_events, await asyncio.to_thread(gateway.wait_for, ce_name, 2))


async def test_the_async_azure_client_raises_on_a_wrong_key(gateway: LiveGateway) -> None:
    _, endpoint, _ = gateway.topic("CloudEventSchemaV1_0")
    async with AsyncEventGridPublisherClient(endpoint, AzureKeyCredential("d3Jvbmc=")) as client:
        with pytest.raises(ClientAuthenticationError):
            await client.send(azure_cloudevents(1), retry_total=0)


# cloudevents (CNCF SDK) ------------------------------------------------------------------------
def cncf_event(number: int, data: Any) -> CncfCloudEvent:
    attributes = {
        "type": "Order.Placed",
        "source": "/shop",
        "id": f"cncf-{number}",
        "subject": f"orders/{number}",
        "correlationid": f"tx-{number}",
        "traceparent": TRACEPARENT,
        "priority": "high",
    }
    if isinstance(data, dict):
        attributes["datacontenttype"] = "application/json"
    return CncfCloudEvent(attributes, data)


@pytest.mark.parametrize("mode", ["structured", "binary"])
async def test_cloudevents_sdk_messages_are_accepted_with_their_extensions(
    gateway: LiveGateway, mode: str
) -> None:
    name, endpoint, key = gateway.topic("CloudEventSchemaV1_0")
    event = cncf_event(1, {"weight": 2.5, "tags": ["fragile"]})
    headers, body = to_structured(event) if mode == "structured" else to_binary(event)
    async with httpx.AsyncClient() as client:
        response = await client.post(
            endpoint, content=body, headers={**headers, "aeg-sas-key": key}
        )
    assert response.status_code == 200, response.text
    assert response.content == b""
    [got] = await asyncio.to_thread(gateway.wait_for, name, 1)
    assert (got.id, got.source, got.type, got.subject) == (
        "cncf-1",
        "/shop",
        "Order.Placed",
        "orders/1",
    )
    assert got.data == {"weight": 2.5, "tags": ["fragile"]}
    assert got.extensions == {
        "correlationid": "tx-1",
        "traceparent": TRACEPARENT,
        "priority": "high",
    }
    assert datetime.fromisoformat(got.time) == datetime.fromisoformat(event["time"])


async def test_a_cloudevents_sdk_binary_message_with_bytes_keeps_them(
    gateway: LiveGateway,
) -> None:
    name, endpoint, key = gateway.topic("CloudEventSchemaV1_0")
    headers, body = to_binary(cncf_event(2, b"\x89PNG\r\n"))
    headers["content-type"] = "image/png"
    async with httpx.AsyncClient() as client:
        response = await client.post(
            endpoint, content=body, headers={**headers, "aeg-sas-key": key}
        )
    assert response.status_code == 200, response.text
    [got] = await asyncio.to_thread(gateway.wait_for, name, 1)
    assert got.data_bytes == b"\x89PNG\r\n"
    assert got.datacontenttype == "image/png"
    assert got.extensions["priority"] == "high"


@pytest.mark.parametrize("mode", ["structured", "binary"])
async def test_the_current_cloudevents_core_api_is_accepted_with_percent_encoded_headers(
    gateway: LiveGateway, mode: str
) -> None:
    name, endpoint, key = gateway.topic("CloudEventSchemaV1_0")
    attributes = {
        "type": "Order.Placed",
        "source": "/shop",
        "id": "core-1",
        "subject": 'café 1/2 "quoted" 100%',
        "datacontenttype": "application/json",
        "correlationid": "tx-core",
    }
    event = CoreCloudEvent(attributes, {"weight": 1})
    message = to_structured_event(event) if mode == "structured" else to_binary_event(event)
    async with httpx.AsyncClient() as client:
        response = await client.post(
            endpoint, content=message.body, headers={**message.headers, "aeg-sas-key": key}
        )
    assert response.status_code == 200, response.text
    [got] = await asyncio.to_thread(gateway.wait_for, name, 1)
    assert got.subject == 'café 1/2 "quoted" 100%'
    assert got.data == {"weight": 1}
    assert got.extensions == {"correlationid": "tx-core"}
