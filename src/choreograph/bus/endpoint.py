"""Endpoints: what a subscription's deliveries are handed to, and the in-process handler one.

An endpoint takes the events of one attempt (one, or a batch when ``maxEventsPerBatch`` > 1) and
answers with an :class:`~choreograph.bus.retry.Outcome`. Webhooks, SDK services and the
ambassador are endpoints too; the dispatcher treats them all alike.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from choreograph.bus.retry import DELIVERED, Outcome
from choreograph.bus.subscription import DeliverySchema
from choreograph.errors import Reject, Retry
from choreograph.events import CloudEvent, EventGridEvent

__all__ = [
    "Attempt",
    "Emit",
    "Endpoint",
    "Handler",
    "HandlerEndpoint",
    "outcome_of_exception",
    "outcome_of_return",
]

logger = logging.getLogger(__name__)


class Emit(NamedTuple):
    """An event a handler asks the bus to publish to ``topic`` once its delivery succeeded.

    Emitted events and the acknowledgement of the delivery that caused them are stored in one
    write: the handler does not wait for the disk, and if the process dies before that write, the
    delivery runs again and re-emits (give emitted events deterministic ids so the topic's
    de-duplication absorbs the repeat).
    """

    topic: str
    event: CloudEvent


Handler = Callable[[Any], Awaitable["Emit | Sequence[Emit] | None"]]
"""An async function taking one event (or a list of them for a batching subscription) and
returning what to emit, if anything."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """What an endpoint knows about the attempt it is given."""

    topic: str
    subscription: str
    delivery_count: int
    """Attempts made before this one (``aeg-delivery-count``: 0 on the first)."""
    event_delivery_schema: DeliverySchema
    batched: bool


@runtime_checkable
class Endpoint(Protocol):
    """Receives deliveries. It reports failure in the outcome rather than by raising."""

    async def deliver(
        self, events: Sequence[CloudEvent | EventGridEvent], attempt: Attempt
    ) -> Outcome: ...


class HandlerEndpoint:
    """Calls an async handler in this process.

    Returning is success (returning :class:`Emit` pairs publishes them with the acknowledgement);
    :class:`~choreograph.errors.Retry` is a transient failure (503, with its delay as
    ``Retry-After``); :class:`~choreograph.errors.Reject` dead-letters the event at once; any
    other exception is a failure retried on the policy (500).
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def deliver(
        self, events: Sequence[CloudEvent | EventGridEvent], attempt: Attempt
    ) -> Outcome:
        try:
            emitted = await self.handler(list(events) if attempt.batched else events[0])
        except Exception as exc:
            return outcome_of_exception(exc, attempt)
        return outcome_of_return(emitted)


def outcome_of_return(emitted: Emit | Sequence[Emit] | None) -> Outcome:
    """The outcome of a handler that returned ``emitted``."""
    if emitted is None:
        return DELIVERED
    if isinstance(emitted, Emit):
        return Outcome(status=200, name="Delivered", emitted=(emitted,))
    return Outcome(status=200, name="Delivered", emitted=tuple(emitted))


def outcome_of_exception(exc: Exception, attempt: Attempt) -> Outcome:
    """The outcome of a handler (or endpoint) that raised ``exc``."""
    if isinstance(exc, Retry):
        return Outcome(
            status=503, name="Busy", detail=exc.reason, retry_after_seconds=exc.delay_seconds
        )
    if isinstance(exc, Reject):
        return Outcome(status=400, name="Rejected", detail=exc.reason, rejected=True)
    logger.warning(
        "handler of %s/%s failed on attempt %d: %r",
        attempt.topic,
        attempt.subscription,
        attempt.delivery_count + 1,
        exc,
    )
    return Outcome(status=500, name="GenericError", detail=f"{type(exc).__name__}: {exc}")
