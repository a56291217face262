"""A held retry whose copy to ``ready`` fails (the engine is electing a stream leader, say) waits
a second of bus time before the next try, and the failures of one round make one log line.

The engine is the edge here: a stand-in that fails the copies while told to, so the test needs
no server (the whole retry path on a real one is in the conformance suite)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

pytest.importorskip("nats")

from nats.aio.msg import Msg

from choreograph.backends.nats.retries import MAKE_READY_RETRY_SECONDS, SubscriptionQueue
from choreograph.backends.nats.settings import Names
from choreograph.backends.nats.wire import DUE


class Engine:
    """What the queue asks of the engine to make retries ready; failing while ``failing``."""

    def __init__(self) -> None:
        self.names = Names("retries")
        self.nc: Any = None
        self.failing = True
        self.published: list[tuple[str, bytes, dict[str, str]]] = []
        self.acked: list[Msg] = []

    async def payload_at(self, stream: str, sequence: int) -> bytes:
        return b'{"id": "%d"}' % sequence

    async def publish_all(self, copies: list[tuple[str, bytes, dict[str, str]]]) -> list[Any]:
        if self.failing:
            return [RuntimeError("no stream leader") for _ in copies]
        self.published.extend(copies)
        return [None for _ in copies]

    async def ack_all(self, messages: list[Msg]) -> None:
        self.acked.extend(messages)


def retry(sequence: int, due: float) -> Msg:
    """A retry as the ``wait`` consumer hands it out: stream sequence ``sequence``."""
    reply = f"$JS.ACK.CG_retries_orders.sub-wait.1.{sequence}.{sequence}.1700000000000000000.0"
    return Msg(None, subject="cg.orders.sub.wait", reply=reply, headers={DUE: str(due)})  # type: ignore[arg-type]


async def test_a_retry_whose_copy_failed_is_due_again_a_second_later_and_then_moves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = Engine()
    queue = SubscriptionQueue(engine, "orders", "sub", ack_wait_seconds=9.0)  # type: ignore[arg-type]
    for sequence in (1, 2, 3):
        queue.hold(retry(sequence, due=5.0))

    with caplog.at_level(logging.WARNING, logger="choreograph.backends.nats.retries"):
        await queue._make_ready(queue.pop_due(5.0), 5.0)
    assert engine.acked == []
    assert [r.getMessage() for r in caplog.records] == [
        "NATS: making 3 retries of orders/sub ready failed (RuntimeError('no stream leader')); "
        f"trying again in {MAKE_READY_RETRY_SECONDS:g} s"
    ]
    assert queue.pop_due(5.0 + MAKE_READY_RETRY_SECONDS / 2) == []  # not asked again at once
    assert queue.next_due() == 5.0 + MAKE_READY_RETRY_SECONDS

    engine.failing = False
    await queue._make_ready(queue.pop_due(5.0 + MAKE_READY_RETRY_SECONDS), 6.0)
    assert sorted(m.metadata.sequence.stream for m in engine.acked) == [1, 2, 3]
    assert sorted(headers["Nats-Msg-Id"] for _, _, headers in engine.published) == [
        "mv-1",
        "mv-2",
        "mv-3",
    ]
    assert queue.next_due() is None
