"""Pipelined JetStream publishes: each message goes out with a reply subject of this process's
own, and the server's acknowledgement (a ``PubAck``) resolves its future.

This is what nats-py's ``publish_async`` does, with less work per message, which is most of a
publish's cost here: no wait on a semaphore (a timeout task per message), a counter rather than
random bytes for the reply token, and the acknowledgement decoded by msgspec. One subscription
receives every acknowledgement. A future the server never answers is cancelled by whoever waits
on it (the engine waits :data:`~choreograph.backends.nats.engine.REPLY_SECONDS`).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Final

import msgspec
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from choreograph.errors import BackendError

__all__ = ["PubAck", "Publisher"]

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
    """Publishes to JetStream on ``nc`` and hands out a future of each acknowledgement."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox()
        self._skip = len(self._prefix) + 1
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[PubAck]] = {}
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(f"{self._prefix}.*", cb=self._answered)

    async def stop(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.unsubscribe()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(BackendError("NATS: the connection closed before the answer"))
        self._waiting.clear()

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None
    ) -> asyncio.Future[PubAck]:
        """Send one message; the future gets its acknowledgement or the server's refusal."""
        token = str(next(self._tokens))
        future: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        waiting = self._waiting
        waiting[token] = future
        future.add_done_callback(lambda _: waiting.pop(token, None))  # answered or given up
        try:
            await self._nc.publish(
                subject, payload, reply=f"{self._prefix}.{token}", headers=headers
            )
        except BaseException:
            future.cancel()
            raise
        return future

    async def _answered(self, msg: Msg) -> None:
        future = self._waiting.get(msg.subject[self._skip :])
        if future is None or future.done():
            return  # given up on meanwhile
        if msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS:
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            reply = _decode_reply(msg.data)
        except msgspec.DecodeError as exc:
            future.set_exception(BackendError(f"NATS: an unreadable acknowledgement: {exc}"))
            return
        if reply.error is not None:
            future.set_exception(_refusal(reply.error))
        else:
            future.set_result(PubAck(reply.stream, reply.seq, reply.duplicate))
