"""Pure delivery policy: what an attempt's outcome means and when the next attempt comes.

Nothing here does I/O or reads a clock; the dispatcher passes the time in. Event Grid's rules:
200-204 is delivered; a status in ``nonRetryableStatusCodes`` is dead-lettered at once; anything
else is retried on the schedule until ``maxDeliveryAttempts``; the time-to-live is checked only
when an attempt comes due.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Final

import msgspec

from choreograph.bus.subscription import RetryPolicy

__all__ = [
    "DELIVERED",
    "Ack",
    "DeadLetterReason",
    "Decision",
    "Outcome",
    "RetryAt",
    "ToDeadLetter",
    "backoff_delay",
    "decide",
    "outcome_for_status",
    "ttl_expired",
]


class DeadLetterReason(StrEnum):
    """Why an event ended in the dead-letter queue (``deadLetterReason``)."""

    MAX_DELIVERY_ATTEMPTS_EXCEEDED = "MaxDeliveryAttemptsExceeded"
    TIME_TO_LIVE_EXCEEDED = "TimeToLiveExceeded"
    NON_RETRYABLE_STATUS_CODE = "NonRetryableStatusCode"
    REJECTED = "Rejected"


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """The result of one delivery attempt.

    ``status`` is HTTP-like (in-process handlers map onto it); ``name`` is Event Grid's
    ``lastDeliveryOutcome`` (``Delivered``, ``BadRequest``, ``TimedOut``, ``Busy`` ...);
    ``detail`` says more (an exception, a response body) and ``retry_after_seconds`` is the
    earliest the endpoint wants the next attempt.
    """

    status: int
    name: str
    detail: str | None = None
    retry_after_seconds: float = 0.0
    rejected: bool = False
    emitted: tuple[Any, ...] = ()
    """Events the endpoint asks the bus to publish because this delivery succeeded
    (:class:`~choreograph.bus.endpoint.Emit` pairs); stored together with the acknowledgement."""
    encoded: tuple[bytes, ...] = ()
    """The storage encoding of each of ``emitted`` (:func:`~choreograph.events.encode_event`),
    when the endpoint made it already (the SDK does, for its inbox): the bus stores these bytes
    instead of encoding the events again."""

    @property
    def delivered(self) -> bool:
        return 200 <= self.status <= 204


DELIVERED: Final = Outcome(status=200, name="Delivered")

_OUTCOME_NAMES: Final = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    408: "TimedOut",
    413: "PayloadTooLarge",
    429: "Busy",
    503: "Busy",
}


def outcome_for_status(
    status: int, detail: str | None = None, retry_after_seconds: float = 0.0
) -> Outcome:
    """The outcome of an endpoint that answered ``status``."""
    if 200 <= status <= 204:
        name = "Delivered"
    elif 300 <= status < 400:
        name = "Redirected"
    else:
        name = _OUTCOME_NAMES.get(status, "GenericError")
    return Outcome(status=status, name=name, detail=detail, retry_after_seconds=retry_after_seconds)


class Ack(msgspec.Struct, frozen=True):
    """Delivered: remove the event from the subscription's queue."""


class RetryAt(msgspec.Struct, frozen=True):
    """Failed, with budget left: attempt again at ``due_at``."""

    due_at: float


class ToDeadLetter(msgspec.Struct, frozen=True):
    """Failed for good: dead-letter (or drop) the event."""

    reason: DeadLetterReason


Decision = Ack | RetryAt | ToDeadLetter
ACK: Final = Ack()


def backoff_delay(schedule: Sequence[float], failed_attempts: int) -> float:
    """Delay before the next attempt after ``failed_attempts`` failures (the last step repeats)."""
    return float(schedule[min(failed_attempts, len(schedule)) - 1])


def ttl_expired(policy: RetryPolicy, ttl_start: float, now: float) -> bool:
    """Whether an attempt coming due at ``now`` falls past the event's time-to-live."""
    return now > ttl_start + policy.time_to_live_seconds


def decide(
    outcome: Outcome,
    policy: RetryPolicy,
    *,
    attempts: int,
    now: float,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> Decision:
    """What to do after attempt number ``attempts`` (1-based) ended in ``outcome`` at ``now``.

    ``jitter`` is the largest fraction added at random to a retry delay (Event Grid adds "a small
    randomization"); the delay is never shortened.
    """
    if outcome.delivered:
        return ACK
    if outcome.rejected:
        return ToDeadLetter(DeadLetterReason.REJECTED)
    if outcome.status in policy.non_retryable_status_codes:
        return ToDeadLetter(DeadLetterReason.NON_RETRYABLE_STATUS_CODE)
    if attempts >= policy.max_delivery_attempts:
        return ToDeadLetter(DeadLetterReason.MAX_DELIVERY_ATTEMPTS_EXCEEDED)
    delay = max(backoff_delay(policy.backoff_seconds, attempts), outcome.retry_after_seconds)
    if jitter > 0 and delay > 0:
        delay += delay * jitter * (rng or random).random()
    return RetryAt(now + delay)
