"""Prometheus metrics of the gateway and the bus behind it, in the text exposition format 0.0.4.

Written by hand: a dozen families do not justify a dependency, and the format is small.

Counted by the gateway itself:

    choreograph_publish_requests_total{topic,code}     publish requests answered, by HTTP status
    choreograph_published_events_total{topic}          events accepted (stored or de-duplicated)

Read from the bus at each scrape (``Bus.counters``):

    choreograph_subscription_queued_events{topic,subscription}        waiting or in flight
    choreograph_subscription_dead_letters{topic,subscription}         records in the dead-letter queue
    choreograph_subscription_dropped_events_total{topic,subscription} undeliverable, no dead-letter store

Fed by the bus through :class:`DeliveryObserver`, once the bus calls one (until then these
families have no samples):

    choreograph_delivered_events_total{topic,subscription}
    choreograph_delivery_retries_total{topic,subscription}
    choreograph_dead_lettered_events_total{topic,subscription,reason}
    choreograph_delivery_latency_seconds{topic,subscription}   histogram, publish → delivered
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Final, Protocol

from choreograph.bus.bus import Bus
from choreograph.errors import NotFoundError

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS_SECONDS", "DeliveryObserver", "GatewayMetrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_SECONDS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
    3600.0,
)


class DeliveryObserver(Protocol):
    """What the bus would call as deliveries happen (synchronously, on the loop; must not block).

    ``attempted`` once per attempt, with the number of events it carried, whether it
    delivered them and, if not, whether they will be retried; ``latency_seconds`` is from
    publish to the successful attempt's answer. ``dead_lettered`` once per event that ends in the
    dead-letter queue (or is dropped, when the subscription has no dead-letter store).
    """

    def attempted(
        self,
        topic: str,
        subscription: str,
        *,
        events: int,
        delivered: bool,
        will_retry: bool,
        latency_seconds: float | None,
    ) -> None: ...

    def dead_lettered(
        self, topic: str, subscription: str, *, reason: str, dropped: bool
    ) -> None: ...


@dataclass(slots=True)
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_SECONDS))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(LATENCY_BUCKETS_SECONDS, value)
        if index < len(self.buckets):
            self.buckets[index] += 1
        self.total += value
        self.count += 1


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{name}="{_label(value)}"' for name, value in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class GatewayMetrics:
    """The gateway's counters; also a :class:`DeliveryObserver` for the bus to feed."""

    def __init__(self) -> None:
        self.publish_requests: Counter[tuple[str, int]] = Counter()
        self.published_events: Counter[str] = Counter()
        self.delivered_events: Counter[tuple[str, str]] = Counter()
        self.delivery_retries: Counter[tuple[str, str]] = Counter()
        self.dead_lettered_events: Counter[tuple[str, str, str]] = Counter()
        self.latency: dict[tuple[str, str], _Histogram] = {}

    # the gateway ---------------------------------------------------------------------------------
    def published(self, topic: str, events: int) -> None:
        self.publish_requests[(topic, 200)] += 1
        self.published_events[topic] += events

    def publish_refused(self, topic: str, status: int) -> None:
        """A refused publish to an existing topic (unknown topics are not counted: their names
        come from the caller and would make unbounded label values)."""
        self.publish_requests[(topic, status)] += 1

    # the bus (DeliveryObserver) ----------------------------------------------------------------
    def attempted(
        self,
        topic: str,
        subscription: str,
        *,
        events: int,
        delivered: bool,
        will_retry: bool,
        latency_seconds: float | None,
    ) -> None:
        key = (topic, subscription)
        if delivered:
            self.delivered_events[key] += events
            if latency_seconds is not None:
                self.latency.setdefault(key, _Histogram()).observe(latency_seconds)
        elif will_retry:
            self.delivery_retries[key] += events

    def dead_lettered(self, topic: str, subscription: str, *, reason: str, dropped: bool) -> None:
        if not dropped:
            self.dead_lettered_events[(topic, subscription, reason)] += 1

    # exposition --------------------------------------------------------------------------------
    async def render(self, bus: Bus) -> str:
        """The exposition text: the gateway's counters and the bus's current counts."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        family(
            "choreograph_publish_requests_total",
            "counter",
            "Publish requests to existing topics, by HTTP status answered.",
        )
        for (topic, status), count in sorted(self.publish_requests.items()):
            labels = _labels(topic=topic, code=str(status))
            lines.append(f"choreograph_publish_requests_total{labels} {count}")
        family(
            "choreograph_published_events_total",
            "counter",
            "Events accepted by the publish endpoint.",
        )
        for topic, count in sorted(self.published_events.items()):
            lines.append(f"choreograph_published_events_total{_labels(topic=topic)} {count}")
        lines.extend(await self._bus_counts(bus))
        family(
            "choreograph_delivered_events_total",
            "counter",
            "Events delivered to a subscription.",
        )
        for (topic, sub), count in sorted(self.delivered_events.items()):
            labels = _labels(topic=topic, subscription=sub)
            lines.append(f"choreograph_delivered_events_total{labels} {count}")
        family(
            "choreograph_delivery_retries_total",
            "counter",
            "Failed delivery attempts that will be retried, counted per event.",
        )
        for (topic, sub), count in sorted(self.delivery_retries.items()):
            labels = _labels(topic=topic, subscription=sub)
            lines.append(f"choreograph_delivery_retries_total{labels} {count}")
        family(
            "choreograph_dead_lettered_events_total",
            "counter",
            "Events dead-lettered, by reason.",
        )
        for (topic, sub, reason), count in sorted(self.dead_lettered_events.items()):
            labels = _labels(topic=topic, subscription=sub, reason=reason)
            lines.append(f"choreograph_dead_lettered_events_total{labels} {count}")
        family(
            "choreograph_delivery_latency_seconds",
            "histogram",
            "Time from publish to successful delivery.",
        )
        for (topic, sub), histogram in sorted(self.latency.items()):
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS_SECONDS, histogram.buckets, strict=True):
                cumulative += count
                labels = _labels(topic=topic, subscription=sub, le=_number(bound))
                lines.append(f"choreograph_delivery_latency_seconds_bucket{labels} {cumulative}")
            labels = _labels(topic=topic, subscription=sub, le="+Inf")
            lines.append(f"choreograph_delivery_latency_seconds_bucket{labels} {histogram.count}")
            labels = _labels(topic=topic, subscription=sub)
            lines.append(
                f"choreograph_delivery_latency_seconds_sum{labels} {_number(histogram.total)}"
            )
            lines.append(f"choreograph_delivery_latency_seconds_count{labels} {histogram.count}")
        return "\n".join(lines) + "\n"

    @staticmethod
    async def _bus_counts(bus: Bus) -> list[str]:
        counts: list[tuple[str, str, dict[str, int]]] = []
        for topic in await bus.list_topics():
            try:
                subscriptions = await bus.list_subscriptions(topic.name)
                for sub in subscriptions:
                    counts.append((topic.name, sub.name, await bus.counters(topic.name, sub.name)))
            except NotFoundError:  # deleted while we were reading
                continue
        lines: list[str] = []
        for name, kind, key, help_text in (
            (
                "choreograph_subscription_queued_events",
                "gauge",
                "queued",
                "Events waiting for delivery or in flight.",
            ),
            (
                "choreograph_subscription_dead_letters",
                "gauge",
                "deadLettered",
                "Records in the dead-letter queue.",
            ),
            (
                "choreograph_subscription_dropped_events_total",
                "counter",
                "dropped",
                "Undeliverable events dropped (the subscription has no dead-letter store).",
            ),
        ):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for topic_name, sub_name, values in counts:
                labels = _labels(topic=topic_name, subscription=sub_name)
                lines.append(f"{name}{labels} {values.get(key, 0)}")
        return lines
