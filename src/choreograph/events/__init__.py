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

from choreograph.events.cloudevent import CORRELATION_ATTRIBUTES, CloudEvent
from choreograph.events.cloudevent import ExtensionValue as ExtensionValue
from choreograph.events.encoding import (
    MAX_EVENT_BYTES,
    decode_event,
    encode_event,
    parse_cloudevents,
    parse_eventgrid_events,
)
from choreograph.events.eventgrid import (
    CORRELATION_KEY,
    EventGridEvent,
    cloudevent_from_eventgrid,
    eventgrid_from_cloudevent,
)
from choreograph.events.ids import _new_id as _new_id
from choreograph.events.json_values import check_json

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
