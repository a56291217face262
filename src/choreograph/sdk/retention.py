"""Forgetting old inbox entries while a service runs, not only when it starts.

A service remembers each event it handled for :data:`~choreograph.sdk.store.INBOX_RETENTION_SECONDS`
(far beyond the bus's longest retry). Its store forgets older entries when the service starts and
then every :data:`INBOX_PRUNE_SECONDS`, so that a service running for weeks keeps a week of inbox
on disk and in its store's filter of known keys, not everything it ever handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

from choreograph.clock import Clock, sleep_until
from choreograph.sdk.store import INBOX_RETENTION_SECONDS, ServiceStore

__all__ = ["INBOX_PRUNE_SECONDS", "forgetting_old_entries"]

logger = logging.getLogger(__name__)

INBOX_PRUNE_SECONDS: Final = 3600.0
"""How often a running service forgets the inbox entries past their retention."""


async def _forget_old_entries(store: ServiceStore, clock: Clock) -> int:
    """Forget the inbox entries processed more than the retention ago; return how many."""
    return await store.forget_before(clock.now() - INBOX_RETENTION_SECONDS)


async def _forget_periodically(
    store: ServiceStore, clock: Clock, service: str, every: float
) -> None:
    """Every ``every`` seconds on ``clock``, until cancelled, :func:`_forget_old_entries`. A
    failure is logged; the next round tries again."""
    while True:
        await sleep_until(clock, clock.now() + every)
        try:
            forgotten = await _forget_old_entries(store, clock)
        except Exception:
            logger.exception(
                "forgetting old inbox entries of %s failed; trying again in %.0f s", service, every
            )
        else:
            logger.debug("%s forgot %d inbox entries past their retention", service, forgotten)


@contextlib.asynccontextmanager
async def forgetting_old_entries(
    store: ServiceStore, clock: Clock, service: str, *, every: float = INBOX_PRUNE_SECONDS
) -> AsyncIterator[None]:
    """Forget the old entries now (a failure raises: the service does not start), then every
    ``every`` seconds in a task for the duration of the block."""
    await _forget_old_entries(store, clock)
    task = asyncio.create_task(
        _forget_periodically(store, clock, service, every),
        name=f"forget old inbox entries of {service}",
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
