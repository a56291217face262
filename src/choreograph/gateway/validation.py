"""Webhook validation: an endpoint receives no notification until it agreed to receive them.

A new webhook subscription (or one whose endpoint changed) is ``Creating`` and gets nothing;
:func:`validate_subscription` runs the handshake of its delivery schema and records the outcome
with ``bus.set_provisioning_state``:

* **Event Grid schema**: a POST of one ``Microsoft.EventGrid.SubscriptionValidationEvent`` with
  ``aeg-event-type: SubscriptionValidation``, whose data holds a ``validationCode`` and a
  ``validationUrl``. A 200 echoing ``{"validationResponse": <code>}`` → ``Succeeded``. A 200
  without it → ``AwaitingManualAction`` until a GET on the ``validationUrl`` (served by
  :func:`validation_routes`) → ``Succeeded``, or until the window (10 minutes) closes →
  ``Failed``. Any other status (202 included, as Event Grid), a wrong code or a refused
  destination → ``Failed``. No answer within 30 s → one re-attempt 5 s later, then ``Failed``.
* **CloudEvents**: ``OPTIONS`` with ``WebHook-Request-Origin: eventgrid.azure.net``; only a 2xx
  carrying ``WebHook-Allowed-Origin`` equal to that origin or ``*`` → ``Succeeded`` (a bare 200
  is no consent). No answer: the same single re-attempt.

The destination's addresses are checked first (:mod:`choreograph.gateway.addresses`). Times
(answer timeout, re-attempt delay, manual window) run on the injected clock. A validation whose
subscription changed endpoint or was deleted meanwhile changes nothing. Reasons for a failure are
logged with the endpoint URL redacted (its query string may carry a secret).

The one-time codes of the ``validationUrl`` live in memory in :class:`PendingValidations`; after
a restart, :func:`validate_pending_subscriptions` validates the unfinished ones again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp
import msgspec

from choreograph.bus.bus import Bus
from choreograph.bus.subscription import ProvisioningState, SubscriptionRecord, WebHookDestination
from choreograph.bus.topic import topic_resource_id
from choreograph.clock import Clock, format_timestamp, sleep_until, within
from choreograph.gateway.addresses import DestinationRefusedError
from choreograph.gateway.validation_pending import (
    PendingValidations,
    _apply,
    _Verdict,
    validation_routes,
)
from choreograph.gateway.validation_pending import RedeemResult as RedeemResult
from choreograph.gateway.webhook import (
    EVENTGRID_CONTENT_TYPE,
    REQUEST_ORIGIN,
    WebhookEndpointFactory,
    WebhookSettings,
    read_prefix,
    request_url,
)

__all__ = [
    "VALIDATION_EVENT_TYPE",
    "PendingValidations",
    "validate_pending_subscriptions",
    "validate_subscription",
    "validation_hook",
    "validation_routes",
]

logger = logging.getLogger(__name__)

VALIDATION_EVENT_TYPE: Final = "Microsoft.EventGrid.SubscriptionValidationEvent"
MAX_ANSWER_BYTES: Final = 65_536


class _NoAnswer(Exception):
    """The endpoint did not answer (timeout, no connection); worth one re-attempt."""


async def _twice(
    attempt: Callable[[], Awaitable[_Verdict]], settings: WebhookSettings, clock: Clock
) -> _Verdict:
    """Run the handshake; when the endpoint did not answer, once more after the delay."""
    try:
        return await attempt()
    except _NoAnswer as first:
        logger.debug("validation handshake got no answer (%s); re-attempting", first)
    await sleep_until(clock, clock.now() + settings.validation_retry_delay_seconds)
    try:
        return await attempt()
    except _NoAnswer as second:
        return _Verdict("Failed", f"no answer to the validation handshake, twice: {second}")


async def _request(
    client: WebhookEndpointFactory,
    clock: Clock,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    body: bytes | None = None,
) -> tuple[int, Any, bytes]:
    """One handshake request: (status, response headers, body prefix); _NoAnswer if none."""
    seconds = client.settings.validation_timeout_seconds

    async def call() -> tuple[int, Any, bytes]:
        async with client.session.request(
            method,
            request_url(url),
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=seconds),
        ) as response:
            prefix, _ = await read_prefix(response, MAX_ANSWER_BYTES)
            return response.status, response.headers, prefix

    try:
        return await within(clock, seconds, call())
    except TimeoutError:
        raise _NoAnswer(f"no answer within {seconds:g} s") from None
    except aiohttp.ClientConnectorDNSError as exc:
        if isinstance(exc.os_error, DestinationRefusedError):
            raise exc.os_error from None
        raise _NoAnswer(f"cannot resolve {exc.host}: {exc.os_error}") from None
    except aiohttp.ClientConnectorError as exc:
        raise _NoAnswer(f"cannot connect to {exc.host}:{exc.port}: {exc.os_error}") from None
    except aiohttp.ClientError as exc:
        raise _NoAnswer(type(exc).__name__) from None


def _echoed_code(body: bytes) -> tuple[bool, object]:
    """Whether the answer carries a ``validationResponse`` (any case), and its value."""
    try:
        document = msgspec.json.decode(body) if body.strip() else None
    except msgspec.DecodeError:
        return False, None
    if isinstance(document, dict):
        for key, value in document.items():
            if isinstance(key, str) and key.lower() == "validationresponse":
                return True, value
    return False, None


async def _eventgrid_handshake(
    client: WebhookEndpointFactory,
    clock: Clock,
    record: SubscriptionRecord,
    url: str,
    validation_url: str | None,
) -> _Verdict:
    validation_code = str(uuid.uuid4())
    data: dict[str, str] = {"validationCode": validation_code}
    if validation_url is not None:
        data["validationUrl"] = validation_url
    body = msgspec.json.encode(
        [
            {
                "id": str(uuid.uuid4()),
                "topic": topic_resource_id(record.topic),
                "subject": "",
                "data": data,
                "eventType": VALIDATION_EVENT_TYPE,
                "eventTime": format_timestamp(clock.now()),
                "metadataVersion": "1",
                "dataVersion": "1",
            }
        ]
    )
    headers = {
        "Content-Type": EVENTGRID_CONTENT_TYPE,
        "aeg-event-type": "SubscriptionValidation",
        "aeg-subscription-name": record.name,
        "aeg-delivery-count": "0",
        "aeg-metadata-version": "1",
        "aeg-data-version": "1",
    }

    async def attempt() -> _Verdict:
        status, _, answer = await _request(client, clock, "POST", url, headers=headers, body=body)
        if status != 200:
            return _Verdict("Failed", f"the endpoint answered {status}; validation needs a 200")
        echoed, code = _echoed_code(answer)
        if not echoed:
            if validation_url is None:
                return _Verdict("Failed", "no validationResponse, and no validationUrl to use")
            return _Verdict(
                "AwaitingManualAction", "no validationResponse: awaiting a GET on the validationUrl"
            )
        if code != validation_code:
            return _Verdict("Failed", "the validationResponse is not the validationCode sent")
        return _Verdict("Succeeded", "the endpoint echoed the validationCode")

    return await _twice(attempt, client.settings, clock)


async def _cloudevents_handshake(
    client: WebhookEndpointFactory, clock: Clock, url: str
) -> _Verdict:
    headers = {"WebHook-Request-Origin": REQUEST_ORIGIN}

    async def attempt() -> _Verdict:
        status, answer_headers, _ = await _request(client, clock, "OPTIONS", url, headers=headers)
        allowed = answer_headers.get("WebHook-Allowed-Origin")
        if not 200 <= status <= 299:
            return _Verdict("Failed", f"the endpoint answered OPTIONS with {status}")
        if allowed is None:
            return _Verdict("Failed", "the OPTIONS answer has no WebHook-Allowed-Origin")
        if allowed.strip().lower() not in (REQUEST_ORIGIN, "*"):
            return _Verdict("Failed", f"WebHook-Allowed-Origin is {allowed.strip()[:100]!r}")
        return _Verdict("Succeeded", "the endpoint allowed the origin")

    return await _twice(attempt, client.settings, clock)


async def validate_subscription(
    bus: Bus,
    record: SubscriptionRecord,
    *,
    validation_base_url: str,
    client: WebhookEndpointFactory | None = None,
    clock: Clock | None = None,
    pending: PendingValidations | None = None,
) -> ProvisioningState:
    """Run ``record``'s validation handshake and record its verdict; return the verdict.

    The verdict is recorded only if the subscription still has the endpoint of ``record``: a
    validation overtaken by a change of endpoint (or a deletion) changes nothing.

    ``validation_base_url`` is where the gateway serving ``pending``'s routes is reached (the
    ``validationUrl`` is ``{validation_base_url}/validate/{topic}/{subscription}?code=…``).
    Without ``pending`` there is no manual validation: a 200 without the code is ``Failed``.
    ``client`` defaults to a factory with default settings (private addresses refused) for this
    call; ``clock`` to the bus's. A manual validation returns ``AwaitingManualAction``; the GET
    or the end of the window settles it later. A subscription that is not a webhook is left as
    it is.
    """
    destination = record.spec.destination
    if not isinstance(destination, WebHookDestination):
        return record.provisioning_state
    if client is None:
        async with WebhookEndpointFactory() as own:
            return await validate_subscription(
                bus,
                record,
                validation_base_url=validation_base_url,
                client=own,
                clock=clock,
                pending=pending,
            )
    clock = clock or (pending.clock if pending is not None else bus.clock)
    url = destination.endpoint_url
    eventgrid = record.spec.event_delivery_schema == "EventGridSchema"
    code = pending.issue(record) if pending is not None and eventgrid else None
    try:
        try:
            await client.check_destination(url)
        except OSError as exc:
            if isinstance(exc, DestinationRefusedError):
                raise
            # A name that does not resolve: the handshake reports it (and tries twice).
        if eventgrid:
            validation_url = None
            if code is not None:
                base = validation_base_url.rstrip("/")
                validation_url = f"{base}/validate/{record.topic}/{record.name}?code={code}"
            verdict = await _eventgrid_handshake(client, clock, record, url, validation_url)
        else:
            verdict = await _cloudevents_handshake(client, clock, url)
    except DestinationRefusedError as refused:
        verdict = _Verdict("Failed", str(refused))
    except BaseException:
        if pending is not None and code is not None:
            pending.withdraw(record, code)
        raise
    if pending is not None and code is not None:
        return await pending._settle(record, code, verdict)
    await _apply(bus, record, verdict)
    return verdict.state


async def validate_pending_subscriptions(
    bus: Bus,
    *,
    validation_base_url: str,
    client: WebhookEndpointFactory | None = None,
    clock: Clock | None = None,
    pending: PendingValidations | None = None,
) -> dict[tuple[str, str], ProvisioningState]:
    """Validate, concurrently, every webhook subscription left ``Creating`` or
    ``AwaitingManualAction`` (after a restart the one-time codes are gone); the new states."""
    records = [
        record
        for topic in await bus.list_topics()
        for record in await bus.list_subscriptions(topic.name)
        if isinstance(record.spec.destination, WebHookDestination)
        and record.provisioning_state in ("Creating", "AwaitingManualAction")
    ]
    tasks: dict[tuple[str, str], asyncio.Task[ProvisioningState]] = {}
    async with asyncio.TaskGroup() as group:
        for record in records:
            tasks[(record.topic, record.name)] = group.create_task(
                validate_subscription(
                    bus,
                    record,
                    validation_base_url=validation_base_url,
                    client=client,
                    clock=clock,
                    pending=pending,
                )
            )
    return {key: task.result() for key, task in tasks.items()}


def validation_hook(
    bus: Bus,
    *,
    validation_base_url: str,
    client: WebhookEndpointFactory,
    pending: PendingValidations,
    clock: Clock | None = None,
) -> Callable[[SubscriptionRecord], Awaitable[None]]:
    """The gateway management API's ``on_webhook_subscription``: validate each webhook
    subscription created or re-pointed (it returns once the handshake is answered; a manual
    validation is then settled by the ``validationUrl`` or its window)."""

    async def hook(record: SubscriptionRecord) -> None:
        await validate_subscription(
            bus,
            record,
            validation_base_url=validation_base_url,
            client=client,
            clock=clock,
            pending=pending,
        )

    return hook
