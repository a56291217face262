"""Driving the system with delivery requests and accounting for every one of them.

Used by ``choreograph demo`` and ``bench/drone_delivery.py``: it posts N requests through the
Ingestion API, waits until each transaction settles (Scheduled, Failed or Cancelled), and
reports how they ended. End-to-end latency is measured on the server's own clock, from the
request's ``requestedAt`` to the event that settled it. A delivery still unsettled when the wait
ends is **lost**: the one number that must be zero.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

import httpx

from drone_delivery.events import DRONE_DELIVERY_TIMED_OUT, SETTLED_STATUSES

__all__ = ["DriveReport", "HttpStatus", "StatusSource", "delivery_request", "drive", "percentile"]

_SIZES = (("small", 1.0, 4.5), ("medium", 4.5, 9.5), ("large", 9.5, 24.0))
T = TypeVar("T")


async def _each(items: Sequence[T], concurrency: int, work: Callable[[T], Awaitable[None]]) -> None:
    """``work(item)`` for every item, ``concurrency`` at a time, by that many tasks taking the
    next item until none is left: not one task per item (a run of 100,000 would hold 100,000)."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(items))))))


def delivery_request(delivery_id: str, rng: random.Random) -> dict[str, Any]:
    """A valid request body with a random package."""
    size, low, high = rng.choice(_SIZES)
    return {
        "deliveryId": delivery_id,
        "ownerId": f"owner-{rng.randrange(1000)}",
        "pickupLocation": f"{47 + rng.random():.4f},{-122 - rng.random():.4f}",
        "dropoffLocation": f"{47 + rng.random():.4f},{-122 - rng.random():.4f}",
        "expedited": rng.random() < 0.2,
        "packageInfo": {
            "packageId": f"package-{delivery_id}",
            "size": size,
            "weight": round(rng.uniform(low, high), 2),
        },
    }


class StatusSource(Protocol):
    """Where the driver reads a delivery's record (the body of ``GET /deliveries/{id}``)."""

    async def records(self, delivery_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...


class HttpStatus:
    """Reads records over the Ingestion API, ``concurrency`` requests at a time."""

    def __init__(self, client: httpx.AsyncClient, concurrency: int = 32) -> None:
        self.client = client
        self.concurrency = concurrency

    async def records(self, delivery_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}

        async def read(delivery_id: str) -> None:
            response = await self.client.get(f"/deliveries/{delivery_id}")
            if response.status_code == 200:
                found[delivery_id] = response.json()

        await _each(delivery_ids, self.concurrency, read)
        return found


@dataclass
class DriveReport:
    """How the transactions of one run ended."""

    requested: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """Requests the API did not accept (by HTTP status)."""
    completed: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    """Settled as Failed, by the failure event that settled them (timed-out ones included)."""
    cancelled: int = 0
    lost: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def timed_out(self) -> int:
        return self.failed.get(DRONE_DELIVERY_TIMED_OUT, 0)

    @property
    def compensated(self) -> int:
        """Transactions that failed or were cancelled: every one of them is compensated."""
        return sum(self.failed.values()) + self.cancelled

    def to_dict(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        return {
            "requested": self.requested,
            "refused": dict(self.refused),
            "completed": self.completed,
            "compensated": self.compensated,
            "failed": dict(self.failed),
            "timedOut": self.timed_out,
            "cancelled": self.cancelled,
            "lost": len(self.lost),
            "seconds": round(self.seconds, 3),
            "p50_ms": percentile(ordered, 0.50),
            "p95_ms": percentile(ordered, 0.95),
            "p99_ms": percentile(ordered, 0.99),
        }


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of sorted values (None when there are none)."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return round(ordered[rank], 3)


def _settled_entry(record: dict[str, Any]) -> dict[str, Any] | None:
    """The history entry of the event that first gave the record its status."""
    history = record.get("history", [])
    return next((entry for entry in history if entry.get("status") == record["status"]), None)


def _settling_event(record: dict[str, Any]) -> str | None:
    entry = _settled_entry(record)
    return None if entry is None else entry.get("type")


def _latency_ms(record: dict[str, Any]) -> float | None:
    settled = _settled_entry(record)
    if settled is None or not record.get("requestedAt"):
        return None
    start = datetime.fromisoformat(record["requestedAt"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(settled["time"].replace("Z", "+00:00"))
    return (end - start).total_seconds() * 1000.0


async def drive(
    client: httpx.AsyncClient,
    *,
    deliveries: int,
    concurrency: int = 32,
    settle_seconds: float = 120.0,
    poll_seconds: float = 0.2,
    status: StatusSource | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    rng: random.Random | None = None,
) -> DriveReport:
    """Post ``deliveries`` requests, ``concurrency`` at a time, then wait up to
    ``settle_seconds`` for each to settle. ``progress(phase, done, total)`` is told as it goes."""
    rng = rng or random.Random()
    source = status or HttpStatus(client, concurrency)
    run = uuid.uuid4().hex[:8]
    report = DriveReport(requested=deliveries)
    accepted: list[str] = []
    started = time.monotonic()

    async def post(number: int) -> None:
        body = delivery_request(f"demo-{run}-{number:06d}", rng)
        response = await client.post("/deliveries", json=body)
        if response.status_code == 202:
            accepted.append(body["deliveryId"])
        else:
            report.refused[str(response.status_code)] += 1
        if progress is not None:
            progress("requested", len(accepted) + sum(report.refused.values()), deliveries)

    await _each(range(deliveries), concurrency, post)
    pending = set(accepted)
    deadline = time.monotonic() + settle_seconds
    while pending:
        records = await source.records(sorted(pending))
        for delivery_id, record in records.items():
            if record.get("status") not in SETTLED_STATUSES:
                continue
            pending.discard(delivery_id)
            _count(report, record)
        if progress is not None:
            progress("settled", len(accepted) - len(pending), len(accepted))
        if not pending or time.monotonic() >= deadline:
            break
        await asyncio.sleep(poll_seconds)
    report.lost = sorted(pending)
    report.seconds = time.monotonic() - started
    return report


def _count(report: DriveReport, record: dict[str, Any]) -> None:
    state = record["status"]
    if state == "Scheduled":
        report.completed += 1
    elif state == "Cancelled":
        report.cancelled += 1
    else:
        report.failed[_settling_event(record) or "unknown"] += 1
    latency = _latency_ms(record)
    if latency is not None:
        report.latencies_ms.append(latency)
