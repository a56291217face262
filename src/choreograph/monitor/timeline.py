"""The read model: a transaction, its hops, and the timeline that puts them in order.

Times are seconds on the monitor's clock when the monitor observed each event (``observed_at``);
offsets and durations are derived from them in milliseconds. ``to_dict`` gives the JSON form
served by :func:`~choreograph.monitor.monitor_routes` and printed by ``choreograph trace --json``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from choreograph.clock import format_timestamp
from choreograph.monitor.observation import service_of
from choreograph.monitor.workflow import HopOutcome, TransactionState

__all__ = ["Hop", "Timeline", "Transaction"]


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _stamp(epoch: float | None) -> str | None:
    return None if epoch is None else format_timestamp(epoch)


class Transaction(msgspec.Struct, frozen=True, kw_only=True):
    """One business transaction: its workflow, state and how it ended.

    ``late_outcome`` is the type of a success or failure event that arrived after the monitor
    had timed the transaction out: the state stays ``TimedOut`` (compensation was already
    asked for) and the late event is kept as a hop.
    """

    correlation_id: str
    workflow: str
    state: TransactionState
    started_at: float
    deadline: float
    ended_at: float | None = None
    outcome_type: str | None = None
    failure_reason: str | None = None
    late_outcome: str | None = None

    @property
    def duration_ms(self) -> float | None:
        """From start to end; None while it runs."""
        return None if self.ended_at is None else _ms(self.ended_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "correlationId": self.correlation_id,
            "workflow": self.workflow,
            "state": self.state,
            "startedAt": _stamp(self.started_at),
            "deadline": _stamp(self.deadline),
            "endedAt": _stamp(self.ended_at),
            "durationMs": self.duration_ms,
            "outcomeType": self.outcome_type,
            "failureReason": self.failure_reason,
            "lateOutcome": self.late_outcome,
        }


class Hop(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a transaction, as observed.

    ``offset_ms`` counts from the start of the transaction (negative for an event observed
    before its start event: the bus does not order events across topics). ``since_cause_ms`` is
    the time since the monitor observed the event's cause, when it observed it.
    """

    event_id: str
    type: str
    service: str
    source: str
    topic: str
    observed_at: float
    offset_ms: float
    outcome: HopOutcome
    attempt: int | None = None
    since_cause_ms: float | None = None
    causation_id: str | None = None
    subject: str | None = None
    event_time: str | None = None
    detail: str | None = None
    data: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "time": _stamp(self.observed_at),
            "offsetMs": self.offset_ms,
            "type": self.type,
            "service": self.service,
            "source": self.source,
            "topic": self.topic,
            "subject": self.subject,
            "eventTime": self.event_time,
            "attempt": self.attempt,
            "causationId": self.causation_id,
            "sinceCauseMs": self.since_cause_ms,
            "outcome": self.outcome,
            "detail": self.detail,
            "data": self.data,
        }


class Timeline(msgspec.Struct, frozen=True, kw_only=True):
    """A transaction and its hops in the order the monitor observed them."""

    transaction: Transaction
    hops: tuple[Hop, ...]

    @property
    def correlation_id(self) -> str:
        return self.transaction.correlation_id

    @property
    def state(self) -> TransactionState:
        return self.transaction.state

    def to_dict(self) -> dict[str, Any]:
        return {**self.transaction.to_dict(), "hops": [hop.to_dict() for hop in self.hops]}


def build_hops(transaction: Transaction, rows: list[tuple[Any, ...]]) -> tuple[Hop, ...]:
    """Hops from event rows ordered by observation: (event_id, type, source, topic, observed_at,
    outcome, attempt, causation_id, subject, event_time, detail, data)."""
    seen: dict[str, float] = {}
    hops = []
    start = transaction.started_at
    for (
        event_id,
        event_type,
        source,
        topic,
        observed_at,
        outcome,
        attempt,
        causation_id,
        subject,
        event_time,
        detail,
        data,
    ) in rows:
        cause_at = seen.get(causation_id) if causation_id is not None else None
        hops.append(
            Hop(
                event_id=event_id,
                type=event_type,
                service=service_of(source),
                source=source,
                topic=topic,
                observed_at=observed_at,
                offset_ms=_ms(observed_at - start),
                outcome=outcome,
                attempt=attempt,
                since_cause_ms=None if cause_at is None else _ms(observed_at - cause_at),
                causation_id=causation_id,
                subject=subject,
                event_time=event_time,
                detail=detail,
                data=None if data is None else msgspec.json.decode(data),
            )
        )
        seen.setdefault(event_id, observed_at)
    return tuple(hops)
