"""The bus over HTTP: the gateway's publish and management API, as a remote service uses it.

    async with GatewayClient("http://127.0.0.1:8080", admin_token=token) as gateway:
        await gateway.ensure_topic("orders")
        await gateway.publish("orders", event)

Publishing authenticates with the topic's access key (``aeg-sas-key``), read once per topic
through the management API (``POST …/listKeys``, which takes the admin token) and read again
when the gateway answers 401 (the key was regenerated). Nothing else is retried here: a publish
that fails raises :class:`GatewayError`, and the caller reports the failure (a webhook answers
503, so that the bus retries the delivery and the events are published again, with the same
ids).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Protocol, Self
from urllib.parse import quote

import httpx
import msgspec

from choreograph.bus.subscription import SubscriptionSpec
from choreograph.errors import ChoreographError
from choreograph.events import CloudEvent

__all__ = [
    "ADMIN_TOKEN_VARIABLE",
    "BATCH_CONTENT_TYPE",
    "GatewayClient",
    "GatewayError",
    "Publisher",
]

logger = logging.getLogger(__name__)

ADMIN_TOKEN_VARIABLE: Final = "CHOREOGRAPH_ADMIN_TOKEN"
"""Where remote services, the ambassador and the gateway read the management API's token."""
BATCH_CONTENT_TYPE: Final = "application/cloudevents-batch+json"
API_VERSION: Final = "2018-01-01"
KEEPALIVE_SECONDS: Final = 2.0
"""Idle pooled connections are dropped well before uvicorn's 5 s keep-alive closes them, so a
request never goes out on a connection the gateway is closing at that moment."""

_encode = msgspec.json.Encoder().encode


class GatewayError(ChoreographError):
    """The gateway refused a request (``status`` and Event Grid's ``code``) or could not be
    reached (``status`` None)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        self.status = status
        self.code = code
        super().__init__(message)


class Publisher(Protocol):
    """Something events are published through: a :class:`~choreograph.Bus` in this process,
    or a :class:`GatewayClient` to a bus in another."""

    async def publish(self, topic: str, events: CloudEvent | Sequence[CloudEvent]) -> None: ...


def _problem(response: httpx.Response) -> tuple[str, str | None]:
    """The message and code of an Event Grid error body (or the start of any other body)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        details = error.get("details")
        code = error.get("code")
        if isinstance(details, list) and details and isinstance(details[0], dict):
            code = details[0].get("code", code)
        return str(error.get("message", "")), code if isinstance(code, str) else None
    text = response.text.strip()
    return (text[:200] or response.reason_phrase), None


class GatewayClient:
    """A client of one gateway (``url``): publish with topic keys, manage with the admin token.

    ``transport`` replaces the network (tests pass ``httpx.ASGITransport(app=gateway_app)``).
    An async context manager: it owns its connection pool.
    """

    def __init__(
        self,
        url: str,
        *,
        admin_token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._admin_token = admin_token
        self._transport = transport
        self.timeout_seconds = timeout_seconds
        self._client: httpx.AsyncClient | None = None
        self._keys: dict[str, str] = {}

    async def __aenter__(self) -> Self:
        self._client = httpx.AsyncClient(
            base_url=self.url,
            transport=self._transport,
            timeout=self.timeout_seconds,
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS),
            trust_env=False,
            follow_redirects=False,
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # requests ----------------------------------------------------------------------------------
    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        admin: bool = False,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request; GatewayError when there is no answer."""
        if self._client is None:
            raise GatewayError(
                "the gateway client is not open; use `async with GatewayClient(...)`"
            )
        sent = dict(headers or {})
        if admin and self._admin_token is not None:
            sent["Authorization"] = f"Bearer {self._admin_token}"
        try:
            return await self._client.request(
                method, path, content=body, headers=sent, params=params
            )
        except httpx.TimeoutException:
            raise GatewayError(
                f"the gateway at {self.url} did not answer {method} {path} within "
                f"{self.timeout_seconds:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise GatewayError(
                f"cannot reach the gateway at {self.url}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _management(
        self, method: str, path: str, document: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        body = None if document is None else _encode(document)
        headers = {} if body is None else {"Content-Type": "application/json"}
        response = await self._request(
            method, f"/management{path}", body=body, headers=headers, admin=True
        )
        if response.status_code == 401 and self._admin_token is None:
            raise GatewayError(
                f"the gateway's management API needs the admin token: set {ADMIN_TOKEN_VARIABLE}",
                status=401,
                code="Unauthorized",
            )
        return response

    @staticmethod
    def _refusal(what: str, response: httpx.Response) -> GatewayError:
        message, code = _problem(response)
        return GatewayError(
            f"{what}: the gateway answered {response.status_code}: {message}",
            status=response.status_code,
            code=code,
        )

    # management --------------------------------------------------------------------------------
    async def topic_key(self, topic: str, *, refresh: bool = False) -> str:
        """The topic's first access key (read through ``listKeys`` once, then cached)."""
        if not refresh and topic in self._keys:
            return self._keys[topic]
        response = await self._management("POST", f"/topics/{_segment(topic)}/listKeys")
        if response.status_code != 200:
            raise self._refusal(f"reading the keys of topic {topic!r}", response)
        key = response.json().get("key1")
        if not isinstance(key, str) or not key:
            raise GatewayError(f"the gateway gave no key1 for topic {topic!r}")
        self._keys[topic] = key
        return key

    async def ensure_topic(self, topic: str) -> bool:
        """Create ``topic`` with the default properties unless it exists; whether it created it."""
        path = f"/topics/{_segment(topic)}"
        response = await self._management("GET", path)
        if response.status_code == 200:
            return False
        if response.status_code != 404:
            raise self._refusal(f"reading topic {topic!r}", response)
        response = await self._management("PUT", path, {"properties": {}})
        if response.status_code not in (200, 201):
            raise self._refusal(f"creating topic {topic!r}", response)
        logger.info("created topic %s", topic)
        return response.status_code == 201

    async def put_subscription(
        self, topic: str, name: str, spec: SubscriptionSpec
    ) -> dict[str, Any]:
        """Create or update a subscription; the resource the gateway answers with (a webhook's
        ``properties.provisioningState`` says how its validation went)."""
        response = await self._management(
            "PUT",
            f"/topics/{_segment(topic)}/eventSubscriptions/{_segment(name)}",
            {"properties": spec.to_dict()},
        )
        if response.status_code not in (200, 201):
            raise self._refusal(f"subscribing {name!r} to topic {topic!r}", response)
        resource: dict[str, Any] = response.json()
        return resource

    # publishing --------------------------------------------------------------------------------
    async def publish(self, topic: str, events: CloudEvent | Sequence[CloudEvent]) -> None:
        """Publish ``events`` to ``topic`` (one request; all stored or none)."""
        batch = [events] if isinstance(events, CloudEvent) else list(events)
        if not batch:
            return
        body = _encode([event.to_dict() for event in batch])
        path = f"/topics/{_segment(topic)}/api/events"
        for refresh in (False, True):
            key = await self.topic_key(topic, refresh=refresh)
            response = await self._request(
                "POST",
                path,
                body=body,
                headers={"Content-Type": BATCH_CONTENT_TYPE, "aeg-sas-key": key},
                params={"api-version": API_VERSION},
            )
            if response.status_code != 401:
                break
            logger.info("the key of topic %s was refused; reading it again", topic)
        if response.status_code != 200:
            raise self._refusal(f"publishing {len(batch)} events to topic {topic!r}", response)


def _segment(name: str) -> str:
    return quote(name, safe="")
