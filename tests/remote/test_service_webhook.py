"""A service as an ASGI webhook app, in process (httpx.ASGITransport): the handshakes, the
mapping of outcomes to HTTP answers, publishing what it emits through the gateway before it
answers, the inbox, and the subscriptions it registers."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from remote_helpers import (
    TRACE_ID,
    Gateway,
    RecordingPublisher,
    event,
    in_process_gateway,
    notification,
    options_request,
    trace_id,
    validation_request,
)
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from choreograph import AdvancedFilter, EventFilter, Reject, Retry, RetryPolicy, WebHookDestination
from choreograph.events import CloudEvent
from choreograph.sdk import Context, Service
from choreograph.sdk.asgi import ApiContext, ServiceWebhook, serve
from choreograph.sdk.remote import GatewayClient, GatewayError

POLICY = RetryPolicy(backoff_seconds=(1.0, 2.0), max_delivery_attempts=4)
SUBSCRIPTION = "billing-issue-invoice"


@dataclass
class Billing:
    """A service whose handler does what the event's ``behaviour`` says, and counts its runs."""

    service: Service
    runs: list[str] = field(default_factory=list)


def billing() -> Billing:
    service = Service("billing")
    made = Billing(service)

    @service.on(
        "Order.Placed",
        topic="orders",
        emits={"Invoice.Issued": "invoices", "Audit.Noted": "audit"},
        retry_policy=POLICY,
    )
    async def issue_invoice(event: CloudEvent, ctx: Context) -> None:
        behaviour = event.data.get("behaviour")
        if behaviour == "retry":
            raise Retry("the ledger is busy", delay_seconds=2.5)
        if behaviour == "retry-now":
            raise Retry("the ledger is busy")
        if behaviour == "reject":
            raise Reject("an order without lines")
        if behaviour == "crash":
            raise RuntimeError("boom")
        made.runs.append(event.id)
        ctx.state.put("invoices", event.data["orderId"], {"total": 12})
        ctx.emit("Invoice.Issued", {"orderId": event.data["orderId"]})
        ctx.emit("Audit.Noted", {"orderId": event.data["orderId"]})

    @service.on(
        "Choreograph.DeadLettered",
        topic="choreograph-system",
        event_filter=EventFilter(
            advanced_filters=(
                AdvancedFilter(
                    operator_type="StringIn", key="data.subscription", values=[SUBSCRIPTION]
                ),
            )
        ),
    )
    async def note_dead_letters(event: CloudEvent, ctx: Context) -> None:
        """Consumes the system topic with an advanced filter (registered as such)."""

    return made


@dataclass
class Running:
    webhook: ServiceWebhook
    client: httpx.AsyncClient
    billing: Billing

    async def deliver(self, delivered: CloudEvent, count: int = 0) -> httpx.Response:
        request = notification(
            delivered, subscription=SUBSCRIPTION, topic="orders", delivery_count=count
        )
        return await self.client.post("/handlers/issue-invoice", **request)


@contextlib.asynccontextmanager
async def running(gateway: GatewayClient, publisher: Any = None) -> AsyncIterator[Running]:
    made = billing()
    async with ServiceWebhook(
        made.service, gateway, public_url="http://billing.test:8100", publisher=publisher
    ) as webhook:
        transport = httpx.ASGITransport(app=webhook.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://billing.test") as client:
            yield Running(webhook, client, made)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with in_process_gateway() as gateway:
        yield gateway


# handshakes --------------------------------------------------------------------------------------
async def test_the_event_grid_validation_handshake_is_answered_with_its_code(
    gateway: Gateway,
) -> None:
    async with running(gateway.client) as service:
        answer = await service.client.post(
            "/handlers/issue-invoice", **validation_request(SUBSCRIPTION, "code-42")
        )

    assert answer.status_code == 200
    assert answer.json() == {"validationResponse": "code-42"}
    assert service.billing.runs == []


async def test_a_validation_for_another_subscription_is_refused(gateway: Gateway) -> None:
    async with running(gateway.client) as service:
        answer = await service.client.post(
            "/handlers/issue-invoice", **validation_request("someone-else")
        )

    assert answer.status_code == 403
    assert "billing-issue-invoice" in answer.json()["error"]["message"]


async def test_the_cloudevents_options_handshake_grants_the_origin(gateway: Gateway) -> None:
    async with running(gateway.client) as service:
        granted = await service.client.options("/handlers/issue-invoice", **options_request())
        refused = await service.client.options(
            "/handlers/issue-invoice", headers={"WebHook-Request-Origin": "evil.example.com"}
        )

    assert granted.status_code == 200
    assert granted.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert "POST" in granted.headers["Allow"]
    assert refused.status_code == 403
    assert "WebHook-Allowed-Origin" not in refused.headers


# outcomes ----------------------------------------------------------------------------------------
async def test_a_delivery_runs_the_handler_publishes_its_events_and_answers_200(
    gateway: Gateway,
) -> None:
    arrived: list[CloudEvent] = []

    async def audit(received: CloudEvent) -> None:
        arrived.append(received)

    async with running(gateway.client) as service:
        await gateway.bus.subscribe("invoices", "audit", audit)
        order = event("Order.Placed", {"orderId": "o-1"}, correlation="tx-7")
        answer = await service.deliver(order)
        await gateway.bus.idle()
        state = await service.webhook.store.view().get("invoices", "o-1")

    assert answer.status_code == 200, answer.text
    assert service.billing.runs == [order.id]
    assert state == {"total": 12}
    [invoice] = arrived
    assert invoice.type == "Invoice.Issued"
    assert invoice.source == "/services/billing"
    assert invoice.correlationid == "tx-7"
    assert invoice.causationid == order.id
    assert trace_id(invoice.traceparent) == TRACE_ID
    assert invoice.traceparent != order.traceparent  # the handler's own span


async def test_a_retry_with_a_delay_answers_503_with_retry_after(gateway: Gateway) -> None:
    async with running(gateway.client) as service:
        answer = await service.deliver(event("Order.Placed", {"behaviour": "retry"}))

    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "3"  # 2.5 s, rounded up
    assert answer.json()["error"]["message"] == "the ledger is busy"


async def test_a_retry_without_a_delay_answers_503_without_retry_after(gateway: Gateway) -> None:
    async with running(gateway.client) as service:
        answer = await service.deliver(event("Order.Placed", {"behaviour": "retry-now"}))

    assert answer.status_code == 503
    assert "Retry-After" not in answer.headers


async def test_a_rejected_event_answers_400(gateway: Gateway) -> None:
    async with running(gateway.client) as service:
        answer = await service.deliver(event("Order.Placed", {"behaviour": "reject"}))

    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "an order without lines"


async def test_a_handler_that_raises_answers_500_and_changes_nothing(gateway: Gateway) -> None:
    async with running(gateway.client) as service:
        answer = await service.deliver(event("Order.Placed", {"behaviour": "crash"}))
        state = await service.webhook.store.view().items("invoices")

    assert answer.status_code == 500
    assert "RuntimeError: boom" in answer.json()["error"]["message"]
    assert state == []


async def test_a_body_that_is_no_cloudevent_answers_400(gateway: Gateway) -> None:
    async with running(gateway.client) as service:
        not_json = await service.client.post(
            "/handlers/issue-invoice",
            content=b"{oops",
            headers={
                "Content-Type": "application/cloudevents+json",
                "aeg-event-type": "Notification",
            },
        )
        eventgrid = await service.client.post(
            "/handlers/issue-invoice",
            json=[{"id": "1", "eventType": "Order.Placed"}],
            headers={"Content-Type": "application/json", "aeg-event-type": "Notification"},
        )

    assert not_json.status_code == 400
    assert eventgrid.status_code == 400
    assert service.billing.runs == []


async def test_an_unknown_handler_is_404(gateway: Gateway) -> None:
    async with running(gateway.client) as service:
        answer = await service.client.post("/handlers/nobody", json={})

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "NotFound"


# the inbox and publishing ------------------------------------------------------------------------
async def test_a_duplicate_delivery_does_not_run_the_handler_again_and_republishes_the_same_ids(
    gateway: Gateway,
) -> None:
    publisher = RecordingPublisher()
    order = event("Order.Placed", {"orderId": "o-2"})
    async with running(gateway.client, publisher) as service:
        first = await service.deliver(order)
        again = await service.deliver(order, count=1)

    assert (first.status_code, again.status_code) == (200, 200)
    assert service.billing.runs == [order.id]
    assert [topic for topic, _ in publisher.published] == ["invoices", "audit"] * 2
    assert publisher.ids[:2] == publisher.ids[2:]


async def test_events_that_cannot_be_published_fail_the_delivery_and_the_retry_publishes_them(
    gateway: Gateway,
) -> None:
    publisher = RecordingPublisher(failures=1)
    order = event("Order.Placed", {"orderId": "o-3"})
    async with running(gateway.client, publisher) as service:
        failed = await service.deliver(order)
        retried = await service.deliver(order, count=1)

    assert failed.status_code == 503
    assert "could not be published" in failed.json()["error"]["message"]
    assert retried.status_code == 200
    assert service.billing.runs == [order.id]  # the retry found the inbox entry
    assert [event.type for _, events in publisher.published for event in events] == [
        "Invoice.Issued",
        "Audit.Noted",
    ]


async def test_republished_events_are_absorbed_by_the_topics_deduplication(
    gateway: Gateway,
) -> None:
    arrived: list[CloudEvent] = []

    async def audit(received: CloudEvent) -> None:
        arrived.append(received)

    order = event("Order.Placed", {"orderId": "o-4"})
    async with running(gateway.client) as service:
        await gateway.bus.subscribe("invoices", "audit", audit)
        await service.deliver(order)
        await service.deliver(order, count=1)
        await gateway.bus.idle()

    assert [received.type for received in arrived] == ["Invoice.Issued"]


# start-up and registration ----------------------------------------------------------------------
async def test_start_creates_the_topics_and_registration_puts_webhook_subscriptions(
    gateway: Gateway,
) -> None:
    async with running(gateway.client) as service:
        unready = await service.client.get("/healthz")
        await service.webhook.register()
        ready = await service.client.get("/healthz")
        topics = {topic.name for topic in await gateway.bus.list_topics()}
        record = await gateway.bus.get_subscription("orders", SUBSCRIPTION)
        system = await gateway.bus.get_subscription(
            "choreograph-system", "billing-note-dead-letters"
        )

    assert unready.status_code == 503
    assert ready.status_code == 200
    assert ready.json()["subscriptions"] == [
        f"orders/{SUBSCRIPTION}",
        "choreograph-system/billing-note-dead-letters",
    ]
    assert {"orders", "invoices", "audit", "choreograph-system"} <= topics
    destination = record.spec.destination
    assert isinstance(destination, WebHookDestination)
    assert destination.endpoint_url == "http://billing.test:8100/handlers/issue-invoice"
    assert record.spec.event_filter.included_event_types == ("Order.Placed",)
    assert record.spec.retry_policy == POLICY
    assert record.spec.event_delivery_schema == "CloudEventSchemaV1_0"
    assert system.spec.event_filter.advanced_filters[0].key == "data.subscription"
    # This gateway validates no webhook, so the subscriptions wait for it.
    assert record.provisioning_state == "Creating"


async def test_a_service_with_an_api_serves_its_routes_and_publishes_through_the_gateway(
    gateway: Gateway,
) -> None:
    service = Service("shop")

    @service.on("Order.Paid", topic="payments")
    async def note(event: CloudEvent, ctx: Context) -> None:
        """Only there to consume something."""

    @contextlib.asynccontextmanager
    async def api(context: ApiContext) -> AsyncIterator[Sequence[BaseRoute]]:
        async def place(request: Request) -> JSONResponse:
            placed = event("Order.Placed", {"orderId": "o-9"})
            await context.publisher.publish("orders", placed)
            return JSONResponse({"id": placed.id}, status_code=202)

        yield [Route("/orders", place, methods=["POST"])]

    arrived: list[CloudEvent] = []

    async def audit(received: CloudEvent) -> None:
        arrived.append(received)

    await gateway.bus.put_topic("orders")
    await gateway.bus.subscribe("orders", "audit", audit)
    async with ServiceWebhook(
        service, gateway.client, public_url="http://shop.test", api=api
    ) as webhook:
        transport = httpx.ASGITransport(app=webhook.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            answer = await client.post("/orders")
        await gateway.bus.idle()

    assert answer.status_code == 202
    assert [received.id for received in arrived] == [answer.json()["id"]]


async def test_serve_answers_requests_made_while_it_starts_and_stops_when_registration_fails(
    gateway: Gateway,
) -> None:
    listening = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listening.getsockname()[1]}"
    answers: list[int] = []
    async with running(gateway.client) as service:

        async def register() -> None:
            # The socket listens before uvicorn accepts: this request waits in its backlog.
            async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
                answers.append((await client.get("/healthz")).status_code)
            raise GatewayError("the gateway could not validate the endpoint")

        with pytest.raises(GatewayError, match="could not validate"):
            await serve(service.webhook.app, [listening], on_listening=register)
    listening.close()

    assert answers == [503]  # served, and not ready: registration had not finished
