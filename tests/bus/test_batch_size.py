"""Batches stop at ``preferredBatchSizeInKilobytes`` as well as at ``maxEventsPerBatch``."""

from __future__ import annotations

import pytest

from choreograph import Bus, CloudEvent, InProcessDestination, SubscriptionSpec
from choreograph.testing import FakeClock


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
async def test_a_batch_holds_what_fits_in_the_preferred_size_and_at_least_one_event(
    url: str, tmp_path: object
) -> None:
    bus_url = url if url == "memory://" else "sqlite:///" + str(tmp_path) + "/bus.db"
    async with Bus(bus_url, clock=FakeClock()) as bus:
        await bus.put_topic("sized")
        await bus.put_subscription(
            "sized",
            "batches",
            SubscriptionSpec(
                destination=InProcessDestination(
                    max_events_per_batch=10, preferred_batch_size_in_kilobytes=2
                )
            ),
        )
        # ~770-byte events: two fit in 2 KB, a third does not; a 3 KB event goes alone.
        events = [CloudEvent(type="T", source="/s", data="x" * 700) for _ in range(5)]
        events.append(CloudEvent(type="T", source="/s", data="y" * 3000))
        await bus.publish("sized", events)
        sizes: list[int] = []

        async def handler(batch: list[CloudEvent]) -> None:
            sizes.append(len(batch))

        await bus.attach("sized", "batches", handler)
        await bus.idle()

    assert sum(sizes) == 6
    assert max(sizes) == 2
    assert 1 in sizes
