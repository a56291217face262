"""Webhook delivery: POST a subscription's events to its endpoint, as Event Grid does.

    async with WebhookEndpointFactory(WebhookSettings.from_env(os.environ)) as webhooks:
        async with Bus(url, endpoints=webhooks) as bus:
            ...

The factory owns one pooled aiohttp session (measured on loopback against uvicorn at about ten
times httpx's throughput with 64 concurrent requests) and makes the endpoint of each validated
webhook subscription. A notification carries ``aeg-event-type: Notification``,
``aeg-subscription-name`` (the name as given: Event Grid's samples show it upper-cased, so
receivers should compare it case-insensitively), ``aeg-delivery-count`` (0 on the first
attempt), ``aeg-metadata-version`` (``1``, or ``1.0`` for CloudEvents), ``aeg-data-version``
(Event Grid schema) and the event's ``traceparent``/``tracestate``. The body is an Event Grid
JSON array, or one CloudEvent (``application/cloudevents+json``), or, for a subscription with
``maxEventsPerBatch`` > 1, always a CloudEvents batch (``application/cloudevents-batch+json``).
The URL's query string is sent as given; redirects are not followed (a 3xx is a failed attempt).
No cookies are kept and no proxy settings are read from the environment.

Outcomes are Event Grid's ``lastDeliveryOutcome`` names: the status code's (``BadRequest``,
``NotFound``, ``Busy``...), ``TimedOut`` (no answer within the delivery timeout),
``SocketError`` (no connection, or it broke), ``ResolutionError`` (DNS). A destination refused
as non-public (:mod:`choreograph.gateway.addresses`) is ``Forbidden`` with status 403: by default
a non-retryable status, so the event is dead-lettered at once; a subscription that made 403
retryable gets its bounded retries, each logged. A ``Retry-After`` on 429 or 503 is the earliest
next attempt. Failed attempts keep the start of the response body in ``Outcome.detail``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDictProxy

from choreograph.bus.endpoint import Attempt
from choreograph.bus.retry import DELIVERED, Outcome, outcome_for_status
from choreograph.bus.subscription import SubscriptionRecord, WebHookDestination
from choreograph.errors import ConfigError
from choreograph.events import CloudEvent, EventGridEvent
from choreograph.gateway.addresses import (
    CheckingResolver,
    DestinationRefusedError,
    check_destination,
    literal_refusal,
    redact_url,
)
from choreograph.gateway.webhook_requests import (
    CLOUDEVENT_CONTENT_TYPE,
    CLOUDEVENTS_BATCH_CONTENT_TYPE,
    EVENTGRID_CONTENT_TYPE,
    REQUEST_ORIGIN,
    notification_request,
    request_url,
)

__all__ = [
    "CLOUDEVENTS_BATCH_CONTENT_TYPE",
    "CLOUDEVENT_CONTENT_TYPE",
    "EVENTGRID_CONTENT_TYPE",
    "REQUEST_ORIGIN",
    "WebhookEndpoint",
    "WebhookEndpointFactory",
    "WebhookSettings",
    "notification_request",
    "outcome_of_client_error",
    "parse_retry_after",
    "request_url",
]

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER_SECONDS: Final = 86_400.0
DRAIN_BYTES: Final = 65_536
"""Most of a successful answer's body read (so the connection can be reused)."""
KEEPALIVE_SECONDS: Final = 4.0
"""How long an idle pooled connection is kept: under common servers' own keep-alive (uvicorn
5 s), so that a request rarely goes out on a connection the server is closing."""

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True, kw_only=True, slots=True)
class WebhookSettings:
    """How webhooks are delivered and validated.

    ``allow_private_addresses`` lets webhooks reach loopback, private and link-local addresses
    (a development machine; ``choreograph up`` sets it). ``response_detail_chars`` is how much of
    a failed attempt's response body is kept in its outcome. The validation settings are Event
    Grid's: 30 s for an answer to the handshake, one re-attempt 5 s after no answer (the window
    of a manual validation belongs to :class:`~choreograph.gateway.validation.PendingValidations`).
    """

    allow_private_addresses: bool = False
    max_connections: int = 256
    max_connections_per_host: int = 64
    response_detail_chars: int = 512
    validation_timeout_seconds: float = 30.0
    validation_retry_delay_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.allow_private_addresses, bool):
            raise ConfigError(
                f"allow_private_addresses must be true or false, got {self.allow_private_addresses!r}"
            )
        for name, low, high in (
            ("max_connections", 1, 100_000),
            ("max_connections_per_host", 1, 100_000),
            ("response_detail_chars", 0, 1_000_000),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{name} must be an integer from {low} to {high}, got {value!r}")
        for name in ("validation_timeout_seconds", "validation_retry_delay_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"{name} must be a number of seconds above 0, got {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> WebhookSettings:
        """Settings from ``CHOREOGRAPH_WEBHOOK_ALLOW_PRIVATE`` (``1`` or ``0``); ``overrides``
        that are not None (command-line flags) take precedence."""
        values: dict[str, Any] = {}
        allow = environ.get("CHOREOGRAPH_WEBHOOK_ALLOW_PRIVATE", "").strip().lower()
        if allow in _TRUE:
            values["allow_private_addresses"] = True
        elif allow not in _FALSE:
            raise ConfigError(f"CHOREOGRAPH_WEBHOOK_ALLOW_PRIVATE must be 1 or 0, got {allow!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        for name, value in overrides.items():
            if name not in known:
                raise TypeError(f"WebhookSettings has no setting {name!r}")
            if value is not None:
                values[name] = value
        return cls(**values)


def parse_retry_after(value: str | None, *, date: str | None = None) -> float:
    """Seconds a ``Retry-After`` value asks to wait (delay-seconds or an HTTP date, measured
    from the response's ``Date`` when given); 0 when absent or unreadable; at most a day."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
            now = email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return 0.0
        seconds = when - now
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


async def read_prefix(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body, and whether that was all of it."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), response.content.at_eof()


def _detail(status: int, reason: str | None, body: bytes, complete: bool, chars: int) -> str:
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return f"HTTP {status} {reason or ''}".rstrip()
    if len(text) > chars or not complete:
        return text[:chars] + "…"
    return text


def _outcome_of_response(
    status: int, headers: CIMultiDictProxy[str], detail: str | None
) -> Outcome:
    retry_after = 0.0
    if status in (429, 503):
        retry_after = parse_retry_after(headers.get("Retry-After"), date=headers.get("Date"))
    return outcome_for_status(status, detail, retry_after)


def refused_outcome(error: DestinationRefusedError) -> Outcome:
    """The outcome of an attempt to a destination refused as non-public."""
    return Outcome(status=403, name="Forbidden", detail=str(error))


def outcome_of_client_error(error: BaseException, timeout_seconds: float) -> Outcome:
    """The outcome of a request that got no answer: ``TimedOut``, ``ResolutionError``,
    ``SocketError``, or ``Forbidden`` for a refused destination. Details never show a URL."""
    if isinstance(error, DestinationRefusedError):
        return refused_outcome(error)
    if isinstance(error, TimeoutError):
        return Outcome(status=0, name="TimedOut", detail=f"no answer within {timeout_seconds:g} s")
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        if isinstance(error.os_error, DestinationRefusedError):
            return refused_outcome(error.os_error)
        return Outcome(
            status=0,
            name="ResolutionError",
            detail=f"cannot resolve {error.host}: {error.os_error}",
        )
    if isinstance(error, aiohttp.ClientConnectorError):
        where = f"{error.host}:{error.port}"
        return Outcome(
            status=0, name="SocketError", detail=f"cannot connect to {where}: {error.os_error}"
        )
    if isinstance(error, aiohttp.InvalidURL):
        return Outcome(status=0, name="GenericError", detail="the endpoint URL is not valid")
    if isinstance(error, aiohttp.ClientResponseError):  # its str() shows the URL
        return Outcome(status=0, name="SocketError", detail=f"invalid answer: {error.message}")
    return Outcome(status=0, name="SocketError", detail=f"{type(error).__name__}: {error}")


class WebhookEndpoint:
    """Delivers one webhook subscription's attempts (see the module docstring)."""

    def __init__(self, factory: WebhookEndpointFactory, record: SubscriptionRecord) -> None:
        destination = record.spec.destination
        if not isinstance(destination, WebHookDestination):
            raise TypeError(f"subscription {record.topic}/{record.name} is not a webhook")
        self._factory = factory
        self.topic = record.topic
        self.subscription = record.name
        self.url = request_url(destination.endpoint_url)
        self.shown_url = redact_url(destination.endpoint_url)
        """The URL as it may be logged (no query string: it may carry a secret)."""
        self.timeout_seconds = record.spec.delivery_timeout_seconds
        self._timeout = aiohttp.ClientTimeout(total=self.timeout_seconds)
        self._refused = None
        if not factory.settings.allow_private_addresses:
            self._refused = literal_refusal(self.url.raw_host or "")
        self._detail_chars = factory.settings.response_detail_chars

    async def deliver(
        self, events: Sequence[CloudEvent | EventGridEvent], attempt: Attempt
    ) -> Outcome:
        if self._refused is not None:
            return self._refuse(self._refused)
        body, headers = notification_request(events, attempt)
        try:
            async with self._factory.session.post(
                self.url, data=body, headers=headers, allow_redirects=False, timeout=self._timeout
            ) as response:
                status = response.status
                if 200 <= status <= 204:
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        await read_prefix(response, DRAIN_BYTES)  # lets the connection be reused
                    return DELIVERED
                try:
                    prefix, complete = await read_prefix(response, 4 * self._detail_chars)
                except (aiohttp.ClientError, TimeoutError):
                    prefix, complete = b"", True
                detail = _detail(status, response.reason, prefix, complete, self._detail_chars)
                outcome = _outcome_of_response(status, response.headers, detail)
        except (aiohttp.ClientError, TimeoutError, DestinationRefusedError) as exc:
            outcome = outcome_of_client_error(exc, self.timeout_seconds)
            if outcome.name == "Forbidden":
                logger.warning(
                    "%s/%s: %s (%s)", self.topic, self.subscription, outcome.detail, self.shown_url
                )
        logger.debug(
            "%s/%s attempt %d to %s failed: %s %s",
            self.topic,
            self.subscription,
            attempt.delivery_count + 1,
            self.shown_url,
            outcome.name,
            outcome.status,
        )
        return outcome

    def _refuse(self, error: DestinationRefusedError) -> Outcome:
        logger.warning("%s/%s: %s (%s)", self.topic, self.subscription, error, self.shown_url)
        return refused_outcome(error)


class WebhookEndpointFactory:
    """The endpoint factory of ``Bus(endpoints=...)``: one pooled HTTP session for every webhook.

    Open it before the bus and close it after. ``resolver`` replaces the DNS resolver (tests);
    unless private addresses are allowed, it is wrapped in the address check.
    """

    def __init__(
        self, settings: WebhookSettings | None = None, *, resolver: AbstractResolver | None = None
    ) -> None:
        self.settings = settings or WebhookSettings()
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._connector_resolver: AbstractResolver | None = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        if self._session is not None:
            return
        settings = self.settings
        resolver: AbstractResolver
        if settings.allow_private_addresses:
            resolver = self._resolver or aiohttp.DefaultResolver()
        else:
            resolver = CheckingResolver(self._resolver)
        self._connector_resolver = resolver
        connector = aiohttp.TCPConnector(
            limit=settings.max_connections,
            limit_per_host=settings.max_connections_per_host,
            resolver=resolver,
            keepalive_timeout=KEEPALIVE_SECONDS,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # one webhook's cookies are no other's business
            trust_env=False,
            headers={"User-Agent": "choreograph-webhook/1.0"},
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        resolver, self._connector_resolver = self._connector_resolver, None
        if resolver is not None and resolver is not self._resolver:
            await resolver.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled session; RuntimeError when the factory is not open.

        Its resolver refuses names resolving to non-public addresses, but IP literals bypass
        resolvers: requests made directly on it check :meth:`check_destination` first."""
        if self._session is None:
            raise RuntimeError(
                "the WebhookEndpointFactory is not open; use `async with` around the bus"
            )
        return self._session

    def __call__(self, record: SubscriptionRecord) -> WebhookEndpoint | None:
        """The endpoint of a webhook subscription; None for any other destination."""
        if not isinstance(record.spec.destination, WebHookDestination):
            return None
        return WebhookEndpoint(self, record)

    async def check_destination(self, url: str) -> None:
        """Raise :class:`~choreograph.gateway.addresses.DestinationRefusedError` if webhooks may
        not go to ``url`` (nothing is refused when private addresses are allowed)."""
        if not self.settings.allow_private_addresses:
            await check_destination(url, resolver=self._resolver)
