"""The runtime side of a handler: the bus endpoint that runs it, exactly once in effect.

For each delivered event:

1. the **inbox**: if this handler already handled this event id, the events it emitted then are
   emitted again (same ids, so the topic's de-duplication absorbs them) and nothing else runs;
2. the service's **middleware**, then the **handler**, with a context whose state changes are a
   unit of work (:meth:`ServiceStore.work <choreograph.sdk.ServiceStore.work>`: undone if the
   handler fails; a store shared by several processes checks the inbox again in it);
3. the unit and the inbox entry are **committed** to the service's store, together;
4. the emitted events go back to the bus in the outcome; the bus stores them together with the
   acknowledgement of this delivery.

A crash between 3 and 4 is harmless: the bus redelivers, step 1 re-emits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from choreograph.bus.endpoint import Attempt, Emit, outcome_of_exception
from choreograph.bus.retry import DELIVERED, Outcome
from choreograph.clock import Clock
from choreograph.errors import ChoreographError, Retry
from choreograph.events import CloudEvent, EventGridEvent, encode_event
from choreograph.sdk.context import Context
from choreograph.sdk.service import HandlerSpec, Service
from choreograph.sdk.store import ServiceStore, encode_emitted

__all__ = ["JOINS", "ServiceEndpoint", "event_key"]

JOINS = "_joins"
"""State collection holding the partial joins, keyed by handler and correlation id."""


class ServiceEndpoint:
    """Delivers a subscription's events to one handler of a service."""

    def __init__(
        self, service: Service, spec: HandlerSpec, store: ServiceStore, clock: Clock
    ) -> None:
        self.service = service
        self.spec = spec
        self.store = store
        self.clock = clock
        self._in_progress: set[str] = set()
        core = self._join if spec.kind == "join" else self._call
        self._chain: Callable[[Context], Awaitable[None]] = core
        for middleware in reversed(service.middleware):
            self._chain = _wrap(middleware, self._chain)

    async def deliver(
        self, events: Sequence[CloudEvent | EventGridEvent], attempt: Attempt
    ) -> Outcome:
        event = events[0]
        if not isinstance(event, CloudEvent):  # the runtime subscribes in CloudEvents schema
            return Outcome(status=400, name="BadRequest", detail="expected a CloudEvent")
        try:
            emitted, encoded = await self._handle(event, attempt.delivery_count + 1)
        except Exception as exc:
            return outcome_of_exception(exc, attempt)
        if not emitted:
            return DELIVERED
        # Emit pairs from a run, plain (topic, event) pairs from the inbox: the bus reads both
        return Outcome(status=200, name="Delivered", emitted=tuple(emitted), encoded=encoded)

    async def handle(self, event: CloudEvent, attempt: int) -> list[tuple[str, CloudEvent]]:
        """Run the handler on ``event`` at most once in effect; return what it emits."""
        emitted, _ = await self._handle(event, attempt)
        return emitted

    async def _handle(
        self, event: CloudEvent, attempt: int
    ) -> tuple[list[tuple[str, CloudEvent]], tuple[bytes, ...]]:
        """:meth:`handle`, and the emitted events' encoding when this run made it (not for a
        replay from the inbox)."""
        spec = self.spec
        name = spec.name
        key = event_key(event)
        replay = await self.store.handled(name, key)
        if replay is not None:
            return replay, ()
        in_progress = self._in_progress
        if key in in_progress:
            raise Retry(f"event {event.id} is being handled by {name}", delay_seconds=1.0)
        # Joins of one transaction run one at a time, through their commit.
        lock = None
        if spec.kind == "join":
            lock = f"join:{name}:{event.correlationid or event.id}"
        in_progress.add(key)
        try:
            async with self.store.work(name, key, lock=lock) as work:
                if work.replay is not None:  # another process handled it meanwhile
                    return work.replay, ()
                context = Context(
                    service=self.service.name,
                    handler=name,
                    event=event,
                    attempt=attempt,
                    state=work.state,
                    emits=spec.emits,
                    clock=self.clock,
                    cause=key,
                )
                await self._chain(context)
                emitted = context.emitted
                # Refuse what the bus would refuse, before committing; the inbox keeps the JSON.
                encoded = tuple([encode_event(pair[1]) for pair in emitted])
                work.unit.inbox = (name, key, self.clock.now(), encode_emitted(emitted, encoded))
        finally:
            in_progress.discard(key)
        context.run_after_commit()
        return emitted, encoded

    async def _call(self, context: Context) -> None:
        result = await self.spec.function(context.event, context)
        _collect(context, result)

    async def _join(self, context: Context) -> None:
        key = f"{self.spec.name}:{context.correlation_id}"
        record = await context.state.get(JOINS, key) or {"events": {}, "done": False}
        if record["done"]:
            return
        record["events"].setdefault(context.event.type, context.event.to_dict())
        if all(event_type in record["events"] for event_type in self.spec.consumes):
            events = {
                event_type: CloudEvent.from_dict(record["events"][event_type])
                for event_type in self.spec.consumes
            }
            joined = Context(
                service=context.service,
                handler=context.handler,
                event=context.event,
                attempt=context.attempt,
                state=context.state,
                trace=context.trace,
                emits=self.spec.emits,
                clock=self.clock,
                cause=f"join:{key}",
                events=events,
            )
            result = await self.spec.function(events, joined)
            _collect(joined, result)
            context.emitted.extend(joined.emitted)
            record["done"] = True
        context.state.put(JOINS, key, record)


def event_key(event: CloudEvent) -> str:
    """What identifies an event (CloudEvents: ``source`` and ``id`` together)."""
    return f"{event.source}\n{event.id}"


def _collect(context: Context, result: object) -> None:
    """Add the events a handler returned to those it emitted with ``ctx.emit``."""
    if result is None:
        return
    returned: Iterable[object] = [result] if isinstance(result, CloudEvent) else result  # type: ignore[assignment]
    if isinstance(result, str | bytes | Mapping) or not isinstance(returned, Iterable):
        raise ChoreographError(
            f"handler {context.service}.{context.handler} returned {type(result).__name__}; "
            "return None, an event or a list of events"
        )
    known = {event.id for _, event in context.emitted}
    for event in returned:
        if not isinstance(event, CloudEvent):
            raise ChoreographError(
                f"handler {context.service}.{context.handler} returned {type(event).__name__} "
                "among its events; build them with ctx.new_event(...)"
            )
        if event.id not in known:
            context.emitted.append(Emit(context.topic_of(event.type), event))
            known.add(event.id)


def _wrap(
    middleware: Callable[[Context, Callable[[Context], Awaitable[None]]], Awaitable[None]],
    call_next: Callable[[Context], Awaitable[None]],
) -> Callable[[Context], Awaitable[None]]:
    async def call(context: Context) -> None:
        await middleware(context, call_next)

    return call
