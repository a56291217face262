"""Webhook delivery over real HTTP (checklist 22-33, 42-47): bodies and headers of both schemas,
batches, status codes and their outcomes, retries on the fake clock, timeouts, socket errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_webhook_receiver import Answer, Env, FakeResolver, closed_port, webhook_env

from choreograph.bus import DeadLetter
from choreograph.bus.endpoint import Attempt
from choreograph.errors import ConfigError
from choreograph.events import CloudEvent, EventGridEvent
from choreograph.gateway.webhook import (
    WebhookSettings,
    notification_request,
    parse_retry_after,
    request_url,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with webhook_env() as env:
        yield env


def cloudevent(number: int = 1, **extensions: str) -> CloudEvent:
    return CloudEvent(
        id=f"evt-{number}",
        type="Fabrikam.PackageCreated",
        source="/ingestion",
        subject=f"/deliveries/{number}",
        time="2026-01-01T00:00:00Z",
        data={"deliveryId": str(number)},
        extensions={"correlationid": f"tx-{number}", **extensions},
    )


def eventgrid_event(number: int = 1, **data: object) -> EventGridEvent:
    return EventGridEvent(
        id=f"evt-{number}",
        subject=f"/deliveries/{number}",
        event_type="Fabrikam.PackageCreated",
        event_time="2026-01-01T00:00:00Z",
        data={"deliveryId": str(number), **data},
        data_version="2.0",
    )


async def dead_letters(env: Env, name: str = "hook") -> list[DeadLetter]:
    return await env.bus.dead_letters("orders", name)


# bodies and headers ------------------------------------------------------------------------------
async def test_eventgrid_delivery_is_a_one_element_array_with_event_grid_headers(env: Env) -> None:
    url = env.receiver.url("/hook?code=abc%2Fdef%3D&x=1&empty=")
    await env.webhook(url=url, schema="EventGridSchema")
    await env.bus.publish(
        "orders", eventgrid_event(1, **{"$correlation": {"traceparent": TRACEPARENT}})
    )
    await env.settle()

    [request] = env.receiver.requests
    assert request.method == "POST"
    assert request.path_qs == "/hook?code=abc%2Fdef%3D&x=1&empty="
    headers = request.headers
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["aeg-event-type"] == "Notification"
    assert headers["aeg-subscription-name"] == "hook"
    assert headers["aeg-delivery-count"] == "0"
    assert headers["aeg-metadata-version"] == "1"
    assert headers["aeg-data-version"] == "2.0"
    assert headers["traceparent"] == TRACEPARENT
    assert request.json() == [
        {
            "id": "evt-1",
            "topic": "/topics/orders",
            "subject": "/deliveries/1",
            "eventType": "Fabrikam.PackageCreated",
            "eventTime": "2026-01-01T00:00:00Z",
            "data": {"deliveryId": "1", "$correlation": {"traceparent": TRACEPARENT}},
            "dataVersion": "2.0",
            "metadataVersion": "1",
        }
    ]


async def test_cloudevents_delivery_is_one_structured_object_with_its_extensions(env: Env) -> None:
    await env.webhook(url=env.receiver.url("/ce?sig=s%20x"))
    event = cloudevent(7, traceparent=TRACEPARENT, tracestate="rojo=00f067aa0ba902b7")
    await env.bus.publish("orders", event)
    await env.settle()

    [request] = env.receiver.requests
    assert request.path_qs == "/ce?sig=s%20x"
    headers = request.headers
    assert headers["Content-Type"] == "application/cloudevents+json; charset=utf-8"
    assert headers["aeg-event-type"] == "Notification"
    assert headers["aeg-subscription-name"] == "hook"
    assert headers["aeg-delivery-count"] == "0"
    assert headers["aeg-metadata-version"] == "1.0"
    assert "aeg-data-version" not in headers
    assert headers["WebHook-Request-Origin"] == "eventgrid.azure.net"
    assert headers["traceparent"] == TRACEPARENT
    assert headers["tracestate"] == "rojo=00f067aa0ba902b7"
    assert request.json() == event.to_dict()


async def test_a_malformed_traceparent_is_not_sent_as_a_header(env: Env) -> None:
    await env.webhook()
    await env.bus.publish("orders", cloudevent(1, traceparent="not-a-trace"))
    await env.settle()

    [request] = env.receiver.requests
    assert "traceparent" not in request.headers
    assert request.json()["traceparent"] == "not-a-trace"


# batches -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("schema", "content_type"),
    [
        ("EventGridSchema", "application/json; charset=utf-8"),
        ("CloudEventSchemaV1_0", "application/cloudevents-batch+json; charset=utf-8"),
    ],
)
async def test_a_burst_goes_out_in_batches_of_at_most_max_events_per_batch(
    env: Env, schema: str, content_type: str
) -> None:
    await env.webhook(schema=schema, batch=3)
    events = [
        eventgrid_event(n) if schema == "EventGridSchema" else cloudevent(n) for n in range(7)
    ]
    await env.bus.publish("orders", events)
    await env.settle()

    batches = [request.json() for request in env.receiver.requests]
    assert all(isinstance(batch, list) and 1 <= len(batch) <= 3 for batch in batches)
    assert max(len(batch) for batch in batches) == 3
    assert sorted(e["id"] for batch in batches for e in batch) == sorted(e.id for e in events)
    assert {r.headers["Content-Type"] for r in env.receiver.requests} == {content_type}


async def test_a_single_available_event_is_not_held_back_to_fill_a_batch(env: Env) -> None:
    await env.webhook(batch=10)
    await env.bus.publish("orders", cloudevent(1))
    await env.settle()

    [request] = env.receiver.requests
    assert [e["id"] for e in request.json()] == ["evt-1"]


async def test_a_failed_batch_is_retried_as_a_whole(env: Env) -> None:
    await env.webhook(batch=5, backoff=(10.0,))
    env.receiver.answer(Answer(500))
    await env.bus.publish("orders", [cloudevent(n) for n in range(3)])
    await env.settle()
    await env.advance(10)

    first, second = env.receiver.requests
    assert sorted(e["id"] for e in first.json()) == ["evt-0", "evt-1", "evt-2"]
    assert sorted(e["id"] for e in second.json()) == ["evt-0", "evt-1", "evt-2"]
    assert (first.headers["aeg-delivery-count"], second.headers["aeg-delivery-count"]) == ("0", "1")
    assert await env.bus.counters("orders", "hook") == {
        "queued": 0,
        "deadLettered": 0,
        "dropped": 0,
    }


async def test_a_batch_refused_with_400_is_dead_lettered_as_a_whole(env: Env) -> None:
    await env.webhook(batch=5)
    env.receiver.answer(Answer(400, "bad batch"))
    await env.bus.publish("orders", [cloudevent(n) for n in range(3)])
    await env.settle()

    records = await dead_letters(env)
    assert sorted(r.event.id for r in records) == ["evt-0", "evt-1", "evt-2"]
    assert {(r.reason, r.last_delivery_outcome, r.delivery_attempts) for r in records} == {
        ("NonRetryableStatusCode", "BadRequest", 1)
    }
    assert len(env.receiver.requests) == 1


# status codes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [200, 201, 202, 203, 204])
async def test_success_statuses_count_as_delivered(env: Env, status: int) -> None:
    await env.webhook()
    env.receiver.answer(Answer(status))
    await env.bus.publish("orders", cloudevent())
    await env.settle()
    await env.advance(3600)

    assert len(env.receiver.requests) == 1
    assert await env.bus.counters("orders", "hook") == {
        "queued": 0,
        "deadLettered": 0,
        "dropped": 0,
    }


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(400, "BadRequest"), (401, "Unauthorized"), (403, "Forbidden"), (413, "PayloadTooLarge")],
)
async def test_non_retryable_statuses_are_dead_lettered_after_one_attempt(
    env: Env, status: int, outcome: str
) -> None:
    await env.webhook()
    env.receiver.answer(Answer(status, f"refused with {status}"))
    await env.bus.publish("orders", cloudevent())
    await env.settle()
    await env.advance(3600)

    [record] = await dead_letters(env)
    assert record.reason == "NonRetryableStatusCode"
    assert record.delivery_attempts == 1
    assert record.last_delivery_outcome == outcome
    assert record.last_delivery_error == f"refused with {status}"
    assert len(env.receiver.requests) == 1


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (500, "GenericError"),
        (502, "GenericError"),
        (503, "Busy"),
        (404, "NotFound"),
        (408, "TimedOut"),
        (429, "Busy"),
        (301, "Redirected"),
        (302, "Redirected"),
        (307, "Redirected"),
    ],
)
async def test_other_failures_are_retried_until_the_attempts_run_out(
    env: Env, status: int, outcome: str
) -> None:
    await env.webhook(attempts=3, backoff=(10.0, 30.0))
    redirect = {"Location": env.receiver.url("/elsewhere")}
    env.receiver.default = Answer(status, headers=redirect if status < 400 else {})
    await env.bus.publish("orders", cloudevent())
    await env.settle()
    await env.advance(10)
    await env.advance(30)

    requests = env.receiver.requests
    assert [r.headers["aeg-delivery-count"] for r in requests] == ["0", "1", "2"]
    assert [r.path_qs for r in requests] == ["/hook"] * 3  # redirects are not followed
    [record] = await dead_letters(env)
    assert (record.reason, record.delivery_attempts, record.last_delivery_outcome) == (
        "MaxDeliveryAttemptsExceeded",
        3,
        outcome,
    )


async def test_a_retried_failure_then_success_is_delivered(env: Env) -> None:
    await env.webhook(backoff=(10.0,))
    env.receiver.answer(Answer(502), Answer(200))
    await env.bus.publish("orders", cloudevent())
    await env.settle()
    await env.advance(10)

    assert [r.headers["aeg-delivery-count"] for r in env.receiver.requests] == ["0", "1"]
    assert await env.bus.counters("orders", "hook") == {
        "queued": 0,
        "deadLettered": 0,
        "dropped": 0,
    }


@pytest.mark.parametrize("status", [503, 429])
async def test_retry_after_is_honoured_as_a_minimum_delay(env: Env, status: int) -> None:
    await env.webhook(backoff=(1.0,))
    env.receiver.answer(Answer(status, headers={"Retry-After": "20"}))
    await env.bus.publish("orders", cloudevent())
    await env.settle()
    await env.advance(19)
    assert len(env.receiver.requests) == 1
    await env.advance(1)

    first, second = env.receiver.requests
    assert second.at - first.at == 20


async def test_the_response_body_is_kept_truncated_in_the_outcome(env: Env) -> None:
    await env.webhook()
    env.receiver.answer(Answer(400, "x" * 5000))
    await env.bus.publish("orders", cloudevent())
    await env.settle()

    [record] = await dead_letters(env)
    assert record.last_delivery_error == "x" * 512 + "…"


async def test_an_empty_failure_body_is_described_by_its_status(env: Env) -> None:
    await env.webhook()
    env.receiver.answer(Answer(413))
    await env.bus.publish("orders", cloudevent())
    await env.settle()

    [record] = await dead_letters(env)
    assert record.last_delivery_error == "HTTP 413 Request Entity Too Large"


# retry policy over HTTP ----------------------------------------------------------------------------
async def test_max_delivery_attempts_bounds_the_attempts(env: Env) -> None:
    await env.webhook(attempts=4, backoff=(10.0, 30.0, 60.0))
    env.receiver.default = Answer(500)
    await env.bus.publish("orders", cloudevent())
    await env.settle()
    for delay in (10, 30, 60, 60, 3600):
        await env.advance(delay)

    assert [r.at - env.receiver.requests[0].at for r in env.receiver.requests] == [0, 10, 40, 100]
    [record] = await dead_letters(env)
    assert (record.reason, record.delivery_attempts) == ("MaxDeliveryAttemptsExceeded", 4)


async def test_time_to_live_is_checked_when_an_attempt_comes_due(env: Env) -> None:
    await env.webhook(ttl_minutes=1, backoff=(40.0,))
    env.receiver.default = Answer(500)
    await env.bus.publish("orders", cloudevent())
    await env.settle()
    await env.advance(40)
    await env.advance(40)

    assert len(env.receiver.requests) == 2  # at 0 s and 40 s; the one due at 80 s is past 60 s
    [record] = await dead_letters(env)
    assert (record.reason, record.delivery_attempts) == ("TimeToLiveExceeded", 2)


async def test_whichever_limit_comes_first_wins(env: Env) -> None:
    # Event Grid's worked example: TTL 30 min and 10 attempts on the default schedule → 6 attempts.
    await env.webhook(
        attempts=10, ttl_minutes=30, backoff=(10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 43200)
    )
    env.receiver.default = Answer(500)
    await env.bus.publish("orders", cloudevent())
    await env.settle()
    for delay in (10, 30, 60, 300, 600, 1800):
        await env.advance(delay)

    times = [r.at - env.receiver.requests[0].at for r in env.receiver.requests]
    assert times == [0, 10, 40, 100, 400, 1000]
    [record] = await dead_letters(env)
    assert (record.reason, record.delivery_attempts) == ("TimeToLiveExceeded", 6)


# no answer ---------------------------------------------------------------------------------------
async def test_a_slow_endpoint_is_timed_out_on_the_bus_clock_and_retried(env: Env) -> None:
    await env.webhook(timeout_seconds=30, backoff=(10.0,))
    env.receiver.answer(Answer(200, hold=True), Answer(200))
    await env.bus.publish("orders", cloudevent())
    await env.receiver.wait_for(1)
    await env.advance(30)
    await env.advance(10)

    first, second = env.receiver.requests
    assert second.at - first.at == 40
    assert second.headers["aeg-delivery-count"] == "1"
    assert await env.bus.counters("orders", "hook") == {
        "queued": 0,
        "deadLettered": 0,
        "dropped": 0,
    }


async def test_a_timed_out_attempt_is_recorded_as_timed_out(env: Env) -> None:
    await env.webhook(attempts=1, timeout_seconds=5)
    env.receiver.answer(Answer(200, hold=True))
    await env.bus.publish("orders", cloudevent())
    await env.receiver.wait_for(1)
    await env.advance(5)

    [record] = await dead_letters(env)
    assert (record.reason, record.last_delivery_outcome) == (
        "MaxDeliveryAttemptsExceeded",
        "TimedOut",
    )


async def test_the_http_client_has_its_own_timeout(env: Env) -> None:
    # The fake clock never moves here: only the client's wall-clock timeout can end the attempt.
    record = await env.webhook(timeout_seconds=0.2)
    endpoint = env.webhooks(record)
    assert endpoint is not None
    env.receiver.answer(Answer(200, hold=True))
    attempt = Attempt("orders", "hook", 0, "CloudEventSchemaV1_0", batched=False)

    outcome = await endpoint.deliver([cloudevent()], attempt)

    assert (outcome.status, outcome.name, outcome.detail) == (
        0,
        "TimedOut",
        "no answer within 0.2 s",
    )


async def test_a_refused_connection_is_a_socket_error(env: Env) -> None:
    await env.webhook(attempts=1, url=f"http://127.0.0.1:{closed_port()}/hook?key=secret")
    await env.bus.publish("orders", cloudevent())
    await env.settle()

    [record] = await dead_letters(env)
    assert record.last_delivery_outcome == "SocketError"
    assert record.last_delivery_error is not None
    assert "cannot connect to 127.0.0.1" in record.last_delivery_error
    assert "secret" not in record.last_delivery_error


async def test_a_name_that_does_not_resolve_is_a_resolution_error() -> None:
    async with webhook_env(resolver=FakeResolver({})) as env:
        await env.webhook(attempts=1, url="http://nowhere.test/hook")
        await env.bus.publish("orders", cloudevent())
        await env.settle()

        [record] = await dead_letters(env)
        assert record.last_delivery_outcome == "ResolutionError"
        assert record.last_delivery_error is not None
        assert "cannot resolve nowhere.test" in record.last_delivery_error


async def test_an_unvalidated_subscription_receives_nothing(env: Env) -> None:
    await env.webhook(validated=False)
    await env.bus.publish("orders", cloudevent())
    await env.settle()
    await env.advance(3600)

    assert env.receiver.requests == []
    assert (await env.bus.counters("orders", "hook"))["queued"] == 1


async def test_a_garbled_answer_is_a_socket_error_that_does_not_show_the_url(env: Env) -> None:
    async def garble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 20 OK-ish\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async with await asyncio.start_server(garble, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        await env.webhook(attempts=1, url=f"http://127.0.0.1:{port}/hook?key=s3cret")
        await env.bus.publish("orders", cloudevent())
        await env.settle()

    [record] = await dead_letters(env)
    assert record.last_delivery_outcome == "SocketError"
    assert record.last_delivery_error is not None
    assert "s3cret" not in record.last_delivery_error


async def test_a_connection_closed_without_an_answer_is_a_socket_error(env: Env) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async with await asyncio.start_server(hang_up, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        await env.webhook(attempts=1, url=f"http://127.0.0.1:{port}/hook")
        await env.bus.publish("orders", cloudevent())
        await env.settle()

    [record] = await dead_letters(env)
    assert (record.last_delivery_outcome, record.last_delivery_error) == (
        "SocketError",
        "ServerDisconnectedError: Server disconnected",
    )


# the pure parts ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "date", "seconds"),
    [
        (None, None, 0.0),
        ("", None, 0.0),
        ("20", None, 20.0),
        (" 7 ", None, 7.0),
        ("-5", None, 0.0),
        ("soon", None, 0.0),
        ("99999999", None, 86_400.0),
        ("Wed, 21 Oct 2026 07:28:30 GMT", "Wed, 21 Oct 2026 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2026 07:27:00 GMT", "Wed, 21 Oct 2026 07:28:00 GMT", 0.0),
        ("Wed, 21 Oct 2026 07:28:30 GMT", "garbage", 0.0),
    ],
)
def test_retry_after_values(value: str | None, date: str | None, seconds: float) -> None:
    assert parse_retry_after(value, date=date) == seconds


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        (
            "http://h:1/p/a%2Fb?code=abc%2Fdef%3D&t=%7e&sp=a+b",
            "/p/a%2Fb?code=abc%2Fdef%3D&t=%7e&sp=a+b",
        ),
        ("http://h:1/p?q=a b", "/p?q=a+b"),
        ("http://h:1/p?k=%zz#frag", "/p?k=%25zz"),
        ("http://h:1", "/"),
    ],
)
def test_the_request_url_keeps_a_well_formed_query_exactly(url: str, sent: str) -> None:
    assert request_url(url).raw_path_qs == sent


def test_the_event_grid_data_version_header_is_dropped_when_it_cannot_be_a_header() -> None:
    event = EventGridEvent(
        id="e",
        subject="s",
        event_type="T",
        event_time="2026-01-01T00:00:00Z",
        data_version="1.0\r\nX-Injected: yes",
    )
    attempt = Attempt("orders", "hook", 2, "EventGridSchema", batched=False)

    body, headers = notification_request([event], attempt)

    assert headers["aeg-data-version"] == ""
    assert headers["aeg-delivery-count"] == "2"
    assert b"X-Injected" in body  # the event itself is delivered unchanged


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_connections": 0}, "max_connections must be an integer from 1"),
        ({"response_detail_chars": -1}, "response_detail_chars must be an integer from 0"),
        ({"validation_timeout_seconds": 0}, "validation_timeout_seconds must be a number"),
        ({"allow_private_addresses": "yes"}, "allow_private_addresses must be true or false"),
    ],
)
def test_invalid_webhook_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WebhookSettings(**settings)
