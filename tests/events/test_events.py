"""The event model: CloudEvents 1.0, the Event Grid schema, conversions and the storage encoding."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from choreograph.errors import EventTooLargeError, InvalidEventError
from choreograph.events import (
    CORRELATION_ATTRIBUTES,
    CORRELATION_KEY,
    MAX_EVENT_BYTES,
    CloudEvent,
    EventGridEvent,
    cloudevent_from_eventgrid,
    decode_event,
    encode_event,
    eventgrid_from_cloudevent,
    parse_cloudevents,
    parse_eventgrid_events,
)

UNSET: Any = msgspec.UNSET
ABSENT: Any = object()
"""Marks an attribute to leave out of a generated dict."""
DID_NOT_RAISE = pytest.fail.Exception
"""What ``pytest.raises`` raises when the call does not raise: the sign of an accepted input."""

TIME = "2024-05-01T12:30:00Z"
OTHER_TIME = "2030-01-01T00:00:00Z"
TOPIC = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.EventGrid/topics/orders"

# --------------------------------------------------------------------------------- helpers


def ce_dict(**attributes: Any) -> dict[str, Any]:
    """A valid structured-mode CloudEvent; keyword arguments override (ABSENT removes)."""
    obj: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/shop",
        "type": "Shop.OrderPlaced",
    }
    obj.update(attributes)
    return {name: value for name, value in obj.items() if value is not ABSENT}


def eg_dict(**fields: Any) -> dict[str, Any]:
    """A valid Event Grid event; keyword arguments override (ABSENT removes)."""
    obj: dict[str, Any] = {
        "id": "evt-1",
        "subject": "orders/42",
        "eventType": "Shop.OrderPlaced",
        "eventTime": TIME,
        "data": {"orderId": 42},
    }
    obj.update(fields)
    return {name: value for name, value in obj.items() if value is not ABSENT}


def refused(call: Callable[[], object]) -> InvalidEventError:
    """The InvalidEventError that ``call`` raises."""
    with pytest.raises(InvalidEventError) as info:
        call()
    return info.value


def full_event() -> CloudEvent:
    return CloudEvent(
        id="evt-7",
        source="/shop",
        type="Shop.OrderPlaced",
        subject="orders/7",
        time="2024-05-01T12:30:00.1234567+02:00",
        datacontenttype="application/json",
        dataschema="https://example.com/order.json",
        data={"orderId": 7, "lines": [{"sku": "A", "qty": 2}], "note": None},
        extensions={"correlationid": "tx-1", "causationid": "evt-6", "priority": 3, "urgent": True},
    )


# --------------------------------------------------------------------------- CloudEvent


def test_minimal_structured_event_is_parsed_with_defaults() -> None:
    event = CloudEvent.from_dict(ce_dict())

    assert (event.id, event.source, event.type, event.specversion) == (
        "evt-1",
        "/shop",
        "Shop.OrderPlaced",
        "1.0",
    )
    assert event.subject is None
    assert event.time is None
    assert event.extensions == {}
    assert not event.has_data


@pytest.mark.parametrize("name", ["id", "source", "type", "specversion"])
@pytest.mark.parametrize("value", [ABSENT, None], ids=["missing", "null"])
def test_missing_required_attribute_is_refused_naming_it(name: str, value: Any) -> None:
    error = refused(lambda: CloudEvent.from_dict(ce_dict(**{name: value})))

    assert str(error) == f"`{name}` is required"
    assert error.attribute == name
    assert error.index is None


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("id", "", '""'),
        ("id", 42, "42"),
        ("id", True, "true"),
        ("source", "", '""'),
        ("source", ["/shop"], "an array"),
        ("type", "", '""'),
        ("type", {"name": "t"}, "an object"),
        ("type", 1.5, "1.5"),
    ],
)
def test_required_attribute_empty_or_not_a_string_is_refused_naming_it(
    name: str, value: Any, shown: str
) -> None:
    error = refused(lambda: CloudEvent.from_dict(ce_dict(**{name: value})))

    assert str(error) == f"`{name}` must be a non-empty string, got {shown}"
    assert error.attribute == name


@pytest.mark.parametrize(
    ("value", "shown"),
    [("0.3", '"0.3"'), ("1", '"1"'), ("", '""'), ("1.0 ", '"1.0 "'), (1.0, "1.0"), (1, "1")],
)
def test_specversion_other_than_1_0_is_refused_naming_the_attribute(value: Any, shown: str) -> None:
    error = refused(lambda: CloudEvent.from_dict(ce_dict(specversion=value)))

    assert str(error) == f'`specversion` must be "1.0", got {shown}'
    assert error.attribute == "specversion"


def test_specversion_0_3_message_is_exact() -> None:
    error = refused(lambda: CloudEvent(type="t", source="s", specversion="0.3"))

    assert str(error) == '`specversion` must be "1.0", got "0.3"'


@pytest.mark.parametrize(
    ("attributes", "name"),
    [({"type": ""}, "type"), ({"source": ""}, "source"), ({"id": ""}, "id")],
)
def test_constructor_validates_like_the_parser(attributes: dict[str, str], name: str) -> None:
    arguments: dict[str, Any] = {"type": "t", "source": "s", **attributes}

    error = refused(lambda: CloudEvent(**arguments))

    assert str(error) == f'`{name}` must be a non-empty string, got ""'
    assert error.attribute == name


@pytest.mark.parametrize("name", ["subject", "datacontenttype", "dataschema"])
@pytest.mark.parametrize(("value", "shown"), [("", '""'), (7, "7"), ([], "an array")])
def test_optional_string_attribute_present_must_be_a_non_empty_string(
    name: str, value: Any, shown: str
) -> None:
    error = refused(lambda: CloudEvent.from_dict(ce_dict(**{name: value})))

    assert str(error) == f"`{name}` must be a non-empty string, got {shown}"
    assert error.attribute == name


@pytest.mark.parametrize("name", ["subject", "time", "datacontenttype", "dataschema"])
def test_null_optional_attribute_is_absent(name: str) -> None:
    event = CloudEvent.from_dict(ce_dict(**{name: None}))

    assert getattr(event, name) is None
    assert name not in event.to_dict()
    assert event.extensions == {}


@pytest.mark.parametrize(
    "value",
    [
        "2024-05-01T12:30:00Z",
        "2024-05-01T12:30:00+02:00",
        "2024-05-01T12:30:00-05:30",
        "2024-05-01T12:30:00.5Z",
        "2024-05-01T12:30:00.123456Z",
        "2024-05-01T12:30:00.1234567Z",  # .NET writes 7 fractional digits
        "2024-05-01T12:30:00.1234567+00:00",
        "2024-05-01t12:30:00Z",
    ],
)
def test_time_in_rfc3339_with_a_time_zone_is_accepted(value: str) -> None:
    assert CloudEvent.from_dict(ce_dict(time=value)).time == value


@pytest.mark.parametrize("value", ["2024-05-01T12:30:00z", "2024-05-01t12:30:00.5z"])
def test_time_with_lower_case_z_is_accepted(value: str) -> None:
    assert CloudEvent.from_dict(ce_dict(time=value)).time == value


@pytest.mark.parametrize(
    "value",
    [
        "2024-05-01T12:30:00",  # naive
        "2024-05-01T12:30:00.1234567",  # naive, .NET style
        "2024-05-01",  # a date
        "2024-05-01+02:00",
        "12:30:00Z",  # a time
        "yesterday",
        "2024-13-01T12:30:00Z",  # month 13
        "2024-02-30T12:30:00Z",
        "2024-05-01T25:00:00Z",
        "2024-05-01 12:30:00Z",  # RFC 3339 section 5.6 wants the T
        "1714566600",
        "T",
    ],
)
def test_time_without_a_time_zone_or_unparseable_is_refused(value: str) -> None:
    error = refused(lambda: CloudEvent.from_dict(ce_dict(time=value)))

    assert str(error) == (f'`time` must be an RFC 3339 timestamp with a time zone, got "{value}"')
    assert error.attribute == "time"


@pytest.mark.parametrize(
    "value",
    ["2024-05-01T12:30:00.5+24:00", "2024-05-01T12:30:00.5-99:00", "2024-05-01T12:30:00.5"],
)
def test_a_second_already_seen_valid_does_not_pass_another_zone_or_none(value: str) -> None:
    # the first event makes "2024-05-01T12:30:00" a known-valid second
    assert CloudEvent.from_dict(ce_dict(time="2024-05-01T12:30:00.25Z")).time is not None
    error = refused(lambda: CloudEvent.from_dict(ce_dict(time=value)))

    assert error.attribute == "time"


@pytest.mark.parametrize(("value", "shown"), [("", '""'), (1714566600, "1714566600")])
def test_time_that_is_not_a_non_empty_string_is_refused(value: Any, shown: str) -> None:
    error = refused(lambda: CloudEvent.from_dict(ce_dict(time=value)))

    assert str(error) == f"`time` must be a non-empty string, got {shown}"
    assert error.attribute == "time"


@pytest.mark.parametrize(
    "value",
    [
        "20240501T123000Z",  # ISO 8601 basic format
        "2024-W18-3T12:30:00Z",  # week date
        "2024-05-01T12Z",  # hours only
        "2024-05-01T12:30Z",  # no seconds
        "2024-05-01T1230Z",
        "2024-05-01T12:30:00+0200",  # offset without a colon
        "2024-05-01T12:30:00+02",  # offset in hours only
        "2024-05-01T12:30:00+02:00:30",  # offset with seconds
        "2024-05-01T12:30:00,5Z",  # decimal comma
    ],
)
def test_time_in_iso8601_forms_outside_rfc3339_is_refused(value: str) -> None:
    error = refused(lambda: CloudEvent.from_dict(ce_dict(time=value)))

    assert error.attribute == "time"


@pytest.mark.parametrize("data", [None, "text", {"a": 1}, [1, 2]])
def test_data_and_data_base64_together_are_refused(data: Any) -> None:
    error = refused(lambda: CloudEvent.from_dict(ce_dict(data=data, data_base64="AAAA")))

    assert str(error) == "only one of `data` and `data_base64` may be present"
    assert error.attribute == "data_base64"


@pytest.mark.parametrize(
    "value",
    [
        "not base64!",
        "AAA",  # bad padding
        "AA AA",  # whitespace
        "-_-_",  # the URL-safe alphabet
        "aGVsbG8=\n",
        "\u00e9t\u00e9",
    ],
)
def test_data_base64_that_is_not_valid_base64_is_refused(value: str) -> None:
    error = refused(lambda: CloudEvent.from_dict(ce_dict(data_base64=value)))

    assert str(error) == "`data_base64` must be valid base64"
    assert error.attribute == "data_base64"


@pytest.mark.parametrize(("value", "shown"), [(123, "123"), (["AAAA"], "an array")])
def test_data_base64_that_is_not_a_string_is_refused(value: Any, shown: str) -> None:
    error = refused(lambda: CloudEvent.from_dict(ce_dict(data_base64=value)))

    assert str(error) == f"`data_base64` must be a base64 string, got {shown}"
    assert error.attribute == "data_base64"


@pytest.mark.parametrize(
    ("encoded", "raw"), [("aGVsbG8=", b"hello"), ("", b""), ("AP8=", b"\x00\xff")]
)
def test_data_bytes_decodes_data_base64(encoded: str, raw: bytes) -> None:
    event = CloudEvent.from_dict(ce_dict(data_base64=encoded))

    assert event.data_bytes == raw
    assert event.has_data
    assert event.data is UNSET


def test_data_bytes_is_none_for_json_data() -> None:
    assert CloudEvent.from_dict(ce_dict(data={"a": 1})).data_bytes is None
    assert CloudEvent.from_dict(ce_dict()).data_bytes is None


def test_null_data_is_present_and_distinct_from_absent_data() -> None:
    null_data = CloudEvent.from_dict(ce_dict(data=None))
    no_data = CloudEvent.from_dict(ce_dict())

    assert null_data.has_data
    assert null_data.data is None
    assert null_data.to_dict()["data"] is None
    assert not no_data.has_data
    assert "data" not in no_data.to_dict()
    assert null_data != no_data


@pytest.mark.parametrize("name", ["a", "0", "x1", "correlationid", "a" * 20, "123"])
def test_extension_name_of_lower_case_letters_and_digits_is_accepted(name: str) -> None:
    event = CloudEvent.from_dict(ce_dict(**{name: "v"}))

    assert event.extensions == {name: "v"}


@pytest.mark.parametrize(
    "name",
    ["Upper", "correlationId", "under_score", "with-dash", "dot.ted", "a" * 21, "caf\u00e9", ""],
)
def test_extension_name_outside_1_to_20_lower_case_letters_or_digits_is_refused(
    name: str,
) -> None:
    error = refused(lambda: CloudEvent.from_dict(ce_dict(**{name: "v"})))

    assert str(error) == (
        f'extension attribute name "{name}" must be 1-20 lower-case letters or digits'
    )
    assert error.attribute == name


@pytest.mark.parametrize(
    "name",
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
    ],
)
def test_extension_named_like_a_cloudevents_attribute_is_refused(name: str) -> None:
    error = refused(lambda: CloudEvent(type="t", source="s", extensions={name: "v"}))

    assert str(error) == f"`{name}` is a CloudEvents attribute, not an extension"
    assert error.attribute == name


@pytest.mark.parametrize("value", ["v", 0, -(2**31), 2**31 - 1, True, False])
def test_extension_value_string_int32_or_bool_is_kept(value: Any) -> None:
    event = CloudEvent.from_dict(ce_dict(priority=value))

    assert event.extensions["priority"] == value
    assert type(event.extensions["priority"]) is type(value)


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 2**63])
def test_extension_integer_outside_signed_32_bits_is_refused(value: int) -> None:
    error = refused(lambda: CloudEvent.from_dict(ce_dict(priority=value)))

    assert str(error) == (
        f"extension attribute `priority` must fit in a signed 32-bit integer, got {value}"
    )
    assert error.attribute == "priority"


@pytest.mark.parametrize(
    ("value", "shown"),
    [(1.5, "1.5"), ("", '""'), ([1], "an array"), ({"a": 1}, "an object"), (1e20, "1e+20")],
)
def test_extension_value_of_another_type_is_refused(value: Any, shown: str) -> None:
    error = refused(lambda: CloudEvent.from_dict(ce_dict(priority=value)))

    assert str(error) == (
        "extension attribute `priority` must be a non-empty string, an integer or a boolean, "
        f"got {shown}"
    )
    assert error.attribute == "priority"


def test_null_extension_is_absent() -> None:
    event = CloudEvent.from_dict(ce_dict(correlationid=None, priority=2))

    assert event.extensions == {"priority": 2}
    assert "correlationid" not in event.to_dict()
    assert event.correlationid is None


def test_default_id_is_a_fresh_uuid4_string() -> None:
    ids = [CloudEvent(type="t", source="s").id for _ in range(500)]

    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_to_dict_puts_extensions_verbatim_at_top_level() -> None:
    event = full_event()

    assert event.to_dict() == {
        "specversion": "1.0",
        "id": "evt-7",
        "source": "/shop",
        "type": "Shop.OrderPlaced",
        "subject": "orders/7",
        "time": "2024-05-01T12:30:00.1234567+02:00",
        "datacontenttype": "application/json",
        "dataschema": "https://example.com/order.json",
        "data": {"orderId": 7, "lines": [{"sku": "A", "qty": 2}], "note": None},
        "correlationid": "tx-1",
        "causationid": "evt-6",
        "priority": 3,
        "urgent": True,
    }


@pytest.mark.parametrize(
    "event",
    [
        full_event(),
        CloudEvent(type="t", source="s", id="i"),
        CloudEvent(type="t", source="s", id="i", data=None),
        CloudEvent(type="t", source="s", id="i", data_base64="aGVsbG8="),
        CloudEvent(type="t", source="s", id="i", data="text", extensions={"n": -1, "b": False}),
    ],
    ids=["full", "minimal", "null-data", "binary", "scalar-data"],
)
def test_to_dict_from_dict_round_trip_is_lossless(event: CloudEvent) -> None:
    assert CloudEvent.from_dict(event.to_dict()) == event
    assert CloudEvent.from_json(event.to_json()) == event
    assert msgspec.json.decode(event.to_json()) == event.to_dict()


def test_extension_named_extensions_travels_at_top_level() -> None:
    event = CloudEvent.from_dict(ce_dict(extensions="x"))

    assert event.extensions == {"extensions": "x"}
    assert event.to_dict()["extensions"] == "x"
    assert CloudEvent.from_dict(event.to_dict()) == event


@pytest.mark.parametrize(("value", "shown"), [([], "an array"), ("{}", '"{}"'), (None, "null")])
def test_cloudevent_that_is_not_an_object_is_refused(value: Any, shown: str) -> None:
    error = refused(lambda: CloudEvent.from_dict(value))

    assert str(error) == f"a CloudEvent must be a JSON object, got {shown}"


def test_with_extensions_returns_a_copy_with_extensions_added_or_replaced() -> None:
    event = CloudEvent(type="t", source="s", extensions={"correlationid": "tx-1", "a": 1})

    changed = event.with_extensions(correlationid="tx-2", traceparent="00-abc-def-01")

    assert changed.extensions == {"correlationid": "tx-2", "a": 1, "traceparent": "00-abc-def-01"}
    assert event.extensions == {"correlationid": "tx-1", "a": 1}
    assert (changed.id, changed.type, changed.source) == (event.id, event.type, event.source)


@pytest.mark.parametrize(
    ("extensions", "message"),
    [
        ({"Bad": "x"}, 'extension attribute name "Bad" must be 1-20 lower-case letters or digits'),
        ({"subject": "x"}, "`subject` is a CloudEvents attribute, not an extension"),
        ({"n": 2**40}, f"extension attribute `n` must fit in a signed 32-bit integer, got {2**40}"),
    ],
)
def test_with_extensions_validates_the_new_extensions(
    extensions: dict[str, Any], message: str
) -> None:
    event = CloudEvent(type="t", source="s")

    assert str(refused(lambda: event.with_extensions(**extensions))) == message


def test_correlation_properties_read_the_extensions() -> None:
    event = CloudEvent(
        type="t",
        source="s",
        extensions={
            "correlationid": "tx-1",
            "causationid": "evt-0",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
    )

    assert event.correlationid == "tx-1"
    assert event.causationid == "evt-0"
    assert event.traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_correlation_properties_are_none_when_absent_or_not_strings() -> None:
    absent = CloudEvent(type="t", source="s")
    numeric = CloudEvent(
        type="t", source="s", extensions={"correlationid": 7, "causationid": True, "traceparent": 0}
    )

    for event in (absent, numeric):
        assert event.correlationid is None
        assert event.causationid is None
        assert event.traceparent is None


# -------------------------------------------------------------------- parse_cloudevents


def test_structured_body_is_parsed_as_one_event() -> None:
    body = msgspec.json.encode(ce_dict(data={"a": 1}, correlationid="tx-1"))

    (event,) = parse_cloudevents(body, batch=False)

    assert event == CloudEvent.from_dict(ce_dict(data={"a": 1}, correlationid="tx-1"))


def test_structured_body_may_be_text() -> None:
    body = msgspec.json.encode(ce_dict()).decode()

    assert parse_cloudevents(body, batch=False) == [CloudEvent.from_dict(ce_dict())]


def test_structured_body_that_is_an_array_is_refused() -> None:
    body = msgspec.json.encode([ce_dict()])

    error = refused(lambda: parse_cloudevents(body, batch=False))

    assert str(error) == "a CloudEvent must be a JSON object, got an array"


def test_batch_body_is_parsed_in_order() -> None:
    body = msgspec.json.encode([ce_dict(id=f"evt-{n}") for n in range(3)])

    events = parse_cloudevents(body, batch=True)

    assert [event.id for event in events] == ["evt-0", "evt-1", "evt-2"]


def test_empty_batch_is_parsed_as_no_events() -> None:
    assert parse_cloudevents(b"[]", batch=True) == []


@pytest.mark.parametrize(
    ("document", "shown"), [(ce_dict(), "an object"), ("x", '"x"'), (None, "null"), (3, "3")]
)
def test_batch_body_that_is_not_an_array_is_refused(document: Any, shown: str) -> None:
    body = msgspec.json.encode(document)

    error = refused(lambda: parse_cloudevents(body, batch=True))

    assert str(error) == f"a CloudEvents batch must be a JSON array, got {shown}"


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("body", [b"", b"{", b"not json", b'{"id": }', b"[1,]", "{'id': 1}"])
def test_body_that_is_not_json_is_refused_saying_so(body: bytes | str, batch: bool) -> None:
    error = refused(lambda: parse_cloudevents(body, batch=batch))

    assert str(error).startswith("the body is not valid JSON: ")
    assert isinstance(error.__cause__, msgspec.DecodeError)


def test_error_in_a_batch_names_the_event_index() -> None:
    body = msgspec.json.encode([ce_dict(id="a"), ce_dict(id="b"), ce_dict(id=ABSENT)])

    error = refused(lambda: parse_cloudevents(body, batch=True))

    assert str(error) == "event 2: `id` is required"
    assert error.index == 2
    assert error.attribute == "id"
    assert error.rule == "`id` is required"


def test_first_bad_event_of_a_batch_is_reported() -> None:
    body = msgspec.json.encode([ce_dict(), ce_dict(specversion="0.3"), ce_dict(type="")])

    error = refused(lambda: parse_cloudevents(body, batch=True))

    assert str(error) == 'event 1: `specversion` must be "1.0", got "0.3"'
    assert error.index == 1


def test_batch_error_keeps_the_underlying_cause() -> None:
    body = msgspec.json.encode([ce_dict(), ce_dict(data_base64="!!!")])

    error = refused(lambda: parse_cloudevents(body, batch=True))

    assert str(error) == "event 1: `data_base64` must be valid base64"
    assert error.__cause__ is not None


HOSTILE_BODIES = [
    pytest.param(b"[" * 5_000, id="deeply-nested-unterminated"),
    pytest.param(b"[" * 5_000 + b"]" * 5_000, id="deeply-nested"),
    pytest.param(b'{"data": "\xff"}', id="invalid-utf8-in-a-string"),
    pytest.param(b'["\xc3"]', id="truncated-utf8-in-a-string"),
    pytest.param('{"id": "\ud800"}', id="text-with-a-lone-surrogate"),
]


@pytest.mark.parametrize("body", HOSTILE_BODIES)
def test_hostile_body_is_refused_as_invalid_json(body: bytes | str) -> None:
    with pytest.raises(InvalidEventError, match="JSON"):
        parse_cloudevents(body, batch=True)
    with pytest.raises(InvalidEventError, match="JSON"):
        parse_eventgrid_events(body)


# ------------------------------------------------------------------------ EventGridEvent


def test_eventgrid_body_is_parsed_with_camel_case_fields() -> None:
    body = msgspec.json.encode([eg_dict(dataVersion="2.0", metadataVersion="1", topic=TOPIC)])

    (event,) = parse_eventgrid_events(body)

    assert event == EventGridEvent(
        id="evt-1",
        subject="orders/42",
        event_type="Shop.OrderPlaced",
        event_time=TIME,
        data={"orderId": 42},
        data_version="2.0",
        metadata_version="1",
        topic=TOPIC,
    )


@pytest.mark.parametrize(
    ("document", "shown"),
    [(eg_dict(), "an object"), ("[]", '"[]"'), (None, "null"), (1, "1")],
)
def test_eventgrid_body_that_is_not_an_array_is_refused_saying_so(
    document: Any, shown: str
) -> None:
    body = msgspec.json.encode(document)

    error = refused(lambda: parse_eventgrid_events(body))

    assert str(error) == f"Event Grid events must be sent in a JSON array, got {shown}"


@pytest.mark.parametrize("body", [b"", b"[", b"[{]", "nope"])
def test_eventgrid_body_that_is_not_json_is_refused_saying_so(body: bytes | str) -> None:
    error = refused(lambda: parse_eventgrid_events(body))

    assert str(error).startswith("the body is not valid JSON: ")


@pytest.mark.parametrize(("item", "shown"), [([], "an array"), ("e", '"e"'), (None, "null")])
def test_eventgrid_item_that_is_not_an_object_is_refused(item: Any, shown: str) -> None:
    body = msgspec.json.encode([eg_dict(), item])

    error = refused(lambda: parse_eventgrid_events(body))

    assert str(error) == f"event 1: an Event Grid event must be a JSON object, got {shown}"
    assert error.index == 1


@pytest.mark.parametrize("name", ["id", "subject", "eventType", "eventTime"])
@pytest.mark.parametrize("value", [ABSENT, None], ids=["missing", "null"])
def test_eventgrid_missing_required_field_is_refused_naming_it(name: str, value: Any) -> None:
    error = refused(lambda: EventGridEvent.from_dict(eg_dict(**{name: value})))

    assert str(error) == f"`{name}` is required"
    assert error.attribute == name


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("id", "", '`id` must be a non-empty string, got ""'),
        ("id", 1, "`id` must be a non-empty string, got 1"),
        ("eventType", "", '`eventType` must be a non-empty string, got ""'),
        ("eventType", ["a"], "`eventType` must be a non-empty string, got an array"),
        ("subject", 5, "`subject` must be a string, got 5"),
        ("subject", False, "`subject` must be a string, got false"),
        ("eventTime", "", '`eventTime` must be a non-empty string, got ""'),
        (
            "eventTime",
            "2024-05-01T12:30:00",
            '`eventTime` must be an RFC 3339 timestamp with a time zone, got "2024-05-01T12:30:00"',
        ),
        (
            "eventTime",
            "soon",
            '`eventTime` must be an RFC 3339 timestamp with a time zone, got "soon"',
        ),
        ("dataVersion", 1, "`dataVersion` must be a string, got 1"),
        ("dataVersion", ["1.0"], "`dataVersion` must be a string, got an array"),
        ("topic", 5, "`topic` must be a string, got 5"),
        ("topic", {"id": TOPIC}, "`topic` must be a string, got an object"),
    ],
)
def test_eventgrid_field_of_the_wrong_shape_is_refused_naming_it(
    name: str, value: Any, message: str
) -> None:
    error = refused(lambda: EventGridEvent.from_dict(eg_dict(**{name: value})))

    assert str(error) == message
    assert error.attribute == name


def test_eventgrid_time_with_seven_fractional_digits_is_accepted() -> None:
    event = EventGridEvent.from_dict(eg_dict(eventTime="2024-05-01T12:30:00.1234567Z"))

    assert event.event_time == "2024-05-01T12:30:00.1234567Z"


def test_eventgrid_empty_subject_is_allowed() -> None:
    assert EventGridEvent.from_dict(eg_dict(subject="")).subject == ""


@pytest.mark.parametrize(
    ("value", "shown"), [("2", '"2"'), ("1.0", '"1.0"'), ("", '""'), (1, "1"), ([], "an array")]
)
def test_metadata_version_other_than_1_is_refused(value: Any, shown: str) -> None:
    error = refused(lambda: EventGridEvent.from_dict(eg_dict(metadataVersion=value)))

    assert str(error) == f'`metadataVersion` must be "1", got {shown}'
    assert error.attribute == "metadataVersion"


@pytest.mark.parametrize(("value", "kept"), [("1", "1"), (None, None), (ABSENT, None)])
def test_metadata_version_1_or_absent_is_accepted(value: Any, kept: str | None) -> None:
    assert EventGridEvent.from_dict(eg_dict(metadataVersion=value)).metadata_version == kept


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        ({"foo": 1}, "foo"),
        ({"eventtype": "x"}, "eventtype"),  # property names are case-sensitive
        ({"specversion": "1.0"}, "specversion"),
        ({"zeta": None, "alpha": None}, "alpha"),
    ],
)
def test_unknown_eventgrid_property_is_refused_naming_it(extra: dict[str, Any], name: str) -> None:
    error = refused(lambda: EventGridEvent.from_dict({**eg_dict(), **extra}))

    assert str(error) == f"`{name}` is not an Event Grid event property"
    assert error.attribute == name


@pytest.mark.parametrize("value", [ABSENT, None, ""])
def test_data_version_defaults_to_empty(value: Any) -> None:
    assert EventGridEvent.from_dict(eg_dict(dataVersion=value)).data_version == ""


@pytest.mark.parametrize("value", [0, False, [], {}])
def test_data_version_that_is_a_falsy_non_string_is_refused(value: Any) -> None:
    error = refused(lambda: EventGridEvent.from_dict(eg_dict(dataVersion=value)))

    assert error.attribute == "dataVersion"


@pytest.mark.parametrize("data", [ABSENT, None, "text", 0, [1], {"a": {"b": None}}])
def test_eventgrid_to_dict_from_dict_round_trip(data: Any) -> None:
    event = EventGridEvent.from_dict(eg_dict(data=data, dataVersion="1.0", topic=TOPIC))

    assert EventGridEvent.from_dict(event.to_dict()) == event
    assert ("data" in event.to_dict()) is (data is not ABSENT)


def test_eventgrid_to_dict_carries_the_stamped_empty_data_version() -> None:
    event = EventGridEvent.from_dict(eg_dict(dataVersion=ABSENT, metadataVersion="1"))

    assert event.to_dict()["dataVersion"] == ""


def test_eventgrid_error_in_a_batch_names_the_event_index() -> None:
    body = msgspec.json.encode([eg_dict(), eg_dict(), eg_dict(eventTime="noon")])

    error = refused(lambda: parse_eventgrid_events(body))

    assert str(error) == (
        'event 2: `eventTime` must be an RFC 3339 timestamp with a time zone, got "noon"'
    )
    assert error.index == 2
    assert error.attribute == "eventTime"


# -------------------------------------------------------------------------- conversions


def test_eventgrid_event_converts_to_a_cloudevent() -> None:
    correlation = {"correlationid": "tx-1", "causationid": "evt-0", "tracestate": "k=v"}
    event = EventGridEvent.from_dict(
        eg_dict(
            topic=TOPIC,
            dataVersion="2.0",
            data={"orderId": 42, CORRELATION_KEY: correlation},
        )
    )

    converted = cloudevent_from_eventgrid(event, topic_id=TOPIC)

    assert converted == CloudEvent(
        id="evt-1",
        source=TOPIC,
        type="Shop.OrderPlaced",
        subject="orders/42",
        time=TIME,
        data={"orderId": 42},
        extensions={**correlation, "dataversion": "2.0"},
    )


def test_conversion_stamps_the_topic_as_source_when_absent() -> None:
    event = EventGridEvent.from_dict(eg_dict())

    assert cloudevent_from_eventgrid(event, topic_id=TOPIC).source == TOPIC


def test_conversion_refuses_a_different_topic() -> None:
    event = EventGridEvent.from_dict(eg_dict(topic="/topics/other"))

    error = refused(lambda: cloudevent_from_eventgrid(event, topic_id=TOPIC))

    assert str(error) == f'`topic` must be "{TOPIC}" or absent, got "/topics/other"'
    assert error.attribute == "topic"


def test_conversion_refuses_a_different_short_topic_quoting_both() -> None:
    event = EventGridEvent.from_dict(eg_dict(topic="/topics/b"))

    error = refused(lambda: cloudevent_from_eventgrid(event, topic_id="/topics/a"))

    assert str(error) == '`topic` must be "/topics/a" or absent, got "/topics/b"'


def test_conversion_of_empty_subject_and_data_version_leaves_them_out() -> None:
    event = EventGridEvent.from_dict(eg_dict(subject="", dataVersion=""))

    converted = cloudevent_from_eventgrid(event, topic_id=TOPIC)

    assert converted.subject is None
    assert converted.extensions == {}


@pytest.mark.parametrize("data", [ABSENT, None, "text", 3, [{CORRELATION_KEY: {"x": 1}}]])
def test_conversion_keeps_non_object_data_as_is(data: Any) -> None:
    event = EventGridEvent.from_dict(eg_dict(data=data))

    converted = cloudevent_from_eventgrid(event, topic_id=TOPIC)

    assert converted.data == (UNSET if data is ABSENT else data)
    assert converted.extensions == {}


def test_conversion_does_not_mutate_the_eventgrid_data() -> None:
    data = {"orderId": 42, CORRELATION_KEY: {"correlationid": "tx-1"}}
    event = EventGridEvent.from_dict(eg_dict(data=data))

    cloudevent_from_eventgrid(event, topic_id=TOPIC)

    assert event.data == {"orderId": 42, CORRELATION_KEY: {"correlationid": "tx-1"}}


@pytest.mark.parametrize(
    ("carried", "shown"),
    [("tx-1", '"tx-1"'), (["tx-1"], "an array"), (None, "null"), (1, "1")],
)
def test_correlation_in_data_that_is_not_an_object_is_refused(carried: Any, shown: str) -> None:
    event = EventGridEvent.from_dict(eg_dict(data={CORRELATION_KEY: carried}))

    error = refused(lambda: cloudevent_from_eventgrid(event, topic_id=TOPIC))

    assert str(error) == f"`data.$correlation` must be an object, got {shown}"
    assert error.attribute == "data.$correlation"


@pytest.mark.parametrize("name", ["tenant", "CorrelationId", "dataversion"])
def test_correlation_in_data_with_an_unknown_name_is_refused(name: str) -> None:
    event = EventGridEvent.from_dict(eg_dict(data={CORRELATION_KEY: {name: "x"}}))

    error = refused(lambda: cloudevent_from_eventgrid(event, topic_id=TOPIC))

    assert str(error) == (
        "`data.$correlation` may hold only correlationid, causationid, traceparent, tracestate; "
        f'got "{name}"'
    )
    assert error.attribute == "data.$correlation"


def test_correlation_in_data_with_a_bad_value_is_refused_naming_it() -> None:
    event = EventGridEvent.from_dict(eg_dict(data={CORRELATION_KEY: {"correlationid": 1.5}}))

    error = refused(lambda: cloudevent_from_eventgrid(event, topic_id=TOPIC))

    assert error.attribute == "correlationid"
    assert "got 1.5" in str(error)


def test_cloudevent_converts_back_to_the_eventgrid_schema() -> None:
    event = CloudEvent(
        id="evt-1",
        source=TOPIC,
        type="Shop.OrderPlaced",
        subject="orders/42",
        time=TIME,
        datacontenttype="application/json",
        data={"orderId": 42},
        extensions={
            "correlationid": "tx-1",
            "traceparent": "00-abc-def-01",
            "dataversion": "2.0",
            "priority": 5,
        },
    )

    converted = eventgrid_from_cloudevent(event, default_time=OTHER_TIME)

    assert converted == EventGridEvent(
        id="evt-1",
        topic=TOPIC,
        subject="orders/42",
        event_type="Shop.OrderPlaced",
        event_time=TIME,
        data={
            "orderId": 42,
            CORRELATION_KEY: {"correlationid": "tx-1", "traceparent": "00-abc-def-01"},
        },
        data_version="2.0",
        metadata_version="1",
    )
    assert event.data == {"orderId": 42}  # the CloudEvent's data is not mutated


def test_conversion_back_puts_correlation_into_absent_data() -> None:
    event = CloudEvent(type="t", source="s", time=TIME, extensions={"causationid": "evt-0"})

    converted = eventgrid_from_cloudevent(event, default_time=OTHER_TIME)

    assert converted.data == {CORRELATION_KEY: {"causationid": "evt-0"}}


@pytest.mark.parametrize("data", [None, "text", 7, True, [1, 2]])
def test_conversion_back_leaves_correlation_out_of_non_object_data(data: Any) -> None:
    event = CloudEvent(
        type="t", source="s", time=TIME, data=data, extensions={"correlationid": "c"}
    )

    converted = eventgrid_from_cloudevent(event, default_time=OTHER_TIME)

    assert converted.data == data


def test_conversion_back_without_correlation_keeps_data_absent() -> None:
    event = CloudEvent(type="t", source="s", time=TIME, extensions={"other": "x"})

    converted = eventgrid_from_cloudevent(event, default_time=OTHER_TIME)

    assert converted.data is UNSET
    assert "data" not in converted.to_dict()


def test_conversion_back_stamps_metadata_version_and_defaults() -> None:
    event = CloudEvent(type="t", source="s")

    converted = eventgrid_from_cloudevent(event, default_time=OTHER_TIME)

    assert converted.metadata_version == "1"
    assert converted.event_time == OTHER_TIME
    assert converted.subject == ""
    assert converted.data_version == ""
    assert converted.topic == "s"


def test_conversion_back_renders_a_numeric_data_version_as_text() -> None:
    event = CloudEvent(type="t", source="s", time=TIME, extensions={"dataversion": 3})

    assert eventgrid_from_cloudevent(event, default_time=OTHER_TIME).data_version == "3"


def test_conversion_back_carries_binary_data_as_its_base64_text() -> None:
    event = CloudEvent(type="t", source="s", time=TIME, data_base64="aGVsbG8=")

    assert eventgrid_from_cloudevent(event, default_time=OTHER_TIME).data == "aGVsbG8="


def test_conversion_back_with_a_bad_default_time_is_refused() -> None:
    event = CloudEvent(type="t", source="s")

    error = refused(lambda: eventgrid_from_cloudevent(event, default_time="2024-05-01"))

    assert error.attribute == "eventTime"


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"topic": TOPIC, "metadataVersion": "1"},
        {"subject": "", "dataVersion": "1.0"},
        {"data": {}},
        {"data": {"a": [1, {"b": None}], CORRELATION_KEY: {"correlationid": "tx-1"}}},
        {"data": {CORRELATION_KEY: {name: "v" for name in CORRELATION_ATTRIBUTES}}},
        {"data": {CORRELATION_KEY: {"causationid": 3, "correlationid": True}}},
    ],
)
def test_eventgrid_to_cloudevent_and_back_is_the_identity_for_object_data(
    fields: dict[str, Any],
) -> None:
    event = EventGridEvent.from_dict(eg_dict(**fields))

    back = eventgrid_from_cloudevent(
        cloudevent_from_eventgrid(event, topic_id=TOPIC), default_time=OTHER_TIME
    )

    assert back == msgspec.structs.replace(event, topic=TOPIC, metadata_version="1")


def test_an_empty_correlation_object_carries_nothing_and_is_dropped() -> None:
    event = EventGridEvent.from_dict(eg_dict(data={"a": 1, CORRELATION_KEY: {}}, topic=TOPIC))

    back = eventgrid_from_cloudevent(
        cloudevent_from_eventgrid(event, topic_id=TOPIC), default_time=OTHER_TIME
    )

    assert back.data == {"a": 1}


# ------------------------------------------------------------------------ storage encoding


@pytest.mark.parametrize(
    "event",
    [
        full_event(),
        CloudEvent(type="t", source="s"),
        CloudEvent(type="t", source="s", data=None),
        CloudEvent(type="t", source="s", data=[1.5, "x", False, None, 2**40]),
        CloudEvent(type="t", source="s", data_base64="AP8="),
        CloudEvent(type="t", source="s", extensions={"extensions": "x", "n": 0}),
    ],
    ids=["full", "minimal", "null-data", "array-data", "binary", "odd-extension"],
)
def test_encode_decode_round_trip_is_lossless(event: CloudEvent) -> None:
    encoded = encode_event(event)

    assert isinstance(encoded, bytes)
    assert decode_event(encoded) == event


def _event_encoded_in(size: int) -> CloudEvent:
    """An event whose storage encoding is exactly ``size`` bytes."""
    empty = CloudEvent(type="t", source="s", id="i", data="")
    return msgspec.structs.replace(empty, data="x" * (size - len(encode_event(empty))))


def test_event_at_the_size_limit_is_accepted() -> None:
    event = _event_encoded_in(MAX_EVENT_BYTES)

    assert len(encode_event(event)) == MAX_EVENT_BYTES


def test_event_over_the_size_limit_is_refused_as_too_large() -> None:
    event = _event_encoded_in(MAX_EVENT_BYTES + 1)

    with pytest.raises(EventTooLargeError) as info:
        encode_event(event)

    assert isinstance(info.value, InvalidEventError)
    assert str(info.value) == "the event is 1048577 bytes; the limit is 1048576 bytes"
    assert info.value.attribute == "data"


def test_event_far_over_the_size_limit_is_refused() -> None:
    event = CloudEvent(type="t", source="s", data={"blob": "x" * (2 * MAX_EVENT_BYTES)})

    assert isinstance(refused(lambda: encode_event(event)), EventTooLargeError)


class _Opaque:
    pass


@pytest.mark.parametrize(
    "data",
    [object(), _Opaque(), {"nested": [_Opaque()]}, {"k": 1j}],
    ids=["object", "custom-class", "nested", "complex"],
)
def test_data_that_is_not_json_serializable_is_refused_naming_data(data: Any) -> None:
    event = CloudEvent(type="t", source="s", data=data)

    error = refused(lambda: encode_event(event))

    assert str(error).startswith("`data")
    assert "must be JSON" in str(error)
    assert error.attribute is not None
    assert error.attribute.startswith("data")
    assert not isinstance(error, EventTooLargeError)


@pytest.mark.parametrize(
    "data",
    [{1, 2}, frozenset({"a"}), b"raw", float("inf"), {1: "a"}],
    ids=["set", "frozenset", "bytes", "inf", "int-key"],
)
def test_data_json_cannot_represent_is_refused_naming_data(data: Any) -> None:
    event = CloudEvent(type="t", source="s", data=data)

    error = refused(lambda: encode_event(event))

    assert error.attribute == "data"
