"""Subscription filters: validation of the wire model and the semantics of reference §6."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from choreograph.bus.filters import (
    MAX_ADVANCED_FILTERS,
    MAX_FILTER_VALUES,
    MAX_STRING_LENGTH,
    OPERATORS,
    AdvancedFilter,
    EventFilter,
    compile_filter,
)
from choreograph.errors import InvalidFilterError
from choreograph.events import CloudEvent

UNSET: Any = msgspec.UNSET

# --------------------------------------------------------------------------------- helpers


def make_event(
    data: Any = UNSET,
    *,
    type: str = "Shop.OrderPlaced",
    subject: str | None = None,
    **extensions: Any,
) -> CloudEvent:
    return CloudEvent(
        type=type, source="/shop", id="evt-1", subject=subject, data=data, extensions=extensions
    )


def accepts(spec: EventFilter, event: CloudEvent) -> bool:
    predicate = compile_filter(spec)
    return True if predicate is None else predicate(event)


def adv(op: Any, key: Any = "data.x", value: Any = UNSET, values: Any = UNSET) -> AdvancedFilter:
    return AdvancedFilter(operator_type=op, key=key, value=value, values=values)


def advanced(
    op: str,
    operand: Any = UNSET,
    *,
    key: str = "data.x",
    arrays: bool = False,
) -> EventFilter:
    """A filter with one advanced filter; ``operand`` goes to ``value`` or ``values`` by shape."""
    if OPERATORS[op][0] == "value":
        spec = adv(op, key, value=operand)
    else:  # the null operators' operand is UNSET, which leaves `values` absent
        spec = adv(op, key, values=operand)
    return EventFilter(advanced_filters=(spec,), enable_advanced_filtering_on_arrays=arrays)


def on_value(op: str, operand: Any, found: Any, *, arrays: bool = False) -> bool:
    """Whether the one-filter ``op`` passes an event whose ``data.x`` is ``found``."""
    return accepts(advanced(op, operand, arrays=arrays), make_event({"x": found}))


def refusal(**fields: Any) -> str:
    with pytest.raises(InvalidFilterError) as caught:
        EventFilter(**fields)
    return str(caught.value)


def refusal_of(spec: AdvancedFilter) -> str:
    """The error for ``spec`` placed second, after a valid filter, so its index is 1."""
    return refusal(advanced_filters=(adv("IsNotNull"), spec))


OPERANDS: dict[str, Any] = {
    "NumberIn": [1, 2],
    "NumberNotIn": [1, 2],
    "NumberLessThan": 5,
    "NumberGreaterThan": 5,
    "NumberLessThanOrEquals": 5,
    "NumberGreaterThanOrEquals": 5,
    "NumberInRange": [[1, 5]],
    "NumberNotInRange": [[1, 5]],
    "BoolEquals": True,
    "StringContains": ["a"],
    "StringNotContains": ["a"],
    "StringBeginsWith": ["a"],
    "StringNotBeginsWith": ["a"],
    "StringEndsWith": ["a"],
    "StringNotEndsWith": ["a"],
    "StringIn": ["a"],
    "StringNotIn": ["a"],
    "IsNullOrUndefined": UNSET,
    "IsNotNull": UNSET,
}
MATCH_MISSING = {"NumberNotIn", "StringNotIn", "IsNullOrUndefined"}
NEGATED = {op for op, info in OPERATORS.items() if info[3]}
VALUE_OPERATORS = [op for op in OPERATORS if OPERATORS[op][0] != "none"]


def test_operands_table_covers_every_operator() -> None:
    assert set(OPERANDS) == set(OPERATORS)
    assert len(OPERATORS) == 19


# ------------------------------------------------------------------------------ operators


@pytest.mark.parametrize(
    ("op", "operand", "found", "expected"),
    [
        ("NumberIn", [1, 2], 2, True),
        ("NumberIn", [1, 2], 3, False),
        ("NumberIn", [1, 2], 1.0, True),
        ("NumberIn", [1.5], 1.5, True),
        ("NumberIn", [-1], -1, True),
        ("NumberNotIn", [1, 2], 3, True),
        ("NumberNotIn", [1, 2], 2, False),
        ("NumberNotIn", [1, 2], 2.0, False),
        ("NumberLessThan", 5, 4, True),
        ("NumberLessThan", 5, 5, False),
        ("NumberLessThan", 5, 6, False),
        ("NumberLessThan", 5, 4.999, True),
        ("NumberGreaterThan", 5, 6, True),
        ("NumberGreaterThan", 5, 5, False),
        ("NumberGreaterThan", 5, 4, False),
        ("NumberGreaterThan", 5.5, 5.6, True),
        ("NumberLessThanOrEquals", 5, 5, True),
        ("NumberLessThanOrEquals", 5, 4, True),
        ("NumberLessThanOrEquals", 5, 6, False),
        ("NumberGreaterThanOrEquals", 5, 5, True),
        ("NumberGreaterThanOrEquals", 5, 6, True),
        ("NumberGreaterThanOrEquals", 5, 4, False),
        ("NumberInRange", [[1, 5]], 3, True),
        ("NumberInRange", [[1, 5]], 0, False),
        ("NumberInRange", [[1, 5]], 6, False),
        ("NumberInRange", [[1, 5], [10, 20]], 15, True),
        ("NumberInRange", [[1, 5], [10, 20]], 7, False),
        ("NumberInRange", [[1.5, 2.5]], 2, True),
        ("NumberNotInRange", [[1, 5]], 6, True),
        ("NumberNotInRange", [[1, 5]], 3, False),
        ("NumberNotInRange", [[1, 5], [10, 20]], 15, False),
        ("NumberNotInRange", [[1, 5], [10, 20]], 7, True),
        ("BoolEquals", True, True, True),
        ("BoolEquals", True, False, False),
        ("BoolEquals", False, False, True),
        ("BoolEquals", False, True, False),
        ("StringContains", ["ell"], "Hello", True),
        ("StringContains", ["xyz"], "Hello", False),
        ("StringContains", ["xyz", "ell"], "Hello", True),
        ("StringNotContains", ["ell"], "Hello", False),
        ("StringNotContains", ["xyz"], "Hello", True),
        ("StringNotContains", ["xyz", "ell"], "Hello", False),
        ("StringBeginsWith", ["He"], "Hello", True),
        ("StringBeginsWith", ["lo"], "Hello", False),
        ("StringBeginsWith", ["x", "He"], "Hello", True),
        ("StringNotBeginsWith", ["He"], "Hello", False),
        ("StringNotBeginsWith", ["lo"], "Hello", True),
        ("StringNotBeginsWith", ["lo", "He"], "Hello", False),
        ("StringEndsWith", ["lo"], "Hello", True),
        ("StringEndsWith", ["He"], "Hello", False),
        ("StringEndsWith", ["x", "lo"], "Hello", True),
        ("StringNotEndsWith", ["lo"], "Hello", False),
        ("StringNotEndsWith", ["He"], "Hello", True),
        ("StringNotEndsWith", ["He", "lo"], "Hello", False),
        ("StringIn", ["small", "medium"], "medium", True),
        ("StringIn", ["small", "medium"], "large", False),
        ("StringIn", ["small"], "smal", False),
        ("StringNotIn", ["small", "medium"], "large", True),
        ("StringNotIn", ["small", "medium"], "small", False),
        ("IsNullOrUndefined", UNSET, 0, False),
        ("IsNullOrUndefined", UNSET, "", False),
        ("IsNotNull", UNSET, 0, True),
        ("IsNotNull", UNSET, "", True),
        ("IsNotNull", UNSET, False, True),
    ],
)
def test_operator_on_a_present_value(op: str, operand: Any, found: Any, expected: bool) -> None:
    assert on_value(op, operand, found) is expected


@pytest.mark.parametrize(
    ("op", "operand", "found"),
    [
        ("StringIn", ["SMALL"], "small"),
        ("StringIn", ["small"], "SmAlL"),
        ("StringContains", ["ELL"], "hello"),
        ("StringBeginsWith", ["hE"], "HELLO"),
        ("StringEndsWith", ["LO"], "hello"),
    ],
)
def test_string_operators_are_case_insensitive(op: str, operand: Any, found: str) -> None:
    assert on_value(op, operand, found)
    negated = op.replace("String", "StringNot")
    assert not on_value(negated, operand, found)


def test_empty_string_value_is_contained_in_every_string() -> None:
    assert on_value("StringContains", [""], "anything")
    assert on_value("StringBeginsWith", [""], "")


@pytest.mark.parametrize("op", list(OPERATORS))
def test_missing_key_matches_only_the_not_in_operators_and_is_null_or_undefined(op: str) -> None:
    spec = advanced(op, OPERANDS[op])
    assert accepts(spec, make_event({"other": 1})) is (op in MATCH_MISSING)


@pytest.mark.parametrize("op", list(OPERATORS))
def test_null_value_behaves_like_a_missing_key(op: str) -> None:
    assert on_value(op, OPERANDS[op], None) is (op in MATCH_MISSING)


@pytest.mark.parametrize("op", list(OPERATORS))
@pytest.mark.parametrize(
    ("data", "key"),
    [
        (UNSET, "data.x"),
        (None, "data.x"),
        ("a string", "data.x"),
        (7, "data.x"),
        ([{"x": "a"}], "data.x"),
        ({"x": [{"y": "a"}]}, "data.x.y"),
        ({"x": "a"}, "data.x.y"),
        ({"x": {"z": "a"}}, "data.x.y"),
    ],
    ids=["absent", "null", "string", "number", "array", "through-array", "through-string", "no-y"],
)
def test_a_data_path_through_a_non_object_is_a_missing_key(op: str, data: Any, key: str) -> None:
    assert accepts(advanced(op, OPERANDS[op], key=key), make_event(data)) is (op in MATCH_MISSING)


@pytest.mark.parametrize("op", list(OPERATORS))
def test_data_base64_events_have_no_data_keys(op: str) -> None:
    event = CloudEvent(type="t", source="/s", data_base64="aGk=")
    assert accepts(advanced(op, OPERANDS[op]), event) is (op in MATCH_MISSING)


def test_number_not_in_matches_a_missing_key() -> None:
    assert accepts(advanced("NumberNotIn", [1]), make_event({}))


def test_string_not_in_matches_a_missing_key() -> None:
    assert accepts(advanced("StringNotIn", ["a"]), make_event({}))


def test_string_not_contains_does_not_match_a_missing_key() -> None:
    assert not accepts(advanced("StringNotContains", ["a"]), make_event({}))


def test_number_not_in_range_does_not_match_a_missing_key() -> None:
    assert not accepts(advanced("NumberNotInRange", [[1, 2]]), make_event({}))


def test_is_not_null_holds_for_objects_and_arrays() -> None:
    assert on_value("IsNotNull", UNSET, {"a": 1})
    assert on_value("IsNotNull", UNSET, [])
    assert not on_value("IsNullOrUndefined", UNSET, [])


@pytest.mark.parametrize(("low", "high"), [(1, 5), (1.0, 5.0), (-3, -3)])
def test_number_in_range_bounds_are_inclusive(low: float, high: float) -> None:
    assert on_value("NumberInRange", [[low, high]], low)
    assert on_value("NumberInRange", [[low, high]], high)
    assert not on_value("NumberNotInRange", [[low, high]], low)
    assert not on_value("NumberNotInRange", [[low, high]], high)


def test_number_comparisons_are_exact_on_large_integers() -> None:
    big = 2**64
    assert on_value("NumberGreaterThan", big, big + 1)
    assert not on_value("NumberGreaterThan", float(big), big)
    assert on_value("NumberGreaterThan", float(big), big + 1)
    assert on_value("NumberIn", [big], big)


@pytest.mark.parametrize(
    ("op", "operand", "found"),
    [
        ("NumberIn", [1], True),
        ("NumberIn", [0], False),
        ("NumberGreaterThanOrEquals", 0, True),
        ("NumberLessThanOrEquals", 1, False),
        ("NumberInRange", [[0, 1]], True),
        ("BoolEquals", True, 1),
        ("BoolEquals", False, 0),
    ],
)
def test_bool_is_never_a_number(op: str, operand: Any, found: Any) -> None:
    assert not on_value(op, operand, found)


@pytest.mark.parametrize(
    ("op", "operand", "found"),
    [
        ("NumberIn", [5], "5"),
        ("NumberGreaterThan", 1, "5"),
        ("NumberInRange", [[1, 9]], "5"),
        ("BoolEquals", True, "true"),
        ("StringIn", ["5"], 5),
        ("StringIn", ["true"], True),
        ("StringContains", ["a"], {"a": "a"}),
        ("StringBeginsWith", ["1"], 1.5),
    ],
)
def test_a_value_of_another_type_fails_positive_operators(
    op: str, operand: Any, found: Any
) -> None:
    assert not on_value(op, operand, found)


@pytest.mark.parametrize(
    ("op", "operand", "found"),
    [
        ("NumberNotIn", [5], "5"),
        ("NumberNotIn", [1], True),
        ("NumberNotInRange", [[1, 9]], "5"),
        ("StringNotIn", ["5"], 5),
        ("StringNotContains", ["a"], {"a": "a"}),
        ("StringNotBeginsWith", ["t"], True),
        ("StringNotEndsWith", ["5"], 5),
    ],
)
def test_a_value_of_another_type_passes_not_operators(op: str, operand: Any, found: Any) -> None:
    assert on_value(op, operand, found)


# --------------------------------------------------------------------------- combination


def test_values_within_a_filter_are_or_ed() -> None:
    spec = advanced("StringIn", ["small", "medium"])
    assert accepts(spec, make_event({"x": "small"}))
    assert accepts(spec, make_event({"x": "medium"}))


def test_not_operators_require_that_no_value_matches() -> None:
    spec = advanced("StringNotContains", ["a", "b"])
    assert not accepts(spec, make_event({"x": "xa"}))
    assert not accepts(spec, make_event({"x": "xb"}))
    assert accepts(spec, make_event({"x": "xc"}))


def test_advanced_filters_are_and_ed() -> None:
    spec = EventFilter(
        advanced_filters=(
            adv("NumberGreaterThan", "data.weight", value=5),
            adv("StringIn", "data.size", values=["small", "medium"]),
        )
    )
    assert accepts(spec, make_event({"weight": 6, "size": "small"}))
    assert not accepts(spec, make_event({"weight": 5, "size": "small"}))
    assert not accepts(spec, make_event({"weight": 6, "size": "large"}))


def test_the_same_key_may_appear_in_several_filters() -> None:
    spec = EventFilter(
        advanced_filters=(
            adv("NumberGreaterThan", value=1),
            adv("NumberLessThan", value=3),
        )
    )
    assert accepts(spec, make_event({"x": 2}))
    assert not accepts(spec, make_event({"x": 3}))


def test_type_subject_and_advanced_filters_are_and_ed() -> None:
    spec = EventFilter(
        included_event_types=("A",),
        subject_begins_with="/orders/",
        advanced_filters=(adv("BoolEquals", value=True),),
    )
    assert accepts(spec, make_event({"x": True}, type="A", subject="/orders/1"))
    assert not accepts(spec, make_event({"x": True}, type="B", subject="/orders/1"))
    assert not accepts(spec, make_event({"x": True}, type="A", subject="/carts/1"))
    assert not accepts(spec, make_event({"x": False}, type="A", subject="/orders/1"))


# --------------------------------------------------------------------- event types, subject


def test_included_event_types_match_exactly() -> None:
    spec = EventFilter(included_event_types=("Shop.OrderPlaced", "Shop.OrderCancelled"))
    assert accepts(spec, make_event(type="Shop.OrderPlaced"))
    assert accepts(spec, make_event(type="Shop.OrderCancelled"))
    assert not accepts(spec, make_event(type="Shop.OrderShipped"))
    assert not accepts(spec, make_event(type="Shop.Order"))


def test_included_event_types_are_case_sensitive() -> None:
    spec = EventFilter(included_event_types=("Shop.OrderPlaced",))
    assert not accepts(spec, make_event(type="shop.orderplaced"))


def test_null_included_event_types_accepts_every_type() -> None:
    assert accepts(EventFilter(included_event_types=None), make_event(type="Anything"))


@pytest.mark.parametrize(
    ("prefix", "suffix", "subject", "expected"),
    [
        ("/orders/", "", "/orders/42", True),
        ("/orders/", "", "/ORDERS/42", True),
        ("/ORDERS/", "", "/orders/42", True),
        ("/orders/", "", "/carts/42", False),
        ("", ".json", "/a/b.JSON", True),
        ("", ".JSON", "/a/b.json", True),
        ("", ".json", "/a/b.xml", False),
        ("/a", ".json", "/a/b.json", True),
        ("/a", ".json", "/b/b.json", False),
        ("/a", ".json", "/a/b.xml", False),
        ("/orders/42", "/orders/42", "/orders/42", True),
    ],
)
def test_subject_filters_are_case_insensitive_by_default(
    prefix: str, suffix: str, subject: str, expected: bool
) -> None:
    spec = EventFilter(subject_begins_with=prefix, subject_ends_with=suffix)
    assert accepts(spec, make_event(subject=subject)) is expected


@pytest.mark.parametrize(
    ("prefix", "suffix", "subject", "expected"),
    [
        ("/orders/", "", "/orders/42", True),
        ("/orders/", "", "/ORDERS/42", False),
        ("", ".json", "/a/b.JSON", False),
        ("", ".JSON", "/a/b.JSON", True),
    ],
)
def test_subject_filters_are_case_sensitive_when_asked(
    prefix: str, suffix: str, subject: str, expected: bool
) -> None:
    spec = EventFilter(
        subject_begins_with=prefix, subject_ends_with=suffix, is_subject_case_sensitive=True
    )
    assert accepts(spec, make_event(subject=subject)) is expected


@pytest.mark.parametrize("case_sensitive", [False, True])
def test_an_event_without_subject_matches_only_empty_subject_filters(case_sensitive: bool) -> None:
    event = make_event(subject=None)
    for prefix, suffix, expected in [("", "", True), ("/a", "", False), ("", "b", False)]:
        spec = EventFilter(
            subject_begins_with=prefix,
            subject_ends_with=suffix,
            is_subject_case_sensitive=case_sensitive,
        )
        assert accepts(spec, event) is expected


@pytest.mark.parametrize(
    "spec",
    [
        EventFilter(),
        EventFilter(is_subject_case_sensitive=True),
        EventFilter(enable_advanced_filtering_on_arrays=True),
        EventFilter(subject_begins_with="", subject_ends_with=""),
    ],
)
def test_a_filter_that_accepts_everything_compiles_to_none(spec: EventFilter) -> None:
    assert compile_filter(spec) is None


@pytest.mark.parametrize(
    "spec",
    [
        EventFilter(included_event_types=("A",)),
        EventFilter(subject_begins_with="/a"),
        EventFilter(subject_ends_with="b"),
        EventFilter(advanced_filters=(adv("IsNotNull"),)),
    ],
)
def test_a_filter_with_any_condition_compiles_to_a_predicate(spec: EventFilter) -> None:
    assert callable(compile_filter(spec))


# ---------------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("id", "evt-7"),
        ("eventid", "evt-7"),
        ("EventId", "evt-7"),
        ("ID", "evt-7"),
        ("source", "/shop"),
        ("topic", "/shop"),
        ("Topic", "/shop"),
        ("subject", "/orders/7"),
        ("type", "Shop.OrderPlaced"),
        ("eventtype", "Shop.OrderPlaced"),
        ("EventType", "Shop.OrderPlaced"),
        ("dataversion", "2.0"),
        ("eventtypeversion", "2.0"),
        ("DataVersion", "2.0"),
        ("specversion", "1.0"),
        ("time", "2024-01-02T03:04:05Z"),
        ("datacontenttype", "application/json"),
        ("dataschema", "https://example.com/schema"),
        ("correlationid", "corr-1"),
        ("CorrelationId", "corr-1"),
        ("data.order.id", "o-1"),
        ("Data.order.id", "o-1"),
        ("DATA.order.id", "o-1"),
        ("data.size", "small"),
        ("data.a.b.c.d", "deep"),
    ],
)
def test_keys_resolve_against_the_cloudevent(key: str, expected: str) -> None:
    event = CloudEvent(
        id="evt-7",
        type="Shop.OrderPlaced",
        source="/shop",
        subject="/orders/7",
        time="2024-01-02T03:04:05Z",
        datacontenttype="application/json",
        dataschema="https://example.com/schema",
        data={"order": {"id": "o-1"}, "size": "small", "a": {"b": {"c": {"d": "deep"}}}},
        extensions={"dataversion": "2.0", "correlationid": "corr-1"},
    )
    assert accepts(advanced("StringIn", [expected], key=key), event)
    assert not accepts(advanced("StringIn", [expected + "!"], key=key), event)


def test_data_path_segments_are_case_sensitive() -> None:
    event = make_event({"Size": "small"})
    assert accepts(advanced("StringIn", ["small"], key="data.Size"), event)
    assert not accepts(advanced("StringIn", ["small"], key="data.size"), event)


def test_bare_data_key_is_the_whole_payload() -> None:
    assert accepts(advanced("StringIn", ["hello"], key="data"), make_event("Hello"))
    assert accepts(advanced("IsNullOrUndefined", key="data"), make_event())
    assert accepts(advanced("IsNullOrUndefined", key="data"), make_event(None))
    assert accepts(advanced("IsNotNull", key="data"), make_event({}))


@pytest.mark.parametrize(
    ("key", "op", "expected"),
    [
        ("subject", "IsNullOrUndefined", True),
        ("time", "IsNullOrUndefined", True),
        ("dataschema", "IsNotNull", False),
        ("nosuchext", "IsNullOrUndefined", True),
        ("nosuchext", "StringNotIn", True),
        ("nosuchext", "StringIn", False),
        ("id", "IsNotNull", True),
    ],
)
def test_absent_attributes_and_extensions_are_missing_keys(
    key: str, op: str, expected: bool
) -> None:
    assert accepts(advanced(op, OPERANDS[op], key=key), make_event()) is expected


def test_number_and_bool_extensions_are_compared_as_their_type() -> None:
    event = make_event(priority=7, urgent=True)
    assert accepts(advanced("NumberGreaterThan", 5, key="priority"), event)
    assert accepts(advanced("BoolEquals", True, key="urgent"), event)
    assert not accepts(advanced("StringIn", ["7"], key="priority"), event)


# -------------------------------------------------------------------------------- arrays


@pytest.mark.parametrize(
    ("op", "operand", "found", "expected"),
    [
        ("StringIn", ["b"], ["a", "b"], True),
        ("StringIn", ["z"], ["a", "b"], False),
        ("StringIn", ["B"], ["a", "b"], True),
        ("StringContains", ["ell"], ["x", "Hello"], True),
        ("NumberIn", [2], [1, 2, 3], True),
        ("NumberIn", [9], [1, 2, 3], False),
        ("NumberGreaterThan", 2, [1, 3], True),
        ("NumberGreaterThan", 5, [1, 3], False),
        ("NumberInRange", [[2, 4]], [1, 3], True),
        ("BoolEquals", True, [False, True], True),
        ("BoolEquals", True, [False], False),
        ("StringNotIn", ["b"], ["a", "b"], False),
        ("StringNotIn", ["z"], ["a", "b"], True),
        ("StringNotContains", ["ell"], ["x", "Hello"], False),
        ("StringNotBeginsWith", ["h"], ["a", "Hello"], False),
        ("StringNotEndsWith", ["o"], ["a", "b"], True),
        ("NumberNotIn", [2], [1, 2, 3], False),
        ("NumberNotIn", [9], [1, 2, 3], True),
        ("NumberNotInRange", [[2, 4]], [1, 3], False),
        ("NumberNotInRange", [[2, 4]], [1, 5], True),
    ],
)
def test_arrays_with_the_flag_match_on_any_element(
    op: str, operand: Any, found: Any, expected: bool
) -> None:
    assert on_value(op, operand, found, arrays=True) is expected


@pytest.mark.parametrize(
    ("op", "operand", "found", "expected"),
    [
        ("StringIn", ["1"], [1, True, None, {"a": "1"}, ["1"]], False),
        ("StringIn", ["a"], [1, True, None, "A"], True),
        ("StringNotIn", ["1"], [1, True, None, {"a": "1"}, ["1"]], True),
        ("NumberIn", [1], [True, "1", None, [1]], False),
        ("NumberIn", [1], [True, "1", 1.0], True),
        ("NumberNotIn", [1], [True, "1", {"x": 1}], True),
        ("BoolEquals", True, [1, "true", None], False),
        ("NumberGreaterThan", 0, [True, "5"], False),
    ],
)
def test_array_elements_of_another_type_are_ignored(
    op: str, operand: Any, found: Any, expected: bool
) -> None:
    assert on_value(op, operand, found, arrays=True) is expected


@pytest.mark.parametrize("op", VALUE_OPERATORS)
def test_an_empty_array_with_the_flag_fails_positive_and_passes_not_operators(op: str) -> None:
    assert on_value(op, OPERANDS[op], [], arrays=True) is (op in NEGATED)


@pytest.mark.parametrize("op", VALUE_OPERATORS)
def test_an_array_without_the_flag_fails_every_value_operator(op: str) -> None:
    matching_element = {"number": 1, "string": "a", "bool": True}[OPERATORS[op][1]]
    assert not on_value(op, OPERANDS[op], [matching_element], arrays=False)
    assert not on_value(op, OPERANDS[op], ["zzz", 99, False], arrays=False)


@pytest.mark.parametrize("arrays", [False, True])
def test_null_operators_treat_an_array_as_a_present_value(arrays: bool) -> None:
    assert on_value("IsNotNull", UNSET, [1], arrays=arrays)
    assert not on_value("IsNullOrUndefined", UNSET, [1], arrays=arrays)


def test_the_arrays_flag_does_not_change_scalar_matching() -> None:
    assert on_value("StringIn", ["a"], "A", arrays=True)
    assert on_value("StringNotIn", ["a"], "b", arrays=True)


# ------------------------------------------------------------------------------- limits


def test_twenty_five_advanced_filters_are_allowed() -> None:
    spec = EventFilter(advanced_filters=tuple(adv("IsNotNull") for _ in range(25)))
    assert len(spec.advanced_filters) == MAX_ADVANCED_FILTERS == 25


def test_twenty_six_advanced_filters_are_refused() -> None:
    message = refusal(advanced_filters=tuple(adv("IsNotNull") for _ in range(26)))
    assert message == "`filter.advancedFilters` has 26 filters; the limit is 25"


@pytest.mark.parametrize(
    "filters",
    [
        [adv("StringIn", values=[str(i) for i in range(25)])],
        [adv("StringIn", values=["a"] * 20), adv("NumberIn", values=[1, 2, 3, 4, 5])],
        [adv("NumberGreaterThan", value=i) for i in range(25)],
        [adv("NumberInRange", values=[[i, i + 1] for i in range(25)])],
        [adv("NumberInRange", values=[[0, 1]] * 24), adv("BoolEquals", value=True)],
        [adv("StringIn", values=["a"] * 25), adv("IsNotNull"), adv("IsNullOrUndefined")],
    ],
    ids=["one-list", "two-lists", "single-values", "range-pairs", "pairs-and-value", "null-ops"],
)
def test_twenty_five_values_across_filters_are_allowed(filters: list[AdvancedFilter]) -> None:
    EventFilter(advanced_filters=tuple(filters))


@pytest.mark.parametrize(
    "filters",
    [
        [adv("StringIn", values=[str(i) for i in range(26)])],
        [adv("StringIn", values=["a"] * 21), adv("NumberIn", values=[1, 2, 3, 4, 5])],
        [adv("NumberGreaterThan", value=i) for i in range(24)]
        + [adv("StringIn", values=["a", "b"])],
        [adv("NumberInRange", values=[[i, i + 1] for i in range(26)])],
        [adv("NumberInRange", values=[[0, 1]] * 25), adv("BoolEquals", value=True)],
    ],
    ids=["one-list", "two-lists", "single-values", "range-pairs", "pairs-and-value"],
)
def test_twenty_six_values_across_filters_are_refused(filters: list[AdvancedFilter]) -> None:
    message = refusal(advanced_filters=tuple(filters))
    assert message == "`filter.advancedFilters` has 26 values across all filters; the limit is 25"
    assert MAX_FILTER_VALUES == 25


LONG = "x" * MAX_STRING_LENGTH
TOO_LONG = "x" * (MAX_STRING_LENGTH + 1)


@pytest.mark.parametrize(
    ("make", "path"),
    [
        (lambda s: {"subject_begins_with": s}, "filter.subjectBeginsWith"),
        (lambda s: {"subject_ends_with": s}, "filter.subjectEndsWith"),
        (lambda s: {"included_event_types": ("A", s)}, "filter.includedEventTypes[1]"),
        (
            lambda s: {"advanced_filters": (adv("IsNotNull"), adv("StringIn", values=["a", s]))},
            "filter.advancedFilters[1].values[1]",
        ),
        (
            lambda s: {"advanced_filters": (adv("StringContains", values=[s]),)},
            "filter.advancedFilters[0].values[0]",
        ),
    ],
)
def test_string_values_are_limited_to_512_characters(make: Any, path: str) -> None:
    EventFilter(**make(LONG))
    message = refusal(**make(TOO_LONG))
    assert message == f"`{path}` is 513 characters; the limit is 512"


# ----------------------------------------------------------------------- malformed shapes


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            adv("StringLike", values=["a"]),
            '`filter.advancedFilters[1].operatorType` "StringLike" is not an operator; '
            "expected one of NumberIn, NumberNotIn,",
        ),
        (adv("stringin", values=["a"]), "`filter.advancedFilters[1].operatorType`"),
        (adv(7, values=["a"]), "`filter.advancedFilters[1].operatorType` 7 is not an operator"),
        (adv("StringIn", key="", values=["a"]), "`filter.advancedFilters[1].key` must be a non-"),
        (adv("StringIn", key=None, values=["a"]), "`filter.advancedFilters[1].key` must be a non-"),
        (adv("StringIn", key="data..x", values=["a"]), '`filter.advancedFilters[1].key` "data..x'),
        (
            adv("StringIn", key="data.", values=["a"]),
            '`filter.advancedFilters[1].key` "data." has an',
        ),
        (
            adv("StringIn", key="data.x.", values=["a"]),
            '`filter.advancedFilters[1].key` "data.x." has',
        ),
        (
            adv("StringIn", key="subject.x", values=["a"]),
            '`filter.advancedFilters[1].key` "subject.x" can',
        ),
        (adv("NumberLessThan"), "`filter.advancedFilters[1].value` is required for NumberLessThan"),
        (
            adv("NumberLessThan", values=[1]),
            "`filter.advancedFilters[1].values` is not allowed for NumberLessThan",
        ),
        (
            adv("NumberLessThan", value=1, values=[1]),
            "`filter.advancedFilters[1].values` is not allowed for NumberLessThan",
        ),
        (
            adv("NumberGreaterThan", value="5"),
            '`filter.advancedFilters[1].value` must be a number for NumberGreaterThan, got "5"',
        ),
        (
            adv("NumberGreaterThan", value=True),
            "`filter.advancedFilters[1].value` must be a number for NumberGreaterThan, got true",
        ),
        (adv("NumberLessThan", value=None), "`filter.advancedFilters[1].value` must be a number"),
        (
            adv("NumberLessThan", value=float("inf")),
            "`filter.advancedFilters[1].value` must be a finite",
        ),
        (
            adv("NumberLessThan", value=float("nan")),
            "`filter.advancedFilters[1].value` must be a finite",
        ),
        (
            adv("BoolEquals", value=1),
            "`filter.advancedFilters[1].value` must be true or false for BoolEquals, got 1",
        ),
        (adv("BoolEquals", value="true"), "`filter.advancedFilters[1].value` must be true or"),
        (adv("BoolEquals"), "`filter.advancedFilters[1].value` is required for BoolEquals"),
        (
            adv("StringIn"),
            "`filter.advancedFilters[1].values` must be a non-empty array for StringIn",
        ),
        (
            adv("StringIn", values=[]),
            "`filter.advancedFilters[1].values` must be a non-empty array for StringIn, "
            "got an empty array",
        ),
        (
            adv("StringIn", values="a"),
            "`filter.advancedFilters[1].values` must be a non-empty array for StringIn",
        ),
        (
            adv("StringIn", value="a"),
            "`filter.advancedFilters[1].value` is not allowed for StringIn",
        ),
        (
            adv("StringIn", values=["a", 1]),
            "`filter.advancedFilters[1].values[1]` must be a string, got 1",
        ),
        (adv("StringContains", values=[None]), "`filter.advancedFilters[1].values[0]` must be a"),
        (
            adv("NumberIn", values=[1, "2"]),
            "`filter.advancedFilters[1].values[1]` must be a number for NumberIn",
        ),
        (adv("NumberNotIn", values=[False]), "`filter.advancedFilters[1].values[0]` must be a num"),
        (
            adv("NumberIn", values={"a": 1}),
            "`filter.advancedFilters[1].values` must be a non-empty",
        ),
        (
            adv("NumberInRange", values=[1, 2]),
            "`filter.advancedFilters[1].values[0]` must be a [low, high] pair for NumberInRange",
        ),
        (
            adv("NumberInRange", values=[[1, 2, 3]]),
            "`filter.advancedFilters[1].values[0]` must be a [low, high] pair",
        ),
        (adv("NumberInRange", values=[[1]]), "`filter.advancedFilters[1].values[0]` must be a ["),
        (
            adv("NumberNotInRange", values=[[0, 1], [5, 2]]),
            "`filter.advancedFilters[1].values[1]` has low 5 above high 2",
        ),
        (
            adv("NumberInRange", values=[["1", 2]]),
            "`filter.advancedFilters[1].values[0][0]` must be a number for NumberInRange",
        ),
        (
            adv("NumberInRange", values=[[1, True]]),
            "`filter.advancedFilters[1].values[0][1]` must be a number",
        ),
        (adv("NumberInRange", value=[1, 2]), "`filter.advancedFilters[1].value` is not allowed"),
        (
            adv("IsNullOrUndefined", value=None),
            "`filter.advancedFilters[1].value` is not allowed for IsNullOrUndefined, which takes",
        ),
        (
            adv("IsNotNull", values=["a"]),
            "`filter.advancedFilters[1].values` is not allowed for IsNotNull",
        ),
    ],
)
def test_malformed_advanced_filters_are_refused_naming_the_property(
    spec: AdvancedFilter, expected: str
) -> None:
    assert refusal_of(spec).startswith(expected)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"included_event_types": ()},
            "`filter.includedEventTypes` is empty; list at least one type, or use null",
        ),
        (
            {"included_event_types": ("A", "")},
            '`filter.includedEventTypes[1]` must be a non-empty string, got ""',
        ),
        (
            {"included_event_types": ("A", 3)},
            "`filter.includedEventTypes[1]` must be a non-empty string, got 3",
        ),
        (
            {"included_event_types": "A"},
            '`filter.includedEventTypes` must be an array or null, got "A"',
        ),
        ({"subject_begins_with": None}, "`filter.subjectBeginsWith` must be a string, got null"),
        ({"subject_ends_with": 5}, "`filter.subjectEndsWith` must be a string, got 5"),
        (
            {"is_subject_case_sensitive": "yes"},
            '`filter.isSubjectCaseSensitive` must be true or false, got "yes"',
        ),
        (
            {"enable_advanced_filtering_on_arrays": 1},
            "`filter.enableAdvancedFilteringOnArrays` must be true or false, got 1",
        ),
        (
            {"advanced_filters": (adv("IsNotNull"), {"operatorType": "IsNotNull", "key": "k"})},
            "`filter.advancedFilters[1]` must be an AdvancedFilter, got an object",
        ),
        ({"advanced_filters": None}, "`filter.advancedFilters` must be an array, got null"),
    ],
)
def test_malformed_event_filters_are_refused_naming_the_property(
    fields: dict[str, Any], expected: str
) -> None:
    assert refusal(**fields) == expected


def test_invalid_filter_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="operatorType"):
        EventFilter(advanced_filters=(adv("Nope"),))


def test_lists_are_accepted_on_direct_construction() -> None:
    spec = EventFilter(
        included_event_types=["A"],  # type: ignore[arg-type]
        advanced_filters=[adv("StringIn", values=("a",))],  # type: ignore[arg-type]
    )
    assert accepts(spec, make_event({"x": "A"}, type="A"))


# ------------------------------------------------------------------------------ the wire


def test_convert_from_the_wire_form() -> None:
    wire = {
        "includedEventTypes": ["Fabrikam.ScheduleDelivery"],
        "subjectBeginsWith": "/deliveries/",
        "subjectEndsWith": ".json",
        "isSubjectCaseSensitive": False,
        "enableAdvancedFilteringOnArrays": True,
        "advancedFilters": [
            {"operatorType": "NumberGreaterThan", "key": "data.weight", "value": 5},
            {"operatorType": "StringIn", "key": "data.size", "values": ["small", "medium"]},
            {"operatorType": "NumberInRange", "key": "data.n", "values": [[1, 2], [5, 9]]},
            {"operatorType": "IsNotNull", "key": "correlationid"},
        ],
    }
    spec = msgspec.convert(wire, EventFilter)
    assert spec.included_event_types == ("Fabrikam.ScheduleDelivery",)
    assert spec.advanced_filters[0] == adv("NumberGreaterThan", "data.weight", value=5)
    assert spec.advanced_filters[2].values == [[1, 2], [5, 9]]
    event = make_event(
        {"weight": 6, "size": ["large", "Medium"], "n": 7},
        type="Fabrikam.ScheduleDelivery",
        subject="/Deliveries/7.JSON",
        correlationid="c-1",
    )
    assert accepts(spec, event)
    assert msgspec.to_builtins(spec)["advancedFilters"][3] == {
        "operatorType": "IsNotNull",
        "key": "correlationid",
    }


def test_convert_of_an_empty_object_is_the_default_filter() -> None:
    assert msgspec.convert({}, EventFilter) == EventFilter()
    assert msgspec.to_builtins(EventFilter()) == {}


def test_convert_accepts_null_included_event_types() -> None:
    assert msgspec.convert({"includedEventTypes": None}, EventFilter) == EventFilter()


@pytest.mark.parametrize(
    ("wire", "where"),
    [
        ({"includedEventTypes": ["A"], "labels": []}, "`labels`"),
        ({"included_event_types": ["A"]}, "`included_event_types`"),
        (
            {"advancedFilters": [{"operatorType": "IsNotNull", "key": "k", "extra": 1}]},
            "`extra` - at `$.advancedFilters[0]`",
        ),
        (
            {"advancedFilters": [{"operator_type": "IsNotNull", "key": "k"}]},
            "`operator_type`",
        ),
    ],
)
def test_convert_refuses_unknown_properties(wire: dict[str, Any], where: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field") as caught:
        msgspec.convert(wire, EventFilter)
    assert where in str(caught.value)


def test_convert_refuses_wrong_wire_types() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.subjectBeginsWith"):
        msgspec.convert({"subjectBeginsWith": 3}, EventFilter)
    with pytest.raises(msgspec.ValidationError, match=r"\$\.advancedFilters\[0\]\.key"):
        msgspec.convert({"advancedFilters": [{"operatorType": "IsNotNull", "key": 3}]}, EventFilter)


def test_convert_wraps_our_validation_error_keeping_message_and_cause() -> None:
    wire = {
        "advancedFilters": [
            {"operatorType": "IsNotNull", "key": "a"},
            {"operatorType": "StringIn", "key": "data.x", "values": []},
        ]
    }
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert(wire, EventFilter)
    assert isinstance(caught.value.__cause__, InvalidFilterError)
    assert str(caught.value.__cause__).startswith(
        "`filter.advancedFilters[1].values` must be a non-empty array for StringIn"
    )


def test_convert_enforces_the_limits() -> None:
    wire = {"advancedFilters": [{"operatorType": "IsNotNull", "key": "k"}] * 26}
    with pytest.raises(msgspec.ValidationError, match="has 26 filters; the limit is 25"):
        msgspec.convert(wire, EventFilter)


# ---------------------------------------------------------------------------- properties

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet="aAbB-/é ", max_size=6)
)
JSON_KEYS = st.sampled_from(["x", "y", "X", "size", "a"])
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JSON_KEYS, inner, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [
        "data",
        "data.x",
        "data.x.y",
        "data.X.a",
        "Data.size",
        "id",
        "subject",
        "type",
        "source",
        "time",
        "dataschema",
        "eventtypeversion",
        "correlationid",
        "priority",
        "urgent",
        "nosuchext",
    ]
)
FILTER_STRINGS = st.text(alphabet="aAbB-/é ", max_size=4)
FILTER_NUMBERS = st.integers(min_value=-100, max_value=100) | st.floats(
    min_value=-100, max_value=100, allow_nan=False
)


@st.composite
def range_pairs(draw: st.DrawFn) -> list[float]:
    low, high = sorted([draw(FILTER_NUMBERS), draw(FILTER_NUMBERS)])
    return [low, high]


def operands(op: str) -> st.SearchStrategy[Any]:
    shape, kind, _, _ = OPERATORS[op]
    if shape == "none":
        return st.just(UNSET)
    if shape == "ranges":
        return st.lists(range_pairs(), min_size=1, max_size=3)
    if kind == "bool":
        return st.booleans()
    scalar = FILTER_NUMBERS if kind == "number" else FILTER_STRINGS
    return scalar if shape == "value" else st.lists(scalar, min_size=1, max_size=3)


@st.composite
def advanced_filters(draw: st.DrawFn, key: st.SearchStrategy[str] = KEYS) -> AdvancedFilter:
    op = draw(st.sampled_from(list(OPERATORS)))
    operand = draw(operands(op))
    if OPERATORS[op][0] == "value":
        return adv(op, draw(key), value=operand)
    return adv(op, draw(key), values=operand)


EVENT_FILTERS = st.builds(
    EventFilter,
    included_event_types=st.none() | st.lists(FILTER_STRINGS.filter(bool), min_size=1).map(tuple),
    subject_begins_with=FILTER_STRINGS,
    subject_ends_with=FILTER_STRINGS,
    is_subject_case_sensitive=st.booleans(),
    enable_advanced_filtering_on_arrays=st.booleans(),
    advanced_filters=st.lists(advanced_filters(), max_size=5).map(tuple),
)
EXTENSIONS = st.fixed_dictionaries(
    {},
    optional={
        "correlationid": st.text(alphabet="ab", min_size=1, max_size=3),
        "dataversion": st.text(alphabet="12.", min_size=1, max_size=3),
        "priority": st.integers(min_value=-(2**31), max_value=2**31 - 1) | st.booleans(),
        "urgent": st.booleans() | st.text(alphabet="ab", min_size=1),
    },
)
EVENTS = st.builds(
    CloudEvent,
    type=st.text(alphabet="aAbB", min_size=1, max_size=3),
    source=st.just("/shop"),
    subject=st.none() | st.text(alphabet="aAbB/-é", min_size=1, max_size=5),
    data=st.just(UNSET) | JSON_VALUES,
    extensions=EXTENSIONS,
)


@given(spec=EVENT_FILTERS, event=EVENTS)
def test_a_compiled_filter_never_raises(spec: EventFilter, event: CloudEvent) -> None:
    predicate = compile_filter(spec)
    if predicate is not None:
        assert predicate(event) in (True, False)


COUNTERPARTS = [
    ("NumberIn", "NumberNotIn"),
    ("NumberInRange", "NumberNotInRange"),
    ("StringIn", "StringNotIn"),
    ("StringContains", "StringNotContains"),
    ("StringBeginsWith", "StringNotBeginsWith"),
    ("StringEndsWith", "StringNotEndsWith"),
    ("IsNullOrUndefined", "IsNotNull"),
]


def test_the_counterparts_cover_every_not_operator() -> None:
    assert {negated for _, negated in COUNTERPARTS} >= NEGATED


@given(data=st.data(), pair=st.sampled_from(COUNTERPARTS), arrays=st.booleans())
def test_a_not_operator_is_the_negation_of_its_counterpart_on_a_scalar(
    data: st.DataObject, pair: tuple[str, str], arrays: bool
) -> None:
    positive, negated = pair
    operand = data.draw(operands(positive))
    kind = OPERATORS[positive][1]
    found = data.draw(
        {"number": FILTER_NUMBERS, "string": FILTER_STRINGS, "null": JSON_SCALARS}[kind]
    )
    assert on_value(negated, operand, found, arrays=arrays) is not on_value(
        positive, operand, found, arrays=arrays
    )


@given(data=st.data(), pair=st.sampled_from(COUNTERPARTS[:-1]))
def test_with_the_flag_a_not_operator_is_the_negation_of_its_counterpart_on_an_array(
    data: st.DataObject, pair: tuple[str, str]
) -> None:
    positive, negated = pair
    operand = data.draw(operands(positive))
    found = data.draw(st.lists(JSON_SCALARS | FILTER_NUMBERS | FILTER_STRINGS, max_size=5))
    assert on_value(negated, operand, found, arrays=True) is not on_value(
        positive, operand, found, arrays=True
    )


@given(spec=EVENT_FILTERS)
def test_a_valid_filter_round_trips_through_builtins(spec: EventFilter) -> None:
    assert msgspec.convert(msgspec.to_builtins(spec), EventFilter) == spec
    assert msgspec.json.decode(msgspec.json.encode(spec), type=EventFilter) == spec
