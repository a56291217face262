"""Prometheus metrics of the gateway and the bus behind it, in the text exposition format 0.0.4.

Written by hand: a dozen families do not justify a dependency, and the format is small.

Counted by the gateway (requests it answered, whoever the topic's other publishers are):

    choreograph_publish_requests_total{topic,code}        publish requests, by HTTP status

Read at each scrape from the bus's own counters (``Bus.metrics``, since the bus opened):

    choreograph_published_events_total{topic}             events accepted by publish (any publisher)
    choreograph_refused_publishes_total{topic}            publishes refused as invalid
    choreograph_delivered_events_total{topic,subscription}
    choreograph_delivery_retries_total{topic,subscription}   failed attempts rescheduled, per event
    choreograph_dead_lettered_events_total{topic,subscription}
    choreograph_dropped_events_total{topic,subscription}     undeliverable, no dead-letter store
    choreograph_delivery_latency_seconds{topic,subscription} histogram, publish to delivered

and from its store (``Bus.counters``):

    choreograph_subscription_queued_events{topic,subscription}   waiting or in flight
    choreograph_subscription_dead_letters{topic,subscription}    records in the dead-letter queue
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

from choreograph.bus.bus import Bus
from choreograph.errors import NotFoundError

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{name}="{_label(value)}"' for name, value in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Exposition:
    """Lines of the text format, one family at a time."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


_SUBSCRIPTION_COUNTERS: Final = (
    ("choreograph_delivered_events_total", "delivered", "Events delivered to a subscription."),
    (
        "choreograph_delivery_retries_total",
        "retried",
        "Failed delivery attempts rescheduled, counted per event.",
    ),
    ("choreograph_dead_lettered_events_total", "deadLettered", "Events dead-lettered."),
    (
        "choreograph_dropped_events_total",
        "dropped",
        "Undeliverable events dropped (the subscription has no dead-letter store).",
    ),
)


class GatewayMetrics:
    """The gateway's own counters, and the exposition of everything."""

    def __init__(self) -> None:
        self.publish_requests: Counter[tuple[str, int]] = Counter()

    def published(self, topic: str) -> None:
        """A publish to ``topic`` answered 200."""
        self.publish_requests[(topic, 200)] += 1

    def publish_refused(self, topic: str, status: int) -> None:
        """A refused publish to an existing topic (unknown topics are not counted: their names
        come from the caller and would make unbounded label values)."""
        self.publish_requests[(topic, status)] += 1

    async def render(self, bus: Bus) -> str:
        """The exposition text: the gateway's counters, the bus's and its store's."""
        out = _Exposition()
        out.family(
            "choreograph_publish_requests_total",
            "counter",
            "Publish requests to existing topics, by HTTP status answered.",
        )
        for (topic, status), count in sorted(self.publish_requests.items()):
            out.sample("choreograph_publish_requests_total", count, topic=topic, code=str(status))
        snapshot = bus.metrics.snapshot()
        topics: dict[str, dict[str, int]] = snapshot["topics"]
        for name, key, help_text in (
            ("choreograph_published_events_total", "published", "Events accepted by publish."),
            ("choreograph_refused_publishes_total", "refused", "Publishes refused as invalid."),
        ):
            out.family(name, "counter", help_text)
            for topic, values in topics.items():
                out.sample(name, values[key], topic=topic)
        subscriptions = [
            (*key.split("/", 1), values) for key, values in snapshot["subscriptions"].items()
        ]
        for name, key, help_text in _SUBSCRIPTION_COUNTERS:
            out.family(name, "counter", help_text)
            for topic, sub, values in subscriptions:
                out.sample(name, values[key], topic=topic, subscription=sub)
        out.family(
            "choreograph_delivery_latency_seconds",
            "histogram",
            "Time from publish to successful delivery.",
        )
        for topic, sub, values in subscriptions:
            _histogram(out, topic, sub, values)
        await _store_counts(out, bus)
        return out.text()


def _histogram(out: _Exposition, topic: str, sub: str, values: dict[str, Any]) -> None:
    name = "choreograph_delivery_latency_seconds"
    cumulative = 0
    for bound, count in zip(values["latencyBucketsSeconds"], values["latencyCounts"], strict=False):
        cumulative += count
        out.sample(f"{name}_bucket", cumulative, topic=topic, subscription=sub, le=_number(bound))
    out.sample(f"{name}_bucket", values["latencyCount"], topic=topic, subscription=sub, le="+Inf")
    out.sample(f"{name}_sum", values["latencySumSeconds"], topic=topic, subscription=sub)
    out.sample(f"{name}_count", values["latencyCount"], topic=topic, subscription=sub)


async def _store_counts(out: _Exposition, bus: Bus) -> None:
    counts: list[tuple[str, str, dict[str, int]]] = []
    for topic_record in await bus.list_topics():
        name = topic_record.name
        try:
            for record in await bus.list_subscriptions(name):
                counts.append((name, record.name, await bus.counters(name, record.name)))
        except NotFoundError:  # deleted while we were reading
            continue
    for family, key, help_text in (
        (
            "choreograph_subscription_queued_events",
            "queued",
            "Events waiting for delivery or in flight.",
        ),
        (
            "choreograph_subscription_dead_letters",
            "deadLettered",
            "Records in the dead-letter queue.",
        ),
    ):
        out.family(family, "gauge", help_text)
        for topic, sub, values in counts:
            out.sample(family, values.get(key, 0), topic=topic, subscription=sub)
