"""The bus's catalog: topics and subscriptions, created, updated, read, listed and deleted.

The catalog is loaded from the backend when the bus opens and kept in memory, with each topic's
compiled routes (subscription name and filter predicate) ready for publish. A backend shared by
several processes reports what the others change (:meth:`Catalog.apply_external`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from choreograph.backends.base import Backend, CatalogChange
from choreograph.bus.filters import compile_filter
from choreograph.bus.subscription import (
    ProvisioningState,
    SubscriptionRecord,
    SubscriptionSpec,
    WebHookDestination,
    validate_subscription_name,
)
from choreograph.bus.topic import (
    SYSTEM_TOPIC,
    TopicRecord,
    TopicSpec,
    new_access_key,
    validate_topic_name,
)
from choreograph.clock import Clock
from choreograph.errors import (
    AlreadyExistsError,
    BusClosedError,
    InvalidSubscriptionError,
    InvalidTopicError,
    SubscriptionNotFoundError,
    TopicNotFoundError,
)
from choreograph.events import CloudEvent

__all__ = ["Catalog", "Route", "TopicState"]


def _provisioning_state(
    existing: SubscriptionRecord | None, spec: SubscriptionSpec
) -> ProvisioningState:
    """An in-process subscription is ready at once. A webhook must be validated first (Event
    Grid's handshake) and again whenever its endpoint URL changes."""
    if not isinstance(spec.destination, WebHookDestination):
        return "Succeeded"
    if existing is not None and existing.spec.destination == spec.destination:
        return existing.provisioning_state
    return "Creating"


Route = tuple[str, Callable[[CloudEvent], bool] | None]


@dataclass(slots=True)
class TopicState:
    """A topic with its subscriptions and their compiled filters."""

    record: TopicRecord
    subscriptions: dict[str, SubscriptionRecord] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    takes_cloudevents: bool = False
    dedupe_window_seconds: float = 0.0
    unfiltered: tuple[str, ...] | None = None
    """Every subscription's name, when none has a filter (matching is then free)."""

    def __post_init__(self) -> None:
        self.set_record(self.record)

    def set_record(self, record: TopicRecord) -> None:
        self.record = record
        self.takes_cloudevents = record.spec.input_schema == "CloudEventSchemaV1_0"
        self.dedupe_window_seconds = record.spec.deduplication_window_seconds

    def rebuild_routes(self) -> None:
        self.routes = [
            (name, compile_filter(record.spec.event_filter))
            for name, record in sorted(self.subscriptions.items())
        ]
        if all(accepts is None for _, accepts in self.routes):
            self.unfiltered = tuple(name for name, _ in self.routes)
        else:
            self.unfiltered = None


class Catalog:
    """Topic and subscription management over a backend (the base of :class:`Bus`)."""

    def __init__(self, backend: Backend, clock: Clock) -> None:
        self.backend = backend
        self.clock = clock
        self._topics: dict[str, TopicState] = {}
        self._opened = False

    def _now(self) -> float:
        return self.clock.now()

    async def _load_catalog(self) -> None:
        self._topics = {
            record.name: TopicState(record) for record in await self.backend.load_topics()
        }
        for record in await self.backend.load_subscriptions():
            state = self._topics.get(record.topic)
            if state is not None:
                state.subscriptions[record.name] = record
        for state in self._topics.values():
            state.rebuild_routes()

    def _require_open(self) -> None:
        if not self._opened:
            raise BusClosedError("the bus is not open; use `async with Bus(url) as bus`")

    def _topic_state(self, name: str) -> TopicState:
        self._require_open()
        state = self._topics.get(name)
        if state is None:
            validate_topic_name(name)
            raise TopicNotFoundError(f"topic {name!r} does not exist")
        return state

    # topics ------------------------------------------------------------------------------------
    async def create_topic(
        self, name: str, spec: TopicSpec | dict[str, object] | None = None
    ) -> TopicRecord:
        """Create a topic; AlreadyExistsError if it exists."""
        return await self._save_topic(name, spec, mode="create")

    async def update_topic(
        self, name: str, spec: TopicSpec | dict[str, object] | None = None
    ) -> TopicRecord:
        """Change a topic's properties; TopicNotFoundError if it does not exist."""
        return await self._save_topic(name, spec, mode="update")

    async def put_topic(
        self, name: str, spec: TopicSpec | dict[str, object] | None = None
    ) -> TopicRecord:
        """Create or update a topic (Event Grid's PUT)."""
        return await self._save_topic(name, spec, mode="put")

    async def _save_topic(
        self,
        name: str,
        spec: TopicSpec | dict[str, object] | None,
        *,
        mode: Literal["create", "update", "put"],
    ) -> TopicRecord:
        self._require_open()
        validate_topic_name(name)
        checked = spec if isinstance(spec, TopicSpec) else TopicSpec.from_dict(spec)
        if name == SYSTEM_TOPIC and checked.input_schema != "CloudEventSchemaV1_0":
            raise InvalidTopicError(
                f"topic {SYSTEM_TOPIC!r} belongs to the bus and takes CloudEvents"
            )
        existing = self._topics.get(name)
        if existing is None and mode == "update":
            raise TopicNotFoundError(f"topic {name!r} does not exist")
        if existing is not None and mode == "create":
            raise AlreadyExistsError(f"topic {name!r} already exists")
        if existing is None:
            record = TopicRecord(
                name=name,
                spec=checked,
                key1=new_access_key(),
                key2=new_access_key(),
                created_at=self._now(),
            )
        else:
            if checked.input_schema == "CloudEventSchemaV1_0":
                for sub in existing.subscriptions.values():
                    if sub.spec.event_delivery_schema == "EventGridSchema":
                        raise InvalidTopicError(
                            f"topic {name!r} cannot take CloudEvents input: subscription {sub.name!r} "
                            "delivers in the Event Grid schema, which cannot carry CloudEvents"
                        )
            record = TopicRecord(
                name=name,
                spec=checked,
                key1=existing.record.key1,
                key2=existing.record.key2,
                created_at=existing.record.created_at,
            )
        await self.backend.save_topic(record)
        if existing is None:
            self._topics[name] = TopicState(record)
        else:
            existing.set_record(record)
        return record

    async def get_topic(self, name: str) -> TopicRecord:
        return self._topic_state(name).record

    async def list_topics(self) -> list[TopicRecord]:
        self._require_open()
        return [state.record for _, state in sorted(self._topics.items())]

    async def delete_topic(self, name: str) -> None:
        """Delete a topic with its subscriptions, queued events and dead letters."""
        state = self._topic_state(name)
        if name == SYSTEM_TOPIC:
            raise InvalidTopicError(
                f"topic {SYSTEM_TOPIC!r} belongs to the bus and cannot be deleted"
            )
        for subscription in list(state.subscriptions):
            await self._subscription_deleted(name, subscription)
        await self.backend.delete_topic(name)
        del self._topics[name]

    async def regenerate_key(self, name: str, key_name: str) -> TopicRecord:
        """Replace ``key1`` or ``key2`` with a fresh key."""
        state = self._topic_state(name)
        if key_name not in ("key1", "key2"):
            raise InvalidTopicError(f'`keyName` must be "key1" or "key2", got {key_name!r}')
        old = state.record
        keys = {"key1": old.key1, "key2": old.key2, key_name: new_access_key()}
        record = TopicRecord(name=name, spec=old.spec, created_at=old.created_at, **keys)
        await self.backend.save_topic(record)
        state.set_record(record)
        return record

    # subscriptions -----------------------------------------------------------------------------
    async def create_subscription(
        self, topic: str, name: str, spec: SubscriptionSpec | dict[str, object] | None = None
    ) -> SubscriptionRecord:
        """Create a subscription; AlreadyExistsError if it exists."""
        return await self._save_subscription(topic, name, spec, mode="create")

    async def update_subscription(
        self, topic: str, name: str, spec: SubscriptionSpec | dict[str, object] | None = None
    ) -> SubscriptionRecord:
        """Replace a subscription's properties; SubscriptionNotFoundError if it does not exist."""
        return await self._save_subscription(topic, name, spec, mode="update")

    async def put_subscription(
        self, topic: str, name: str, spec: SubscriptionSpec | dict[str, object] | None = None
    ) -> SubscriptionRecord:
        """Create or update a subscription (Event Grid's PUT)."""
        return await self._save_subscription(topic, name, spec, mode="put")

    async def _save_subscription(
        self,
        topic: str,
        name: str,
        spec: SubscriptionSpec | dict[str, object] | None,
        *,
        mode: Literal["create", "update", "put"],
    ) -> SubscriptionRecord:
        state = self._topic_state(topic)
        validate_subscription_name(name)
        checked = spec if isinstance(spec, SubscriptionSpec) else SubscriptionSpec.from_dict(spec)
        if (
            checked.event_delivery_schema == "EventGridSchema"
            and state.record.spec.input_schema == "CloudEventSchemaV1_0"
        ):
            raise InvalidSubscriptionError(
                f"`eventDeliverySchema` EventGridSchema is not possible on topic {topic!r}, whose input "
                "schema is CloudEvents (extension attributes have no place in the Event Grid schema)"
            )
        existing = state.subscriptions.get(name)
        if existing is None and mode == "update":
            raise SubscriptionNotFoundError(f"topic {topic!r} has no subscription {name!r}")
        if existing is not None and mode == "create":
            raise AlreadyExistsError(f"subscription {topic}/{name} already exists")
        record = SubscriptionRecord(
            topic=topic,
            name=name,
            spec=checked,
            created_at=existing.created_at if existing is not None else self._now(),
            provisioning_state=_provisioning_state(existing, checked),
        )
        await self.backend.save_subscription(record)
        state.subscriptions[name] = record
        state.rebuild_routes()
        await self._subscription_changed(record, existing)
        return record

    async def set_provisioning_state(
        self, topic: str, name: str, provisioning_state: ProvisioningState
    ) -> SubscriptionRecord:
        """Record the outcome of a webhook's validation: deliveries flow only once it is
        ``Succeeded``."""
        existing = self.get_subscription_record(topic, name)
        record = msgspec.structs.replace(existing, provisioning_state=provisioning_state)
        await self.backend.save_subscription(record)
        self._topic_state(topic).subscriptions[name] = record
        await self._subscription_changed(record, existing)
        return record

    def get_subscription_record(self, topic: str, name: str) -> SubscriptionRecord:
        """The subscription, or SubscriptionNotFoundError."""
        record = self._topic_state(topic).subscriptions.get(name)
        if record is None:
            raise SubscriptionNotFoundError(f"topic {topic!r} has no subscription {name!r}")
        return record

    async def get_subscription(self, topic: str, name: str) -> SubscriptionRecord:
        return self.get_subscription_record(topic, name)

    async def list_subscriptions(self, topic: str) -> list[SubscriptionRecord]:
        return [record for _, record in sorted(self._topic_state(topic).subscriptions.items())]

    async def delete_subscription(self, topic: str, name: str) -> None:
        """Delete a subscription with its queued events and dead letters."""
        state = self._topic_state(topic)
        self.get_subscription_record(topic, name)
        await self._subscription_deleted(topic, name)
        await self.backend.delete_subscription(topic, name)
        del state.subscriptions[name]
        state.rebuild_routes()

    # changes made by other processes -----------------------------------------------------------
    async def apply_external(self, change: CatalogChange) -> None:
        """Apply a change another process made to a shared catalog (the backend reports it).

        The catalog changes before the first await, so that publish routes by it at once; then
        the subscription's dispatcher in this process, if any, follows the change."""
        if not self._opened:
            return
        topic, name, record = change
        state = self._topics.get(topic)
        if name is None:
            if isinstance(record, TopicRecord):
                if state is None:
                    self._topics[topic] = TopicState(record)
                elif state.record != record:
                    state.set_record(record)
            elif state is not None and record is None:
                del self._topics[topic]
                for subscription in list(state.subscriptions):
                    await self._subscription_deleted(topic, subscription)
            return
        if state is None:
            return  # its topic is gone (or not yet known: a topic's record is written first)
        existing = state.subscriptions.get(name)
        if isinstance(record, SubscriptionRecord):
            if existing == record:
                return
            state.subscriptions[name] = record
            state.rebuild_routes()
            await self._subscription_changed(record, existing)
        elif record is None and existing is not None:
            del state.subscriptions[name]
            state.rebuild_routes()
            await self._subscription_deleted(topic, name)

    # hooks for the bus -------------------------------------------------------------------------
    async def _subscription_changed(
        self, record: SubscriptionRecord, previous: SubscriptionRecord | None
    ) -> None:
        """A subscription was created (``previous`` is None) or changed."""

    async def _subscription_deleted(self, topic: str, name: str) -> None:
        """A subscription is about to be deleted."""
