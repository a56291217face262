"""Helpers for testing code built on choreograph: a fake clock and the backend conformance suite.

The conformance classes need pytest and are imported only when asked for.
"""

from typing import TYPE_CHECKING, Any

from choreograph.testing.clock import FakeClock

if TYPE_CHECKING:
    from choreograph.testing.conformance import BusConformance, DurableBusConformance

__all__ = ["BusConformance", "DurableBusConformance", "FakeClock"]


def __getattr__(name: str) -> Any:
    if name in ("BusConformance", "DurableBusConformance"):
        from choreograph.testing import conformance

        return getattr(conformance, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
