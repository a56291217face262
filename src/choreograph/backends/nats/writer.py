"""The backend's one writing task: appends and settles, in call order, pipelined in rounds.

``Backend.append`` and the settle calls (``ack``, ``reschedule``, ``release``) are synchronous:
they queue a job here and return. The writer takes every queued job at once and writes them in
one round: the appends' markers, then every new message (deliveries, retries, released
deliveries), then every acknowledgement, each step pipelined. A message replaced by a copy
(a retry, a released delivery) is acknowledged only once its copy is stored, and the
acknowledgements of an append only once its events are, so a crash at any point repeats work
and never loses it. :meth:`Writer.flush` waits until the jobs queued so far are written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nats.aio.msg import Msg

from choreograph.backends.base import AppendResult, Delivery, TopicAppend
from choreograph.backends.nats.appends import AppendBatch, store_appends
from choreograph.backends.nats.engine import Engine, describe
from choreograph.backends.nats.wire import Headers
from choreograph.errors import BackendError

__all__ = ["Writer"]

logger = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class _Append:
    batch: AppendBatch
    acks: Sequence[Delivery]
    done: asyncio.Future[list[AppendResult]]


@dataclass(slots=True, eq=False)
class _Move:
    """Replace ``msg`` by a copy on ``subject`` with ``headers``."""

    msg: Msg
    subject: str
    headers: Headers


_Job = _Append | _Move | Msg  # a bare message is to be acknowledged


class Writer:
    """Writes queued jobs in rounds (see the module docstring); :meth:`run` is its task."""

    def __init__(
        self, engine: Engine, subscribed: Callable[[str, str], bool], *, wall_clock: bool
    ) -> None:
        self._engine = engine
        self._subscribed = subscribed
        self._wall_clock = wall_clock
        """The bus clock is the system's (see :mod:`~choreograph.backends.nats.appends`)."""
        self._jobs: list[_Job] = []
        self._queued = asyncio.Event()
        self._written = 0
        self._enqueued = 0
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []

    # queueing ----------------------------------------------------------------------------------
    def append(
        self, appends: Sequence[TopicAppend], now: float, acks: Sequence[Delivery]
    ) -> asyncio.Future[list[AppendResult]]:
        done: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()
        self._put(_Append(AppendBatch(appends, now), acks, done))
        return done

    def ack(self, msg: Msg) -> None:
        self._put(msg)

    def move(self, msg: Msg, subject: str, headers: Headers) -> None:
        self._put(_Move(msg, subject, headers))

    def _put(self, job: _Job) -> None:
        self._jobs.append(job)
        self._enqueued += 1
        self._queued.set()

    async def flush(self) -> None:
        """Wait until every job queued so far is written."""
        if self._written >= self._enqueued:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes.append((self._enqueued, done))
        await done

    # the task ----------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while True:
                await self._queued.wait()
                self._queued.clear()
                jobs, self._jobs = self._jobs, []
                try:
                    await self._write(jobs)
                except Exception:  # a bug: no job may stay unanswered
                    logger.exception("NATS: writing %d jobs failed", len(jobs))
                    self._fail(jobs, BackendError("NATS: the write failed"))
                self._written += len(jobs)
                self._wake_flushes()
        finally:
            self._fail(self._jobs, BackendError("the NATS backend closed before the write"))
            self._jobs = []
            self._written = self._enqueued
            self._wake_flushes()

    def _wake_flushes(self) -> None:
        waiting = []
        for target, done in self._flushes:
            if target <= self._written:
                if not done.done():
                    done.set_result(None)
            else:
                waiting.append((target, done))
        self._flushes = waiting

    @staticmethod
    def _fail(jobs: list[_Job], error: BackendError) -> None:
        for job in jobs:
            if isinstance(job, _Append) and not job.done.done():
                job.done.set_exception(error)

    async def _write(self, jobs: list[_Job]) -> None:
        engine = self._engine
        appends = [job for job in jobs if isinstance(job, _Append)]
        if appends:
            await store_appends(
                engine,
                [job.batch for job in appends],
                self._subscribed,
                wall_clock=self._wall_clock,
            )
        acks: list[Msg] = []
        for job in appends:
            error = job.batch.error
            if error is None:
                acks.extend(delivery.key for delivery in job.acks)
                if not job.done.done():
                    job.done.set_result(job.batch.results)
            elif not job.done.done():
                failure = BackendError(f"NATS: storing events failed: {describe(error)}")
                failure.__cause__ = error
                job.done.set_exception(failure)
        moves = [job for job in jobs if isinstance(job, _Move)]
        if moves:
            outcomes = await engine.publish_all(
                [(move.subject, move.msg.data, move.headers) for move in moves]
            )
            for move, outcome in zip(moves, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    logger.warning(
                        "NATS: could not store a copy on %s (%r); the original is delivered "
                        "again when its lease expires",
                        move.subject,
                        outcome,
                    )
                else:
                    acks.append(move.msg)
        acks.extend(job for job in jobs if isinstance(job, Msg))
        failed = [error for error in await engine.ack_all(acks) if error is not None]
        if failed:
            logger.warning(
                "NATS: %d acknowledgements failed (first: %r); those deliveries run again when "
                "their lease expires",
                len(failed),
                failed[0],
            )
