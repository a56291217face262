"""Helpers for testing code built on choreograph: a fake clock and the backend conformance suite.

``BusConformance`` needs pytest and is imported only when asked for.
"""

from typing import TYPE_CHECKING, Any

from choreograph.testing.clock import FakeClock

if TYPE_CHECKING:
    from choreograph.testing.conformance import BusConformance

__all__ = ["BusConformance", "FakeClock"]


def __getattr__(name: str) -> Any:
    if name == "BusConformance":
        from choreograph.testing.conformance import BusConformance

        return BusConformance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
