"""The transaction monitor: an observer that records every transaction and times out stalled ones.

It is not an orchestrator: it never tells a service what to do. It subscribes to the topics of
its workflows (and to ``Choreograph.DeadLettered`` on the system topic), records each event in
its :class:`~choreograph.monitor.store.TraceStore`, and when a transaction reaches neither a
success nor a failure event by its deadline it publishes ``<workflow>TimedOut`` so that
compensating services act.

Restart safety: deadlines live in the store, and the subscriptions stay on the bus while the
monitor is down (events wait in their queues). On enter the monitor re-arms the timer of every
running transaction and fires those already past due, but only once it has caught up: until its
subscriptions' backlog is first empty (or :data:`CATCH_UP_LIMIT_SECONDS` have passed), due
timeouts wait, since the event that completed a transaction may be in that backlog. A timeout is
published *before* it is recorded, with an id derived from the correlation id: a crash in
between re-publishes the same event, which the topic's de-duplication window absorbs.

Recording runs on one thread of its own (SQLite releases the interpreter while it writes, so the
event loop goes on delivering meanwhile); being one, it keeps the order of delivery.

Shutdown order (``__aexit__``): detach the subscriptions (deliveries in progress finish, the
rest wait on the bus), cancel the timers, stop the timeout task, stop the recording thread, close
the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from choreograph.bus.bus import Bus
from choreograph.bus.deadletter import DEAD_LETTERED_EVENT_TYPE
from choreograph.bus.filters import EventFilter
from choreograph.bus.subscription import InProcessDestination, RetryPolicy, SubscriptionSpec
from choreograph.bus.topic import SYSTEM_TOPIC
from choreograph.clock import Clock, TimerHandle
from choreograph.errors import ChoreographError, TopicNotFoundError
from choreograph.events import CloudEvent
from choreograph.monitor.observation import Observation, observe
from choreograph.monitor.recording import Recorded
from choreograph.monitor.store import TraceStore
from choreograph.monitor.timeline import Timeline, Transaction
from choreograph.monitor.timeout import timed_out_event
from choreograph.monitor.workflow import Workflow, WorkflowCatalog

__all__ = ["Monitor", "observer_subscription"]

logger = logging.getLogger(__name__)

OBSERVE_BATCH: Final = 500
"""Most events handed to the monitor in one delivery, hence recorded in one SQLite transaction."""
FIRE_RETRY_SECONDS: Final = 5.0
"""Wait before trying again to publish a timeout that failed (the topic was gone, the bus busy)."""
CATCH_UP_LIMIT_SECONDS: Final = 60.0
"""Longest a restarted monitor holds due timeouts back while it records its backlog."""

_OBSERVER_RETRY_POLICY: Final = RetryPolicy(backoff_seconds=(1.0, 5.0, 15.0, 60.0, 300.0))


def observer_subscription(event_types: Sequence[str] | None = None) -> SubscriptionSpec:
    """The subscription the monitor takes on a topic.

    Its handler only writes the monitor's own store, so it fails only when that store does:
    retries start after a second and level off at five minutes, within Event Grid's default 30
    attempts and 24 hours. What still fails is dropped (and counted), not dead-lettered: a
    ``Choreograph.DeadLettered`` announcement would send compensating services after a
    transaction that is fine, only because its observer missed an event. Events come in
    batches, each recorded in one SQLite transaction; one worker keeps the recording order
    that of delivery.
    """
    return SubscriptionSpec(
        destination=InProcessDestination(max_events_per_batch=OBSERVE_BATCH),
        event_filter=EventFilter(
            included_event_types=tuple(event_types) if event_types is not None else None
        ),
        retry_policy=_OBSERVER_RETRY_POLICY,
        dead_letter_enabled=False,
        max_concurrent_deliveries=1,
    )


class Monitor:
    """Watches ``workflows`` on ``bus`` and keeps their trace in the SQLite file ``store_path``.

    ``clock`` (default: the bus's) places deadlines and runs their timers; with a
    :class:`~choreograph.testing.FakeClock` a test advances time and then awaits :meth:`idle`.
    The topics it watches and publishes timeouts to must exist: creating them is the
    application's job.
    """

    def __init__(
        self,
        bus: Bus,
        workflows: Sequence[Workflow],
        *,
        store_path: str | Path,
        clock: Clock | None = None,
    ) -> None:
        self.bus = bus
        self.workflows = WorkflowCatalog(workflows)
        self.store_path = Path(store_path)
        self.clock: Clock = clock if clock is not None else bus.clock
        self._store: TraceStore | None = None
        self._subscriptions: list[tuple[str, str]] = []
        self._timers: dict[str, TimerHandle] = {}
        self._due: deque[str] = deque()
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._settled.set()
        self._catching_up = False
        self._caught_up_by = 0.0
        self._observed = asyncio.Event()
        self._awaiting_backlog = False
        self._exit_stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None
        self._recorder: ThreadPoolExecutor | None = None

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
        """Check the topics, open the store, re-arm deadlines, then subscribe."""
        if self._store is not None:
            raise ChoreographError("the monitor is already open")
        await self._check_topics()
        self._exit_stack = contextlib.AsyncExitStack()
        store = TraceStore(self.store_path)
        self._exit_stack.callback(store.close)
        self._store = store
        recorder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="choreograph-monitor")
        self._exit_stack.callback(recorder.shutdown)
        self._recorder = recorder
        try:
            # Re-arm before subscribing, so that an event ending a transaction disarms its timer.
            now = self.clock.now()
            self._catching_up = True
            self._caught_up_by = now + CATCH_UP_LIMIT_SECONDS
            for correlation_id, _, deadline in store.running():
                if deadline <= now:
                    self._queue(correlation_id)
                else:
                    self._arm(correlation_id, deadline)
            subscriptions = [(topic, observer_subscription()) for topic in self.workflows.topics]
            subscriptions.append((SYSTEM_TOPIC, observer_subscription([DEAD_LETTERED_EVENT_TYPE])))
            for topic, spec in subscriptions:
                name = f"monitor-{topic}"
                await self.bus.subscribe(topic, name, self._handler(topic), spec)
                self._subscriptions.append((topic, name))
            group = await self._exit_stack.enter_async_context(asyncio.TaskGroup())
            self._task = group.create_task(self._fire_due(), name="monitor timeouts")
        except BaseException:
            await self.close()
            raise
        logger.info(
            "monitor watching %s; %d running transactions re-armed (%d overdue)",
            ", ".join(self.workflows.topics),
            len(self._timers) + len(self._due),
            len(self._due),
        )

    async def _check_topics(self) -> None:
        for topic in (*self.workflows.topics, *self.workflows.timeout_topics):
            try:
                await self.bus.get_topic(topic)
            except TopicNotFoundError as exc:
                users = [
                    w.name
                    for w in self.workflows.workflows
                    if topic in w.topics or topic == w.timeout_topic
                ]
                raise TopicNotFoundError(
                    f"the monitor needs topic {topic!r} (workflow {', '.join(users)}), which does "
                    "not exist; create it before starting the monitor"
                ) from exc

    async def close(self) -> None:
        """Stop observing and timing out (see the module docstring for the order)."""
        for topic, name in self._subscriptions:
            await self.bus.detach(topic, name)
        self._subscriptions.clear()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._due.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._settled.set()
        self._store = None
        self._recorder = None
        await self._exit_stack.aclose()

    @property
    def store(self) -> TraceStore:
        """The trace store (only while the monitor is open)."""
        if self._store is None:
            raise ChoreographError("the monitor is not open; use `async with Monitor(...)`")
        return self._store

    # reading -----------------------------------------------------------------------------------
    def timeline(self, correlation_id: str) -> Timeline:
        """The transaction's timeline; NotFoundError if the monitor never saw it start."""
        return self.store.timeline(correlation_id)

    def transactions(self, state: str | None = None, limit: int = 50) -> list[Transaction]:
        """The most recently started transactions, in ``state`` if given."""
        return self.store.transactions(state, limit)

    async def idle(self) -> None:
        """Wait until the bus is idle and no timeout is due or being published.

        With a fake clock: advance it, then await this to let deliveries and timeouts happen.
        """
        while True:
            await self.bus.idle()
            if self._settled.is_set():
                return
            await self._settled.wait()

    # observing ---------------------------------------------------------------------------------
    def _handler(self, topic: str) -> Callable[[CloudEvent | list[CloudEvent]], Awaitable[None]]:
        async def observe_events(received: CloudEvent | list[CloudEvent]) -> None:
            events = received if isinstance(received, list) else [received]
            now = self.clock.now()
            observations = [observe(event, topic, now) for event in events]
            await asyncio.shield(self._record(observations))
            if self._awaiting_backlog:  # after this returns, the batch is acknowledged at once
                self._recheck_backlog()

        return observe_events

    def _record(self, observations: list[Observation]) -> asyncio.Future[Recorded]:
        """Record on the recording thread; arm and disarm the timers once it is written, even
        if the delivery that awaits it was cancelled meanwhile (a timed-out attempt)."""
        if self._recorder is None:
            raise ChoreographError("the monitor is not open")
        written: Future[Recorded] = self._recorder.submit(
            self.store.record, observations, self.workflows
        )
        recording = asyncio.wrap_future(written)
        recording.add_done_callback(self._apply)
        return recording

    def _apply(self, recording: asyncio.Future[Recorded]) -> None:
        if self._store is None or recording.cancelled() or recording.exception() is not None:
            return  # closed meanwhile, or the delivery fails with the error and is retried
        recorded = recording.result()
        for correlation_id, deadline in recorded.started:
            self._arm(correlation_id, deadline)
        for correlation_id in recorded.ended:
            self._disarm(correlation_id)

    # timing out --------------------------------------------------------------------------------
    def _arm(self, correlation_id: str, deadline: float) -> None:
        self._disarm(correlation_id)
        self._timers[correlation_id] = self.clock.call_at(
            deadline, lambda: self._on_deadline(correlation_id)
        )

    def _disarm(self, correlation_id: str) -> None:
        timer = self._timers.pop(correlation_id, None)
        if timer is not None:
            timer.cancel()

    def _on_deadline(self, correlation_id: str) -> None:
        self._timers.pop(correlation_id, None)
        self._queue(correlation_id)

    def _queue(self, correlation_id: str) -> None:
        self._due.append(correlation_id)
        self._settled.clear()
        self._wake.set()

    async def _fire_due(self) -> None:
        """Publish the timeouts that came due, one at a time, once caught up."""
        while True:
            if not self._due:
                self._settled.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._catching_up:
                await self._catch_up()
                continue
            correlation_id = self._due.popleft()
            try:
                await self._time_out(correlation_id)
            except Exception:
                logger.exception(
                    "publishing the timeout of transaction %s failed; trying again in %g s",
                    correlation_id,
                    FIRE_RETRY_SECONDS,
                )
                self._arm(correlation_id, self.clock.now() + FIRE_RETRY_SECONDS)

    async def _catch_up(self) -> None:
        """Return once the subscriptions' backlog is empty or the catch-up limit has passed;
        until then wait for the handler to record something (or the limit) and look again."""
        try:
            backlog = 0
            for topic, name in self._subscriptions:
                backlog += (await self.bus.counters(topic, name))["queued"]
        except Exception:
            logger.exception("reading the monitor's backlog failed; timing out without it")
            backlog = 0
        if backlog == 0 or self.clock.now() >= self._caught_up_by:
            self._catching_up = False
            return
        self._observed.clear()
        timer = self.clock.call_at(self._caught_up_by, self._recheck_backlog)
        self._awaiting_backlog = True
        self._settled.set()  # waiting for deliveries or the clock: idle for ``idle()``
        try:
            await self._observed.wait()
        finally:
            self._awaiting_backlog = False
            timer.cancel()

    def _recheck_backlog(self) -> None:
        self._settled.clear()
        self._observed.set()

    async def _time_out(self, correlation_id: str) -> None:
        store = self.store
        transaction = store.transaction(correlation_id)
        if transaction is None or transaction.state != "Running":
            return
        now = self.clock.now()
        if now < transaction.deadline:
            self._arm(correlation_id, transaction.deadline)
            return
        workflow = self.workflows.get(transaction.workflow)
        if workflow is None:
            logger.warning(
                "transaction %s belongs to workflow %r, which this monitor no longer has; "
                "it is left running",
                correlation_id,
                transaction.workflow,
            )
            return
        event = timed_out_event(workflow, transaction, store.last_event(correlation_id), now)
        # Publish first: a crash before the store write re-publishes the same (deduplicated) id.
        await self.bus.publish(workflow.timeout_topic, event)
        seconds = transaction.deadline - transaction.started_at
        store.time_out(
            correlation_id,
            observe(event, workflow.timeout_topic, now),
            reason=f"no success or failure event within {seconds:g} s",
        )
        logger.warning(
            "transaction %s of %s timed out; published %s to %s",
            correlation_id,
            workflow.name,
            event.type,
            workflow.timeout_topic,
        )
