"""Counters and a delivery-latency histogram, kept by the bus for the gateway's ``/metrics``.

Plain integers on slotted objects: the dispatcher updates them on every delivery, so they must
cost next to nothing. Latency is measured on the bus clock from when the event was published to
when its successful attempt ended.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Final

__all__ = ["LATENCY_BUCKETS_SECONDS", "BusMetrics", "SubscriptionMetrics"]

LATENCY_BUCKETS_SECONDS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 3600.0,
)  # fmt: skip
"""Upper bounds of the histogram buckets (a last, unbounded bucket follows)."""


class SubscriptionMetrics:
    """What happened to one subscription's deliveries since the bus opened."""

    __slots__ = (
        "dead_lettered",
        "delivered",
        "dropped",
        "latency",
        "latency_count",
        "latency_sum",
        "retried",
    )

    def __init__(self) -> None:
        self.delivered = 0
        self.retried = 0
        self.dead_lettered = 0
        self.dropped = 0
        self.latency = [0] * (len(LATENCY_BUCKETS_SECONDS) + 1)
        """Deliveries per bucket (not cumulative)."""
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe(self, seconds: float) -> None:
        """One event delivered ``seconds`` after it was published."""
        self.latency[bisect_left(LATENCY_BUCKETS_SECONDS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "retried": self.retried,
            "deadLettered": self.dead_lettered,
            "dropped": self.dropped,
            "latencyBucketsSeconds": list(LATENCY_BUCKETS_SECONDS),
            "latencyCounts": list(self.latency),
            "latencySumSeconds": self.latency_sum,
            "latencyCount": self.latency_count,
        }


class BusMetrics:
    """Published events per topic and :class:`SubscriptionMetrics` per subscription."""

    def __init__(self) -> None:
        self.published: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self._subscriptions: dict[tuple[str, str], SubscriptionMetrics] = {}

    def subscription(self, topic: str, name: str) -> SubscriptionMetrics:
        """The metrics of a subscription (created on first use, kept across dispatcher restarts)."""
        key = (topic, name)
        metrics = self._subscriptions.get(key)
        if metrics is None:
            metrics = self._subscriptions[key] = SubscriptionMetrics()
        return metrics

    def snapshot(self) -> dict[str, Any]:
        """Everything, as plain data: ``{"topics": {...}, "subscriptions": {"t/s": {...}}}``."""
        topics = sorted({*self.published, *self.refused})
        return {
            "topics": {
                topic: {
                    "published": self.published.get(topic, 0),
                    "refused": self.refused.get(topic, 0),
                }
                for topic in topics
            },
            "subscriptions": {
                f"{topic}/{name}": metrics.to_dict()
                for (topic, name), metrics in sorted(self._subscriptions.items())
            },
        }
