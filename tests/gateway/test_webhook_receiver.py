"""Shared by the webhook, validation and interop tests: a real webhook endpoint on a loopback port
that records what it receives and answers from a script, and a bus on a fake clock delivering to
it over real HTTP. The tests at the end check the receiver itself."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import RawTestServer
from multidict import CIMultiDictProxy

from choreograph.bus import Bus, RetryPolicy, SubscriptionSpec, WebHookDestination
from choreograph.bus.subscription import SubscriptionRecord
from choreograph.gateway.webhook import WebhookEndpointFactory, WebhookSettings
from choreograph.testing import FakeClock

SAFETY_NET_SECONDS = 10.0
"""Longest a test waits for something that should happen at once (a failure, not a wait)."""


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    method: str
    path_qs: str
    headers: CIMultiDictProxy[str]
    body: bytes
    at: float
    """The fake clock's time when it arrived."""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Answer:
    """How the receiver answers one request; ``hold`` keeps it waiting until released."""

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False


Script = Answer | Callable[[Received], Answer | Awaitable[Answer]]


def echo_validation(received: Received) -> Answer:
    """Answer an Event Grid validation handshake by echoing its code; 200 to anything else."""
    if received.headers.get("aeg-event-type") == "SubscriptionValidation":
        code = received.json()[0]["data"]["validationCode"]
        return Answer(200, {"validationResponse": code})
    if received.method == "OPTIONS":
        return Answer(200, headers={"WebHook-Allowed-Origin": "eventgrid.azure.net"})
    return Answer(200)


class Receiver:
    """A webhook endpoint on 127.0.0.1: records every request, answers from a script (then
    from ``default``)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.requests: list[Received] = []
        self.script: deque[Script] = deque()
        self.default: Script = echo_validation
        self._released = asyncio.Event()
        self._arrived = asyncio.Event()
        self._server = RawTestServer(self._handle, host="127.0.0.1")

    async def start(self) -> None:
        await self._server.start_server()

    async def close(self) -> None:
        self.release()
        await self._server.close()

    @property
    def port(self) -> int:
        assert self._server.port is not None
        return self._server.port

    def url(self, path_qs: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path_qs}"

    def answer(self, *answers: Script) -> None:
        """Queue the next answers."""
        self.script.extend(answers)

    def release(self) -> None:
        """Let every held request answer."""
        self._released.set()

    def notifications(self) -> list[Received]:
        return [r for r in self.requests if r.headers.get("aeg-event-type") == "Notification"]

    async def wait_for(self, count: int) -> list[Received]:
        """Wait until ``count`` requests arrived (with a safety-net timeout)."""
        async with asyncio.timeout(SAFETY_NET_SECONDS):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.requests)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        received = Received(
            request.method,
            request.raw_path,
            request.headers,
            await request.read(),
            self.clock.now(),
        )
        self.requests.append(received)
        self._arrived.set()
        script = self.script.popleft() if self.script else self.default
        answer = script if isinstance(script, Answer) else script(received)
        if inspect.isawaitable(answer):
            answer = await answer
        assert isinstance(answer, Answer)
        if answer.hold:
            await self._released.wait()
        body = answer.body
        if isinstance(body, dict | list):
            return web.json_response(body, status=answer.status, headers=answer.headers)
        return web.Response(status=answer.status, body=body, headers=answer.headers)


class FakeResolver(AbstractResolver):
    """DNS from a dict (name → addresses); an unknown name does not resolve."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.names:
            raise OSError(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.names[host]
        ]

    async def close(self) -> None:
        pass


@dataclass
class Env:
    """A bus on a fake clock delivering webhooks over real HTTP to a receiver."""

    clock: FakeClock
    bus: Bus
    webhooks: WebhookEndpointFactory
    receiver: Receiver

    async def settle(self) -> None:
        """Let everything due now happen (deliveries in flight included)."""
        await self.bus.idle()

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.bus.idle()

    async def webhook(
        self,
        name: str = "hook",
        *,
        topic: str = "orders",
        url: str | None = None,
        schema: str = "CloudEventSchemaV1_0",
        validated: bool = True,
        batch: int = 1,
        backoff: tuple[float, ...] = (10.0,),
        attempts: int = 30,
        ttl_minutes: int = 1440,
        non_retryable: tuple[int, ...] | None = None,
        timeout_seconds: float = 30.0,
    ) -> SubscriptionRecord:
        """A topic taking ``schema`` and a webhook subscription delivering in it."""
        await self.bus.put_topic(topic, {"inputSchema": schema})
        policy: dict[str, Any] = {
            "max_delivery_attempts": attempts,
            "event_time_to_live_in_minutes": ttl_minutes,
            "backoff_seconds": backoff,
        }
        if non_retryable is not None:
            policy["non_retryable_status_codes"] = non_retryable
        spec = SubscriptionSpec(
            destination=WebHookDestination(
                endpoint_url=url or self.receiver.url(), max_events_per_batch=batch
            ),
            retry_policy=RetryPolicy(**policy),
            event_delivery_schema=schema,  # type: ignore[arg-type]
            delivery_timeout_seconds=timeout_seconds,
        )
        record = await self.bus.put_subscription(topic, name, spec)
        if validated:
            record = await self.bus.set_provisioning_state(topic, name, "Succeeded")
        return record


@contextlib.asynccontextmanager
async def webhook_env(
    *, allow_private: bool = True, resolver: AbstractResolver | None = None
) -> AsyncIterator[Env]:
    clock = FakeClock()
    receiver = Receiver(clock)
    await receiver.start()
    settings = WebhookSettings(allow_private_addresses=allow_private)
    try:
        async with WebhookEndpointFactory(settings, resolver=resolver) as webhooks:
            bus = Bus(
                "memory://",
                clock=clock,
                retry_jitter=0.0,
                endpoints=webhooks,
                shutdown_grace_seconds=2.0,
            )
            async with bus:
                try:
                    yield Env(clock, bus, webhooks, receiver)
                finally:
                    receiver.release()
    finally:
        await receiver.close()


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds, for states nothing announces (a timer registered on the
    fake clock, a provisioning state changed by a background task); a safety-net timeout."""
    async with asyncio.timeout(SAFETY_NET_SECONDS):
        while not condition():  # noqa: ASYNC110 - no event reports these conditions
            await asyncio.sleep(0.001)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# the receiver itself -----------------------------------------------------------------------------
@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with webhook_env() as env:
        yield env


async def test_receiver_records_requests_and_answers_from_its_script(env: Env) -> None:
    env.receiver.answer(Answer(418, "teapot", {"X-Kind": "pot"}))
    async with aiohttp.ClientSession() as session:
        async with session.post(env.receiver.url("/a?b=c"), data=b"hello") as first:
            assert (first.status, await first.text(), first.headers["X-Kind"]) == (
                418,
                "teapot",
                "pot",
            )
        async with session.options(env.receiver.url()) as second:
            assert second.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert [(r.method, r.path_qs, r.body) for r in env.receiver.requests] == [
        ("POST", "/a?b=c", b"hello"),
        ("OPTIONS", "/hook", b""),
    ]


async def test_fake_resolver_resolves_only_its_names() -> None:
    resolver = FakeResolver({"hooks.test": ["127.0.0.1"]})
    assert [r["host"] for r in await resolver.resolve("hooks.test", 80)] == ["127.0.0.1"]
    with pytest.raises(OSError, match="not known"):
        await resolver.resolve("other.test", 80)
