"""The ambassador in process: a plain Starlette service behind it (httpx.ASGITransport), a gateway
on an in-memory bus. What the service receives, how its answers map to the bus's outcomes, the
events published for it (built as the SDK builds them), and its local ``/publish``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pytest
from remote_helpers import (
    TRACE_ID,
    TRACEPARENT,
    Gateway,
    event,
    in_process_gateway,
    notification,
    options_request,
    trace_id,
    validation_request,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from choreograph import ConfigError, RetryPolicy, WebHookDestination
from choreograph.ambassador import Ambassador, AmbassadorSettings, parse_emits
from choreograph.ambassador.contract import (
    AnswerError,
    outcome_of_status,
    parse_answer,
    parse_publish,
)
from choreograph.events import CloudEvent
from choreograph.sdk import emitted_id
from choreograph.sdk.endpoint import event_key

EMITS = {"DeliveryScheduled": "deliveries", "DeliverySchedulingFailed": "deliveries"}
SUBSCRIPTION = "delivery-schedule"
Answer = Callable[[dict[str, Any]], Response]


def scheduled(body: dict[str, Any]) -> Response:
    return JSONResponse(
        {"events": [{"type": "DeliveryScheduled", "data": {"deliveryId": body["data"]["id"]}}]}
    )


@dataclass
class PlainService:
    """A service that knows nothing of the bus: it records requests and answers from a script."""

    answer: Answer = scheduled
    requests: list[tuple[dict[str, Any], dict[str, str]]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            body = await request.json()
            self.requests.append((body, dict(request.headers)))
            return self.answer(body)

        return Starlette(routes=[Route("/handle", handle, methods=["POST"])])


def settings(**overrides: Any) -> AmbassadorSettings:
    values: dict[str, Any] = {
        "name": "delivery",
        "handler": "schedule",
        "topic": "drones",
        "consumes": ("DroneAssigned",),
        "emits": EMITS,
        "service_url": "http://plain.test/handle",
        "public_url": "http://ambassador.test:9000",
        "retry_policy": RetryPolicy(backoff_seconds=(1.0,), max_delivery_attempts=3),
    }
    return AmbassadorSettings(**{**values, **overrides})


@dataclass
class Running:
    ambassador: Ambassador
    client: httpx.AsyncClient
    gateway: Gateway
    arrived: list[CloudEvent]

    async def deliver(self, delivered: CloudEvent, count: int = 0) -> httpx.Response:
        request = notification(
            delivered, subscription=SUBSCRIPTION, topic="drones", delivery_count=count
        )
        return await self.client.post("/handlers/schedule", **request)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with in_process_gateway() as gateway:
        yield gateway


@contextlib.asynccontextmanager
async def running(
    gateway: Gateway,
    service: PlainService | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    **overrides: Any,
) -> AsyncIterator[Running]:
    plain = transport or httpx.ASGITransport(app=(service or PlainService()).app())
    arrived: list[CloudEvent] = []

    async def record(received: CloudEvent) -> None:
        arrived.append(received)

    async with Ambassador(settings(**overrides), gateway.client, transport=plain) as ambassador:
        await gateway.bus.subscribe("deliveries", "audit", record)
        transport = httpx.ASGITransport(app=ambassador.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://ambassador.test"
        ) as client:
            yield Running(ambassador, client, gateway, arrived)


def assigned(delivery: str = "d-1") -> CloudEvent:
    return event(
        "DroneAssigned",
        {"id": delivery, "droneId": "drone-007"},
        correlation=delivery,
        source="/services/scheduler",
        subject=f"/deliveries/{delivery}",
    )


# deliveries --------------------------------------------------------------------------------------
async def test_the_service_gets_plain_json_and_its_events_are_published_as_the_sdk_builds_them(
    gateway: Gateway,
) -> None:
    plain = PlainService()
    consumed = assigned()
    async with running(gateway, plain) as run:
        answer = await run.deliver(consumed)
        await gateway.bus.idle()

    assert answer.status_code == 200, answer.text
    [(body, headers)] = plain.requests
    assert body == {
        "id": consumed.id,
        "type": "DroneAssigned",
        "source": "/services/scheduler",
        "subject": "/deliveries/d-1",
        "time": None,
        "data": {"id": "d-1", "droneId": "drone-007"},
        "correlationId": "d-1",
        "attempt": 1,
    }
    assert headers["content-type"] == "application/json"
    assert trace_id(headers["traceparent"]) == TRACE_ID
    [published] = run.arrived
    assert published.id == emitted_id(
        event_key(consumed), "delivery", "schedule", "DeliveryScheduled", 0
    )
    assert published.type == "DeliveryScheduled"
    assert published.source == "/services/delivery"
    assert published.subject == "/deliveries/d-1"
    assert published.data == {"deliveryId": "d-1"}
    assert published.correlationid == "d-1"
    assert published.causationid == consumed.id
    assert published.traceparent == headers["traceparent"]  # the ambassador's span, shown to both


async def test_a_redelivered_event_reaches_the_service_again_and_publishes_the_same_ids(
    gateway: Gateway,
) -> None:
    plain = PlainService()
    consumed = assigned()
    async with running(gateway, plain) as run:
        first = await run.deliver(consumed)
        again = await run.deliver(consumed, count=1)
        await gateway.bus.idle()

    assert (first.status_code, again.status_code) == (200, 200)
    assert [body["attempt"] for body, _ in plain.requests] == [1, 2]
    assert len(run.arrived) == 1  # the same id: the topic's de-duplication absorbed the second


async def test_an_answer_without_events_acknowledges_the_delivery(gateway: Gateway) -> None:
    for body in (b"", b"{}", b'{"events": []}'):
        plain = PlainService(answer=lambda _, body=body: Response(body, status_code=200))
        async with running(gateway, plain) as run:
            answer = await run.deliver(assigned())
        assert answer.status_code == 200, (body, answer.text)
        assert run.arrived == []


@pytest.mark.parametrize(
    ("status", "headers", "to_bus", "retry_after"),
    [
        (500, {}, 503, None),
        (503, {"Retry-After": "7"}, 503, "7"),
        (429, {}, 503, None),
        (408, {}, 503, None),
        (404, {}, 400, None),
        (422, {}, 400, None),
        (302, {"Location": "/elsewhere"}, 502, None),
    ],
)
async def test_the_services_status_maps_to_the_bus_outcome(
    gateway: Gateway, status: int, headers: dict[str, str], to_bus: int, retry_after: str | None
) -> None:
    plain = PlainService(answer=lambda _: Response("nope", status_code=status, headers=headers))
    async with running(gateway, plain) as run:
        answer = await run.deliver(assigned())

    assert answer.status_code == to_bus
    assert answer.headers.get("Retry-After") == retry_after
    assert f"the service answered {status}" in answer.json()["error"]["message"]
    assert run.arrived == []


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (httpx.ReadTimeout("slow"), "did not answer within 25 s"),
        (httpx.ConnectError("refused"), "cannot reach the service"),
    ],
)
async def test_no_answer_from_the_service_is_a_transient_failure(
    gateway: Gateway, error: Exception, message: str
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    async with running(gateway, transport=httpx.MockTransport(fail)) as run:
        answer = await run.deliver(assigned())

    assert answer.status_code == 503
    assert message in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "is not JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"events": {}}', "must be a list"),
        (b'{"events": [{"type": "Surprise"}]}', "not an event type this service emits"),
        (b'{"events": [{"type": "DeliveryScheduled", "subj": "x"}]}', "has `subj`"),
        (b'{"evnets": []}', "has `evnets`"),
    ],
)
async def test_an_answer_that_breaks_the_contract_is_a_failure_the_bus_retries(
    gateway: Gateway, body: bytes, message: str
) -> None:
    plain = PlainService(answer=lambda _: Response(body, status_code=200))
    async with running(gateway, plain) as run:
        answer = await run.deliver(assigned())

    assert answer.status_code == 502
    assert message in answer.json()["error"]["message"]
    assert run.arrived == []


async def test_the_handshakes_are_answered_by_the_ambassador(gateway: Gateway) -> None:
    plain = PlainService()
    async with running(gateway, plain) as run:
        validated = await run.client.post(
            "/handlers/schedule", **validation_request(SUBSCRIPTION, "c-1")
        )
        granted = await run.client.options("/handlers/schedule", **options_request())

    assert validated.json() == {"validationResponse": "c-1"}
    assert granted.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert plain.requests == []


async def test_registration_puts_the_webhook_subscription(gateway: Gateway) -> None:
    async with running(gateway) as run:
        unready = await run.client.get("/healthz")
        await run.ambassador.register()
        ready = await run.client.get("/healthz")
        record = await gateway.bus.get_subscription("drones", SUBSCRIPTION)

    assert (unready.status_code, ready.status_code) == (503, 200)
    destination = record.spec.destination
    assert isinstance(destination, WebHookDestination)
    assert destination.endpoint_url == "http://ambassador.test:9000/handlers/schedule"
    assert record.spec.event_filter.included_event_types == ("DroneAssigned",)
    assert record.spec.retry_policy.backoff_seconds == (1.0,)


# publishing for the service ----------------------------------------------------------------------
async def test_the_service_publishes_through_the_ambassador(gateway: Gateway) -> None:
    async with running(gateway) as run:
        answer = await run.client.post(
            "/publish",
            json={
                "type": "DeliverySchedulingFailed",
                "data": {"deliveryId": "d-9"},
                "subject": "/deliveries/d-9",
                "id": "d-9:failed",
                "correlationId": "d-9",
            },
            headers={"traceparent": TRACEPARENT},
        )
        await gateway.bus.idle()

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"id": "d-9:failed", "topic": "deliveries", "correlationId": "d-9"}
    [published] = run.arrived
    assert published.id == "d-9:failed"
    assert published.source == "/services/delivery"
    assert published.correlationid == "d-9"
    assert trace_id(published.traceparent) == TRACE_ID


async def test_a_publish_starts_a_transaction_when_no_correlation_id_is_given(
    gateway: Gateway,
) -> None:
    async with running(gateway) as run:
        answer = await run.client.post("/publish", json={"type": "DeliveryScheduled"})
        await gateway.bus.idle()

    [published] = run.arrived
    assert published.correlationid == published.id == answer.json()["id"]
    assert published.traceparent is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"type": "Unknown"}, "not an event type this service emits"),
        ({"data": {}}, "type must be a non-empty string"),
        ({"type": "DeliveryScheduled", "correlationId": 5}, "`correlationId` must be"),
    ],
)
async def test_a_bad_publish_is_a_400_with_the_reason(
    gateway: Gateway, body: dict[str, Any], message: str
) -> None:
    async with running(gateway) as run:
        answer = await run.client.post("/publish", json=body)

    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]
    assert run.arrived == []


# the contract and the settings, as pure functions ------------------------------------------------
def test_parse_answer_reads_type_data_and_subject() -> None:
    body = json.dumps(
        {
            "events": [
                {"type": "DeliveryScheduled", "data": {"a": 1}, "subject": "/d/1"},
                {"type": "DeliverySchedulingFailed"},
            ]
        }
    ).encode()

    first, second = parse_answer(body, EMITS)

    assert first == ("DeliveryScheduled", {"a": 1}, "/d/1")
    assert second.data is msgspec.UNSET
    assert second.subject is None


def test_parse_publish_refuses_an_empty_id() -> None:
    with pytest.raises(AnswerError, match="`id` must be a non-empty string"):
        parse_publish(b'{"type": "DeliveryScheduled", "id": ""}', EMITS)


def test_outcome_of_status_passes_retry_after_on() -> None:
    outcome = outcome_of_status(503, "x" * 2000, "12")

    assert (outcome.status, outcome.retry_after_seconds) == (503, 12.0)
    assert str(outcome.detail).endswith("…")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"service_url": "ftp://x"}, "--service-url must be http"),
        ({"name": "bad name!"}, "service name"),
        ({"consumes": ()}, "at least one event type"),
        ({"service_timeout_seconds": 0}, "service timeout"),
        ({"emits": {"DeliveryScheduled": "no spaces"}}, "topic name"),
    ],
)
def test_settings_refuse_what_cannot_work(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(**overrides)


def test_parse_emits_reads_type_equals_topic() -> None:
    assert parse_emits(["A=t1", " B = t2 "]) == {"A": "t1", "B": "t2"}
    with pytest.raises(ConfigError, match="TYPE=TOPIC"):
        parse_emits(["A"])
