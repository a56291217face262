"""The pipelined publisher against the NATS server on loopback: acknowledgements with their
sequence and duplicate flag, and each refusal as nats-py would raise it."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator

import pytest

if os.environ.get("CHOREOGRAPH_REQUIRE_SERVICES") != "1":
    pytest.importorskip("nats")

import nats as nats_py
import nats.js.errors
from nats.aio.client import Client
from nats.js import api

from choreograph.backends.nats.publisher import PubAck, Publisher
from choreograph.errors import BackendError

pytestmark = pytest.mark.requires_service("nats")


@pytest.fixture
async def connection(nats_server: str) -> AsyncIterator[Client]:
    nc = await nats_py.connect(nats_server)
    try:
        yield nc
    finally:
        await nc.close()


@pytest.fixture
async def stream(connection: Client) -> AsyncIterator[str]:
    """A stream of the test's own on subject ``<name>.in``."""
    name = f"TEST_PUBLISHER_{secrets.token_hex(4).upper()}"
    js = connection.jetstream()
    await js.add_stream(api.StreamConfig(name=name, subjects=[f"{name}.in"]))
    try:
        yield name
    finally:
        await js.delete_stream(name)


@pytest.fixture
async def publisher(connection: Client) -> AsyncIterator[Publisher]:
    started = Publisher(connection)
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


async def test_pipelined_publishes_are_acknowledged_in_order_with_duplicates_flagged(
    publisher: Publisher, stream: str
) -> None:
    futures = [
        await publisher.publish(f"{stream}.in", b"%d" % number, {"Nats-Msg-Id": f"m-{number}"})
        for number in range(5)
    ]
    again = await publisher.publish(f"{stream}.in", b"0", {"Nats-Msg-Id": "m-0"})
    acks = await asyncio.gather(*futures, again)
    assert acks[:5] == [PubAck(stream, number + 1, False) for number in range(5)]
    assert acks[5] == PubAck(stream, 1, True)  # JetStream's de-duplication: the first copy


async def test_a_subject_no_stream_takes_is_no_stream_response(publisher: Publisher) -> None:
    future = await publisher.publish(f"nobody.{secrets.token_hex(4)}", b"x", None)
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await future


async def test_a_refusal_is_the_api_error_nats_py_raises(publisher: Publisher, stream: str) -> None:
    future = await publisher.publish(
        f"{stream}.in", b"x", {"Nats-Expected-Last-Sequence": "41"}
    )  # the stream is empty: a wrong last sequence
    with pytest.raises(nats.js.errors.APIError) as raised:
        await future
    assert raised.value.err_code == 10071


async def test_stopping_fails_what_is_still_unanswered(
    connection: Client, publisher: Publisher
) -> None:
    subject = f"silent.{secrets.token_hex(4)}"
    listener = await connection.subscribe(subject)  # takes the message, never answers it
    try:
        future = await publisher.publish(subject, b"x", None)
        await listener.next_msg(timeout=5)
        assert not future.done()
        await publisher.stop()
        with pytest.raises(BackendError, match="closed before the answer"):
            await future
    finally:
        await listener.unsubscribe()
