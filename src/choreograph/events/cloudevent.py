"""The CloudEvents 1.0 event, the canonical form, and the rules for its extension attributes."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from choreograph.errors import InvalidEventError
from choreograph.events.attributes import _describe, _require_string, _require_timestamp
from choreograph.events.ids import _new_id
from choreograph.events.json_values import _decode_json, check_json

CORRELATION_ATTRIBUTES: Final = ("correlationid", "causationid", "traceparent", "tracestate")
"""Extension attributes choreograph propagates from event to event."""

_CONTEXT_ATTRIBUTES: Final = frozenset(
    {"id", "source", "specversion", "type", "subject", "time", "datacontenttype", "dataschema"}
)
_RESERVED: Final = _CONTEXT_ATTRIBUTES | {"data", "data_base64"}
_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")
_INT32 = range(-(2**31), 2**31)
_KNOWN_EXTENSIONS: set[str] = set(CORRELATION_ATTRIBUTES)
"""Extension names already found valid, so that checking one is a set lookup."""
_KNOWN_EXTENSIONS_LIMIT: Final = 1024

ExtensionValue = str | int | bool


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
        subject = self.subject
        if subject is not None and (type(subject) is not str or not subject):
            _require_string("subject", subject)
        content_type = self.datacontenttype
        if content_type is not None and (type(content_type) is not str or not content_type):
            _require_string("datacontenttype", content_type)
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
            if name in _KNOWN_EXTENSIONS:
                kind = type(value)
                if (kind is str and value) or (kind is int and value in _INT32) or kind is bool:
                    continue
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
