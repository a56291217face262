"""Interoperability of webhook deliveries: retries as a webhook sees them, and what the official
SDKs' parsers make of our requests (``azure.eventgrid.EventGridEvent.from_dict`` for the Event
Grid schema, the ``cloudevents`` SDK's ``from_http(headers, body)`` for CloudEvents)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.messaging import CloudEvent as AzureCloudEvent
from azure.eventgrid import EventGridEvent as AzureEventGridEvent
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.v1.http import from_dict as ce_from_dict
from cloudevents.v1.http import from_http
from test_webhook_receiver import Answer, Env, webhook_env

from choreograph.clock import format_timestamp
from choreograph.events import CloudEvent, EventGridEvent

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with webhook_env() as env:
        yield env


def cloudevent(number: int) -> CloudEvent:
    return CloudEvent(
        id=f"evt-{number}",
        type="Fabrikam.DeliveryScheduled",
        source="/drone-scheduler",
        subject=f"/deliveries/{number}",
        time="2026-01-01T10:00:00.123456Z",
        datacontenttype="application/json",
        data={"deliveryId": str(number), "drone": "d-7"},
        extensions={
            "correlationid": f"tx-{number}",
            "causationid": f"cause-{number}",
            "traceparent": TRACEPARENT,
            "tracestate": "congo=t61rcWkgMzE",
            "priority": 3,
            "express": True,
        },
    )


def eventgrid_event(number: int) -> EventGridEvent:
    return EventGridEvent(
        id=f"evt-{number}",
        subject=f"/deliveries/{number}",
        event_type="Fabrikam.DeliveryScheduled",
        event_time="2026-01-01T10:00:00.123456Z",
        data={"deliveryId": str(number), "$correlation": {"correlationid": f"tx-{number}"}},
        data_version="1.0",
    )


# retries as the webhook sees them ----------------------------------------------------------------
async def test_500_twice_then_200_is_three_attempts_spaced_by_the_backoff(env: Env) -> None:
    await env.webhook(backoff=(2.0, 5.0))
    env.receiver.answer(Answer(500), Answer(500), Answer(200))
    await env.bus.publish("orders", cloudevent(1))
    await env.settle()
    await env.advance(2)
    await env.advance(5)
    await env.advance(3600)

    requests = env.receiver.requests
    assert [r.headers["aeg-delivery-count"] for r in requests] == ["0", "1", "2"]
    assert [r.at - requests[0].at for r in requests] == [0, 2, 7]
    assert {r.json()["id"] for r in requests} == {"evt-1"}
    assert await env.bus.counters("orders", "hook") == {
        "queued": 0,
        "deadLettered": 0,
        "dropped": 0,
    }


async def test_400_goes_to_the_dead_letter_queue_after_one_attempt(env: Env) -> None:
    await env.webhook(backoff=(2.0,))
    env.receiver.default = Answer(400, '{"error": "poison"}')
    await env.bus.publish("orders", cloudevent(1))
    await env.settle()
    await env.advance(3600)

    assert len(env.receiver.requests) == 1
    [record] = await env.bus.dead_letters("orders", "hook")
    assert (record.reason, record.delivery_attempts, record.last_delivery_outcome) == (
        "NonRetryableStatusCode",
        1,
        "BadRequest",
    )
    assert record.last_delivery_error == '{"error": "poison"}'


async def test_a_slow_endpoint_is_timed_out_and_retried(env: Env) -> None:
    await env.webhook(timeout_seconds=10, backoff=(2.0,))
    env.receiver.answer(Answer(200, hold=True), Answer(200))
    await env.bus.publish("orders", cloudevent(1))
    await env.receiver.wait_for(1)
    await env.advance(10)
    await env.advance(2)

    first, second = env.receiver.requests
    assert (second.at - first.at, second.headers["aeg-delivery-count"]) == (12, "1")
    assert await env.bus.counters("orders", "hook") == {
        "queued": 0,
        "deadLettered": 0,
        "dropped": 0,
    }


# the Azure SDK ------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 4])
async def test_azure_eventgrid_parses_each_delivered_event(env: Env, batch: int) -> None:
    await env.webhook(schema="EventGridSchema", batch=batch)
    published = [eventgrid_event(n) for n in range(4)]
    await env.bus.publish("orders", published)
    await env.settle()

    parsed = {
        event.id: event
        for request in env.receiver.requests
        for event in map(AzureEventGridEvent.from_dict, request.json())
    }
    assert sorted(parsed) == sorted(e.id for e in published)
    for original in published:
        event = parsed[original.id]
        assert event.subject == original.subject
        assert event.event_type == original.event_type
        assert event.data == original.data
        assert event.data_version == "1.0"
        assert event.metadata_version == "1"
        assert event.topic == "/topics/orders"
        assert event.event_time.isoformat() == "2026-01-01T10:00:00.123456+00:00"


async def test_azure_core_parses_delivered_cloudevents_with_their_extensions(env: Env) -> None:
    await env.webhook()
    await env.bus.publish("orders", cloudevent(1))
    await env.settle()

    [request] = env.receiver.requests
    event: AzureCloudEvent[Any] = AzureCloudEvent.from_dict(request.json())
    assert (event.id, event.source, event.type, event.subject) == (
        "evt-1",
        "/drone-scheduler",
        "Fabrikam.DeliveryScheduled",
        "/deliveries/1",
    )
    assert event.extensions == cloudevent(1).extensions


# the CloudEvents SDK ------------------------------------------------------------------------------
async def test_cloudevents_from_http_reads_a_delivery_with_every_extension(env: Env) -> None:
    await env.webhook()
    original = cloudevent(1)
    await env.bus.publish("orders", original)
    await env.settle()

    [request] = env.receiver.requests
    event = from_http(dict(request.headers), request.body)
    attributes = event.get_attributes()
    for name in ("id", "source", "type", "subject", "time", "datacontenttype"):
        assert attributes[name] == getattr(original, name)
    assert attributes["specversion"] == "1.0"
    for name, value in original.extensions.items():
        assert attributes[name] == value
    assert event.get_data() == original.data


async def test_the_cloudevents_core_binding_reads_a_delivery_with_every_extension(
    env: Env,
) -> None:
    await env.webhook()
    original = cloudevent(1)
    await env.bus.publish("orders", original)
    await env.settle()

    [request] = env.receiver.requests
    event: BaseCloudEvent = from_http_event(
        HTTPMessage(headers=dict(request.headers), body=request.body)
    )
    assert event.get_id() == "evt-1"
    assert event.get_type() == "Fabrikam.DeliveryScheduled"
    assert event.get_extension("correlationid") == "tx-1"
    assert event.get_extension("traceparent") == TRACEPARENT
    assert event.get_extension("priority") == 3
    assert event.get_data() == original.data


async def test_cloudevents_sdk_reads_each_event_of_a_batch(env: Env) -> None:
    await env.webhook(batch=3)
    published = [cloudevent(n) for n in range(3)]
    await env.bus.publish("orders", published)
    await env.settle()

    [request] = env.receiver.requests
    assert request.headers["Content-Type"].startswith("application/cloudevents-batch+json")
    parsed = {e["id"]: e for e in map(ce_from_dict, request.json())}
    for original in published:
        attributes = parsed[original.id].get_attributes()
        for name, value in original.extensions.items():
            assert attributes[name] == value


async def test_a_dead_lettered_webhook_event_reads_as_an_event_grid_record(env: Env) -> None:
    await env.webhook(schema="EventGridSchema")
    env.receiver.answer(Answer(413))
    await env.bus.publish("orders", eventgrid_event(1))
    await env.settle()

    [dead] = await env.bus.dead_letters("orders", "hook")
    record = dead.to_record("EventGridSchema")
    assert record["deadLetterReason"] == "NonRetryableStatusCode"
    assert (record["deliveryAttempts"], record["lastDeliveryOutcome"]) == (1, "PayloadTooLarge")
    attempted = env.receiver.requests[0].at
    assert record["lastDeliveryAttemptTime"] == format_timestamp(attempted)
    event = AzureEventGridEvent.from_dict(record)
    assert (event.id, event.event_type, event.topic) == (
        "evt-1",
        "Fabrikam.DeliveryScheduled",
        "/topics/orders",
    )
