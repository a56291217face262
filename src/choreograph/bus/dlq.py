"""Dead-letter administration: list, read, redrive and purge a subscription's dead letters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from choreograph.bus.catalog import Catalog
from choreograph.bus.deadletter import DeadLetter
from choreograph.errors import DeadLetterNotFoundError, InvalidDeadLetterQueryError

if TYPE_CHECKING:
    from choreograph.bus.dispatcher import SubscriptionDispatcher

__all__ = ["DeadLetterAdmin"]


class DeadLetterAdmin(Catalog):
    """The dead-letter queue operations of the bus."""

    _dispatchers: dict[tuple[str, str], SubscriptionDispatcher]

    async def dead_letters(
        self, topic: str, subscription: str, *, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        """The subscription's dead-letter records, oldest first, ``limit`` at a time."""
        self.get_subscription_record(topic, subscription)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InvalidDeadLetterQueryError(
                f"`limit` must be an integer from 1 to 10000, got {limit!r}"
            )
        return await self.backend.list_dead_letters(topic, subscription, limit=limit, after=after)

    async def get_dead_letter(self, topic: str, subscription: str, record_id: str) -> DeadLetter:
        self.get_subscription_record(topic, subscription)
        record = await self.backend.get_dead_letter(topic, subscription, record_id)
        if record is None:
            raise DeadLetterNotFoundError(
                f"subscription {topic}/{subscription} has no dead letter {record_id!r}"
            )
        return record

    async def _select_dead_letters(
        self,
        topic: str,
        subscription: str,
        ids: Sequence[str] | None,
        where: Callable[[DeadLetter], bool] | None,
    ) -> list[str] | None:
        self.get_subscription_record(topic, subscription)
        if ids is not None:
            if isinstance(ids, str) or not all(isinstance(i, str) for i in ids):
                raise InvalidDeadLetterQueryError("`ids` must be a list of dead-letter record ids")
            if where is not None:
                raise InvalidDeadLetterQueryError("give either `ids` or `where`, not both")
            return list(ids)
        if where is None:
            return None
        selected: list[str] = []
        after: str | None = None
        while page := await self.backend.list_dead_letters(
            topic, subscription, limit=1000, after=after
        ):
            selected.extend(record.id for record in page if where(record))
            after = page[-1].id
        return selected

    async def redrive(
        self,
        topic: str,
        subscription: str,
        ids: Sequence[str] | None = None,
        *,
        where: Callable[[DeadLetter], bool] | None = None,
    ) -> int:
        """Send dead letters back to their subscription with a fresh retry budget: the records
        named by ``ids``, those ``where`` accepts, or all. Returns how many were redriven."""
        selected = await self._select_dead_letters(topic, subscription, ids, where)
        moved = await self.backend.redrive(topic, subscription, selected, now=self._now())
        dispatcher = self._dispatchers.get((topic, subscription))
        if moved and dispatcher is not None:
            dispatcher.notify_backlog()
        return moved

    async def purge_dead_letters(
        self,
        topic: str,
        subscription: str,
        ids: Sequence[str] | None = None,
        *,
        where: Callable[[DeadLetter], bool] | None = None,
    ) -> int:
        """Delete dead letters (by ``ids``, by ``where``, or all). Returns how many."""
        selected = await self._select_dead_letters(topic, subscription, ids, where)
        return await self.backend.purge(topic, subscription, selected)

    async def counters(self, topic: str, subscription: str) -> dict[str, int]:
        """``queued``, ``deadLettered`` and ``dropped`` counts of one subscription."""
        self.get_subscription_record(topic, subscription)
        return await self.backend.counters(topic, subscription)
