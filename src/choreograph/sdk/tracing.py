"""W3C trace context (``traceparent``) for events: every handled event is a span, and the events
it emits carry the context of that span, so a transaction's hops form one trace.

Only the header arithmetic lives here; exporting spans to a tracing system is left to
OpenTelemetry, which reads the same headers.
"""

from __future__ import annotations

import os
import random
import re
from typing import Final

__all__ = ["TraceContext", "child_of", "new_trace"]

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_VERSION_00 = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
"""The form every hop writes (version 00, 55 characters): read by slicing, not by groups."""
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)


class TraceContext:
    """A parsed ``traceparent``: trace id, span id and flags; ``continued`` when the span
    belongs to a trace received from upstream (not one started here)."""

    __slots__ = ("continued", "flags", "span_id", "trace_id")

    def __init__(
        self, trace_id: str, span_id: str, flags: str = "01", *, continued: bool = False
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.flags = flags
        self.continued = continued

    @classmethod
    def parse(cls, header: object) -> TraceContext | None:
        """The context in a ``traceparent`` header, or None when it is absent or malformed
        (W3C says to start a new trace then, not to fail)."""
        if not isinstance(header, str):
            return None
        match = _TRACEPARENT.fullmatch(header.strip())
        if match is None or match[1] == "ff" or match[2] == _ZERO_TRACE or match[3] == _ZERO_SPAN:
            return None
        if match[1] == "00" and match[5] is not None:  # version 00 has exactly four fields
            return None
        return cls(match[2], match[3], match[4])

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def _span_id() -> str:
    return "%016x" % (_random.getrandbits(64) or 1)


def new_trace() -> TraceContext:
    """The root span of a new trace (sampled)."""
    return TraceContext("%032x" % (_random.getrandbits(128) or 1), _span_id())


def child_of(parent: object) -> TraceContext:
    """A new span in the trace of ``parent`` (a ``traceparent`` value), or a new trace."""
    if isinstance(parent, str) and _VERSION_00.fullmatch(parent):  # the common case, first
        trace_id = parent[3:35]
        if trace_id != _ZERO_TRACE and parent[36:52] != _ZERO_SPAN:
            return TraceContext(trace_id, _span_id(), parent[53:], continued=True)
        return new_trace()
    context = TraceContext.parse(parent)
    if context is None:
        return new_trace()
    return TraceContext(context.trace_id, _span_id(), context.flags, continued=True)
