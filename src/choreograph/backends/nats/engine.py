"""The connection to NATS and the few JetStream operations the backend is built from.

Every call that reaches the server goes through here, and nats-py's exceptions are translated
into :class:`~choreograph.errors.BackendError` (chained) by :func:`engine_errors`. Publishes and
acknowledgements are pipelined: a list of them costs about one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Final, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from choreograph.backends.nats.publisher import Outcome, Publisher
from choreograph.backends.nats.settings import Names, NatsSettings
from choreograph.backends.nats.wire import reply_consumer
from choreograph.errors import BackendError

__all__ = ["Engine", "Outcome", "describe", "engine_errors"]

logger = logging.getLogger(__name__)

CONNECT_SECONDS: Final = 10.0
REPLY_SECONDS: Final = 10.0
"""How long a publish or an acknowledgement may wait for the server's answer."""
_HEADER_ALLOWANCE: Final = 1024
STREAM_CREATE_ATTEMPTS: Final = 4
T = TypeVar("T")


@contextlib.contextmanager
def engine_errors(doing: str) -> Iterator[None]:
    """Translate what nats-py raises while ``doing`` something into BackendError."""
    try:
        yield
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise BackendError(f"NATS: {doing} failed: {describe(exc)}") from exc


def describe(error: BaseException) -> str:
    """One line saying what the server or the client reported."""
    if isinstance(error, nats.js.errors.APIError) and error.description:
        return f"{error.description} (JetStream error {error.err_code})"
    return str(error) or repr(error)


class Engine:
    """A connection with JetStream, named by the bus URL's settings."""

    def __init__(self, settings: NatsSettings) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._publisher: Publisher | None = None

    # connection --------------------------------------------------------------------------------
    async def connect(self) -> None:
        nc = Client()
        try:
            with engine_errors(f"connecting to {', '.join(self.settings.servers)}"):
                async with asyncio.timeout(CONNECT_SECONDS):
                    await nc.connect(
                        servers=list(self.settings.servers),
                        name="choreograph",
                        connect_timeout=2,
                        reconnect_time_wait=1,
                        max_reconnect_attempts=-1,  # a bus outlives a server restart
                        error_cb=self._error,
                        disconnected_cb=self._disconnected,
                        reconnected_cb=self._reconnected,
                    )
                self._js = nc.jetstream(timeout=REPLY_SECONDS)
                await self._js.account_info()  # fails at once when JetStream is not enabled
                self._publisher = Publisher(nc)
                await self._publisher.start()
        except BaseException:
            await nc.close()
            raise
        self._nc = nc

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        publisher, self._publisher = self._publisher, None
        if nc is None:
            return
        if publisher is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await publisher.stop()
        try:
            await nc.flush(timeout=2)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            logger.warning("NATS: could not flush before closing: %r", exc)
        await nc.close()

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise BackendError("the NATS backend is not open")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise BackendError("the NATS backend is not open")
        return self._js

    @staticmethod
    async def _error(error: Exception) -> None:
        logger.warning("NATS: %r", error)

    async def _disconnected(self) -> None:
        if self._nc is not None:  # not closing
            logger.warning("NATS: disconnected; reconnecting")

    async def _reconnected(self) -> None:
        logger.info("NATS: reconnected to %s", self._nc.connected_url if self._nc else None)

    # pipelined publishes and acknowledgements --------------------------------------------------
    async def publish_all(
        self, messages: Sequence[tuple[str, bytes, dict[str, str] | None]]
    ) -> list[Outcome]:
        """Publish ``(subject, payload, headers)`` messages to JetStream, all before waiting for
        any acknowledgement; one outcome per message."""
        publisher = self._publisher
        if publisher is None:
            raise BackendError("the NATS backend is not open")
        max_payload = self.nc.max_payload
        limit = max_payload - _HEADER_ALLOWANCE
        refused: dict[int, BaseException] = {
            index: BackendError(
                f"a message of {len(payload)} bytes exceeds the NATS server's max_payload "
                f"({max_payload} bytes); raise max_payload in the server configuration"
            )
            for index, (_, payload, _) in enumerate(messages)
            if len(payload) > limit
        }
        return await publisher.publish_all(messages, refused=refused, answer_seconds=REPLY_SECONDS)

    async def ack_all(self, messages: Sequence[Msg]) -> list[BaseException | None]:
        """Acknowledge ``messages`` and wait until the server applied them; one error (or None)
        per message.

        A consumer applies acknowledgements in the order they arrive, so only the last one of
        each consumer asks for a confirmation: it confirms the others."""
        if not messages:
            return []
        nc = self.nc
        keys = [reply_consumer(msg) for msg in messages]
        last = {key: index for index, key in enumerate(keys)}  # consumer -> its last message
        confirming = set(last.values())
        errors: dict[int, BaseException] = {}
        for index, msg in enumerate(messages):
            if index not in confirming:
                try:
                    await nc.publish(msg.reply, b"")
                except nats.errors.Error as exc:
                    errors[index] = exc
        consumers = list(last)
        outcomes = await _settled(
            [
                asyncio.ensure_future(
                    nc.request(messages[last[c]].reply, b"", timeout=REPLY_SECONDS)
                )
                for c in consumers
            ]
        )
        failed = {
            consumer: outcome
            for consumer, outcome in zip(consumers, outcomes, strict=True)
            if isinstance(outcome, BaseException)
        }
        return [errors.get(index) or failed.get(key) for index, key in enumerate(keys)]

    # streams -----------------------------------------------------------------------------------
    async def ensure_stream(self, config: api.StreamConfig) -> None:
        """Create the stream, or bring an existing one to ``config``."""
        js = self.js
        try:
            await js.stream_info(config.name or "")
        except nats.js.errors.NotFoundError:
            try:
                await self._add_stream(config)
                return
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != 10058:  # created meanwhile by another process
                    raise
        await js.update_stream(config)

    async def _add_stream(self, config: api.StreamConfig) -> None:
        # nats-server 2.9 can fail to create a stream's directory while the account's last
        # stream is being deleted (the directory goes with it): a retry succeeds.
        for attempt in range(STREAM_CREATE_ATTEMPTS):
            try:
                await self.js.add_stream(config)
                return
            except nats.js.errors.ServerError:
                if attempt + 1 == STREAM_CREATE_ATTEMPTS:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))

    async def stream_names(self) -> list[str]:
        """Every stream of the account."""
        names: list[str] = []
        while True:
            reply = await self.nc.request(
                f"{api.DEFAULT_PREFIX}.STREAM.NAMES",
                json.dumps({"offset": len(names)}).encode(),
                timeout=REPLY_SECONDS,
            )
            body = json.loads(reply.data)
            if "error" in body:
                raise nats.js.errors.APIError.from_error(body["error"])
            page = body.get("streams") or []
            names.extend(page)
            if not page or len(names) >= body.get("total", 0):
                return names

    async def delete_stream(self, name: str) -> None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.js.delete_stream(name)

    async def subjects(self, stream: str, pattern: str) -> list[str]:
        """The subjects of ``stream`` matching ``pattern`` that hold a message."""
        try:
            info = await self.js.stream_info(stream, subjects_filter=pattern)
        except nats.js.errors.NotFoundError:
            return []
        return list(info.state.subjects or ())

    async def last(self, stream: str, subject: str) -> bytes | None:
        """The payload of the last message on ``subject``, or None."""
        try:
            message = await self.js.get_msg(stream, subject=subject, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        return message.data or b""

    async def payload_at(self, stream: str, sequence: int) -> bytes | None:
        """The payload of message ``sequence`` of ``stream``, or None when it is gone."""
        try:
            message = await self.js.get_msg(stream, seq=sequence, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        return message.data or b""

    async def purge(self, stream: str, subject: str) -> None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.js.purge_stream(stream, subject=subject)

    async def consumer_state(self, stream: str, consumer: str) -> tuple[int, int]:
        """``(pending, unacknowledged)`` message counts of a consumer ((0, 0) when it is gone)."""
        try:
            info = await self.js.consumer_info(stream, consumer)
        except nats.js.errors.NotFoundError:
            return 0, 0
        return info.num_pending or 0, info.num_ack_pending or 0


async def _settled(futures: Sequence[asyncio.Future[T]]) -> list[T | BaseException]:
    """Wait for every future, at most :data:`REPLY_SECONDS`; a late one counts as timed out."""
    if futures:
        _, late = await asyncio.wait(futures, timeout=REPLY_SECONDS)
        for future in late:
            future.cancel()
        if late:
            await asyncio.wait(late)
    outcomes: list[T | BaseException] = []
    for future in futures:
        if future.cancelled():
            outcomes.append(TimeoutError("no answer from the NATS server"))
        elif (error := future.exception()) is not None:
            outcomes.append(error)
        else:
            outcomes.append(future.result())
    return outcomes
