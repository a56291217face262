"""Publishing: validate events, match them to subscriptions, store them, hand them to dispatchers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from choreograph.backends.base import AppendResult, Delivery, Handoff, NewEvent, TopicAppend
from choreograph.bus.catalog import Catalog, TopicState
from choreograph.bus.endpoint import Emit
from choreograph.bus.metrics import BusMetrics
from choreograph.errors import InvalidEventError
from choreograph.events import CloudEvent, EventGridEvent, cloudevent_from_eventgrid, encode_event

if TYPE_CHECKING:
    from choreograph.bus.dispatcher import SubscriptionDispatcher

__all__ = ["MAX_EVENTS_PER_PUBLISH", "Publishable", "Router"]

MAX_EVENTS_PER_PUBLISH: Final = 5000
Publishable = CloudEvent | EventGridEvent | Mapping[str, Any]


class Router(Catalog):
    """The publish path of the bus (:class:`~choreograph.bus.Bus` adds dispatch on top)."""

    _dispatchers: dict[tuple[str, str], SubscriptionDispatcher]
    _pending_commits: int
    metrics: BusMetrics

    async def publish(self, topic: str, events: Publishable | Sequence[Publishable]) -> None:
        """Store ``events`` (one or a batch) durably and route them to matching subscriptions.

        Every event is validated before any is stored; a refused batch stores nothing. An event
        whose (``source``, ``id``) the topic stored within its de-duplication window is
        acknowledged without being stored again.
        """
        state = self._topics.get(topic) if self._opened else None
        if state is None:
            state = self._topic_state(topic)  # raises the right error
        try:
            if type(events) is CloudEvent and state.takes_cloudevents:
                new_events: Sequence[NewEvent] = (self._prepare(state, events),)
            else:
                new_events = self._prepare_all(state, events)
        except InvalidEventError:
            refused = self.metrics.refused
            refused[topic] = refused.get(topic, 0) + 1
            raise
        published = self.metrics.published
        published[topic] = published.get(topic, 0) + len(new_events)
        now = self._now()
        append = TopicAppend(
            topic,
            new_events,
            state.dedupe_window_seconds,
            self._handoffs(topic, new_events, now),
        )
        written = self.backend.append((append,), now=now)
        results = written if isinstance(written, list) else await written
        self._route(topic, results[0])

    def _prepare(
        self, state: TopicState, event: CloudEvent, encoded: bytes | None = None
    ) -> NewEvent:
        """Encode (checking the size) and match a canonical event; ``encoded``, its encoding
        when the caller made it already."""
        if encoded is None:
            encoded = encode_event(event)
        matched = state.unfiltered
        if matched is None:
            matched = tuple(
                name for name, accepts in state.routes if accepts is None or accepts(event)
            )
        return NewEvent(event, encoded, matched)

    def _prepare_all(
        self, state: TopicState, events: Publishable | Sequence[Publishable]
    ) -> list[NewEvent]:
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
        prepared = []
        for index, item in enumerate(items):
            try:
                prepared.append(self._prepare(state, self._canonical(state, item)))
            except InvalidEventError as exc:
                raise (exc.at_index(index) if len(items) > 1 else exc) from exc.__cause__
        return prepared

    def _canonical(self, state: TopicState, item: Publishable) -> CloudEvent:
        name = state.record.name
        if state.takes_cloudevents:
            if isinstance(item, CloudEvent):
                return item
            if isinstance(item, EventGridEvent):
                raise InvalidEventError(f"topic {name} takes CloudEvents, got an Event Grid event")
            return CloudEvent.from_dict(item)
        if isinstance(item, CloudEvent):
            raise InvalidEventError(f"topic {name} takes Event Grid events, got a CloudEvent")
        eventgrid = item if isinstance(item, EventGridEvent) else EventGridEvent.from_dict(item)
        return cloudevent_from_eventgrid(eventgrid, topic_id=state.record.resource_id)

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

    # emitted events ----------------------------------------------------------------------------
    def prepare_emitted(
        self, emitted: Sequence[Emit], encoded: Sequence[bytes] = ()
    ) -> list[TopicAppend]:
        """Validate what a handler emitted, grouped by topic; raises like ``publish``.
        ``encoded``, when given, holds each event's :func:`encode_event` bytes."""
        grouped: dict[str, list[NewEvent]] = {}
        for index, (topic, event) in enumerate(emitted):
            state = self._topic_state(topic)
            if not isinstance(event, CloudEvent):
                raise InvalidEventError(
                    f"emitted events must be CloudEvents, got {type(event).__name__}"
                )
            canonical = self._canonical(state, event)
            known = encoded[index] if encoded and canonical is event else None
            grouped.setdefault(topic, []).append(self._prepare(state, canonical, known))
        now = self._now()
        published = self.metrics.published
        for topic, events in grouped.items():
            published[topic] = published.get(topic, 0) + len(events)
        return [
            TopicAppend(
                topic,
                events,
                self._topic_state(topic).dedupe_window_seconds,
                self._handoffs(topic, events, now),
            )
            for topic, events in grouped.items()
        ]

    def commit_emitted(
        self,
        appends: list[TopicAppend],
        acks: Sequence[Delivery],
        not_stored: Callable[[BaseException], None],
    ) -> None:
        """Store emitted events and acknowledge the deliveries that caused them in one write,
        without waiting: the events are routed once durable. If the write fails, neither
        happened: ``not_stored(error)`` is called (the dispatcher retries the deliveries on
        their policy; the re-emitted ids de-duplicate)."""
        written = self.backend.append(appends, now=self._now(), acks=acks)
        if isinstance(written, list):  # written at once (in memory): route now
            self._route_emitted(appends, written)
            return
        self._pending_commits += 1
        written.add_done_callback(
            lambda future: self._emitted_committed(appends, future, not_stored)
        )

    def _emitted_committed(
        self,
        appends: list[TopicAppend],
        future: asyncio.Future[list[AppendResult]],
        not_stored: Callable[[BaseException], None],
    ) -> None:
        self._pending_commits -= 1
        error = asyncio.CancelledError() if future.cancelled() else future.exception()
        if error is not None:
            self._commit_failed(error)
            not_stored(error)
            return
        self._route_emitted(appends, future.result())

    def _route_emitted(self, appends: list[TopicAppend], results: list[AppendResult]) -> None:
        for append, result in zip(appends, results, strict=True):
            self._route(append.topic, result)
        self.state_changed()

    def _commit_failed(self, error: BaseException) -> None:
        """Hook: the bus logs a failed commit of emitted events."""

    def state_changed(self) -> None:
        """Hook: the bus wakes ``idle`` waiters."""
