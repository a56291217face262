"""Pipelined JetStream publishes: each message goes out with a reply subject of this process's
own, and the server's acknowledgement (a ``PubAck``) settles its place in the batch it was sent in.

This is what nats-py's ``publish_async`` does, with less work per message, which is most of a
publish's cost here: no future per message (a batch waits once, for its last answer), no wait on
a semaphore (a timeout task per message), a counter rather than random bytes for the reply
token, and the acknowledgement decoded by msgspec. One subscription receives every
acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from choreograph.errors import BackendError

__all__ = ["Outcome", "PubAck", "Publisher"]

_STATUS: Final = "Status"
_NO_RESPONDERS: Final = "503"


class PubAck(msgspec.Struct, frozen=True):
    """JetStream's acknowledgement of a stored message."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False


class _Reply(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict[str, Any] | None = None


_decode_reply = msgspec.json.Decoder(_Reply).decode

Outcome = PubAck | BaseException
"""What became of one published message: its acknowledgement, or why it is not stored."""


class _Batch:
    """The messages of one :meth:`Publisher.publish_all`: an outcome per message, and a future
    set when the last one arrives."""

    __slots__ = ("done", "outcomes", "remaining")

    def __init__(self, size: int, done: asyncio.Future[None]) -> None:
        self.outcomes: list[Outcome | None] = [None] * size
        self.remaining = size
        self.done = done

    def settle(self, index: int, outcome: Outcome) -> None:
        if self.outcomes[index] is not None:
            return
        self.outcomes[index] = outcome
        self.remaining -= 1
        if not self.remaining and not self.done.done():
            self.done.set_result(None)


def _refusal(error: dict[str, Any]) -> BaseException:
    """The exception nats-py raises for JetStream's ``error`` answer (``from_error`` raises)."""
    try:
        nats.js.errors.APIError.from_error(error)
    except nats.js.errors.APIError as refusal:
        return refusal
    except (KeyError, TypeError):
        pass
    return BackendError(f"NATS: JetStream refused the message: {error!r}")


class Publisher:
    """Publishes batches to JetStream on ``nc`` and collects their acknowledgements."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox()
        self._skip = len(self._prefix) + 1
        self._tokens = itertools.count()
        self._waiting: dict[str, tuple[_Batch, int]] = {}
        self._subscription: Subscription | None = None

    @property
    def unanswered(self) -> int:
        """Messages sent whose answer is still awaited."""
        return len(self._waiting)

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(f"{self._prefix}.*", cb=self._answered)

    async def stop(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.unsubscribe()
        waiting, self._waiting = self._waiting, {}
        for batch, index in waiting.values():
            batch.settle(index, BackendError("NATS: the connection closed before the answer"))

    async def publish_all(
        self,
        messages: Sequence[tuple[str, bytes, dict[str, str] | None]],
        *,
        refused: Mapping[int, BaseException],
        answer_seconds: float,
    ) -> list[Outcome]:
        """Send ``(subject, payload, headers)`` messages, all before waiting for any answer, then
        wait up to ``answer_seconds`` for the answers; one outcome per message. ``refused``
        holds the messages (by index) not to send, with the error that stands for them; an
        answer that did not come in time counts as a ``TimeoutError``."""
        batch = _Batch(len(messages), asyncio.get_running_loop().create_future())
        for index, error in refused.items():
            batch.settle(index, error)
        waiting = self._waiting
        publish = self._nc.publish
        prefix = self._prefix
        tokens: list[str] = []
        try:
            for index, (subject, payload, headers) in enumerate(messages):
                if index in refused:
                    continue
                token = str(next(self._tokens))
                waiting[token] = (batch, index)
                tokens.append(token)
                try:
                    await publish(subject, payload, reply=f"{prefix}.{token}", headers=headers)
                except nats.errors.Error as exc:
                    batch.settle(index, exc)
            if batch.remaining:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(answer_seconds):
                        await batch.done
        finally:
            for token in tokens:  # answered, or given up on
                waiting.pop(token, None)
        return [
            TimeoutError("no answer from the NATS server") if outcome is None else outcome
            for outcome in batch.outcomes
        ]

    async def _answered(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject[self._skip :], None)
        if entry is None:
            return  # given up on meanwhile
        batch, index = entry
        if msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS:
            batch.settle(index, nats.js.errors.NoStreamResponseError())
            return
        try:
            reply = _decode_reply(msg.data)
        except msgspec.DecodeError as exc:
            batch.settle(index, BackendError(f"NATS: an unreadable acknowledgement: {exc}"))
            return
        if reply.error is not None:
            batch.settle(index, _refusal(reply.error))
        else:
            batch.settle(index, PubAck(reply.stream, reply.seq, reply.duplicate))
