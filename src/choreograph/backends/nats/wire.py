"""How a delivery travels as a JetStream message: the stored event as payload, its state in headers.

Times are the bus clock's (``Cg-Published``, ``Cg-Ttl-Start``, ``Cg-Due``...), never the
server's, so retries and time-to-live follow the clock the bus was given. ``Cg-Attempts`` counts
the attempts completed before the message was written; the attempt a lease starts adds the
consumer's delivery count, so a redelivery after a crash counts as an attempt.
"""

from __future__ import annotations

import hashlib
import string
from typing import Any, Final
from urllib.parse import quote, unquote

from nats.aio.msg import Msg

from choreograph.backends.base import Delivery
from choreograph.events import decode_event

__all__ = [
    "ATTEMPTS",
    "DUE",
    "MSG_ID",
    "PUBLISHED",
    "TTL_START",
    "Headers",
    "delivery_from",
    "due_of",
    "event_key",
    "fresh_headers",
    "moved_headers",
    "num_delivered",
    "reply_consumer",
    "state_headers",
]

Headers = dict[str, str]

MSG_ID: Final = "Nats-Msg-Id"
PUBLISHED: Final = "Cg-Published"
TTL_START: Final = "Cg-Ttl-Start"
ATTEMPTS: Final = "Cg-Attempts"
DUE: Final = "Cg-Due"
LAST_OUTCOME: Final = "Cg-Last-Outcome"
LAST_ERROR: Final = "Cg-Last-Error"
LAST_ATTEMPT: Final = "Cg-Last-Attempt"

# The reply subject of a JetStream message, split on ".": $JS.ACK.<stream>.<consumer>.<delivered>
# .<stream seq>.<consumer seq>.<time>.<pending> (9 tokens), or with <domain>.<account hash>
# after ACK (11 tokens, 12 with a trailing random token).
_V1_TOKENS: Final = 9
_V2_MIN_TOKENS: Final = 11

# Header values are one line of printable ASCII: everything else is percent-encoded.
_SAFE: Final = string.punctuation.replace("%", "")


def _reply_tokens(msg: Msg) -> tuple[list[str], int]:
    """The tokens of ``msg``'s JetStream reply subject and the index of the stream's name.

    nats-py's ``msg.metadata`` parses the same subject into dataclasses and a datetime, which
    costs more than the rest of reading a delivery's headers; only these fields are needed."""
    tokens = (msg.reply or "").split(".")
    count = len(tokens)
    if tokens[0] == "$JS" and count > 1 and tokens[1] == "ACK":
        if count == _V1_TOKENS:
            return tokens, 2
        if count >= _V2_MIN_TOKENS:
            return tokens, 4
    raise ValueError(f"not a JetStream message: reply subject {msg.reply!r}")


def num_delivered(msg: Msg) -> int:
    """How many times the consumer delivered ``msg`` (1 the first time)."""
    tokens, stream = _reply_tokens(msg)
    return int(tokens[stream + 2])


def reply_consumer(msg: Msg) -> tuple[str, str]:
    """The (stream, consumer) that delivered ``msg``."""
    tokens, stream = _reply_tokens(msg)
    return tokens[stream], tokens[stream + 1]


def event_key(source: str, event_id: str) -> str:
    """The de-duplication key of (``source``, ``id``): a digest, since either may hold any text."""
    digest = hashlib.blake2b(f"{source}\x1f{event_id}".encode(), digest_size=16)
    return digest.hexdigest()


def fresh_headers(published_at: float, ttl_start: float) -> Headers:
    """The headers of a new delivery (no attempt made yet). The time-to-live counts from the
    publish unless said otherwise (a redrive restarts it): every header costs the receiving
    client a parse, so a new event's delivery carries one time."""
    stamp = repr(published_at)
    if ttl_start == published_at:
        return {PUBLISHED: stamp}
    return {PUBLISHED: stamp, TTL_START: repr(ttl_start)}


def state_headers(delivery: Delivery, *, completed: int) -> Headers:
    """The headers that carry ``delivery`` on, with ``completed`` attempts made."""
    headers = {
        PUBLISHED: repr(delivery.published_at),
        TTL_START: repr(delivery.ttl_start),
        ATTEMPTS: str(completed),
    }
    if delivery.last_outcome is not None:
        headers[LAST_OUTCOME] = _text(delivery.last_outcome)
    if delivery.last_error is not None:
        headers[LAST_ERROR] = _text(delivery.last_error)
    if delivery.last_attempt_at is not None:
        headers[LAST_ATTEMPT] = repr(delivery.last_attempt_at)
    return headers


def moved_headers(msg: Msg) -> Headers:
    """The headers of a held retry as it becomes due: the same state, minus the due time."""
    return {
        name: value
        for name, value in (msg.headers or {}).items()
        if name.startswith("Cg-") and name != DUE
    }


def due_of(msg: Msg) -> float:
    """When a held retry is due (a message without one is due at once)."""
    return float((msg.headers or {}).get(DUE, "0"))


def delivery_from(msg: Msg, topic: str, subscription: str) -> Delivery:
    """The delivery a leased message carries; ``key`` is the message, to settle it."""
    headers: dict[str, Any] = msg.headers or {}
    published = float(headers[PUBLISHED])
    last_attempt = headers.get(LAST_ATTEMPT)
    last_outcome = headers.get(LAST_OUTCOME)
    last_error = headers.get(LAST_ERROR)
    return Delivery(
        msg,
        topic,
        subscription,
        decode_event(msg.data),
        published,
        float(headers.get(TTL_START, published)),
        int(headers.get(ATTEMPTS, 0)) + num_delivered(msg),
        None if last_outcome is None else unquote(last_outcome),
        None if last_error is None else unquote(last_error),
        None if last_attempt is None else float(last_attempt),
        len(msg.data),
    )


def _text(value: str) -> str:
    return quote(value, safe=_SAFE)
