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


ANSWER_SECONDS = 10.0


async def test_pipelined_publishes_are_acknowledged_in_order_with_duplicates_flagged(
    publisher: Publisher, stream: str
) -> None:
    messages = [
        (f"{stream}.in", b"%d" % number, {"Nats-Msg-Id": f"m-{number}"}) for number in range(5)
    ]
    messages.append((f"{stream}.in", b"0", {"Nats-Msg-Id": "m-0"}))
    acks = await publisher.publish_all(messages, refused={}, answer_seconds=ANSWER_SECONDS)
    assert acks[:5] == [PubAck(stream, number + 1, False) for number in range(5)]
    assert acks[5] == PubAck(stream, 1, True)  # JetStream's de-duplication: the first copy
    assert publisher.unanswered == 0


async def test_a_refused_message_is_not_sent_and_keeps_its_error(
    publisher: Publisher, stream: str
) -> None:
    too_big = BackendError("too big")
    outcomes = await publisher.publish_all(
        [(f"{stream}.in", b"a", None), (f"{stream}.in", b"b", None), (f"{stream}.in", b"c", None)],
        refused={1: too_big},
        answer_seconds=ANSWER_SECONDS,
    )
    assert outcomes == [PubAck(stream, 1, False), too_big, PubAck(stream, 2, False)]


async def test_a_subject_no_stream_takes_is_no_stream_response(publisher: Publisher) -> None:
    [outcome] = await publisher.publish_all(
        [(f"nobody.{secrets.token_hex(4)}", b"x", None)], refused={}, answer_seconds=ANSWER_SECONDS
    )
    assert isinstance(outcome, nats.js.errors.NoStreamResponseError)


async def test_a_refusal_is_the_api_error_nats_py_raises(publisher: Publisher, stream: str) -> None:
    [outcome] = await publisher.publish_all(
        [(f"{stream}.in", b"x", {"Nats-Expected-Last-Sequence": "41"})],
        refused={},
        answer_seconds=ANSWER_SECONDS,
    )  # the stream is empty: a wrong last sequence
    assert isinstance(outcome, nats.js.errors.APIError)
    assert outcome.err_code == 10071


async def test_an_answer_that_does_not_come_in_time_is_a_timeout_and_is_forgotten(
    connection: Client, publisher: Publisher, stream: str
) -> None:
    subject = f"silent.{secrets.token_hex(4)}"
    listener = await connection.subscribe(subject)  # takes the message, never answers it
    try:
        outcomes = await publisher.publish_all(
            [(subject, b"x", None), (f"{stream}.in", b"y", None)],
            refused={},
            answer_seconds=0.2,
        )
    finally:
        await listener.unsubscribe()
    assert isinstance(outcomes[0], TimeoutError)
    assert outcomes[1] == PubAck(stream, 1, False)
    assert publisher.unanswered == 0


async def test_stopping_fails_what_is_still_unanswered(
    connection: Client, publisher: Publisher
) -> None:
    subject = f"silent.{secrets.token_hex(4)}"
    listener = await connection.subscribe(subject)  # takes the message, never answers it
    try:
        publishing = asyncio.create_task(
            publisher.publish_all(
                [(subject, b"x", None)], refused={}, answer_seconds=ANSWER_SECONDS
            )
        )
        await listener.next_msg(timeout=5)
        assert not publishing.done()
        await publisher.stop()
        [outcome] = await publishing
        assert isinstance(outcome, BackendError)
        assert "closed before the answer" in str(outcome)
    finally:
        await listener.unsubscribe()
