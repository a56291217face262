"""Webhook validation over real HTTP (checklist 17-21): the Event Grid handshake and every way it
fails, manual validation through the validationUrl within and after its window, the CloudEvents
OPTIONS handshake, and no notification before validation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from test_webhook_receiver import (
    Answer,
    Env,
    Received,
    Script,
    closed_port,
    echo_validation,
    wait_until,
    webhook_env,
)

from choreograph.bus import InProcessDestination, SubscriptionSpec
from choreograph.bus.subscription import ProvisioningState, SubscriptionRecord
from choreograph.events import CloudEvent
from choreograph.gateway.validation import (
    PendingValidations,
    validate_pending_subscriptions,
    validate_subscription,
    validation_hook,
    validation_routes,
)

BASE = "http://gateway.test"


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with webhook_env() as env:
        yield env


@pytest.fixture
async def pending(env: Env) -> AsyncIterator[PendingValidations]:
    async with PendingValidations(env.bus) as pending:
        yield pending


@pytest.fixture
async def gateway(pending: PendingValidations) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=validation_routes(pending))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


async def validate(
    env: Env, record: SubscriptionRecord, pending: PendingValidations | None
) -> ProvisioningState:
    return await validate_subscription(
        env.bus, record, validation_base_url=BASE, client=env.webhooks, pending=pending
    )


async def state(env: Env, name: str = "hook", topic: str = "orders") -> ProvisioningState:
    return (await env.bus.get_subscription(topic, name)).provisioning_state


def validation_url(received: Received) -> str:
    url = received.json()[0]["data"]["validationUrl"]
    assert isinstance(url, str)
    return url


def event() -> CloudEvent:
    return CloudEvent(id="evt-1", type="Fabrikam.PackageCreated", source="/ingestion", data={})


# the Event Grid handshake ------------------------------------------------------------------------
async def test_the_handshake_posts_one_subscription_validation_event(
    env: Env, pending: PendingValidations
) -> None:
    url = env.receiver.url("/hook?code=s3cret&x=1")
    record = await env.webhook(url=url, schema="EventGridSchema", validated=False)
    assert record.provisioning_state == "Creating"

    assert await validate(env, record, pending) == "Succeeded"

    [request] = env.receiver.requests
    assert request.method == "POST"
    assert request.path_qs == "/hook?code=s3cret&x=1"
    assert request.headers["aeg-event-type"] == "SubscriptionValidation"
    assert request.headers["aeg-subscription-name"] == "hook"
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    [validation] = request.json()
    assert validation["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent"
    assert validation["topic"] == "/topics/orders"
    assert (validation["metadataVersion"], validation["dataVersion"]) == ("1", "1")
    assert isinstance(validation["data"]["validationCode"], str)
    assert validation["data"]["validationUrl"].startswith(f"{BASE}/validate/orders/hook?code=")
    assert await state(env) == "Succeeded"


async def test_no_notification_is_delivered_before_validation(
    env: Env, pending: PendingValidations
) -> None:
    record = await env.webhook(validated=False, schema="EventGridSchema")
    await env.bus.publish("orders", {**_eventgrid_dict(), "id": "evt-1"})
    await env.settle()
    await env.advance(3600)
    assert env.receiver.requests == []

    assert await validate(env, record, pending) == "Succeeded"
    await env.settle()

    kinds = [r.headers["aeg-event-type"] for r in env.receiver.requests]
    assert kinds == ["SubscriptionValidation", "Notification"]
    assert env.receiver.requests[1].json()[0]["id"] == "evt-1"


def _eventgrid_dict() -> dict[str, object]:
    return {
        "subject": "/deliveries/1",
        "eventType": "Fabrikam.PackageCreated",
        "eventTime": "2026-01-01T00:00:00Z",
        "data": {},
        "dataVersion": "1.0",
    }


def _echo_with(status: int) -> Script:
    def answer(received: Received) -> Answer:
        code = received.json()[0]["data"]["validationCode"]
        return Answer(status, {"validationResponse": code})

    return answer


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(_echo_with(202), id="202-with-the-code"),
        pytest.param(_echo_with(201), id="201-with-the-code"),
        pytest.param(Answer(200, {"validationResponse": "not-the-code"}), id="wrong-code"),
        pytest.param(Answer(500, "boom"), id="500"),
        pytest.param(Answer(400), id="400"),
        pytest.param(Answer(404), id="404"),
        pytest.param(Answer(204), id="204"),
        pytest.param(Answer(307, headers={"Location": "/elsewhere"}), id="redirect"),
    ],
)
async def test_anything_but_a_200_echoing_the_code_fails_validation(
    env: Env, pending: PendingValidations, answer: Script
) -> None:
    record = await env.webhook(validated=False, schema="EventGridSchema")
    env.receiver.answer(answer)

    assert await validate(env, record, pending) == "Failed"

    assert await state(env) == "Failed"
    assert [r.path_qs for r in env.receiver.requests] == ["/hook"]  # once, redirect not followed
    await env.bus.publish("orders", {**_eventgrid_dict(), "id": "evt-1"})
    await env.settle()
    assert env.receiver.notifications() == []


async def test_no_answer_within_30_s_is_reattempted_once_5_s_later_then_fails(
    env: Env, pending: PendingValidations
) -> None:
    record = await env.webhook(validated=False, schema="EventGridSchema")
    env.receiver.answer(Answer(200, hold=True), Answer(200, hold=True))
    start = env.clock.now()
    validation = asyncio.create_task(validate(env, record, pending))

    await env.receiver.wait_for(1)
    env.clock.advance(30)
    await wait_until(lambda: env.clock.next_deadline() == start + 35)
    env.clock.advance(5)
    await env.receiver.wait_for(2)
    env.clock.advance(29)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not validation.done()
    env.clock.advance(1)

    assert await validation == "Failed"
    first, second = env.receiver.requests
    assert second.at - first.at == 35
    assert await state(env) == "Failed"


async def test_an_answer_to_the_reattempt_is_enough(env: Env, pending: PendingValidations) -> None:
    record = await env.webhook(validated=False, schema="EventGridSchema")
    env.receiver.answer(Answer(200, hold=True), echo_validation)
    start = env.clock.now()
    validation = asyncio.create_task(validate(env, record, pending))

    await env.receiver.wait_for(1)
    env.clock.advance(30)
    await wait_until(lambda: env.clock.next_deadline() == start + 35)
    env.clock.advance(5)

    assert await validation == "Succeeded"
    assert len(env.receiver.requests) == 2


@pytest.mark.parametrize("schema", ["EventGridSchema", "CloudEventSchemaV1_0"])
async def test_an_endpoint_refusing_connections_fails_after_the_reattempt(
    env: Env, pending: PendingValidations, schema: str
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    record = await env.webhook(validated=False, schema=schema, url=url)
    start = env.clock.now()
    validation = asyncio.create_task(validate(env, record, pending))

    await wait_until(lambda: env.clock.next_deadline() == start + 5)
    env.clock.advance(5)

    assert await validation == "Failed"
    assert await state(env) == "Failed"


# manual validation -------------------------------------------------------------------------------
async def test_a_200_without_the_code_awaits_a_get_on_the_validation_url(
    env: Env, pending: PendingValidations, gateway: httpx.AsyncClient
) -> None:
    record = await env.webhook(validated=False, schema="EventGridSchema")
    env.receiver.answer(Answer(200, "thanks, I will validate later"))

    assert await validate(env, record, pending) == "AwaitingManualAction"
    assert await state(env) == "AwaitingManualAction"
    await env.bus.publish("orders", {**_eventgrid_dict(), "id": "evt-1"})
    await env.settle()
    assert env.receiver.notifications() == []

    await env.advance(599)
    url = validation_url(env.receiver.requests[0])
    response = await gateway.get(url)
    assert (response.status_code, response.json()) == (200, {"provisioningState": "Succeeded"})
    assert await state(env) == "Succeeded"
    await env.settle()
    assert [r.json()[0]["id"] for r in env.receiver.notifications()] == ["evt-1"]

    again = await gateway.get(url)  # the code is single-use
    assert again.status_code == 404
    await env.advance(3600)  # the window's end changes nothing any more
    assert await state(env) == "Succeeded"


async def test_the_validation_url_fails_the_subscription_after_its_window(
    env: Env, pending: PendingValidations, gateway: httpx.AsyncClient
) -> None:
    record = await env.webhook(validated=False, schema="EventGridSchema")
    env.receiver.answer(Answer(200))
    assert await validate(env, record, pending) == "AwaitingManualAction"

    env.clock.advance(600)
    await wait_until(
        lambda: env.bus.get_subscription_record("orders", "hook").provisioning_state == "Failed"
    )

    response = await gateway.get(validation_url(env.receiver.requests[0]))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"
    assert await state(env) == "Failed"


async def test_a_validation_url_past_its_window_is_gone_even_before_the_watcher_runs(
    env: Env, pending: PendingValidations, gateway: httpx.AsyncClient
) -> None:
    record = await env.webhook(validated=False, schema="EventGridSchema")
    env.receiver.answer(Answer(200))
    assert await validate(env, record, pending) == "AwaitingManualAction"

    env.clock.advance(601)  # the watcher is woken but has not run yet
    response = await gateway.get(validation_url(env.receiver.requests[0]))

    assert response.status_code == 410
    await wait_until(
        lambda: env.bus.get_subscription_record("orders", "hook").provisioning_state == "Failed"
    )


async def test_the_validation_url_refuses_wrong_missing_and_head_requests(
    env: Env, pending: PendingValidations, gateway: httpx.AsyncClient
) -> None:
    record = await env.webhook(validated=False, schema="EventGridSchema")
    env.receiver.answer(Answer(200))
    assert await validate(env, record, pending) == "AwaitingManualAction"
    url = validation_url(env.receiver.requests[0])

    assert (await gateway.get("/validate/orders/hook?code=guess")).status_code == 404
    assert (await gateway.get("/validate/orders/other?code=guess")).status_code == 404
    missing = await gateway.get("/validate/orders/hook")
    assert missing.status_code == 400
    assert missing.json()["error"]["details"][0]["target"] == "code"
    assert (await gateway.head(url)).status_code == 405
    assert await state(env) == "AwaitingManualAction"
    assert (await gateway.get(url)).status_code == 200


async def test_the_validation_url_used_during_the_handshake_validates(
    env: Env, pending: PendingValidations, gateway: httpx.AsyncClient
) -> None:
    record = await env.webhook(validated=False, schema="EventGridSchema")

    async def validate_then_answer(received: Received) -> Answer:
        response = await gateway.get(validation_url(received))
        assert response.status_code == 200
        return Answer(200)

    env.receiver.answer(validate_then_answer)

    assert await validate(env, record, pending) == "Succeeded"
    assert await state(env) == "Succeeded"


async def test_without_pending_validations_a_200_without_the_code_fails(env: Env) -> None:
    record = await env.webhook(validated=False, schema="EventGridSchema")
    env.receiver.answer(Answer(200))

    assert await validate(env, record, None) == "Failed"

    assert "validationUrl" not in env.receiver.requests[0].json()[0]["data"]
    assert await state(env) == "Failed"


# the CloudEvents handshake -----------------------------------------------------------------------
@pytest.mark.parametrize("origin", ["eventgrid.azure.net", "*", " EventGrid.Azure.net "])
async def test_the_options_handshake_validates_when_the_origin_is_allowed(
    env: Env, pending: PendingValidations, origin: str
) -> None:
    record = await env.webhook(validated=False, url=env.receiver.url("/ce?key=k"))
    env.receiver.answer(Answer(200, headers={"WebHook-Allowed-Origin": origin}))

    assert await validate(env, record, pending) == "Succeeded"

    [request] = env.receiver.requests
    assert (request.method, request.path_qs) == ("OPTIONS", "/ce?key=k")
    assert request.headers["WebHook-Request-Origin"] == "eventgrid.azure.net"
    await env.bus.publish("orders", event())
    await env.settle()
    assert [r.method for r in env.receiver.requests] == ["OPTIONS", "POST"]


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(Answer(200), id="bare-200"),
        pytest.param(Answer(200, headers={"WebHook-Allowed-Origin": "example.com"}), id="other"),
        pytest.param(Answer(405, headers={"Allow": "POST"}), id="405"),
        pytest.param(
            Answer(403, headers={"WebHook-Allowed-Origin": "eventgrid.azure.net"}), id="403"
        ),
    ],
)
async def test_the_options_handshake_fails_without_consent(
    env: Env, pending: PendingValidations, answer: Answer
) -> None:
    record = await env.webhook(validated=False)
    env.receiver.answer(answer)

    assert await validate(env, record, pending) == "Failed"

    await env.bus.publish("orders", event())
    await env.settle()
    assert [r.method for r in env.receiver.requests] == ["OPTIONS"]


async def test_the_options_handshake_is_reattempted_when_unanswered(
    env: Env, pending: PendingValidations
) -> None:
    record = await env.webhook(validated=False)
    env.receiver.answer(Answer(200, hold=True))
    start = env.clock.now()
    validation = asyncio.create_task(validate(env, record, pending))

    await env.receiver.wait_for(1)
    env.clock.advance(30)
    await wait_until(lambda: env.clock.next_deadline() == start + 35)
    env.clock.advance(5)

    assert await validation == "Succeeded"
    assert [r.method for r in env.receiver.requests] == ["OPTIONS", "OPTIONS"]


# lifecycle ---------------------------------------------------------------------------------------
async def test_a_validation_overtaken_by_a_new_endpoint_changes_nothing(
    env: Env, pending: PendingValidations
) -> None:
    record = await env.webhook(validated=False)
    env.receiver.answer(Answer(200, hold=True))
    validation = asyncio.create_task(validate(env, record, pending))
    await env.receiver.wait_for(1)

    await env.webhook(validated=False, url=env.receiver.url("/moved"))
    env.receiver.release()
    await validation

    assert await state(env) == "Creating"


async def test_pending_subscriptions_are_validated_again(
    env: Env, pending: PendingValidations
) -> None:
    await env.webhook("first", topic="orders", validated=False, schema="EventGridSchema")
    await env.webhook("second", topic="drones", validated=False)
    await env.webhook("third", topic="fleet", validated=True)

    states = await validate_pending_subscriptions(
        env.bus, validation_base_url=BASE, client=env.webhooks, pending=pending
    )

    assert states == {("orders", "first"): "Succeeded", ("drones", "second"): "Succeeded"}
    assert len(env.receiver.requests) == 2


async def test_the_management_hook_validates(env: Env, pending: PendingValidations) -> None:
    record = await env.webhook(validated=False)
    hook = validation_hook(env.bus, validation_base_url=BASE, client=env.webhooks, pending=pending)

    await hook(record)

    assert await state(env) == "Succeeded"


async def test_an_in_process_subscription_is_left_alone(
    env: Env, pending: PendingValidations
) -> None:
    await env.bus.put_topic("orders")
    spec = SubscriptionSpec(destination=InProcessDestination())
    record = await env.bus.put_subscription("orders", "local", spec)

    assert await validate(env, record, pending) == "Succeeded"
    assert env.receiver.requests == []


async def test_a_code_that_is_not_ascii_is_simply_not_found(
    env: Env, pending: PendingValidations, gateway: httpx.AsyncClient
) -> None:
    record = await env.webhook(validated=False, schema="EventGridSchema")
    env.receiver.answer(Answer(200))
    assert await validate(env, record, pending) == "AwaitingManualAction"

    response = await gateway.get("/validate/orders/hook", params={"code": "é"})

    assert response.status_code == 404
    assert await state(env) == "AwaitingManualAction"
