"""The bus conformance suite: the Event Grid behaviour every backend must show, as pytest tests.

A backend is done when it passes the suite, subclassed once in its test module. A backend whose
store survives a close subclasses :class:`DurableBusConformance`, which adds the tests that reopen
the store; any other subclasses :class:`BusConformance`::

    class TestMemoryBus(BusConformance):
        @pytest.fixture
        def bus_url(self, tmp_path: Path) -> str:
            return "memory://"

The tests never sleep. A :class:`~choreograph.testing.FakeClock` drives retries, time-to-live and
delivery timeouts: :func:`run_for` advances it one timer at a time and lets the work that came
due happen (``await bus.idle()``) before moving on, so every attempt happens at its exact time.
Waits that a bug could turn into a hang are bounded by :data:`WAIT_SECONDS`.

The suite is a set of mixins, one module per area, over the fixtures and helpers of
:mod:`~choreograph.testing.conformance.harness`; :mod:`~choreograph.testing.conformance.suite`
composes them.
"""

from choreograph.testing.conformance.harness import (
    WAIT_SECONDS,
    HandlerFailure,
    Recorder,
    StatusEndpoint,
    counts,
    drain,
    make_event,
    make_eventgrid_event,
    run_for,
)
from choreograph.testing.conformance.suite import BusConformance, DurableBusConformance

__all__ = [
    "WAIT_SECONDS",
    "BusConformance",
    "DurableBusConformance",
    "HandlerFailure",
    "Recorder",
    "StatusEndpoint",
    "counts",
    "drain",
    "make_event",
    "make_eventgrid_event",
    "run_for",
]
