"""Topics: a name, an input schema, a de-duplication window and an access key pair."""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any, Final, Literal

import msgspec

from choreograph.bus.wire import convert_wire
from choreograph.errors import InvalidTopicError

__all__ = [
    "SYSTEM_TOPIC",
    "InputSchema",
    "TopicRecord",
    "TopicSpec",
    "new_access_key",
    "topic_resource_id",
    "validate_topic_name",
]

InputSchema = Literal["CloudEventSchemaV1_0", "EventGridSchema"]

SYSTEM_TOPIC: Final = "choreograph-system"
"""Topic where the bus publishes its own events (``Choreograph.DeadLettered``)."""

_TOPIC_NAME = re.compile(r"[A-Za-z0-9-]{3,50}")
MAX_DEDUPLICATION_WINDOW_SECONDS: Final = 86_400.0


def validate_topic_name(name: object) -> str:
    """Return ``name`` if it is 3-50 letters, digits or hyphens; raise otherwise."""
    if not isinstance(name, str) or not _TOPIC_NAME.fullmatch(name):
        shown = repr(name) if not isinstance(name, str) else f'"{name}"'
        raise InvalidTopicError(
            f"topic name {shown} must be 3-50 characters of letters, digits and '-'"
        )
    return name


def topic_resource_id(name: str) -> str:
    """The id stamped as ``topic`` on Event Grid events and used as CloudEvents ``source``."""
    return f"/topics/{name}"


def new_access_key() -> str:
    """A fresh base64 access key of 32 random bytes, as Event Grid issues."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class TopicSpec(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """The settable properties of a topic (wire names as in Event Grid's ``properties``).

    ``input_schema`` defaults to CloudEvents, choreograph's canonical form (Event Grid's own
    default is its schema). ``deduplication_window_seconds``: an event whose (``source``,
    ``id``) the topic stored within this window is acknowledged without being stored again;
    0 turns de-duplication off.
    """

    input_schema: InputSchema = "CloudEventSchemaV1_0"
    deduplication_window_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.input_schema not in ("CloudEventSchemaV1_0", "EventGridSchema"):
            raise InvalidTopicError(
                f'`inputSchema` must be "CloudEventSchemaV1_0" or "EventGridSchema", '
                f"got {self.input_schema!r}"
            )
        window = self.deduplication_window_seconds
        if (
            isinstance(window, bool)
            or not isinstance(window, int | float)
            or not 0 <= window <= MAX_DEDUPLICATION_WINDOW_SECONDS
        ):
            raise InvalidTopicError(
                "`deduplicationWindowSeconds` must be a number from 0 to "
                f"{MAX_DEDUPLICATION_WINDOW_SECONDS:g}, got {window!r}"
            )

    @classmethod
    def from_dict(cls, properties: object) -> TopicSpec:
        """Validate the wire form, e.g. ``{"inputSchema": "EventGridSchema"}``."""
        return convert_wire(properties, cls, InvalidTopicError, "topic properties")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


class TopicRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A topic as stored: its spec, its keys and when it was created."""

    name: str
    spec: TopicSpec
    key1: str
    key2: str
    created_at: float

    @property
    def resource_id(self) -> str:
        return topic_resource_id(self.name)
