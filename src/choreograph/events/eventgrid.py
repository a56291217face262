"""The Event Grid schema, and its conversions to and from the canonical CloudEvent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from choreograph.errors import InvalidEventError
from choreograph.events.attributes import _describe, _require_string, _require_timestamp
from choreograph.events.cloudevent import CORRELATION_ATTRIBUTES, CloudEvent, ExtensionValue

CORRELATION_KEY: Final = "$correlation"
"""Key inside an Event Grid event's ``data`` that carries the correlation attributes."""

_EVENTGRID_FIELDS: Final = frozenset(
    {"id", "topic", "subject", "eventType", "eventTime", "data", "dataVersion", "metadataVersion"}
)


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
