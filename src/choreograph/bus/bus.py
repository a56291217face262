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
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Final, Self

from choreograph.backends import open_backend
from choreograph.backends.base import Delivery, TopicAppend
from choreograph.bus.deadletter import DeadLetter, dead_lettered_event, new_record_id
from choreograph.bus.dispatcher import SubscriptionDispatcher
from choreograph.bus.dlq import DeadLetterAdmin
from choreograph.bus.endpoint import Endpoint, Handler, HandlerEndpoint
from choreograph.bus.metrics import BusMetrics
from choreograph.bus.retry import DeadLetterReason
from choreograph.bus.router import MAX_EVENTS_PER_PUBLISH, Publishable, Router
from choreograph.bus.subscription import InProcessDestination, SubscriptionRecord, SubscriptionSpec
from choreograph.bus.topic import SYSTEM_TOPIC
from choreograph.clock import Clock, SystemClock
from choreograph.errors import (
    BusClosedError,
    InvalidSubscriptionError,
)

__all__ = ["MAX_EVENTS_PER_PUBLISH", "Bus", "Publishable"]

logger = logging.getLogger(__name__)

QUIET_POLL_SECONDS: Final = 0.01
"""How often ``idle`` asks a pulling backend again while a subscription is not quiet."""


class Bus(Router, DeadLetterAdmin):
    """An Event-Grid-style bus on the backend named by ``url`` (``memory://``, ``sqlite:///path``).

    ``clock`` drives retries, time-to-live and delivery timeouts (tests pass a FakeClock);
    ``retry_jitter`` is the largest fraction added at random to a retry delay, ``rng`` its source;
    ``endpoints`` makes the endpoint of each validated webhook subscription.
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        clock: Clock | None = None,
        retry_jitter: float = 0.1,
        endpoints: Callable[[SubscriptionRecord], Endpoint | None] | None = None,
        rng: random.Random | None = None,
        shutdown_grace_seconds: float = 10.0,
    ) -> None:
        super().__init__(open_backend(url), clock or SystemClock())
        self.backend.use_clock(self.clock)
        self.url = url
        self.retry_jitter = retry_jitter
        self.rng = rng or random.Random()
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.endpoints = endpoints
        self.metrics = BusMetrics()
        """Makes the endpoint of a validated webhook subscription (the gateway installs one)."""
        self._dispatchers: dict[tuple[str, str], SubscriptionDispatcher] = {}
        self._group: asyncio.TaskGroup | None = None
        self._exit_stack = contextlib.AsyncExitStack()
        self._changed = asyncio.Event()
        self._pending_commits = 0
        """Emitted events being stored, and settlings after a store that failed (``idle`` waits
        for them)."""
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
        for state in list(self._topics.values()):
            for record in list(state.subscriptions.values()):
                if not isinstance(record.spec.destination, InProcessDestination):
                    await self._start_remote(record)
        await self.backend.watch_catalog(self.apply_external)

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

    @property
    def is_open(self) -> bool:
        """Whether the bus is open (between ``open`` and ``close``)."""
        return self._opened

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
        if not self._opened:  # closed meanwhile (a change another process made, say)
            raise BusClosedError("the bus closed")
        dispatcher = SubscriptionDispatcher(self, record, endpoint)
        self._dispatchers[(record.topic, record.name)] = dispatcher
        dispatcher.start(self._group)

    async def _subscription_changed(
        self, record: SubscriptionRecord, previous: SubscriptionRecord | None
    ) -> None:
        key = (record.topic, record.name)
        if isinstance(record.spec.destination, InProcessDestination):
            dispatcher = self._dispatchers.get(key)
            if dispatcher is not None:
                await self._start_dispatcher(record, dispatcher.endpoint)
            return
        await self._start_remote(record)

    async def _start_remote(self, record: SubscriptionRecord) -> None:
        """Deliver a validated remote (webhook) subscription through the endpoint factory; stop
        delivering one that is not (or no longer) validated."""
        endpoint = None
        if record.provisioning_state == "Succeeded" and self.endpoints is not None:
            endpoint = self.endpoints(record)
        if endpoint is None:
            await self.detach(record.topic, record.name)
        else:
            await self._start_dispatcher(record, endpoint)

    async def _subscription_deleted(self, topic: str, name: str) -> None:
        await self.detach(topic, name)

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
            id=new_record_id(now),
            topic=delivery.topic,
            subscription=delivery.subscription,
            event=delivery.event,
            reason=reason.value,
            delivery_attempts=attempts,
            last_delivery_outcome=delivery.last_outcome or "NotAttempted",
            last_delivery_error=delivery.last_error,
            publish_time=delivery.published_at,
            last_delivery_attempt_time=delivery.last_attempt_at,
            dead_letter_time=now,
        )
        announce = None
        system = self._topics.get(SYSTEM_TOPIC)
        if spec.dead_letter_enabled and system is not None and delivery.topic != SYSTEM_TOPIC:
            event = dead_lettered_event(record)
            events = (self._prepare(system, event),)
            announce = TopicAppend(
                SYSTEM_TOPIC,
                events,
                system.dedupe_window_seconds,
                self._handoffs(SYSTEM_TOPIC, events, now),
            )
        logger.warning(
            "%s event %s of %s/%s after %d attempts (last outcome %s)",
            "dead-lettered" if spec.dead_letter_enabled else "dropped",
            delivery.event.id,
            delivery.topic,
            delivery.subscription,
            attempts,
            record.last_delivery_outcome,
        )
        metrics = dispatcher.metrics
        if spec.dead_letter_enabled:
            metrics.dead_lettered += 1
        else:
            metrics.dropped += 1
        result = await self.backend.dead_letter(
            delivery, record if spec.dead_letter_enabled else None, announce=announce, now=now
        )
        if result is not None:
            self._route(SYSTEM_TOPIC, result)

    # waiting -----------------------------------------------------------------------------------
    def _commit_failed(self, error: BaseException) -> None:
        logger.error(
            "storing emitted events failed; their deliveries are retried on their policies",
            exc_info=error,
        )

    def settle_later(self, settling: Coroutine[Any, Any, None]) -> None:
        """Run a dispatcher's settling of deliveries outside its workers (after a write that
        failed), in the bus's task group; ``idle`` waits for it. If the bus is closing, the
        deliveries stay as they are and run again when their lease expires."""
        if self._group is None:
            settling.close()
            return

        async def settle() -> None:
            try:
                await settling
            except Exception:
                logger.exception(
                    "settling deliveries failed; they run again when their lease expires"
                )
            finally:
                self._pending_commits -= 1
                self.state_changed()

        try:
            self._group.create_task(settle())
        except RuntimeError:  # the group has finished: the bus is closed
            settling.close()
            return
        self._pending_commits += 1

    def state_changed(self) -> None:
        """Called by dispatchers when their work state changes, while ``watched`` (wakes ``idle``)."""
        self._changed.set()

    async def idle(self) -> None:
        """Wait until no delivery is buffered, in flight or due at the clock's current time.

        With a fake clock this is how a test lets everything due "now" happen before it
        advances time again. On a pulling backend (NATS) the engine must also report each
        subscription dispatched here quiet: nothing due or being delivered by any process.
        """
        self.watched += 1
        try:
            while True:
                if self._all_idle():
                    await self.backend.flush()
                    if self._all_idle():
                        if not self.backend.pulls or await self._engine_quiet():
                            return
                        # The engine's state changes without telling us: look again shortly.
                        self._changed.clear()
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(QUIET_POLL_SECONDS):
                                await self._changed.wait()
                    continue
                self._changed.clear()
                await self._changed.wait()
        finally:
            self.watched -= 1

    async def _engine_quiet(self) -> bool:
        """Ask a pulling backend whether each dispatched subscription is quiet; send the
        feeders of those that are not to lease."""
        now = self.clock.now()
        dispatchers = list(self._dispatchers.values())
        answers = await asyncio.gather(
            *(self.backend.quiet(d.topic, d.name, now=now) for d in dispatchers)
        )
        for dispatcher, quiet in zip(dispatchers, answers, strict=True):
            if not quiet:
                dispatcher.notify_backlog()
        return all(answers)

    def _all_idle(self) -> bool:
        if self._pending_commits:
            return False
        now = self.clock.now()
        return all(dispatcher.is_idle(now) for dispatcher in self._dispatchers.values())
