"""Forgetting old inbox entries while a service runs: a round when it starts (a failure stops the
start), then one every interval on the service's clock, a failed one logged and the next one
run, the task gone when the block ends."""

from __future__ import annotations

import logging

import pytest

from choreograph.errors import BackendError
from choreograph.sdk import MemoryServiceStore
from choreograph.sdk.retention import forgetting_old_entries
from choreograph.sdk.store import INBOX_RETENTION_SECONDS
from choreograph.testing.clock import FakeClock
from polling import until


class FlakyStore(MemoryServiceStore):
    """Records each ``forget_before``; the ``failing``-th one fails."""

    def __init__(self, failing: int) -> None:
        super().__init__()
        self.failing = failing
        self.cutoffs: list[float] = []

    async def forget_before(self, processed_before: float) -> int:
        self.cutoffs.append(processed_before)
        if len(self.cutoffs) == self.failing:
            raise BackendError("disk full")
        return await super().forget_before(processed_before)


async def test_a_start_whose_first_round_fails_fails(clock: FakeClock) -> None:
    store = FlakyStore(failing=1)
    with pytest.raises(BackendError, match="disk full"):
        async with forgetting_old_entries(store, clock, "shipping", every=60.0):
            pytest.fail("the block ran although the first round failed")
    assert store.cutoffs == [clock.now() - INBOX_RETENTION_SECONDS]


async def test_each_round_forgets_past_the_retention_and_a_failed_one_does_not_stop_them(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(failing=2)  # the first periodic round
    start = clock.now()
    with caplog.at_level(logging.ERROR, logger="choreograph.sdk.retention"):
        async with forgetting_old_entries(store, clock, "shipping", every=60.0):
            assert store.cutoffs == [start - INBOX_RETENTION_SECONDS]  # the round at the start
            for rounds in (2, 3):
                await until(lambda: clock.next_deadline() is not None, "the next round's timer")
                clock.advance(60.0)
                await until(lambda rounds=rounds: len(store.cutoffs) == rounds, "a round", 10.0)
    assert store.cutoffs[1:] == [
        start + 60.0 - INBOX_RETENTION_SECONDS,
        start + 120.0 - INBOX_RETENTION_SECONDS,
    ]
    assert "forgetting old inbox entries of shipping failed" in caplog.text
    assert "disk full" in caplog.text
    assert clock.next_deadline() is None  # no round waits: the task stopped with the block
    clock.advance(600.0)
    assert len(store.cutoffs) == 3
