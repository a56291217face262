"""One pull consumer seen from this process: requests for messages and the messages that arrived.

JetStream hands out a pull consumer's messages in answer to requests naming an inbox. A
:class:`Puller` owns that inbox and at most one open request at a time: :meth:`fetch` asks for
what is there now and waits for the answer; :meth:`linger` leaves a request open on the engine
for a while, so messages published by any process arrive as soon as they are stored. Messages
land in :attr:`Puller.messages` whether or not anyone still waits for them, so giving up on a
wait (the dispatcher was woken for something else) never loses a delivered message.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["Puller"]

ANSWER_SECONDS: Final = 5.0
"""How long an answer to a request may take before the request counts as lost."""
_HEARTBEAT: Final = "100"


class Puller:
    """The inbox of one pull consumer and its open request."""

    def __init__(self, nc: Client, stream: str, consumer: str, *, api_prefix: str) -> None:
        self._nc = nc
        self._next = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.messages: deque[Msg] = deque()
        self.wake: asyncio.Event | None = None
        """Set when a message or the end of a request arrives (a dispatcher waits on it)."""
        self._subscription: Subscription | None = None
        self._inbox = ""
        self._expected = 0
        self._open_until = 0.0  # monotonic time the open request ends by; 0 when none is open
        self._answered = asyncio.Event()

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._subscription = await self._nc.subscribe(self._inbox, cb=self._receive)

    async def stop(self) -> None:
        """Stop receiving. Messages the engine sent before it knew end up in :attr:`messages`.
        A request still open is normally skipped from then on, as nobody listens to its inbox,
        but not always at once (nats-server 2.9): a message stored right after the stop may
        still go to it and wait out its AckWait, so the backend gives deliveries back through
        the ``wait`` subject, which is never asked with a lingering request."""
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            self._open_until = 0.0
            await subscription.drain()  # type: ignore[no-untyped-call]

    @property
    def request_open(self) -> bool:
        return self._open_until > time.monotonic()

    async def fetch(self, batch: int) -> None:
        """Ask for up to ``batch`` messages that are there now and wait until they arrived.

        With a request already open the engine sends new messages to it anyway: nothing to ask.
        """
        if self.request_open:
            return
        await self._request(batch, expires_seconds=None)
        try:
            async with asyncio.timeout(ANSWER_SECONDS):
                await self._answered.wait()
        except TimeoutError:
            self._open_until = 0.0  # lost (a reconnect): the next call asks again

    async def linger(self, batch: int, seconds: float) -> None:
        """Leave a request for up to ``batch`` messages open on the engine for ``seconds``."""
        if not self.request_open:
            await self._request(batch, expires_seconds=seconds)

    async def _request(self, batch: int, *, expires_seconds: float | None) -> None:
        body: dict[str, object] = {"batch": batch}
        if expires_seconds is None:
            body["no_wait"] = True
            lasts = ANSWER_SECONDS
        else:
            body["expires"] = int(expires_seconds * 1e9)
            lasts = expires_seconds + ANSWER_SECONDS
        self._expected = batch
        self._answered.clear()
        self._open_until = time.monotonic() + lasts
        await self._nc.publish(self._next, json.dumps(body).encode(), reply=self._inbox)

    async def _receive(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers and not msg.data else None
        if status is None:
            self.messages.append(msg)
            self._expected -= 1
            if self._expected <= 0:
                self._end_request()
        elif status != _HEARTBEAT:
            # 404 no messages, 408 request expired, 409 limits or a deleted consumer: the
            # request is over.
            self._end_request()
        if self.wake is not None:
            self.wake.set()

    def _end_request(self) -> None:
        self._open_until = 0.0
        self._answered.set()

    def take(self, limit: int) -> list[Msg]:
        """Up to ``limit`` of the messages that arrived, oldest first."""
        messages = self.messages
        return [messages.popleft() for _ in range(min(limit, len(messages)))]
