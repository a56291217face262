"""Storing published events: de-duplication markers first, then one message per subscription.

A topic with a de-duplication window keeps a marker stream: each event publishes a marker whose
``Nats-Msg-Id`` is the digest of its (``source``, ``id``), so JetStream itself tells which
events it stored within its window, atomically across every process that publishes. The
marker's payload is the bus-clock time it was stored: JetStream's window runs on the server's
clock, the bus's on its injected clock, and a duplicate the server reports is checked against
the latter. When the bus clock says the first copy is older than the window (only a fake or
skewed clock can), the event is stored under the next *generation* of its key (``<key>~1``...).

Then each new event goes to the ``ready`` subject of every subscription it matched, with
``Nats-Msg-Id`` ``<marker sequence>.<subscription>``. A duplicate publishes those same messages
again, which JetStream absorbs: if the first publish failed half-way (markers stored, some
deliveries not) and the publisher retried, the missing deliveries are stored now, so a publish
that returns is always complete.

When the bus clock is the system's (``wall_clock``), the two windows are one and no
marker is needed: each delivery carries ``Nats-Msg-Id`` ``<event key>.<subscription>``, JetStream
absorbs a second copy of it within the window, and an event is a duplicate when every one of its
deliveries was. That saves a message and a round trip per event. (Unlike the marker, such a key
exists per subscription: an event that matched no subscription leaves none, and a subscription
created since the first copy gets the second.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from choreograph.backends.base import AppendResult, NewEvent, TopicAppend
from choreograph.backends.nats.engine import Engine
from choreograph.backends.nats.wire import MSG_ID, Headers, event_key, fresh_headers
from choreograph.errors import BackendError

__all__ = ["AppendBatch", "store_appends"]

MAX_GENERATIONS = 64


@dataclass(slots=True, eq=False)
class _Event:
    """One event of one topic on its way into JetStream."""

    topic: str
    new: NewEvent
    window: float
    now: float
    key: str
    generation: int = 0
    marker: int = 0
    """The sequence of the event's marker (of the first copy's, for a duplicate)."""
    duplicate: bool = False
    first: _Event | None = None
    """The same event earlier in this batch, which stands for it."""
    error: BaseException | None = None

    @property
    def msg_id(self) -> str:
        return self.key if not self.generation else f"{self.key}~{self.generation}"


@dataclass(slots=True, eq=False)
class AppendBatch:
    """The appends of one ``Backend.append`` call and, once stored, their results."""

    appends: Sequence[TopicAppend]
    now: float
    results: list[AppendResult] = field(default_factory=list)
    error: BaseException | None = None


async def store_appends(
    engine: Engine,
    batches: Sequence[AppendBatch],
    subscribed: Callable[[str, str], bool],
    *,
    wall_clock: bool,
) -> None:
    """Store every batch, setting its ``results`` or its ``error``. ``subscribed(topic, name)``
    tells the subscriptions that exist (an event matched to a deleted one is not stored);
    ``wall_clock``, that the bus clock is the system's (no markers, see the module)."""
    marked: list[_Event] = []
    plans: list[list[list[_Event | None]]] = []  # per batch, per append, per event
    seen: dict[tuple[str, str], _Event] = {}
    for batch in batches:
        plan = []
        for topic, events, window, _ in batch.appends:
            batch.results.append(AppendResult([False] * len(events)))
            entries: list[_Event | None] = []
            for new in events:
                if window <= 0:
                    entries.append(_Event(topic, new, window, batch.now, ""))
                    continue
                key = event_key(new.event.source, new.event.id)
                event = _Event(topic, new, window, batch.now, key, first=seen.get((topic, key)))
                if event.first is None:
                    seen[(topic, key)] = event
                    if not wall_clock:
                        marked.append(event)
                entries.append(event)
            plan.append(entries)
        plans.append(plan)
    await _mark(engine, marked)
    await _fan_out(engine, batches, plans, subscribed, wall_clock)


async def _mark(engine: Engine, events: list[_Event]) -> None:
    """Publish the markers of ``events`` and decide which are duplicates."""
    names = engine.names
    pending = events
    while pending:
        outcomes = await engine.publish_all(
            [(names.marker(e.topic), repr(e.now).encode(), {MSG_ID: e.msg_id}) for e in pending]
        )
        repeated: list[_Event] = []
        for event, outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                event.error = outcome
            else:
                event.marker = outcome.seq
                if outcome.duplicate:
                    repeated.append(event)
        stamps = await asyncio.gather(
            *(engine.payload_at(names.marker_stream(e.topic), e.marker) for e in repeated),
            return_exceptions=True,
        )
        pending = []
        for event, stamp in zip(repeated, stamps, strict=True):
            if isinstance(stamp, BaseException):
                event.error = stamp
            elif stamp is not None and float(stamp) + event.window > event.now:
                event.duplicate = True
            elif event.generation < MAX_GENERATIONS:
                event.generation += 1  # the first copy is past the window on the bus clock
                pending.append(event)
            else:
                event.error = BackendError(f"too many generations of event key {event.key}")


async def _fan_out(
    engine: Engine,
    batches: Sequence[AppendBatch],
    plans: list[list[list[_Event | None]]],
    subscribed: Callable[[str, str], bool],
    wall_clock: bool,
) -> None:
    """Publish one delivery per matched subscription; fill in the results."""
    names = engine.names
    messages: list[tuple[str, bytes, Headers | None]] = []
    targets: list[tuple[AppendBatch, AppendResult, int, str]] = []
    for batch, plan in zip(batches, plans, strict=True):
        for result, entries in zip(batch.results, plan, strict=True):
            for index, event in enumerate(entries):
                if event is None:
                    continue
                origin = event.first or event
                if origin.error is not None:
                    batch.error = batch.error or origin.error
                    continue
                if event.first is not None or event.duplicate:
                    result.duplicates[index] = True
                    if event.first is not None:
                        continue  # its first copy stores (or restores) the deliveries
                headers = fresh_headers(event.now, event.now)
                # With markers, the key of a delivery is its marker's; without, its event's.
                prefix = event.key if wall_clock else event.marker
                for name in event.new.subscriptions:
                    if not subscribed(event.topic, name):
                        continue
                    if event.window > 0:
                        headers = {**headers, MSG_ID: f"{prefix}.{name}"}
                    messages.append((names.ready(event.topic, name), event.new.encoded, headers))
                    targets.append((batch, result, index, name))
    outcomes = await engine.publish_all(messages)
    stored: set[tuple[int, int]] = set()  # (id of result, index) of events stored somewhere
    for (batch, result, index, name), outcome in zip(targets, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            batch.error = batch.error or outcome
        elif not outcome.duplicate:
            result.mark_queued(name)
            stored.add((id(result), index))
    if wall_clock:  # an event is a duplicate when JetStream had every one of its deliveries
        for _, result, index, _ in targets:
            if (id(result), index) not in stored:
                result.duplicates[index] = True
