"""Workflows: which events start a transaction, which end it, and how long it may take.

A :class:`Workflow` is configuration, validated once when it is built; a :class:`WorkflowCatalog`
checks that several workflows fit together (distinct names, no start type shared) and answers,
for an event type, what it means to a transaction.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from choreograph.bus.deadletter import DEAD_LETTERED_EVENT_TYPE
from choreograph.bus.topic import SYSTEM_TOPIC
from choreograph.errors import ConfigError

__all__ = [
    "TRANSACTION_STATES",
    "HopOutcome",
    "TransactionState",
    "Workflow",
    "WorkflowCatalog",
]

TransactionState = Literal["Running", "Completed", "Failed", "TimedOut"]
TRANSACTION_STATES: Final[tuple[TransactionState, ...]] = (
    "Running",
    "Completed",
    "Failed",
    "TimedOut",
)

HopOutcome = Literal["ok", "failed", "dead-lettered", "timed-out"]
"""What one event of a transaction says about it (the ``outcome`` of a hop)."""

Meaning = Literal["start", "success", "failure", "timeout", "other"]

_WORKFLOW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_TOPIC_NAME = re.compile(r"[A-Za-z0-9-]{3,50}")
MAX_DEADLINE_SECONDS: Final = 30 * 86_400.0


def _names(label: str, value: object, *, allow_empty: bool = False) -> tuple[str, ...]:
    """Normalise a string or a sequence of strings into a tuple; a bare string is one item."""
    items: tuple[object, ...]
    if isinstance(value, str):
        items = (value,)
    elif isinstance(value, Sequence):
        items = tuple(value)
    else:
        raise ConfigError(f"workflow `{label}` must be a list of strings, got {value!r}")
    if not items and not allow_empty:
        raise ConfigError(f"workflow `{label}` is empty; list at least one")
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(
                f"workflow `{label}[{index}]` must be a non-empty string, got {item!r}"
            )
    if len(set(items)) != len(items):
        raise ConfigError(f"workflow `{label}` lists a name twice: {list(items)!r}")
    return items  # type: ignore[return-value]  # every item was checked to be a str


@dataclass(frozen=True, kw_only=True)
class Workflow:
    """A business transaction the monitor watches.

    A transaction starts with one of ``start`` (on any of ``topics``) and ends with the first of
    ``success`` or ``failure``. If neither arrives by start + ``deadline_seconds`` the monitor
    publishes ``f"{name}TimedOut"`` to ``timeout_topic`` for compensating services. A single
    string stands for a one-item list everywhere a list is expected.
    """

    name: str
    start: str | Sequence[str]
    success: Sequence[str]
    failure: Sequence[str] = ()
    topics: Sequence[str]
    deadline_seconds: float
    timeout_topic: str
    _start: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name:
            raise ConfigError(f"workflow `name` must be a non-empty string, got {name!r}")
        if not _WORKFLOW_NAME.fullmatch(name):
            raise ConfigError(
                f"workflow name {name!r} must be 1-100 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit (it prefixes the timeout event type)"
            )
        label = f"workflow {name!r}"
        start = _names(f"{name}.start", self.start)
        success = _names(f"{name}.success", self.success)
        failure = _names(f"{name}.failure", self.failure, allow_empty=True)
        topics = _names(f"{name}.topics", self.topics)
        for topic in (*topics, self.timeout_topic):
            if not isinstance(topic, str) or not _TOPIC_NAME.fullmatch(topic):
                raise ConfigError(
                    f"{label}: topic name {topic!r} must be 3-50 letters, digits or '-'"
                )
        if SYSTEM_TOPIC in topics:
            raise ConfigError(
                f"{label}: do not list {SYSTEM_TOPIC!r} in `topics`; the monitor always watches "
                f"it for {DEAD_LETTERED_EVENT_TYPE} events"
            )
        for first, second, a, b in (
            ("start", "success", start, success),
            ("start", "failure", start, failure),
            ("success", "failure", success, failure),
        ):
            shared = sorted(set(a) & set(b))
            if shared:
                raise ConfigError(f"{label}: {shared[0]!r} is both a {first} and a {second} type")
        deadline = self.deadline_seconds
        if (
            isinstance(deadline, bool)
            or not isinstance(deadline, int | float)
            or not math.isfinite(deadline)
            or not 0 < deadline <= MAX_DEADLINE_SECONDS
        ):
            raise ConfigError(
                f"{label}: `deadline_seconds` must be a number of seconds above 0 and at most "
                f"{MAX_DEADLINE_SECONDS:g}, got {deadline!r}"
            )
        object.__setattr__(self, "_start", start)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "success", success)
        object.__setattr__(self, "failure", failure)
        object.__setattr__(self, "topics", topics)
        object.__setattr__(self, "deadline_seconds", float(deadline))

    @property
    def start_types(self) -> tuple[str, ...]:
        """The event types that start a transaction of this workflow."""
        return self._start

    @property
    def timed_out_type(self) -> str:
        """The type of the event the monitor publishes when a transaction misses its deadline."""
        return f"{self.name}TimedOut"

    def meaning(self, event_type: str) -> Meaning:
        """What an event of ``event_type`` means to a transaction of this workflow."""
        if event_type in self.success:
            return "success"
        if event_type in self.failure:
            return "failure"
        if event_type == self.timed_out_type:
            return "timeout"
        if event_type in self._start:
            return "start"
        return "other"

    def outcome(self, event_type: str) -> HopOutcome:
        """The outcome shown for a hop of ``event_type`` in this workflow's timeline."""
        if event_type == DEAD_LETTERED_EVENT_TYPE:
            return "dead-lettered"
        meaning = self.meaning(event_type)
        if meaning == "failure":
            return "failed"
        if meaning == "timeout":
            return "timed-out"
        return "ok"


class WorkflowCatalog:
    """Several workflows checked together: distinct names, and each start type in one only."""

    def __init__(self, workflows: Sequence[Workflow]) -> None:
        given: object = workflows
        if not isinstance(given, list | tuple):
            raise ConfigError(f"workflows must be a list of Workflow, got {given!r}")
        items: list[object] = list(given)
        if not items:
            raise ConfigError("the monitor needs at least one workflow")
        self._by_name: dict[str, Workflow] = {}
        self._by_start: dict[str, Workflow] = {}
        for workflow in items:
            if not isinstance(workflow, Workflow):
                raise ConfigError(f"expected a Workflow, got {type(workflow).__name__}")
            if workflow.name in self._by_name:
                raise ConfigError(f"two workflows are named {workflow.name!r}")
            self._by_name[workflow.name] = workflow
            for event_type in workflow.start_types:
                other = self._by_start.get(event_type)
                if other is not None:
                    raise ConfigError(
                        f"event type {event_type!r} starts both workflow {other.name!r} and "
                        f"workflow {workflow.name!r}; a transaction belongs to one workflow"
                    )
                self._by_start[event_type] = workflow

    @property
    def workflows(self) -> tuple[Workflow, ...]:
        return tuple(self._by_name.values())

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic a workflow watches, sorted, each once."""
        return tuple(sorted({topic for w in self._by_name.values() for topic in w.topics}))

    @property
    def timeout_topics(self) -> tuple[str, ...]:
        return tuple(sorted({w.timeout_topic for w in self._by_name.values()}))

    def get(self, name: str) -> Workflow | None:
        return self._by_name.get(name)

    def started_by(self, event_type: str) -> Workflow | None:
        """The workflow an event of ``event_type`` starts, if any."""
        return self._by_start.get(event_type)
