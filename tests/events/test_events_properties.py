"""Properties of the event model: parsers refuse every bad input cleanly; valid events round-trip."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from choreograph.errors import InvalidEventError
from choreograph.events import (
    CORRELATION_ATTRIBUTES,
    CORRELATION_KEY,
    CloudEvent,
    EventGridEvent,
    cloudevent_from_eventgrid,
    decode_event,
    encode_event,
    eventgrid_from_cloudevent,
    parse_cloudevents,
    parse_eventgrid_events,
)

TOPIC = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.EventGrid/topics/orders"
OTHER_TIME = "2030-01-01T00:00:00Z"
RESERVED = frozenset(
    [
        "id",
        "source",
        "specversion",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "data",
    ]
)
"""Names an extension attribute may not take (``data_base64`` is excluded by the alphabet)."""

fuzz = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
composite = settings(fuzz, max_examples=100)
"""For strategies that build whole events, which cost more to generate."""

# ------------------------------------------------------------------------------ strategies

# JSON has no NaN or infinity (msgspec writes inf as null and refuses 1e999 on input).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)

timestamps = st.one_of(
    st.builds(
        lambda moment, minutes: moment.replace(
            tzinfo=timezone(timedelta(minutes=minutes))
        ).isoformat(),
        st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9998, 12, 31)),
        st.integers(-(23 * 60 + 59), 23 * 60 + 59),
    ),
    st.builds(
        lambda moment, digits: moment.strftime("%Y-%m-%dT%H:%M:%S") + digits + "Z",
        st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9998, 12, 31)),
        st.sampled_from(["", ".5", ".123", ".123456", ".1234567"]),
    ),
)
non_empty_text = st.text(min_size=1, max_size=16)
extension_names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=20
).filter(lambda name: name not in RESERVED)
extension_values = non_empty_text | st.integers(-(2**31), 2**31 - 1) | st.booleans()


@st.composite
def cloudevents(draw: st.DrawFn) -> CloudEvent:
    """Any valid CloudEvent, including null data, binary data and odd extensions."""
    payload = draw(st.sampled_from(["absent", "json", "binary"]))
    return CloudEvent(
        id=draw(non_empty_text),
        source=draw(non_empty_text),
        type=draw(non_empty_text),
        subject=draw(st.none() | non_empty_text),
        time=draw(st.none() | timestamps),
        datacontenttype=draw(st.none() | st.just("application/json")),
        dataschema=draw(st.none() | non_empty_text),
        data=draw(json_values) if payload == "json" else msgspec.UNSET,
        data_base64=(
            base64.b64encode(draw(st.binary(max_size=24))).decode() if payload == "binary" else None
        ),
        extensions=draw(st.dictionaries(extension_names, extension_values, max_size=4)),
    )


correlations = st.dictionaries(
    st.sampled_from(CORRELATION_ATTRIBUTES), extension_values, min_size=1, max_size=4
)


@st.composite
def eventgrid_events(draw: st.DrawFn) -> EventGridEvent:
    """A valid Event Grid event with object data, sometimes carrying correlation attributes."""
    data = draw(json_objects.filter(lambda obj: CORRELATION_KEY not in obj))
    carried = draw(st.none() | correlations)
    if carried is not None:
        data[CORRELATION_KEY] = carried
    return EventGridEvent(
        id=draw(non_empty_text),
        subject=draw(st.text(max_size=16)),
        event_type=draw(non_empty_text),
        event_time=draw(timestamps),
        data=data,
        data_version=draw(st.just("") | non_empty_text),
        metadata_version=draw(st.sampled_from([None, "1"])),
        topic=draw(st.sampled_from([None, TOPIC])),
    )


def maybe(valid: Any) -> st.SearchStrategy[Any]:
    """Nine times in ten a valid value, else any JSON value (so whole events are often valid)."""
    return st.integers(0, 9).flatmap(
        lambda n: st.just(valid) if n else (json_values | st.text(max_size=24))
    )


cloudevent_like = st.fixed_dictionaries(
    {
        "specversion": maybe("1.0"),
        "id": maybe("evt-1"),
        "source": maybe("/shop"),
        "type": maybe("Shop.OrderPlaced"),
    },
    optional={
        "subject": maybe("orders/1"),
        "time": maybe("2024-05-01T12:30:00Z") | timestamps,
        "datacontenttype": maybe("application/json"),
        "dataschema": maybe("https://example.com/s.json"),
        "data": json_values,
        "data_base64": maybe("aGVsbG8=")
        | st.binary(max_size=12).map(lambda raw: base64.b64encode(raw).decode()),
    },
).flatmap(
    lambda obj: st.dictionaries(
        st.text(max_size=22) | extension_names, json_values | extension_values, max_size=3
    ).map(lambda extra: {**extra, **obj})
)

eventgrid_like = st.fixed_dictionaries(
    {
        "id": maybe("evt-1"),
        "subject": maybe(""),
        "eventType": maybe("Shop.OrderPlaced"),
        "eventTime": maybe("2024-05-01T12:30:00Z") | timestamps,
    },
    optional={
        "data": json_values
        | json_objects.map(lambda obj: {**obj, CORRELATION_KEY: {"correlationid": "c"}})
        | st.fixed_dictionaries({CORRELATION_KEY: json_values | correlations}),
        "dataVersion": maybe("1.0"),
        "metadataVersion": maybe("1"),
        "topic": maybe(TOPIC),
    },
).flatmap(
    lambda obj: st.dictionaries(st.text(max_size=12), json_values, max_size=1).map(
        lambda extra: {**extra, **obj}
    )
)


def returns_or_refuses(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Call; an InvalidEventError is a clean refusal (None), anything else propagates."""
    try:
        return call(*args, **kwargs)
    except InvalidEventError as error:
        refusal = error
    assert str(refusal), "a refusal must say what is wrong"
    return None


# ------------------------------------------------------------- refusal is always clean


@fuzz
@given(json_values)
def test_any_json_value_is_parsed_or_cleanly_refused_by_from_dict(value: Any) -> None:
    returns_or_refuses(CloudEvent.from_dict, value)
    returns_or_refuses(EventGridEvent.from_dict, value)


@fuzz
@given(json_values, st.booleans())
def test_any_json_document_is_parsed_or_cleanly_refused_by_the_parsers(
    value: Any, batch: bool
) -> None:
    body = msgspec.json.encode(value)

    returns_or_refuses(parse_cloudevents, body, batch=batch)
    returns_or_refuses(parse_eventgrid_events, body)
    returns_or_refuses(parse_cloudevents, body.decode(), batch=batch)


@fuzz
@given(st.lists(json_values, max_size=3) | json_values)
def test_any_json_document_wrapped_in_an_array_is_parsed_or_refused(value: Any) -> None:
    body = msgspec.json.encode(value if isinstance(value, list) else [value])

    returns_or_refuses(parse_cloudevents, body, batch=True)
    returns_or_refuses(parse_eventgrid_events, body)


@fuzz
@given(st.text(max_size=40))
def test_any_text_body_is_parsed_or_cleanly_refused(body: str) -> None:
    for encoded in (body, body.encode()):
        returns_or_refuses(parse_cloudevents, encoded, batch=False)
        returns_or_refuses(parse_cloudevents, encoded, batch=True)
        returns_or_refuses(parse_eventgrid_events, encoded)


@fuzz
@example(b'"\xff"')  # invalid UTF-8 inside a string
@given(st.binary(max_size=40))
def test_any_bytes_are_parsed_or_cleanly_refused(body: bytes) -> None:
    returns_or_refuses(parse_cloudevents, body, batch=False)
    returns_or_refuses(parse_cloudevents, body, batch=True)
    returns_or_refuses(parse_eventgrid_events, body)


@composite
@given(cloudevent_like)
def test_cloudevent_shaped_objects_are_parsed_or_cleanly_refused(obj: dict[str, Any]) -> None:
    event = returns_or_refuses(CloudEvent.from_dict, obj)
    parsed = returns_or_refuses(parse_cloudevents, msgspec.json.encode(obj), batch=False)

    assert parsed == (None if event is None else [event])
    if event is not None:
        assert CloudEvent.from_dict(event.to_dict()) == event
        returns_or_refuses(eventgrid_from_cloudevent, event, default_time=OTHER_TIME)


@composite
@given(eventgrid_like)
def test_eventgrid_shaped_objects_are_parsed_or_cleanly_refused(obj: dict[str, Any]) -> None:
    event = returns_or_refuses(EventGridEvent.from_dict, obj)
    parsed = returns_or_refuses(parse_eventgrid_events, msgspec.json.encode([obj]))

    assert parsed == (None if event is None else [event])
    if event is not None:
        returns_or_refuses(cloudevent_from_eventgrid, event, topic_id=TOPIC)


# ------------------------------------------------------------------------- round trips


@composite
@given(cloudevents())
def test_valid_cloudevent_survives_to_dict_and_from_dict(event: CloudEvent) -> None:
    assert CloudEvent.from_dict(event.to_dict()) == event


@composite
@given(cloudevents())
def test_valid_cloudevent_survives_its_structured_json(event: CloudEvent) -> None:
    assert parse_cloudevents(event.to_json(), batch=False) == [event]


@composite
@given(st.lists(cloudevents(), max_size=3))
def test_valid_cloudevents_survive_a_batch(events: list[CloudEvent]) -> None:
    body = msgspec.json.encode([event.to_dict() for event in events])

    assert parse_cloudevents(body, batch=True) == events


@composite
@given(cloudevents())
def test_valid_cloudevent_survives_the_storage_encoding(event: CloudEvent) -> None:
    assert decode_event(encode_event(event)) == event


@composite
@given(eventgrid_events())
def test_eventgrid_to_cloudevent_and_back_is_the_identity_for_object_data(
    event: EventGridEvent,
) -> None:
    converted = cloudevent_from_eventgrid(event, topic_id=TOPIC)
    back = eventgrid_from_cloudevent(converted, default_time=OTHER_TIME)

    assert back == msgspec.structs.replace(event, topic=TOPIC, metadata_version="1")
    assert CORRELATION_KEY not in converted.data


@composite
@given(eventgrid_events())
def test_valid_eventgrid_event_survives_its_json(event: EventGridEvent) -> None:
    body = msgspec.json.encode([event.to_dict()])

    assert parse_eventgrid_events(body) == [event]


@composite
@given(eventgrid_events())
def test_converted_eventgrid_event_survives_the_storage_encoding(event: EventGridEvent) -> None:
    converted = cloudevent_from_eventgrid(event, topic_id=TOPIC)

    assert decode_event(encode_event(converted)) == converted
