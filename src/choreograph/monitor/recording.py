"""What the monitor writes: the store's schema and the rules that turn events into transactions.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`)::

    transactions(correlation_id PK, workflow, state, started_at, deadline, ended_at,
                 outcome_type, failure_reason, late_outcome, start_event_id)
    events(seq PK, event_id, source, correlation_id, type, subject, topic, observed_at,
           event_time, causation_id, attempt, traceparent, outcome, detail, data,
           UNIQUE(event_id, source))

Rules: a start event opens a transaction (unless its correlation id has one); the first success
or failure event ends a running one; a success or failure after a timeout is noted as the
transaction's ``late_outcome`` and changes nothing else. An event is identified, as CloudEvents
says, by its ``source`` and ``id``: a redelivered event is recorded once and changes nothing.
Each hop's ``outcome`` is decided when it is written, so that readers need no workflow.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from choreograph.bus.deadletter import DEAD_LETTERED_EVENT_TYPE
from choreograph.monitor.observation import Observation
from choreograph.monitor.workflow import Workflow, WorkflowCatalog

__all__ = [
    "HOP_COLUMNS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "TRANSACTION_COLUMNS",
    "Recorded",
    "record_events",
    "record_timeout",
]

SCHEMA_VERSION: Final = 1

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS transactions (
    correlation_id  TEXT PRIMARY KEY,
    workflow        TEXT NOT NULL,
    state           TEXT NOT NULL,
    started_at      REAL NOT NULL,
    deadline        REAL NOT NULL,
    ended_at        REAL,
    outcome_type    TEXT,
    failure_reason  TEXT,
    late_outcome    TEXT,
    start_event_id  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transactions_by_state ON transactions (state, started_at);
CREATE INDEX IF NOT EXISTS transactions_by_start ON transactions (started_at);
CREATE TABLE IF NOT EXISTS events (
    seq             INTEGER PRIMARY KEY,
    event_id        TEXT NOT NULL,
    source          TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    type            TEXT NOT NULL,
    subject         TEXT,
    topic           TEXT NOT NULL,
    observed_at     REAL NOT NULL,
    event_time      TEXT,
    causation_id    TEXT,
    attempt         INTEGER,
    traceparent     TEXT,
    outcome         TEXT NOT NULL,
    detail          TEXT,
    data            TEXT,
    UNIQUE (event_id, source)
);
CREATE INDEX IF NOT EXISTS events_by_transaction ON events (correlation_id, observed_at, seq);
"""

INSERT_EVENT: Final = (
    "INSERT OR IGNORE INTO events (event_id, source, correlation_id, type, subject, topic, "
    "observed_at, event_time, causation_id, attempt, traceparent, outcome, detail, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
TRANSACTION_COLUMNS: Final = (
    "correlation_id, workflow, state, started_at, deadline, ended_at, outcome_type, "
    "failure_reason, late_outcome"
)
HOP_COLUMNS: Final = (
    "event_id, type, source, topic, observed_at, outcome, attempt, causation_id, subject, "
    "event_time, detail, data"
)


@dataclass(slots=True)
class Recorded:
    """What one :func:`record_events` call changed, for the monitor's timers."""

    recorded: int = 0
    duplicates: int = 0
    unattached: int = 0
    """Events with no correlation id that start nothing: not part of any transaction."""
    started: list[tuple[str, float]] = field(default_factory=list)
    """(correlation id, deadline) of each transaction started and still running."""
    ended: list[str] = field(default_factory=list)
    """Correlation ids of the transactions that completed or failed."""


def record_events(
    connection: sqlite3.Connection, observations: Sequence[Observation], workflows: WorkflowCatalog
) -> Recorded:
    """Write ``observations`` and apply what they mean, inside the caller's SQLite transaction."""
    result = Recorded()
    for observation in observations:
        _record_one(connection, observation, workflows, result)
    return result


def record_timeout(
    connection: sqlite3.Connection, correlation_id: str, event: Observation, reason: str
) -> bool:
    """Mark a running transaction TimedOut at ``event.observed_at`` and write the timeout event
    as its hop. False if the transaction was no longer running."""
    changed = connection.execute(
        "UPDATE transactions SET state = 'TimedOut', ended_at = ?, outcome_type = ?, "
        "failure_reason = ? WHERE correlation_id = ? AND state = 'Running'",
        (event.observed_at, event.type, reason, correlation_id),
    ).rowcount
    connection.execute(INSERT_EVENT, _event_row(event, correlation_id, "timed-out"))
    return changed == 1


def _record_one(
    connection: sqlite3.Connection,
    observation: Observation,
    workflows: WorkflowCatalog,
    result: Recorded,
) -> None:
    correlation_id = observation.correlation_id or _correlation_of_uncorrelated(
        connection, observation, workflows
    )
    if correlation_id is None:
        result.unattached += 1
        return
    row = connection.execute(
        "SELECT workflow, state FROM transactions WHERE correlation_id = ?",
        (correlation_id,),
    ).fetchone()
    workflow = workflows.get(row[0]) if row else workflows.started_by(observation.type)
    outcome = (
        workflow.outcome(observation.type)
        if workflow is not None
        else ("dead-lettered" if observation.type == DEAD_LETTERED_EVENT_TYPE else "ok")
    )
    cursor = connection.execute(INSERT_EVENT, _event_row(observation, correlation_id, outcome))
    if cursor.rowcount == 0:
        result.duplicates += 1
        return
    result.recorded += 1
    if workflow is None:
        return
    if row is None:
        _start(connection, observation, correlation_id, workflow, cursor.lastrowid, result)
        return
    meaning = workflow.meaning(observation.type)
    if meaning not in ("success", "failure"):
        return
    if row[1] == "Running":
        o = observation
        _end(connection, correlation_id, meaning, o.type, o.source, o.detail, o.observed_at)
        result.ended.append(correlation_id)
    elif row[1] == "TimedOut":
        connection.execute(
            "UPDATE transactions SET late_outcome = coalesce(late_outcome, ?) "
            "WHERE correlation_id = ?",
            (observation.type, correlation_id),
        )


def _start(
    connection: sqlite3.Connection,
    observation: Observation,
    correlation_id: str,
    workflow: Workflow,
    seq: int | None,
    result: Recorded,
) -> None:
    deadline = observation.observed_at + workflow.deadline_seconds
    connection.execute(
        "INSERT INTO transactions (correlation_id, workflow, state, started_at, deadline, "
        "start_event_id) VALUES (?, ?, 'Running', ?, ?, ?)",
        (
            correlation_id,
            workflow.name,
            observation.observed_at,
            deadline,
            observation.event_id,
        ),
    )
    # The bus does not order events across topics: later hops may have come first.
    earlier = connection.execute(
        "SELECT seq, type, source, outcome, detail, observed_at FROM events "
        "WHERE correlation_id = ? AND seq != ? ORDER BY observed_at, seq",
        (correlation_id, seq),
    ).fetchall()
    for other_seq, event_type, _, outcome, _, _ in earlier:
        if workflow.outcome(event_type) != outcome:
            connection.execute(
                "UPDATE events SET outcome = ? WHERE seq = ?",
                (workflow.outcome(event_type), other_seq),
            )
    for _, event_type, source, _, detail, observed_at in earlier:
        meaning = workflow.meaning(event_type)
        if meaning in ("success", "failure"):
            _end(connection, correlation_id, meaning, event_type, source, detail, observed_at)
            result.ended.append(correlation_id)
            return
    result.started.append((correlation_id, deadline))


def _event_row(observation: Observation, correlation_id: str, outcome: str) -> tuple[Any, ...]:
    o = observation
    return (
        o.event_id,
        o.source,
        correlation_id,
        o.type,
        o.subject,
        o.topic,
        o.observed_at,
        o.event_time,
        o.causation_id,
        o.attempt,
        o.traceparent,
        outcome,
        o.detail,
        o.data,
    )


def _correlation_of_uncorrelated(
    connection: sqlite3.Connection, observation: Observation, workflows: WorkflowCatalog
) -> str | None:
    """The transaction of an event that carries no correlation id.

    A start event is its own transaction (its id is the correlation id); a dead-letter
    announcement belongs to the transaction of the event it dead-lettered.
    """
    if workflows.started_by(observation.type) is not None:
        return observation.event_id
    if observation.type == DEAD_LETTERED_EVENT_TYPE and observation.causation_id:
        row = connection.execute(
            "SELECT correlation_id FROM events WHERE event_id = ? LIMIT 1",
            (observation.causation_id,),
        ).fetchone()
        return row[0] if row else None
    return None


def _end(
    connection: sqlite3.Connection,
    correlation_id: str,
    meaning: str,
    event_type: str,
    source: str,
    detail: str | None,
    observed_at: float,
) -> None:
    """End a transaction with its first success or failure event."""
    failed = meaning == "failure"
    connection.execute(
        "UPDATE transactions SET state = ?, ended_at = ?, outcome_type = ?, failure_reason = ? "
        "WHERE correlation_id = ?",
        (
            "Failed" if failed else "Completed",
            observed_at,
            event_type,
            (detail or f"{event_type} from {source}") if failed else None,
            correlation_id,
        ),
    )
