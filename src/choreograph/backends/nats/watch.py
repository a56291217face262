"""Following the catalog: what other processes create, change and delete reaches this one.

An ordered consumer (ephemeral, in stream order, recreated by nats-py from the last sequence it
delivered when it misses heartbeats or sees a gap) reads the catalog bucket from just after
where this process loaded it. Each value whose sequence is newer than the one this process
knows for its key (see :class:`~choreograph.backends.nats.catalog.CatalogStore`) is reported;
this process's own writes and values it loaded are not. The check, the remembered sequence and
the report's first (synchronous) part happen in one step of the event loop, so a local write
and a reported change of the same key can never apply out of order.

A change reaches the other processes within a round trip or so: an event published by a process
that has not yet seen a new subscription is not routed to it (Event Grid gives no tighter
promise for a subscription just created).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from choreograph.backends.base import CatalogChange
from choreograph.backends.nats.bucket import KV_OPERATION
from choreograph.backends.nats.catalog import CatalogStore
from choreograph.backends.nats.engine import Engine, engine_errors
from choreograph.errors import BackendError, BusClosedError

__all__ = ["CatalogWatch"]

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS: Final = 5.0
"""The ordered consumer's idle heartbeat: two missed ones make nats-py recreate it."""


class CatalogWatch:
    """Reports the catalog changes other processes make to ``changed``, in order."""

    def __init__(
        self,
        engine: Engine,
        catalog: CatalogStore,
        changed: Callable[[CatalogChange], Awaitable[None]],
    ) -> None:
        self._engine = engine
        self._catalog = catalog
        self._changed = changed
        self._subscription: JetStreamContext.PushSubscription | None = None

    async def open(self) -> None:
        """Create the consumer, starting after the catalog as loaded."""
        bucket = self._catalog.bucket
        with engine_errors("following the catalog"):
            self._subscription = await self._engine.js.subscribe(
                f"{bucket.prefix}>",
                stream=bucket.stream,
                ordered_consumer=True,
                idle_heartbeat=HEARTBEAT_SECONDS,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                config=api.ConsumerConfig(opt_start_seq=self._catalog.loaded_through + 1),
            )

    async def run(self) -> None:
        """Report each change until cancelled, then drop the consumer."""
        subscription = self._subscription
        if subscription is None:
            raise BackendError("the catalog watch is not open")
        try:
            async for msg in subscription.messages:
                await self._apply(msg)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _apply(self, msg: Msg) -> None:
        catalog = self._catalog
        key = msg.subject.removeprefix(catalog.bucket.prefix)
        try:
            sequence = msg.metadata.sequence.stream
            operation = (msg.headers or {}).get(KV_OPERATION)
            value = None if operation in ("DEL", "PURGE") or not msg.data else msg.data
            change = catalog.change_of(key, value)
        except Exception as exc:
            logger.error("NATS: catalog entry %s is unreadable (%r); ignored", key, exc)
            return
        if change is None or not catalog.is_new(key, sequence):
            return
        try:
            await self._changed(change)
        except BusClosedError:
            pass  # the bus is closing: nothing more to follow
        except Exception:
            logger.exception("NATS: applying the catalog change of %s failed", key)
