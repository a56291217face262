"""Services and their declared handlers.

A service is a name and handlers. Each handler declares the event types it consumes, the topic
it listens on and the event types it may emit (with their topics). The declarations are data:
``Service.declaration()`` feeds ``choreograph graph`` and the subscriptions the runtime creates.

    package = Service("package")

    @package.on("Delivery.Requested", topic="deliveries", emits={"Package.Created": "packages"})
    async def create_package(event: CloudEvent, ctx: Context) -> None:
        ctx.state.put("packages", event.data["packageId"], event.data["packageInfo"])
        ctx.emit("Package.Created", {...})

A handler returns nothing (or the events it built with ``ctx.new_event``), raises
:class:`~choreograph.Retry` for a transient failure, :class:`~choreograph.Reject` for a poison
event; any other exception is retried by the bus on its policy.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from choreograph.bus.filters import EventFilter
from choreograph.bus.subscription import RetryPolicy
from choreograph.errors import ConfigError
from choreograph.events import CloudEvent
from choreograph.sdk.context import Context

if TYPE_CHECKING:
    from choreograph.bus.bus import Bus
    from choreograph.clock import Clock
    from choreograph.sdk.runner import RunningService
    from choreograph.sdk.state import StateView
    from choreograph.sdk.store import ServiceStore

__all__ = [
    "HandlerFunction",
    "HandlerSpec",
    "JoinFunction",
    "Middleware",
    "Service",
    "Startup",
]

HandlerFunction = Callable[[CloudEvent, Context], Awaitable[Any]]
JoinFunction = Callable[[Mapping[str, CloudEvent], Context], Awaitable[Any]]
Startup = Callable[["StateView"], Awaitable[None]]
"""``async def seed(state)``: runs when a service starts, before its first delivery."""
Middleware = Callable[[Context, Callable[[Context], Awaitable[None]]], Awaitable[None]]
"""``async def middleware(ctx, call_next)``: runs around every handler of the service."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,40}")


@dataclass(frozen=True, kw_only=True)
class HandlerSpec:
    """One declared handler (or join) of a service."""

    name: str
    kind: Literal["handler", "join"]
    consumes: tuple[str, ...]
    topics: Mapping[str, str]
    """Consumed event type -> the topic it arrives on."""
    emits: Mapping[str, str]
    """Emitted event type -> the topic it goes to."""
    function: Callable[..., Awaitable[Any]]
    retry_policy: RetryPolicy | None = None
    event_filter: EventFilter | None = None
    delivery_timeout_seconds: float | None = None
    max_concurrent_deliveries: int | None = None
    description: str = ""

    def declaration(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "consumes": [{"type": t, "topic": self.topics[t]} for t in self.consumes],
            "emits": [{"type": t, "topic": topic} for t, topic in sorted(self.emits.items())],
            "description": self.description,
        }


@dataclass
class Service:
    """A named set of handlers that knows only the events it consumes and emits."""

    name: str
    description: str = ""
    retry_policy: RetryPolicy | None = None
    """Default retry policy of the service's subscriptions (the bus default otherwise)."""
    middleware: Sequence[Middleware] = ()
    publishes: Mapping[str, str] = field(default_factory=dict)
    """Events the service publishes outside its handlers (an HTTP API...): type -> topic."""
    handlers: list[HandlerSpec] = field(default_factory=list)
    startup: list[Startup] = field(default_factory=list)
    """Run in a state transaction when the service starts, before any delivery."""

    def on_start(self, function: Startup) -> Startup:
        """Declare ``async def f(state)`` to run when the service starts (seeding its state)."""
        self.startup.append(function)
        return function

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(
                f"service name {self.name!r} must be 1-41 letters, digits and '-', starting "
                "with a letter or digit"
            )

    def on(
        self,
        *event_types: str,
        topic: str,
        emits: Mapping[str, str] | None = None,
        name: str | None = None,
        retry_policy: RetryPolicy | None = None,
        event_filter: EventFilter | None = None,
        delivery_timeout_seconds: float | None = None,
        max_concurrent_deliveries: int | None = None,
    ) -> Callable[[HandlerFunction], HandlerFunction]:
        """Declare a handler of ``event_types`` arriving on ``topic``."""

        def register(function: HandlerFunction) -> HandlerFunction:
            self._add(
                HandlerSpec(
                    name=_handler_name(name or function.__name__),
                    kind="handler",
                    consumes=_types(event_types),
                    topics=dict.fromkeys(_types(event_types), topic),
                    emits=dict(emits or {}),
                    function=function,
                    retry_policy=retry_policy,
                    event_filter=event_filter,
                    delivery_timeout_seconds=delivery_timeout_seconds,
                    max_concurrent_deliveries=max_concurrent_deliveries,
                    description=(function.__doc__ or "").strip().split("\n")[0],
                )
            )
            return function

        return register

    def join(
        self,
        topics: Mapping[str, str],
        *,
        emits: Mapping[str, str] | None = None,
        name: str | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> Callable[[JoinFunction], JoinFunction]:
        """Declare a join: the function runs once per correlation id, after an event of every
        type in ``topics`` (type -> topic it arrives on) has arrived for that transaction."""
        if len(topics) < 2:
            raise ConfigError("a join needs at least two event types")

        def register(function: JoinFunction) -> JoinFunction:
            self._add(
                HandlerSpec(
                    name=_handler_name(name or function.__name__),
                    kind="join",
                    consumes=_types(tuple(topics)),
                    topics=dict(topics),
                    emits=dict(emits or {}),
                    function=function,
                    retry_policy=retry_policy,
                    description=(function.__doc__ or "").strip().split("\n")[0],
                )
            )
            return function

        return register

    def _add(self, spec: HandlerSpec) -> None:
        if any(existing.name == spec.name for existing in self.handlers):
            raise ConfigError(f"service {self.name!r} already has a handler named {spec.name!r}")
        for kind, pairs in (("consumes", spec.topics), ("emits", spec.emits)):
            for event_type, topic in pairs.items():
                if not isinstance(event_type, str) or not event_type:
                    raise ConfigError(f"handler {spec.name!r}: {kind} an empty event type")
                if not isinstance(topic, str) or not topic:
                    raise ConfigError(
                        f"handler {spec.name!r}: {event_type!r} ({kind}) needs a topic name"
                    )
        subscription = self.subscription_name(spec)
        if len(subscription) > 64:
            raise ConfigError(
                f"subscription name {subscription!r} ({len(subscription)} characters) is over "
                "Event Grid's 64; shorten the service or handler name"
            )
        self.handlers.append(spec)

    def subscription_name(self, spec: HandlerSpec) -> str:
        """The bus subscription that feeds a handler."""
        return f"{self.name}-{spec.name}"

    def run(
        self,
        bus: Bus,
        *,
        store: ServiceStore | str = "memory://",
        clock: Clock | None = None,
        create_topics: bool = True,
    ) -> RunningService:
        """Attach this service to ``bus`` for the duration of an ``async with`` block."""
        from choreograph.sdk.runner import RunningService

        return RunningService(self, bus, store=store, clock=clock, create_topics=create_topics)

    def declaration(self) -> dict[str, Any]:
        """The service as data: what each handler consumes and emits."""
        return {
            "service": self.name,
            "description": self.description,
            "publishes": [
                {"type": t, "topic": topic} for t, topic in sorted(self.publishes.items())
            ],
            "handlers": [spec.declaration() for spec in self.handlers],
        }


def _handler_name(name: str) -> str:
    cleaned = name.replace("_", "-").strip("-")
    if not _NAME.fullmatch(cleaned):
        raise ConfigError(f"handler name {name!r} must be letters, digits, '-' or '_' (at most 41)")
    return cleaned


def _types(event_types: Sequence[str]) -> tuple[str, ...]:
    if not event_types:
        raise ConfigError("a handler must consume at least one event type")
    for event_type in event_types:
        if not isinstance(event_type, str) or not event_type:
            raise ConfigError(f"event types are non-empty strings, got {event_type!r}")
    return tuple(event_types)
