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

# Header values are one line of printable ASCII: everything else is percent-encoded.
_SAFE: Final = string.punctuation.replace("%", "")


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
        int(headers.get(ATTEMPTS, 0)) + msg.metadata.num_delivered,
        None if last_outcome is None else unquote(last_outcome),
        None if last_error is None else unquote(last_error),
        None if last_attempt is None else float(last_attempt),
        len(msg.data),
    )


def _text(value: str) -> str:
    return quote(value, safe=_SAFE)
