"""The event: CloudEvents 1.0 (the canonical form) and the Event Grid schema, converted both ways.

A :class:`CloudEvent` keeps every attribute as received: context attributes as fields, extension
attributes verbatim in ``extensions``. An :class:`EventGridEvent` is the Event Grid schema; a topic
whose input schema is Event Grid converts it to a CloudEvent on publish (``topic`` becomes
``source``, ``eventType`` becomes ``type``...) and back for subscriptions that deliver in that
schema. Event Grid has no extension attributes, so correlation travels inside ``data`` under the
reserved key :data:`CORRELATION_KEY`.

Every constructor and parser validates; a violation raises :class:`~choreograph.errors.InvalidEventError`
naming the attribute and the rule, e.g. ``specversion must be "1.0", got "0.3"``.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import random
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

import msgspec

from choreograph.errors import EventTooLargeError, InvalidEventError

__all__ = [
    "CORRELATION_ATTRIBUTES",
    "CORRELATION_KEY",
    "MAX_EVENT_BYTES",
    "CloudEvent",
    "EventGridEvent",
    "check_json",
    "cloudevent_from_eventgrid",
    "decode_event",
    "encode_event",
    "eventgrid_from_cloudevent",
    "parse_cloudevents",
    "parse_eventgrid_events",
]

MAX_EVENT_BYTES: Final = 1_048_576
"""Largest event accepted, measured on its stored JSON form (Event Grid: 1 MB per event)."""

CORRELATION_ATTRIBUTES: Final = ("correlationid", "causationid", "traceparent", "tracestate")
"""Extension attributes choreograph propagates from event to event."""

CORRELATION_KEY: Final = "$correlation"
"""Key inside an Event Grid event's ``data`` that carries the correlation attributes."""

_CONTEXT_ATTRIBUTES: Final = frozenset(
    {"id", "source", "specversion", "type", "subject", "time", "datacontenttype", "dataschema"}
)
_RESERVED: Final = _CONTEXT_ATTRIBUTES | {"data", "data_base64"}
_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_INT32 = range(-(2**31), 2**31)
_KNOWN_EXTENSIONS: set[str] = set(CORRELATION_ATTRIBUTES)
"""Extension names already found valid, so that checking one is a set lookup."""
_KNOWN_EXTENSIONS_LIMIT: Final = 1024
_EVENTGRID_FIELDS: Final = frozenset(
    {"id", "topic", "subject", "eventType", "eventTime", "data", "dataVersion", "metadataVersion"}
)

ExtensionValue = str | int | bool


_random = random.Random()  # seeded from os.urandom
_random_bits = _random.getrandbits
os.register_at_fork(after_in_child=_random.seed)  # a forked child must not repeat its parent's ids
_UUID4_MASK: Final = 0xFFFFFFFF_FFFF_0FFF_3FFF_FFFFFFFFFFFF
_UUID4_BITS: Final = 0x00000000_0000_4000_8000_000000000000


def _new_id() -> str:
    """A random (version 4) UUID string, several times faster than ``str(uuid.uuid4())``.

    Event ids must be unique, not secret, so the standard generator serves."""
    h = "%032x" % (_random_bits(128) & _UUID4_MASK | _UUID4_BITS)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _describe(value: object) -> str:
    """A short rendering of a bad value for an error message."""
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return '"' + text + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _require_string(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise InvalidEventError(
            f"`{name}` must be a non-empty string, got {_describe(value)}", attribute=name
        )


def _require_timestamp(name: str, value: object) -> None:
    _require_string(name, value)
    assert isinstance(value, str)
    parsed = None
    if _RFC3339.fullmatch(value):
        try:  # the pattern checks the form, fromisoformat the ranges (month 13, hour 25...)
            parsed = datetime.fromisoformat(value.upper())
        except ValueError:
            parsed = None
    if parsed is None:
        raise InvalidEventError(
            f"`{name}` must be an RFC 3339 timestamp with a time zone, got {_describe(value)}",
            attribute=name,
        )


def _check_extension(name: object, value: object) -> None:
    if name in _KNOWN_EXTENSIONS:
        pass
    elif not isinstance(name, str) or not _EXTENSION_NAME.fullmatch(name):
        raise InvalidEventError(
            f"extension attribute name {_describe(name)} must be 1-20 lower-case letters or digits",
            attribute=str(name),
        )
    elif name in _RESERVED:
        raise InvalidEventError(
            f"`{name}` is a CloudEvents attribute, not an extension", attribute=name
        )
    elif len(_KNOWN_EXTENSIONS) < _KNOWN_EXTENSIONS_LIMIT:
        _KNOWN_EXTENSIONS.add(name)
    if isinstance(value, bool) or (isinstance(value, str) and value):
        return
    if isinstance(value, int):
        if value in _INT32:
            return
        raise InvalidEventError(
            f"extension attribute `{name}` must fit in a signed 32-bit integer, got {value}",
            attribute=name,
        )
    raise InvalidEventError(
        f"extension attribute `{name}` must be a non-empty string, an integer or a boolean, "
        f"got {_describe(value)}",
        attribute=name,
    )


class CloudEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A CloudEvents 1.0 event. ``data`` is any JSON value; binary data goes in ``data_base64``."""

    type: str
    source: str
    id: str = msgspec.field(default_factory=_new_id)
    specversion: str = "1.0"
    subject: str | None = None
    time: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: Any = msgspec.UNSET
    data_base64: str | None = None
    extensions: dict[str, ExtensionValue] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Every event passes here, on construction and on decoding: the common case is checked
        # in one expression, and the precise error is worked out only when it fails.
        if (
            self.specversion != "1.0"
            or type(self.id) is not str
            or not self.id
            or type(self.source) is not str
            or not self.source
            or type(self.type) is not str
            or not self.type
        ):
            self._refuse_required()
        if self.subject is not None:
            _require_string("subject", self.subject)
        if self.datacontenttype is not None:
            _require_string("datacontenttype", self.datacontenttype)
        if self.dataschema is not None:
            _require_string("dataschema", self.dataschema)
        if self.time is not None:
            _require_timestamp("time", self.time)
        if self.data_base64 is not None:
            if self.data is not msgspec.UNSET:
                raise InvalidEventError(
                    "only one of `data` and `data_base64` may be present", attribute="data_base64"
                )
            _check_base64(self.data_base64)
        extensions = self.extensions
        if type(extensions) is not dict:
            raise InvalidEventError(
                f"`extensions` must be a dict of extension attributes, got {_describe(extensions)}",
                attribute="extensions",
            )
        for name, value in extensions.items():
            if name not in _KNOWN_EXTENSIONS or type(value) is not str or not value:
                _check_extension(name, value)

    def _refuse_required(self) -> None:
        if self.specversion != "1.0":
            raise InvalidEventError(
                f'`specversion` must be "1.0", got {_describe(self.specversion)}',
                attribute="specversion",
            )
        _require_string("id", self.id)
        _require_string("source", self.source)
        _require_string("type", self.type)

    @property
    def has_data(self) -> bool:
        """Whether the event carries data (``data`` or ``data_base64``)."""
        return self.data is not msgspec.UNSET or self.data_base64 is not None

    @property
    def data_bytes(self) -> bytes | None:
        """The binary data, decoded from ``data_base64``; None for JSON data."""
        return None if self.data_base64 is None else base64.b64decode(self.data_base64)

    @property
    def correlationid(self) -> str | None:
        """The business transaction this event belongs to."""
        value = self.extensions.get("correlationid")
        return value if isinstance(value, str) else None

    @property
    def causationid(self) -> str | None:
        """The id of the event whose handling produced this one."""
        value = self.extensions.get("causationid")
        return value if isinstance(value, str) else None

    @property
    def traceparent(self) -> str | None:
        """The W3C trace context of the span that produced this event."""
        value = self.extensions.get("traceparent")
        return value if isinstance(value, str) else None

    def with_extensions(self, **extensions: ExtensionValue) -> CloudEvent:
        """A copy with these extension attributes added or replaced."""
        return msgspec.structs.replace(self, extensions={**self.extensions, **extensions})

    def to_dict(self) -> dict[str, Any]:
        """The structured-mode JSON object, extensions at top level."""
        out: dict[str, Any] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        for name in ("subject", "time", "datacontenttype", "dataschema", "data_base64"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.data is not msgspec.UNSET:
            out["data"] = self.data
        out.update(self.extensions)
        return out

    def to_json(self) -> bytes:
        """The structured-mode JSON encoding (``application/cloudevents+json``)."""
        if self.data is not msgspec.UNSET:
            check_json(self.data, "data")
        return msgspec.json.encode(self.to_dict())

    @classmethod
    def from_dict(cls, obj: object) -> CloudEvent:
        """Parse and validate a structured-mode JSON object; unknown attributes are extensions."""
        if not isinstance(obj, Mapping):
            raise InvalidEventError(f"a CloudEvent must be a JSON object, got {_describe(obj)}")
        for name in ("specversion", "id", "source", "type"):
            if obj.get(name) is None:
                raise InvalidEventError(f"`{name}` is required", attribute=name)
        if not isinstance(obj["specversion"], str):
            raise InvalidEventError(
                f'`specversion` must be "1.0", got {_describe(obj["specversion"])}',
                attribute="specversion",
            )
        fields: dict[str, Any] = {}
        extensions: dict[str, Any] = {}
        for name, value in obj.items():
            if name in _CONTEXT_ATTRIBUTES or name == "data_base64":
                if value is not None:
                    fields[name] = value
            elif name == "data":
                fields["data"] = value
            elif value is not None:  # a null extension is an absent one (CloudEvents JSON format)
                extensions[name] = value
        try:
            return cls(**fields, extensions=extensions)
        except TypeError as exc:  # pragma: no cover - every field is known; kept as a safety net
            raise InvalidEventError(str(exc)) from exc

    @classmethod
    def from_json(cls, body: bytes | str) -> CloudEvent:
        """Parse one structured-mode event."""
        return cls.from_dict(_decode_json(body))


def _check_base64(value: object) -> None:
    if not isinstance(value, str):
        raise InvalidEventError(
            f"`data_base64` must be a base64 string, got {_describe(value)}",
            attribute="data_base64",
        )
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidEventError(
            "`data_base64` must be valid base64", attribute="data_base64"
        ) from exc


class EventGridEvent(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    rename={
        "event_type": "eventType",
        "event_time": "eventTime",
        "data_version": "dataVersion",
        "metadata_version": "metadataVersion",
    },
):
    """An event in the Event Grid schema. ``topic`` and ``metadata_version`` are stamped by the bus."""

    id: str
    subject: str
    event_type: str
    event_time: str
    data: Any = msgspec.UNSET
    data_version: str = ""
    metadata_version: str | None = None
    topic: str | None = None

    def __post_init__(self) -> None:
        _require_string("id", self.id)
        _require_string("eventType", self.event_type)
        if not isinstance(self.subject, str):
            raise InvalidEventError(
                f"`subject` must be a string, got {_describe(self.subject)}", attribute="subject"
            )
        _require_timestamp("eventTime", self.event_time)
        if not isinstance(self.data_version, str):
            raise InvalidEventError(
                f"`dataVersion` must be a string, got {_describe(self.data_version)}",
                attribute="dataVersion",
            )
        if self.metadata_version is not None and self.metadata_version != "1":
            raise InvalidEventError(
                f'`metadataVersion` must be "1", got {_describe(self.metadata_version)}',
                attribute="metadataVersion",
            )
        if self.topic is not None and not isinstance(self.topic, str):
            raise InvalidEventError(
                f"`topic` must be a string, got {_describe(self.topic)}", attribute="topic"
            )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, as Event Grid delivers it (``dataVersion`` always present)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["dataVersion"] = self.data_version
        return out

    @classmethod
    def from_dict(cls, obj: object) -> EventGridEvent:
        """Parse and validate one Event Grid event object."""
        if not isinstance(obj, Mapping):
            raise InvalidEventError(
                f"an Event Grid event must be a JSON object, got {_describe(obj)}"
            )
        for name in ("id", "subject", "eventType", "eventTime"):
            if obj.get(name) is None:
                raise InvalidEventError(f"`{name}` is required", attribute=name)
        unknown = sorted(set(obj) - _EVENTGRID_FIELDS)
        if unknown:
            raise InvalidEventError(
                f"`{unknown[0]}` is not an Event Grid event property", attribute=unknown[0]
            )
        return cls(
            id=obj["id"],
            subject=obj["subject"],
            event_type=obj["eventType"],
            event_time=obj["eventTime"],
            data=obj.get("data", msgspec.UNSET),
            data_version="" if obj.get("dataVersion") is None else obj["dataVersion"],
            metadata_version=obj.get("metadataVersion"),
            topic=obj.get("topic"),
        )


def cloudevent_from_eventgrid(event: EventGridEvent, *, topic_id: str) -> CloudEvent:
    """Convert an Event Grid event published to the topic ``topic_id`` (stamped when absent).

    ``topic`` becomes ``source``, ``eventType`` ``type``, ``eventTime`` ``time``; a non-empty
    ``dataVersion`` is kept as the ``dataversion`` extension, and the correlation attributes come
    out of ``data[CORRELATION_KEY]``.
    """
    if event.topic is not None and event.topic != topic_id:
        raise InvalidEventError(
            f'`topic` must be "{topic_id}" or absent, got {_describe(event.topic)}',
            attribute="topic",
        )
    data = event.data
    extensions: dict[str, ExtensionValue] = {}
    if isinstance(data, Mapping) and CORRELATION_KEY in data:
        carried = data[CORRELATION_KEY]
        if not isinstance(carried, Mapping):
            raise InvalidEventError(
                f"`data.{CORRELATION_KEY}` must be an object, got {_describe(carried)}",
                attribute=f"data.{CORRELATION_KEY}",
            )
        for name, value in carried.items():
            if name not in CORRELATION_ATTRIBUTES:
                raise InvalidEventError(
                    f"`data.{CORRELATION_KEY}` may hold only {', '.join(CORRELATION_ATTRIBUTES)}; "
                    f"got {_describe(name)}",
                    attribute=f"data.{CORRELATION_KEY}",
                )
            extensions[name] = value
        data = {key: value for key, value in data.items() if key != CORRELATION_KEY}
    if event.data_version:
        extensions["dataversion"] = event.data_version
    return CloudEvent(
        id=event.id,
        source=topic_id,
        type=event.event_type,
        subject=event.subject or None,
        time=event.event_time,
        data=data,
        extensions=extensions,
    )


def eventgrid_from_cloudevent(event: CloudEvent, *, default_time: str) -> EventGridEvent:
    """Convert a CloudEvent to the Event Grid schema for delivery or a dead-letter record.

    The correlation attributes go into ``data[CORRELATION_KEY]`` when ``data`` is an object (or
    absent); other extensions have no place in the Event Grid schema and are left out.
    """
    data: Any = event.data
    if event.data_base64 is not None:
        data = event.data_base64
    carried = {
        name: event.extensions[name] for name in CORRELATION_ATTRIBUTES if name in event.extensions
    }
    if carried and (data is msgspec.UNSET or isinstance(data, Mapping)):
        data = {**(data if isinstance(data, Mapping) else {}), CORRELATION_KEY: carried}
    data_version = event.extensions.get("dataversion", "")
    return EventGridEvent(
        id=event.id,
        topic=event.source,
        subject=event.subject or "",
        event_type=event.type,
        event_time=event.time or default_time,
        data=data,
        data_version=data_version if isinstance(data_version, str) else str(data_version),
        metadata_version="1",
    )


def _decode_json(body: bytes | str) -> Any:
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidEventError(f"the body is not valid JSON: {reason}") from exc


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


def check_json(value: object, path: str) -> None:
    """Refuse what JSON cannot carry faithfully: msgspec would turn a set into an array, bytes
    into base64 text, ``inf`` into null and a number key into a string. ``path`` names the value
    in the error (``data``, ``state packages/p1``)."""
    try:
        problem = _not_json(value)
    except RecursionError:
        problem = ("", "is nested too deeply")
    if problem is not None:
        where, message = problem
        raise InvalidEventError(f"`{path}{where}` {message}", attribute=f"{path}{where}")


def _not_json(value: object) -> tuple[str, str] | None:
    """Where in ``value`` JSON stops, and why; None when it is JSON throughout. The path is
    built only on the way back from a failure, so valid data costs no string work."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return None
    if kind is float:
        return None if math.isfinite(value) else ("", f"must be a finite number, got {value!r}")  # type: ignore[arg-type]
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                return "", f"keys must be strings, got {type(key).__name__} {key!r}"
            problem = _not_json(item)
            if problem is not None:
                return f".{key}{problem[0]}", problem[1]
        return None
    if kind is list or kind is tuple:
        for index, item in enumerate(value):  # type: ignore[arg-type]
            problem = _not_json(item)
            if problem is not None:
                return f"[{index}]{problem[0]}", problem[1]
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else ("", f"must be a finite number, got {value!r}")
    if isinstance(value, bool | int | str):  # subclasses such as enums encode as their value
        return None
    return "", (
        "must be JSON (objects, arrays, strings, numbers, booleans, null), "
        f"got {type(value).__name__}"
    )


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
