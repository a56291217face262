"""Running a service on a bus in this process: its store opened, its subscriptions attached."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Final, Self

import msgspec

from choreograph.bus.bus import Bus
from choreograph.bus.filters import EventFilter
from choreograph.bus.subscription import InProcessDestination, SubscriptionSpec
from choreograph.clock import Clock
from choreograph.sdk.endpoint import ServiceEndpoint
from choreograph.sdk.retention import forgetting_old_entries
from choreograph.sdk.service import HandlerSpec, Service
from choreograph.sdk.store import ServiceStore, open_service_store

__all__ = ["STARTUP_LOCK", "RunningService", "subscription_spec"]

STARTUP_LOCK: Final = "_startup"
"""The state lock held by the startup functions of a service."""


def subscription_spec(service: Service, spec: HandlerSpec, topic: str) -> SubscriptionSpec:
    """The subscription feeding ``spec`` from ``topic``: its consumed types, one event at a
    time, in CloudEvents, with the handler's (or the service's) retry policy."""
    types = tuple(t for t in spec.consumes if spec.topics[t] == topic)
    base = spec.event_filter or EventFilter()
    values: dict[str, object] = {
        "destination": InProcessDestination(),
        "event_filter": msgspec.structs.replace(base, included_event_types=types),
        "event_delivery_schema": "CloudEventSchemaV1_0",
    }
    policy = spec.retry_policy or service.retry_policy
    if policy is not None:
        values["retry_policy"] = policy
    if spec.delivery_timeout_seconds is not None:
        values["delivery_timeout_seconds"] = spec.delivery_timeout_seconds
    if spec.max_concurrent_deliveries is not None:
        values["max_concurrent_deliveries"] = spec.max_concurrent_deliveries
    return SubscriptionSpec(**values)  # type: ignore[arg-type]


class RunningService:
    """A service attached to a bus: ``async with service.run(bus, store=...)``.

    On enter it opens the service's store and subscribes every handler (creating the topics it
    consumes from and emits to, when missing); on exit it detaches them and closes the store.
    """

    def __init__(
        self,
        service: Service,
        bus: Bus,
        *,
        store: ServiceStore | str = "memory://",
        clock: Clock | None = None,
        create_topics: bool = True,
    ) -> None:
        self.service = service
        self.bus = bus
        self.store = store if isinstance(store, ServiceStore) else open_service_store(store)
        self.clock = clock or bus.clock
        self.create_topics = create_topics
        self.endpoints: dict[str, ServiceEndpoint] = {}
        self._attached: list[tuple[str, str]] = []
        self._running = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        await self.store.open()
        try:
            await self._running.enter_async_context(
                forgetting_old_entries(self.store, self.clock, self.service.name)
            )
            for startup in self.service.startup:
                # Processes of one service sharing a store start one at a time: each seeds
                # on what the one before committed.
                async with self.store.transaction() as state, state.lock(STARTUP_LOCK):
                    await startup(state)
            await self._attach()
        except BaseException:
            await self._running.aclose()
            await self._detach()
            await self.store.close()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._running.aclose()
        await self._detach()
        await self.store.close()

    async def _attach(self) -> None:
        service, bus = self.service, self.bus
        if self.create_topics:
            known = {topic.name for topic in await bus.list_topics()}
            for spec in service.handlers:
                for topic in {*spec.topics.values(), *spec.emits.values()} - known:
                    await bus.put_topic(topic)
                    known.add(topic)
        for spec in service.handlers:
            endpoint = ServiceEndpoint(service, spec, self.store, self.clock)
            self.endpoints[spec.name] = endpoint
            name = service.subscription_name(spec)
            for topic in dict.fromkeys(spec.topics.values()):
                await bus.subscribe(topic, name, endpoint, subscription_spec(service, spec, topic))
                self._attached.append((topic, name))

    async def _detach(self) -> None:
        while self._attached:
            topic, name = self._attached.pop()
            await self.bus.detach(topic, name)
