"""The bus: topics, subscriptions, durable publish, dispatch and dead letters over one backend.

    async with Bus("sqlite:///bus.db") as bus:
        await bus.put_topic("orders")
        await bus.subscribe("orders", "audit", handler)
        await bus.publish("orders", CloudEvent(type="Order.Placed", source="/shop", data={...}))

Shutdown order (``__aexit__``): stop taking new deliveries, let attempts in progress finish within
``shutdown_grace_seconds``, cancel the rest (they go back to the queue unattempted), then close
the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self

from choreograph.backends import open_backend
from choreograph.backends.base import AppendResult, Delivery, Handoff, NewEvent
from choreograph.bus.catalog import Catalog, TopicState
from choreograph.bus.deadletter import DeadLetter, dead_lettered_event
from choreograph.bus.dispatcher import SubscriptionDispatcher
from choreograph.bus.endpoint import Endpoint, Handler, HandlerEndpoint
from choreograph.bus.retry import DeadLetterReason
from choreograph.bus.subscription import InProcessDestination, SubscriptionRecord, SubscriptionSpec
from choreograph.bus.topic import SYSTEM_TOPIC
from choreograph.clock import Clock, SystemClock
from choreograph.errors import (
    BusClosedError,
    DeadLetterNotFoundError,
    InvalidDeadLetterQueryError,
    InvalidEventError,
    InvalidSubscriptionError,
)
from choreograph.events import (
    CloudEvent,
    EventGridEvent,
    cloudevent_from_eventgrid,
    encode_event,
)

__all__ = ["MAX_EVENTS_PER_PUBLISH", "Bus", "Publishable"]

logger = logging.getLogger(__name__)

MAX_EVENTS_PER_PUBLISH: Final = 5000
Publishable = CloudEvent | EventGridEvent | Mapping[str, Any]


class Bus(Catalog):
    """An Event-Grid-style bus on the backend named by ``url`` (``memory://``, ``sqlite:///path``).

    ``clock`` drives retries, time-to-live and delivery timeouts (tests pass a FakeClock);
    ``retry_jitter`` is the largest fraction added at random to a retry delay, ``rng`` its source.
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        clock: Clock | None = None,
        retry_jitter: float = 0.1,
        rng: random.Random | None = None,
        shutdown_grace_seconds: float = 10.0,
    ) -> None:
        super().__init__(open_backend(url))
        self.url = url
        self.clock: Clock = clock or SystemClock()
        self.retry_jitter = retry_jitter
        self.rng = rng or random.Random()
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self._dispatchers: dict[tuple[str, str], SubscriptionDispatcher] = {}
        self._group: asyncio.TaskGroup | None = None
        self._exit_stack = contextlib.AsyncExitStack()
        self._changed = asyncio.Event()
        self.watched = 0
        """How many ``idle`` calls are waiting; dispatchers report state changes only then."""

    # lifecycle ---------------------------------------------------------------------------------
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
        """Open the backend, load the catalog, release leases left by a previous owner."""
        await self._exit_stack.enter_async_context(self.backend)
        released = await self.backend.release_all_leases(self.clock.now())
        if released:
            logger.info("released %d deliveries leased before a restart", released)
        await self._load_catalog()
        self._opened = True
        if SYSTEM_TOPIC not in self._topics:
            await self.put_topic(SYSTEM_TOPIC)
        self._group = await self._exit_stack.enter_async_context(asyncio.TaskGroup())

    async def close(self) -> None:
        """Stop every dispatcher (see the module docstring for the order), then the backend."""
        if not self._opened:
            return
        self._opened = False
        await asyncio.gather(
            *(
                dispatcher.stop(self.shutdown_grace_seconds)
                for dispatcher in self._dispatchers.values()
            )
        )
        self._dispatchers.clear()
        await self._exit_stack.aclose()

    def _now(self) -> float:
        return self.clock.now()

    # endpoints ---------------------------------------------------------------------------------
    async def subscribe(
        self,
        topic: str,
        name: str,
        handler: Handler | Endpoint,
        spec: SubscriptionSpec | None = None,
    ) -> SubscriptionRecord:
        """Create or update an in-process subscription and attach ``handler`` to it."""
        record = await self.put_subscription(topic, name, spec)
        await self.attach(topic, name, handler)
        return record

    async def attach(self, topic: str, name: str, handler: Handler | Endpoint) -> None:
        """Start delivering the subscription's events to ``handler`` in this process."""
        record = self.get_subscription_record(topic, name)
        if not isinstance(record.spec.destination, InProcessDestination):
            raise InvalidSubscriptionError(
                f"subscription {topic}/{name} delivers to a {record.spec.destination.endpoint_type} "
                "endpoint; only InProcess subscriptions take a handler"
            )
        endpoint: Endpoint = handler if isinstance(handler, Endpoint) else HandlerEndpoint(handler)
        await self._start_dispatcher(record, endpoint)

    async def detach(self, topic: str, name: str) -> None:
        """Stop delivering the subscription's events in this process; they wait in its queue."""
        dispatcher = self._dispatchers.pop((topic, name), None)
        if dispatcher is not None:
            await dispatcher.stop(self.shutdown_grace_seconds)

    async def _start_dispatcher(self, record: SubscriptionRecord, endpoint: Endpoint) -> None:
        if self._group is None:
            raise BusClosedError("the bus is not open; use `async with Bus(url) as bus`")
        await self.detach(record.topic, record.name)
        dispatcher = SubscriptionDispatcher(self, record, endpoint)
        self._dispatchers[(record.topic, record.name)] = dispatcher
        dispatcher.start(self._group)

    async def _subscription_changed(self, record: SubscriptionRecord) -> None:
        dispatcher = self._dispatchers.get((record.topic, record.name))
        if dispatcher is not None:
            await self._start_dispatcher(record, dispatcher.endpoint)

    async def _subscription_deleted(self, topic: str, name: str) -> None:
        await self.detach(topic, name)

    # publish -----------------------------------------------------------------------------------
    async def publish(self, topic: str, events: Publishable | Sequence[Publishable]) -> None:
        """Store ``events`` (one or a batch) durably and route them to matching subscriptions.

        Every event is validated before any is stored; a refused batch stores nothing. An event
        whose (``source``, ``id``) the topic stored within its de-duplication window is
        acknowledged without being stored again.
        """
        state = self._topic_state(topic)
        if isinstance(events, CloudEvent) and state.takes_cloudevents:
            # The common case, kept short: one CloudEvent on a CloudEvents topic.
            encoded = encode_event(events)
            matched = tuple(
                name for name, accepts in state.routes if accepts is None or accepts(events)
            )
            await self._append(state, (NewEvent(events, encoded, matched),))
            return
        if isinstance(events, CloudEvent | EventGridEvent | Mapping):
            items: Sequence[Publishable] = (events,)
        elif isinstance(events, list | tuple):
            items = events
        else:
            raise InvalidEventError(
                f"publish takes an event or a list of events, got {type(events).__name__}"
            )
        if not items:
            raise InvalidEventError("a publish needs at least one event")
        if len(items) > MAX_EVENTS_PER_PUBLISH:
            raise InvalidEventError(
                f"a publish holds {len(items)} events; the limit is {MAX_EVENTS_PER_PUBLISH}"
            )
        new_events: list[NewEvent] = []
        routes = state.routes
        for index, item in enumerate(items):
            try:
                event = self._canonical(state, item)
                encoded = encode_event(event)
            except InvalidEventError as exc:
                raise (exc.at_index(index) if len(items) > 1 else exc) from exc.__cause__
            matched = tuple(name for name, accepts in routes if accepts is None or accepts(event))
            new_events.append(NewEvent(event, encoded, matched))
        await self._append(state, new_events)

    def _canonical(self, state: TopicState, item: Publishable) -> CloudEvent:
        if state.takes_cloudevents:
            if isinstance(item, CloudEvent):
                return item
            if isinstance(item, EventGridEvent):
                raise InvalidEventError(
                    f"topic {state.record.name} takes CloudEvents, got an Event Grid event"
                )
            return CloudEvent.from_dict(item)
        if isinstance(item, CloudEvent):
            raise InvalidEventError(
                f"topic {state.record.name} takes Event Grid events, got a CloudEvent"
            )
        eventgrid = item if isinstance(item, EventGridEvent) else EventGridEvent.from_dict(item)
        return cloudevent_from_eventgrid(eventgrid, topic_id=state.record.resource_id)

    async def _append(self, state: TopicState, new_events: Sequence[NewEvent]) -> None:
        topic = state.record.name
        now = self.clock.now()
        handoff = self._handoffs(topic, new_events, now)
        result = await self.backend.append(
            topic,
            new_events,
            now=now,
            dedupe_window_seconds=state.record.spec.deduplication_window_seconds,
            handoff=handoff,
        )
        self._route(topic, result)

    def _handoffs(
        self, topic: str, new_events: Sequence[NewEvent], now: float
    ) -> dict[str, Handoff]:
        handoff: dict[str, Handoff] = {}
        dispatchers = self._dispatchers
        for new in new_events:
            for name in new.subscriptions:
                if name not in handoff:
                    dispatcher = dispatchers.get((topic, name))
                    if dispatcher is not None and (grant := dispatcher.handoff(now)) is not None:
                        handoff[name] = grant
        return handoff

    def _route(self, topic: str, result: AppendResult) -> None:
        """Give handed-off deliveries to their dispatchers; tell the others they have work."""
        dispatchers = self._dispatchers
        for name, handed in result.leased.items():
            dispatcher = dispatchers.get((topic, name))
            if dispatcher is not None:
                dispatcher.accept(handed)
        for name in result.queued:
            dispatcher = dispatchers.get((topic, name))
            if dispatcher is not None:
                dispatcher.notify_backlog()

    # dead letters ------------------------------------------------------------------------------
    async def dead_letter(
        self,
        dispatcher: SubscriptionDispatcher,
        delivery: Delivery,
        reason: DeadLetterReason,
        *,
        attempts: int,
    ) -> None:
        """Dead-letter (or drop, where the subscription disabled its dead-letter store) one
        delivery, announcing it with ``Choreograph.DeadLettered`` in the same write."""
        now = self.clock.now()
        spec = dispatcher.record.spec
        record = DeadLetter(
            id=str(uuid.uuid4()),
            topic=delivery.topic,
            subscription=delivery.subscription,
            event=delivery.event,
            reason=reason.value,
            delivery_attempts=attempts,
            last_delivery_outcome=delivery.last_outcome or "None",
            last_delivery_error=delivery.last_error,
            publish_time=delivery.published_at,
            last_delivery_attempt_time=delivery.last_attempt_at,
            dead_letter_time=now,
        )
        announce: list[NewEvent] = []
        system = self._topics.get(SYSTEM_TOPIC)
        if spec.dead_letter_enabled and system is not None and delivery.topic != SYSTEM_TOPIC:
            event = dead_lettered_event(record)
            matched = tuple(
                name for name, accepts in system.routes if accepts is None or accepts(event)
            )
            announce.append(NewEvent(event, encode_event(event), matched))
        logger.warning(
            "%s event %s of %s/%s after %d attempts (last outcome %s)",
            "dead-lettered" if spec.dead_letter_enabled else "dropped",
            delivery.event.id,
            delivery.topic,
            delivery.subscription,
            attempts,
            record.last_delivery_outcome,
        )
        result = await self.backend.dead_letter(
            delivery,
            record if spec.dead_letter_enabled else None,
            announce=announce,
            announce_topic=SYSTEM_TOPIC,
            now=now,
            handoff=self._handoffs(SYSTEM_TOPIC, announce, now),
        )
        self._route(SYSTEM_TOPIC, result)

    async def dead_letters(
        self, topic: str, subscription: str, *, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        """The subscription's dead-letter records, oldest first, ``limit`` at a time."""
        self.get_subscription_record(topic, subscription)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InvalidDeadLetterQueryError(
                f"`limit` must be an integer from 1 to 10000, got {limit!r}"
            )
        return await self.backend.list_dead_letters(topic, subscription, limit=limit, after=after)

    async def get_dead_letter(self, topic: str, subscription: str, record_id: str) -> DeadLetter:
        self.get_subscription_record(topic, subscription)
        record = await self.backend.get_dead_letter(topic, subscription, record_id)
        if record is None:
            raise DeadLetterNotFoundError(
                f"subscription {topic}/{subscription} has no dead letter {record_id!r}"
            )
        return record

    async def _select_dead_letters(
        self,
        topic: str,
        subscription: str,
        ids: Sequence[str] | None,
        where: Callable[[DeadLetter], bool] | None,
    ) -> list[str] | None:
        self.get_subscription_record(topic, subscription)
        if ids is not None:
            if isinstance(ids, str) or not all(isinstance(i, str) for i in ids):
                raise InvalidDeadLetterQueryError("`ids` must be a list of dead-letter record ids")
            if where is not None:
                raise InvalidDeadLetterQueryError("give either `ids` or `where`, not both")
            return list(ids)
        if where is None:
            return None
        selected: list[str] = []
        after: str | None = None
        while page := await self.backend.list_dead_letters(
            topic, subscription, limit=1000, after=after
        ):
            selected.extend(record.id for record in page if where(record))
            after = page[-1].id
        return selected

    async def redrive(
        self,
        topic: str,
        subscription: str,
        ids: Sequence[str] | None = None,
        *,
        where: Callable[[DeadLetter], bool] | None = None,
    ) -> int:
        """Send dead letters back to their subscription with a fresh retry budget: the records
        named by ``ids``, those ``where`` accepts, or all. Returns how many were redriven."""
        selected = await self._select_dead_letters(topic, subscription, ids, where)
        moved = await self.backend.redrive(topic, subscription, selected, now=self.clock.now())
        dispatcher = self._dispatchers.get((topic, subscription))
        if moved and dispatcher is not None:
            dispatcher.notify_backlog()
        return moved

    async def purge_dead_letters(
        self,
        topic: str,
        subscription: str,
        ids: Sequence[str] | None = None,
        *,
        where: Callable[[DeadLetter], bool] | None = None,
    ) -> int:
        """Delete dead letters (by ``ids``, by ``where``, or all). Returns how many."""
        selected = await self._select_dead_letters(topic, subscription, ids, where)
        return await self.backend.purge(topic, subscription, selected)

    async def counters(self, topic: str, subscription: str) -> dict[str, int]:
        """``queued``, ``deadLettered`` and ``dropped`` counts of one subscription."""
        self.get_subscription_record(topic, subscription)
        return await self.backend.counters(topic, subscription)

    # waiting -----------------------------------------------------------------------------------
    def state_changed(self) -> None:
        """Called by dispatchers when their work state changes, while ``watched`` (wakes ``idle``)."""
        self._changed.set()

    async def idle(self) -> None:
        """Wait until no delivery is buffered, in flight or due at the clock's current time.

        With a fake clock this is how a test lets everything due "now" happen before it
        advances time again.
        """
        self.watched += 1
        try:
            while True:
                if self._all_idle():
                    await self.backend.flush()
                    if self._all_idle():
                        return
                    continue
                self._changed.clear()
                await self._changed.wait()
        finally:
            self.watched -= 1

    def _all_idle(self) -> bool:
        now = self.clock.now()
        return all(dispatcher.is_idle(now) for dispatcher in self._dispatchers.values())
