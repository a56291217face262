"""One subscription's delivery engine: a feeder that leases due deliveries and a pool of workers.

Workers are long-lived tasks (``maxConcurrentDeliveries`` of them) that take deliveries from a
local buffer, hand them to the endpoint and settle the outcome through the retry policy. New
deliveries reach the buffer two ways: handed over by ``publish`` already leased (the common,
fast path) or leased from the backend by the feeder when they come due (retries, backlog,
redrives, restarts). A failing or slow subscription only ever occupies its own workers.
With a pulling backend (NATS), whose deliveries stored by other processes arrive only when
asked for, the feeder keeps a request waiting on the engine whenever it has room.

Delivery timeouts cost one timer per worker rather than one per attempt: a worker's timer is
armed for the deadline of the attempt in progress when it fires, and cancels the worker only if
that same attempt is still running past its deadline.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from choreograph.backends.base import Delivery, Handoff
from choreograph.bus.endpoint import (
    Attempt,
    Endpoint,
    HandlerEndpoint,
    outcome_of_exception,
    outcome_of_return,
)
from choreograph.bus.retry import (
    DELIVERED,
    Ack,
    DeadLetterReason,
    Outcome,
    RetryAt,
    decide,
    ttl_expired,
)
from choreograph.bus.subscription import SubscriptionRecord
from choreograph.clock import TimerHandle, format_timestamp
from choreograph.errors import NotFoundError, ValidationError
from choreograph.events import CloudEvent, EventGridEvent, eventgrid_from_cloudevent

if TYPE_CHECKING:
    from choreograph.bus.bus import Bus

__all__ = ["SubscriptionDispatcher"]

logger = logging.getLogger(__name__)

LEASE_MARGIN_SECONDS: Final = 60.0
PULL_RETRY_SECONDS: Final = 1.0
"""Real time a pulling feeder waits after the engine failed to take its request."""
TIMED_OUT: Final = Outcome(
    status=0, name="TimedOut", detail="no answer within the delivery timeout"
)


@dataclass(slots=True)
class _Worker:
    """A worker task and the attempt it is running, for its timeout timer."""

    task: asyncio.Task[None] | None = None
    attempt: int = 0
    running: int = 0
    deadline: float = 0.0
    timed_out: int = 0
    timer: TimerHandle | None = None
    batch: Sequence[Delivery] = ()


class SubscriptionDispatcher:
    """Delivers one subscription's events to one endpoint."""

    def __init__(self, bus: Bus, record: SubscriptionRecord, endpoint: Endpoint) -> None:
        self._bus = bus
        self._clock = bus.clock
        self._backend = bus.backend
        self.record = record
        self.topic = record.topic
        self.name = record.name
        self.endpoint = endpoint
        spec = record.spec
        self._policy = spec.retry_policy
        self._timeout = spec.delivery_timeout_seconds
        self._batch_size = spec.destination.max_events_per_batch
        self._batch_bytes = spec.destination.preferred_batch_size_in_kilobytes * 1024
        self._concurrency = spec.max_concurrent_deliveries
        self._capacity = 2 * self._concurrency * self._batch_size
        self._lease_seconds = 3 * self._timeout + LEASE_MARGIN_SECONDS
        self._ttl_seconds = self._policy.time_to_live_seconds
        self._schema = spec.event_delivery_schema
        self._eventgrid = self._schema == "EventGridSchema"
        self._first_attempt = Attempt(self.topic, self.name, 0, self._schema, self._batch_size > 1)
        self.metrics = bus.metrics.subscription(self.topic, self.name)
        self._buffer: deque[Delivery] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._in_flight = 0
        self._backlog = True  # unknown at start: look once
        self._leasing = False
        self._pulls = self._backend.pulls
        self._starved = False  # a pulling feeder waits for room (workers wake it)
        self._next_due: float | None = None
        self._timer: TimerHandle | None = None
        self._timer_at: float | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._workers: list[_Worker] = []
        self._feeder: asyncio.Task[None] | None = None

    # lifecycle ---------------------------------------------------------------------------------
    def start(self, group: asyncio.TaskGroup) -> None:
        label = f"{self.topic}/{self.name}"
        self._feeder = group.create_task(self._feed(), name=f"feeder {label}")
        for index in range(self._concurrency):
            worker = _Worker()
            worker.task = group.create_task(self._work(worker), name=f"worker {index} {label}")
            self._workers.append(worker)

    async def stop(self, grace_seconds: float) -> None:
        """Stop leasing, let attempts in progress finish within the grace period, cancel the
        rest; every delivery not settled goes back to the backend unattempted."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        if self._feeder is not None:
            self._feeder.cancel()
        self._backend.release(list(self._buffer), self._clock.now())
        self._buffer.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        tasks = [worker.task for worker in self._workers if worker.task is not None]
        if self._feeder is not None:
            tasks.append(self._feeder)
        _, pending = await asyncio.wait(tasks, timeout=grace_seconds) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for worker in self._workers:
            if worker.timer is not None:
                worker.timer.cancel()
        self._bus.state_changed()

    # intake ------------------------------------------------------------------------------------
    def handoff(self, now: float) -> Handoff | None:
        """How many new deliveries this dispatcher takes leased right now."""
        room = self._capacity - len(self._buffer) - self._in_flight
        if room <= 0 or self._stopping:
            return None
        return Handoff(room, now + self._lease_seconds)

    def accept(self, deliveries: Sequence[Delivery]) -> None:
        """Take leased deliveries into the buffer and wake workers."""
        self._buffer.extend(deliveries)
        waiters = self._waiters
        for _ in range(min(len(deliveries), len(waiters))):
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def notify_backlog(self) -> None:
        """Deliveries are due in the backend that this dispatcher has not leased."""
        self._backlog = True
        self._wake.set()

    def notify_due(self, due_at: float) -> None:
        """A delivery becomes due at ``due_at``."""
        if self._next_due is None or due_at < self._next_due:
            self._next_due = due_at
            self._arm(due_at)

    def is_idle(self, now: float) -> bool:
        """Nothing buffered, in flight, being leased or due (for ``Bus.idle``)."""
        if self._stopping:
            return True
        if self._buffer or self._in_flight or self._leasing or self._backlog:
            return False
        return self._next_due is None or self._next_due > now

    # the feeder --------------------------------------------------------------------------------
    def _arm(self, when: float) -> None:
        if self._timer_at is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._clock.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._wake.set()

    def _due(self, now: float) -> bool:
        return self._backlog or (self._next_due is not None and self._next_due <= now)

    async def _feed(self) -> None:
        clock = self._clock
        while not self._stopping:
            now = clock.now()
            room = self._capacity - len(self._buffer) - self._in_flight
            if room > 0 and self._due(now):
                self._backlog = False
                self._leasing = True
                try:
                    result = await self._backend.lease(
                        self.topic,
                        self.name,
                        now=now,
                        limit=room,
                        lease_until=now + self._lease_seconds,
                    )
                except Exception:
                    logger.exception("leasing %s/%s failed; retrying", self.topic, self.name)
                    self._leasing = False
                    self._backlog = True
                    self._arm(clock.now() + 1.0)
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                self._leasing = False
                if len(result.deliveries) >= room:
                    self._backlog = True
                self._next_due = None
                if result.next_due is not None:
                    self.notify_due(result.next_due)
                self.accept(result.deliveries)
                self._bus.state_changed()
                continue
            self._wake.clear()
            if self._pulls:
                if room > 0:
                    await self._wait_ready(room)
                    self._backlog = True  # what arrived, retries come due, other processes' work
                    continue
                self._starved = True
            await self._wake.wait()
            self._starved = False

    async def _wait_ready(self, room: int) -> None:
        """Wait on the pulling backend for deliveries (or ``_wake``), backing off in real time
        when the engine fails."""
        try:
            await self._backend.wait_ready(self.topic, self.name, limit=room, wake=self._wake)
        except Exception:
            logger.exception("waiting for %s/%s deliveries failed; retrying", self.topic, self.name)
            await asyncio.sleep(PULL_RETRY_SECONDS)

    # the workers -------------------------------------------------------------------------------
    async def _work(self, worker: _Worker) -> None:
        """Take batches from the buffer and deliver them, one attempt at a time.

        This is the hot path, written as one loop: the attempt, its timeout bookkeeping and the
        common outcome (delivered) are inline; everything else goes to helper methods.
        """
        buffer = self._buffer
        batch_size = self._batch_size
        batched = batch_size > 1
        loop = asyncio.get_running_loop()
        bus = self._bus
        clock = self._clock
        ttl = self._ttl_seconds
        timeout = self._timeout
        backend = self._backend
        endpoint = self.endpoint
        # An in-process handler is called directly, without the endpoint's extra coroutine.
        handler = endpoint.handler if type(endpoint) is HandlerEndpoint else None
        while True:
            while not buffer:
                if self._stopping:
                    return
                waiter = loop.create_future()
                self._waiters.append(waiter)
                await waiter
            if self._stopping:
                return
            batch = [buffer.popleft()]
            if batch_size > 1:
                self._fill(batch)
            size = len(batch)
            self._in_flight += size
            worker.batch = batch
            try:
                now = clock.now()
                for delivery in batch:
                    if now > delivery.ttl_start + ttl:
                        batch = await self._expire(batch, now)
                        break
                if batch:
                    first = batch[0]
                    attempt = (
                        self._first_attempt
                        if first.attempts == 1
                        else Attempt(
                            self.topic, self.name, first.attempts - 1, self._schema, batched
                        )
                    )
                    events: list[CloudEvent | EventGridEvent] | None = None
                    if self._eventgrid:
                        events = self._eventgrid_events(batch, now)
                    elif batched or handler is None:
                        events = [delivery.event for delivery in batch]
                    worker.attempt += 1
                    number = worker.running = worker.attempt
                    worker.deadline = now + timeout
                    if worker.timer is None:
                        worker.timer = clock.call_at(
                            worker.deadline, functools.partial(self._watch, worker)
                        )
                    try:
                        if handler is None:
                            assert events is not None
                            outcome = await endpoint.deliver(events, attempt)
                        elif events is None:  # one CloudEvent for a plain handler: no list
                            outcome = outcome_of_return(await handler(first.event))
                        else:
                            outcome = outcome_of_return(
                                await handler(events if batched else events[0])
                            )
                    except asyncio.CancelledError:
                        if worker.timed_out != number:
                            raise
                        outcome = self._timed_out()
                    except Exception as exc:
                        outcome = outcome_of_exception(exc, attempt)
                    finally:
                        worker.running = 0
                    if worker.timed_out == number and outcome is not TIMED_OUT:
                        outcome = self._timed_out()  # the endpoint swallowed the cancellation
                    if outcome is DELIVERED:
                        backend.ack(batch)
                        self._delivered(batch)
                    else:
                        await self._settle(batch, outcome, started=now)
            except asyncio.CancelledError:
                backend.release(worker.batch, clock.now())
                raise
            finally:
                worker.batch = ()
                self._in_flight -= size
            if (
                self._backlog or self._next_due is not None or self._starved
            ) and not self._wake.is_set():
                self._wake.set()
            if bus.watched:
                bus.state_changed()

    def _fill(self, batch: list[Delivery]) -> None:
        """Add buffered deliveries to a batch, up to ``maxEventsPerBatch`` and, after the first,
        ``preferredBatchSizeInKilobytes``; never waiting for more to arrive."""
        buffer = self._buffer
        budget = self._batch_bytes - batch[0].size
        while buffer and len(batch) < self._batch_size:
            size = buffer[0].size
            if size > budget:
                break
            budget -= size
            batch.append(buffer.popleft())

    @staticmethod
    def _timed_out() -> Outcome:
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        return TIMED_OUT

    @staticmethod
    def _eventgrid_events(batch: list[Delivery], now: float) -> list[CloudEvent | EventGridEvent]:
        stamp = format_timestamp(now)
        return [eventgrid_from_cloudevent(d.event, default_time=stamp) for d in batch]

    def _delivered(self, batch: list[Delivery]) -> None:
        metrics = self.metrics
        metrics.delivered += len(batch)
        now = self._clock.now()
        for delivery in batch:
            metrics.observe(now - delivery.published_at)

    async def _settle(self, batch: list[Delivery], outcome: Outcome, *, started: float) -> None:
        """Settle an attempt that did not end plainly delivered."""
        if outcome.delivered:
            self._delivered(batch)
            if not outcome.emitted:
                self._backend.ack(batch)
                return
            try:
                appends = self._bus.prepare_emitted(outcome.emitted, outcome.encoded)
            except (ValidationError, NotFoundError) as exc:
                outcome = Outcome(
                    status=500, name="GenericError", detail=f"emitted an invalid event: {exc}"
                )
            else:
                self._bus.commit_emitted(
                    appends, batch, functools.partial(self._not_stored, batch, started)
                )
                return
        await self._settle_failure(batch, outcome, started=started)

    def _not_stored(self, batch: list[Delivery], started: float, error: BaseException) -> None:
        """The events the handler emitted could not be stored (nor the batch acknowledged):
        the attempt failed, and is retried on the policy at once rather than when its lease
        runs out (an SDK service then replays the same events from its inbox)."""
        outcome = Outcome(
            status=500, name="GenericError", detail=f"storing the emitted events failed: {error}"
        )
        self._bus.settle_later(self._settle_failure(batch, outcome, started=started))

    async def _expire(self, batch: list[Delivery], now: float) -> list[Delivery]:
        """Dead-letter the deliveries past their time-to-live; return the others.

        The time-to-live is checked when an attempt comes due, and the attempt is not made.
        """
        live = []
        for delivery in batch:
            if ttl_expired(self._policy, delivery.ttl_start, now):
                await self._bus.dead_letter(
                    self,
                    delivery,
                    DeadLetterReason.TIME_TO_LIVE_EXCEEDED,
                    attempts=delivery.attempts - 1,
                )
            else:
                live.append(delivery)
        return live

    async def _settle_failure(
        self, live: list[Delivery], outcome: Outcome, *, started: float
    ) -> None:
        """Record the failed attempt (made at ``started``) and retry or dead-letter; retry delays
        count from now, when the failure is known."""
        now = self._clock.now()
        bus = self._bus
        for delivery in live:
            delivery.last_outcome = outcome.name
            delivery.last_error = outcome.detail
            delivery.last_attempt_at = started
            decision = decide(
                outcome,
                self._policy,
                attempts=delivery.attempts,
                now=now,
                jitter=bus.retry_jitter,
                rng=bus.rng,
            )
            if isinstance(decision, RetryAt):
                self.metrics.retried += 1
                self._backend.reschedule(delivery, decision.due_at)
                self.notify_due(decision.due_at)
            elif not isinstance(decision, Ack):
                await bus.dead_letter(self, delivery, decision.reason, attempts=delivery.attempts)

    def _watch(self, worker: _Worker) -> None:
        worker.timer = None
        if not worker.running or worker.task is None:
            return
        if self._clock.now() >= worker.deadline:
            worker.timed_out = worker.running
            worker.task.cancel()
        else:
            worker.timer = self._clock.call_at(
                worker.deadline, functools.partial(self._watch, worker)
            )
