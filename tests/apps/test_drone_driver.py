"""The demo driver (``drone_delivery.driver``): at most ``concurrency`` requests in flight, each
delivery posted once, refusals counted, every accepted delivery read until it settles.

The Ingestion API is stood in for at the edge: a client that answers once the test has seen
how many requests are in flight."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from drone_delivery.driver import drive

REQUESTED_AT = "2026-11-28T10:00:00.000Z"
SCHEDULED_AT = "2026-11-28T10:00:00.250Z"


class _Answer:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class IngestionStandIn:
    """Answers ``POST /deliveries``: 202, or 503 for every ``refuse_every``-th request; each
    request stays in flight until ``concurrency`` of them are (or no more can come)."""

    def __init__(self, concurrency: int, total: int, refuse_every: int = 0) -> None:
        self.concurrency = concurrency
        self.total = total
        self.refuse_every = refuse_every
        self.in_flight = 0
        self.most_in_flight = 0
        self.posted: Counter[str] = Counter()
        self._full = asyncio.Event()

    async def post(self, url: str, *, json: dict[str, Any]) -> _Answer:
        assert url == "/deliveries"
        self.posted[json["deliveryId"]] += 1
        number = len(self.posted)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight == self.concurrency or number == self.total:
            self._full.set()
        await self._full.wait()
        self.in_flight -= 1
        if self.in_flight == 0:
            self._full.clear()
        refused = self.refuse_every and number % self.refuse_every == 0
        return _Answer(503 if refused else 202)

    async def records(self, delivery_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {
            delivery_id: {
                "deliveryId": delivery_id,
                "status": "Scheduled",
                "requestedAt": REQUESTED_AT,
                "history": [
                    {"type": "DeliveryRequested", "status": "Requested", "time": REQUESTED_AT},
                    {"type": "DeliveryScheduled", "status": "Scheduled", "time": SCHEDULED_AT},
                ],
            }
            for delivery_id in delivery_ids
        }


@pytest.mark.parametrize(("deliveries", "concurrency"), [(50, 8), (3, 8), (1, 1)])
async def test_the_driver_keeps_at_most_concurrency_requests_in_flight(
    deliveries: int, concurrency: int
) -> None:
    api = IngestionStandIn(concurrency, deliveries)

    report = await drive(
        api,  # type: ignore[arg-type]
        deliveries=deliveries,
        concurrency=concurrency,
        status=api,
        poll_seconds=0.0,
        rng=random.Random(7),
    )

    assert api.most_in_flight == min(concurrency, deliveries)
    assert len(api.posted) == deliveries
    assert set(api.posted.values()) == {1}
    assert report.completed == deliveries
    assert report.lost == []
    assert report.latencies_ms == [250.0] * deliveries


async def test_refused_requests_are_counted_and_not_waited_for() -> None:
    api = IngestionStandIn(concurrency=4, total=20, refuse_every=5)

    report = await drive(
        api,  # type: ignore[arg-type]
        deliveries=20,
        concurrency=4,
        status=api,
        poll_seconds=0.0,
        rng=random.Random(7),
    )

    assert report.refused == Counter({"503": 4})
    assert report.completed == 16
    assert report.lost == []
