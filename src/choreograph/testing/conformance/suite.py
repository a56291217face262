"""The two suites a backend's test class subclasses, each composed of the test mixins."""

from __future__ import annotations

from choreograph.testing.conformance.batching import BatchingTests
from choreograph.testing.conformance.catalog import CatalogTests
from choreograph.testing.conformance.dead_letters import DeadLetterTests
from choreograph.testing.conformance.deduplication import DeduplicationTests
from choreograph.testing.conformance.durability import DurabilityTests
from choreograph.testing.conformance.lifecycle import LifecycleTests
from choreograph.testing.conformance.outcomes import OutcomeTests
from choreograph.testing.conformance.publishing import PublishingTests
from choreograph.testing.conformance.retries import RetryTests
from choreograph.testing.conformance.routing import RoutingTests

__all__ = ["BusConformance", "DurableBusConformance"]


class BusConformance(
    LifecycleTests,
    CatalogTests,
    PublishingTests,
    DeduplicationTests,
    RoutingTests,
    RetryTests,
    OutcomeTests,
    BatchingTests,
    DeadLetterTests,
):
    """The conformance suite every backend passes; subclass it once per backend.

    pytest collects only the subclass, which provides the ``bus_url`` fixture. A backend whose
    store survives a close subclasses :class:`DurableBusConformance` instead.
    """

    durable = False


class DurableBusConformance(DurabilityTests, BusConformance):
    """The whole suite plus the tests that reopen the store, for a durable backend."""

    durable = True
