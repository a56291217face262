"""The storage encoding of events, its size limit, and the parsing of structured-mode bodies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import msgspec

from choreograph.errors import EventTooLargeError, InvalidEventError
from choreograph.events.attributes import _describe
from choreograph.events.cloudevent import CloudEvent
from choreograph.events.eventgrid import EventGridEvent
from choreograph.events.json_values import _decode_json, check_json

MAX_EVENT_BYTES: Final = 1_048_576
"""Largest event accepted, measured on its stored JSON form (Event Grid: 1 MB per event)."""


def _parse_all(items: Iterable[object], parse: Any) -> list[Any]:
    events = []
    for index, item in enumerate(items):
        try:
            events.append(parse(item))
        except InvalidEventError as exc:
            raise exc.at_index(index) from exc.__cause__
    return events


def parse_cloudevents(body: bytes | str, *, batch: bool) -> list[CloudEvent]:
    """Parse a structured-mode body: one object, or with ``batch`` a JSON array of objects."""
    document = _decode_json(body)
    if not batch:
        return [CloudEvent.from_dict(document)]
    if not isinstance(document, list):
        raise InvalidEventError(
            f"a CloudEvents batch must be a JSON array, got {_describe(document)}"
        )
    return _parse_all(document, CloudEvent.from_dict)


def parse_eventgrid_events(body: bytes | str) -> list[EventGridEvent]:
    """Parse an Event Grid publish body, which must be a JSON array (even for one event)."""
    document = _decode_json(body)
    if not isinstance(document, list):
        raise InvalidEventError(
            f"Event Grid events must be sent in a JSON array, got {_describe(document)}"
        )
    return _parse_all(document, EventGridEvent.from_dict)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CloudEvent)


def encode_event(event: CloudEvent) -> bytes:
    """The storage encoding of an event (its JSON, extensions nested; within a few bytes of the
    structured-mode JSON). Refuses data JSON cannot carry and events over :data:`MAX_EVENT_BYTES`
    so measured."""
    if event.data is not msgspec.UNSET:
        check_json(event.data, "data")
    try:
        encoded = _encoder.encode(event)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidEventError(
            f"`data` is not JSON-serializable: {exc}", attribute="data"
        ) from exc
    if len(encoded) > MAX_EVENT_BYTES:
        raise EventTooLargeError(
            f"the event is {len(encoded)} bytes; the limit is {MAX_EVENT_BYTES} bytes",
            attribute="data",
        )
    return encoded


def decode_event(encoded: bytes) -> CloudEvent:
    """Inverse of :func:`encode_event`."""
    return _decoder.decode(encoded)
