"""What a handler gets beside its event: who it is, the attempt, its state, and how to emit.

Emitted events carry the transaction without the handler doing anything: ``correlationid`` is
inherited, ``causationid`` is the consumed event's id, ``traceparent`` is the handler's own span,
and the id is derived from the consumed event's id, the handler, the emitted type and its
position, so a retried handler re-emits identical ids.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from choreograph.bus.endpoint import Emit
from choreograph.clock import Clock, format_timestamp
from choreograph.errors import ChoreographError
from choreograph.events import CloudEvent, ExtensionValue
from choreograph.sdk.state import StateView
from choreograph.sdk.tracing import TraceContext, child_of

__all__ = ["ID_NAMESPACE", "Context", "UndeclaredEventError", "emitted_id"]

logger = logging.getLogger(__name__)

ID_NAMESPACE: Final = uuid.UUID("6f1d7c3e-5b0a-4c47-9d8e-0c6f2a1b9e54")
"""Namespace of the version-5 UUIDs the SDK gives emitted events."""
_NAMESPACE_BYTES: Final = ID_NAMESPACE.bytes


class UndeclaredEventError(ChoreographError):
    """A handler emitted an event type it did not declare (``emits=``)."""


def emitted_id(cause: str, service: str, handler: str, event_type: str, position: int) -> str:
    """The deterministic id of the ``position``-th event of ``event_type`` emitted by
    ``service``/``handler`` because of the event (or join) ``cause``."""
    name = f"{cause}\n{service}\n{handler}\n{event_type}\n{position}"
    # uuid.uuid5, without building a UUID object (this runs for every emitted event)
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class Context:
    """The handler's view of one delivery."""

    __slots__ = (
        "_after_commit",
        "_cause",
        "_clock",
        "_counts",
        "_emits",
        "_trace",
        "attempt",
        "correlation_id",
        "emitted",
        "event",
        "events",
        "handler",
        "service",
        "state",
    )

    def __init__(
        self,
        *,
        service: str,
        handler: str,
        event: CloudEvent,
        attempt: int,
        state: StateView,
        emits: Mapping[str, str],
        clock: Clock,
        trace: TraceContext | None = None,
        cause: str | None = None,
        events: Mapping[str, CloudEvent] | None = None,
    ) -> None:
        self.service = service
        self.handler = handler
        self.event = event
        """The event being handled (for a join, the one that completed it)."""
        self.events: Mapping[str, CloudEvent] = events or {event.type: event}
        """For a join, the joined events by type."""
        self.attempt = attempt
        """1 on the first delivery of this event to this handler, +1 per retry."""
        self.state = state
        self._trace = trace
        """Made when first asked for (:attr:`trace`): a handler that emits nothing may never need it."""
        self.correlation_id: str = event.correlationid or event.id
        self.emitted: list[tuple[str, CloudEvent]] = []
        """What the handler emitted: (topic, event) pairs (:class:`~choreograph.bus.Emit`)."""
        self._emits = emits
        self._clock = clock
        self._cause = cause or event.id
        """What emitted ids derive from: the consumed event (source and id), or the join."""
        self._counts: dict[str, int] = {}
        self._after_commit: list[Callable[[], object]] = []

    @property
    def trace(self) -> TraceContext:
        """This handler's span: a child of the consumed event's ``traceparent``, or the root
        of a new trace when it has none."""
        if self._trace is None:
            self._trace = child_of(self.event.traceparent)
        return self._trace

    def now(self) -> float:
        """The service's clock (seconds since the epoch); use it rather than ``time.time()``."""
        return self._clock.now()

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once this handler's changes are durable (notify a client, say);
        never if the handler fails. Its exceptions are logged, not raised."""
        self._after_commit.append(callback)

    def run_after_commit(self) -> None:
        """Run the callbacks registered with :meth:`after_commit` (the runtime calls it)."""
        for callback in self._after_commit:
            try:
                callback()
            except Exception:
                logger.exception(
                    "after-commit callback of %s.%s failed", self.service, self.handler
                )

    def new_event(
        self,
        event_type: str,
        data: Any = msgspec.UNSET,
        *,
        subject: str | None = None,
        extensions: Mapping[str, ExtensionValue] | None = None,
    ) -> CloudEvent:
        """An event of a declared type, correlated with this delivery (not yet emitted)."""
        if event_type not in self._emits:
            declared = ", ".join(sorted(self._emits)) or "none"
            raise UndeclaredEventError(
                f"handler {self.service}.{self.handler} emitted {event_type!r}, which it does "
                f"not declare (declared: {declared})"
            )
        position = self._counts.get(event_type, 0)
        self._counts[event_type] = position + 1
        cause = self.event
        trace = self.trace
        carried: dict[str, ExtensionValue] = {} if extensions is None else dict(extensions)
        carried["correlationid"] = self.correlation_id
        carried["causationid"] = cause.id
        carried["traceparent"] = trace.traceparent
        tracestate = cause.extensions.get("tracestate")
        if tracestate is not None and trace.continued:  # a new trace starts a new state
            carried["tracestate"] = tracestate
        carried["deliveryattempt"] = self.attempt
        return CloudEvent(
            id=emitted_id(self._cause, self.service, self.handler, event_type, position),
            type=event_type,
            source=f"/services/{self.service}",
            subject=subject if subject is not None else cause.subject,
            time=format_timestamp(self._clock.now()),
            datacontenttype=None if data is msgspec.UNSET else "application/json",
            data=data,
            extensions=carried,
        )

    def emit(
        self,
        event_type: str,
        data: Any = msgspec.UNSET,
        *,
        subject: str | None = None,
        extensions: Mapping[str, ExtensionValue] | None = None,
    ) -> CloudEvent:
        """Emit an event of a declared type once the handler succeeds; returns it."""
        event = self.new_event(event_type, data, subject=subject, extensions=extensions)
        self.emitted.append(Emit(self._emits[event_type], event))
        return event

    def topic_of(self, event_type: str) -> str:
        """The topic a declared event type goes to."""
        if event_type not in self._emits:
            raise UndeclaredEventError(
                f"handler {self.service}.{self.handler} does not declare {event_type!r}"
            )
        return self._emits[event_type]
