"""Forgetting old inbox entries while a service runs: a round every interval on the service's
clock, a failed round logged and the next one run, the task gone when the block ends."""

from __future__ import annotations

import asyncio
import logging

import pytest

from choreograph.errors import BackendError
from choreograph.sdk import MemoryServiceStore
from choreograph.sdk.retention import forgetting_old_entries
from choreograph.sdk.store import INBOX_RETENTION_SECONDS
from choreograph.testing.clock import FakeClock
from polling import until


class FlakyStore(MemoryServiceStore):
    """Records each ``forget_before``; the first one fails."""

    def __init__(self) -> None:
        super().__init__()
        self.cutoffs: list[float] = []

    async def forget_before(self, processed_before: float) -> int:
        self.cutoffs.append(processed_before)
        if len(self.cutoffs) == 1:
            raise BackendError("disk full")
        return await super().forget_before(processed_before)


async def test_each_round_forgets_past_the_retention_and_a_failed_one_does_not_stop_them(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore()
    start = clock.now()
    with caplog.at_level(logging.ERROR, logger="choreograph.sdk.retention"):
        async with forgetting_old_entries(store, clock, "shipping", every=60.0):
            for rounds in (1, 2):
                await asyncio.sleep(0)  # the task reaches its wait
                clock.advance(60.0)
                await until(lambda rounds=rounds: len(store.cutoffs) == rounds, "a round", 10.0)
    assert store.cutoffs == [
        start + 60.0 - INBOX_RETENTION_SECONDS,
        start + 120.0 - INBOX_RETENTION_SECONDS,
    ]
    assert "forgetting old inbox entries of shipping failed" in caplog.text
    assert "disk full" in caplog.text
    clock.advance(600.0)
    await asyncio.sleep(0)
    assert len(store.cutoffs) == 2  # stopped with the block
