"""Event Grid subscription filters (reference §6): the wire model, its validation and a compiler.

An event passes a filter when its ``type`` is one of ``includedEventTypes`` (exact, case-sensitive
match; null means every type; an empty array is refused as ambiguous), AND its subject begins with
``subjectBeginsWith`` and ends with ``subjectEndsWith`` (case-insensitive unless
``isSubjectCaseSensitive``; an empty string matches anything, an event without a subject matches
only empty ones), AND every advanced filter passes. Within one advanced filter the values are
OR-ed; a NOT operator (``NumberNotIn``, ``NumberNotInRange``, ``StringNot*``) passes exactly when
its positive counterpart would not. String comparisons are case-insensitive (``str.lower``), numbers
are compared exactly (int and float mix freely, no string-to-number coercion), and a bool is never
a number. A missing key and a null value are treated alike: ``IsNullOrUndefined`` passes,
``NumberNotIn`` and ``StringNotIn`` pass, every other operator (``NumberNotInRange`` included)
fails. ``IsNotNull`` passes for any present non-null value, arrays and objects included, and the
null operators ignore the arrays flag. A present value of another type than the operator's (a
string for a Number operator, an object...) never matches a value, so positive operators fail
and NOT operators pass, just as array elements of another type are ignored. An array value, with
``enableAdvancedFilteringOnArrays``, passes a positive operator when any element of the operator's
type matches and a NOT operator when none does (an empty array fails positive and passes NOT
operators); without the flag an array fails every operator but the null checks, NOT operators
included ("the matching operation fails"). Keys: top-level names are case-insensitive (``id`` and
``eventid``; ``topic`` and ``source``; ``type`` and ``eventtype``; ``dataversion`` and
``eventtypeversion``, the ``dataversion`` extension; ``subject``, ``specversion``, ``time``,
``datacontenttype``, ``dataschema``; bare ``data`` is the whole payload; any other name is an
extension attribute), ``data.a.b`` walks objects with case-sensitive segments, and a key with a dot
outside ``data.`` or an empty path segment is refused since it could never match. Limits: 25
advanced filters, 25 values across all of them (a single ``value`` counts 1, each ``[low, high]``
range pair counts 1, the null operators 0; ``includedEventTypes`` does not count) and 512
characters per string value, event type and subject prefix or suffix. Number values must be finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, NoReturn

import msgspec

from choreograph.bus.filter_operators import OPERATORS, compile_operator
from choreograph.errors import InvalidFilterError
from choreograph.events import CloudEvent

__all__ = [
    "MAX_ADVANCED_FILTERS",
    "MAX_FILTER_VALUES",
    "MAX_STRING_LENGTH",
    "OPERATORS",
    "AdvancedFilter",
    "EventFilter",
    "compile_filter",
]

MAX_ADVANCED_FILTERS: Final = 25
MAX_FILTER_VALUES: Final = 25
MAX_STRING_LENGTH: Final = 512

Predicate = Callable[[CloudEvent], bool]


class AdvancedFilter(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    rename="camel",
    forbid_unknown_fields=True,
    omit_defaults=True,
):
    """One advanced filter. It is validated by the :class:`EventFilter` that holds it."""

    operator_type: str
    key: str
    value: Any = msgspec.UNSET
    values: Any = msgspec.UNSET


class EventFilter(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    rename="camel",
    forbid_unknown_fields=True,
    omit_defaults=True,
):
    """A subscription's ``filter``; the default accepts every event."""

    included_event_types: tuple[str, ...] | None = None
    subject_begins_with: str = ""
    subject_ends_with: str = ""
    is_subject_case_sensitive: bool = False
    enable_advanced_filtering_on_arrays: bool = False
    advanced_filters: tuple[AdvancedFilter, ...] = ()

    def __post_init__(self) -> None:
        types = self.included_event_types
        if types is not None:
            if not isinstance(types, list | tuple):
                _fail(
                    f"`filter.includedEventTypes` must be an array or null, got {_describe(types)}"
                )
            if not types:
                _fail("`filter.includedEventTypes` is empty; list at least one type, or use null")
            for index, name in enumerate(types):
                _check_string(f"filter.includedEventTypes[{index}]", name, non_empty=True)
        _check_string("filter.subjectBeginsWith", self.subject_begins_with)
        _check_string("filter.subjectEndsWith", self.subject_ends_with)
        for name, flag in (
            ("isSubjectCaseSensitive", self.is_subject_case_sensitive),
            ("enableAdvancedFilteringOnArrays", self.enable_advanced_filtering_on_arrays),
        ):
            if not isinstance(flag, bool):
                _fail(f"`filter.{name}` must be true or false, got {_describe(flag)}")
        filters = self.advanced_filters
        if not isinstance(filters, list | tuple):
            _fail(f"`filter.advancedFilters` must be an array, got {_describe(filters)}")
        if len(filters) > MAX_ADVANCED_FILTERS:
            _fail(
                f"`filter.advancedFilters` has {len(filters)} filters; "
                f"the limit is {MAX_ADVANCED_FILTERS}"
            )
        for index, spec in enumerate(filters):
            if not isinstance(spec, AdvancedFilter):
                _fail(
                    f"`filter.advancedFilters[{index}]` must be an AdvancedFilter, "
                    f"got {_describe(spec)}"
                )
        count = sum(_count_values(spec) for spec in filters)
        if count > MAX_FILTER_VALUES:
            _fail(
                f"`filter.advancedFilters` has {count} values across all filters; "
                f"the limit is {MAX_FILTER_VALUES}"
            )
        for index, spec in enumerate(filters):
            _check_advanced(f"filter.advancedFilters[{index}]", spec)


def _fail(message: str) -> NoReturn:
    raise InvalidFilterError(message)


def _describe(value: object) -> str:
    """A short rendering of a bad value for an error message."""
    if isinstance(value, str):
        return '"' + (value if len(value) <= 60 else value[:57] + "...") + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "an array" if value else "an empty array"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _count_values(spec: AdvancedFilter) -> int:
    if isinstance(spec.values, list | tuple):
        return len(spec.values)
    return 0 if spec.value is msgspec.UNSET else 1


def _check_string(path: str, value: object, *, non_empty: bool = False) -> None:
    if not isinstance(value, str) or (non_empty and not value):
        wanted = "a non-empty string" if non_empty else "a string"
        _fail(f"`{path}` must be {wanted}, got {_describe(value)}")
    if len(value) > MAX_STRING_LENGTH:
        _fail(f"`{path}` is {len(value)} characters; the limit is {MAX_STRING_LENGTH}")


def _check_number(path: str, value: object, operator_type: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(f"`{path}` must be a number for {operator_type}, got {_describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        _fail(f"`{path}` must be a finite number for {operator_type}, got {value!r}")


def _check_advanced(path: str, spec: AdvancedFilter) -> None:
    op = spec.operator_type
    if not isinstance(op, str) or op not in OPERATORS:
        _fail(
            f"`{path}.operatorType` {_describe(op)} is not an operator; "
            f"expected one of {', '.join(OPERATORS)}"
        )
    key = spec.key
    if not isinstance(key, str) or not key:
        _fail(f"`{path}.key` must be a non-empty string, got {_describe(key)}")
    head, dot, rest = key.partition(".")
    if dot and head.lower() != "data":
        _fail(f"`{path}.key` {_describe(key)} can't be addressed: only `data.` keys have dots")
    if dot and "" in rest.split("."):
        _fail(f"`{path}.key` {_describe(key)} has an empty path segment")
    shape, kind, _, _ = OPERATORS[op]
    has_value = spec.value is not msgspec.UNSET
    has_values = spec.values is not msgspec.UNSET
    if shape == "none":
        if has_value or has_values:
            which = "value" if has_value else "values"
            _fail(f"`{path}.{which}` is not allowed for {op}, which takes no value")
        return
    if shape == "value":
        if has_values:
            _fail(f"`{path}.values` is not allowed for {op}; give a single `value`")
        if not has_value:
            _fail(f"`{path}.value` is required for {op}")
        if kind == "bool":
            if not isinstance(spec.value, bool):
                _fail(f"`{path}.value` must be true or false for {op}, got {_describe(spec.value)}")
        else:
            _check_number(f"{path}.value", spec.value, op)
        return
    if has_value:
        _fail(f"`{path}.value` is not allowed for {op}; give an array in `values`")
    values = spec.values
    if not isinstance(values, list | tuple) or not values:
        _fail(f"`{path}.values` must be a non-empty array for {op}, got {_describe(values)}")
    for index, item in enumerate(values):
        item_path = f"{path}.values[{index}]"
        if shape == "ranges":
            if not isinstance(item, list | tuple) or len(item) != 2:
                _fail(f"`{item_path}` must be a [low, high] pair for {op}, got {_describe(item)}")
            _check_number(f"{item_path}[0]", item[0], op)
            _check_number(f"{item_path}[1]", item[1], op)
            if item[0] > item[1]:
                _fail(f"`{item_path}` has low {item[0]!r} above high {item[1]!r}")
        elif kind == "number":
            _check_number(item_path, item, op)
        else:
            _check_string(item_path, item)


# ---------------------------------------------------------------------------------- compiler


def compile_filter(spec: EventFilter) -> Predicate | None:
    """None when the filter accepts every event (the hot-path fast case); otherwise a predicate."""
    checks: list[Predicate] = []
    if spec.included_event_types is not None:
        types = frozenset(spec.included_event_types)
        checks.append(lambda event: event.type in types)
    if spec.subject_begins_with or spec.subject_ends_with:
        checks.append(
            _compile_subject(
                spec.subject_begins_with, spec.subject_ends_with, spec.is_subject_case_sensitive
            )
        )
    arrays = spec.enable_advanced_filtering_on_arrays
    checks.extend(
        compile_operator(item.operator_type, item.key, item.value, item.values, arrays=arrays)
        for item in spec.advanced_filters
    )
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    ordered = tuple(checks)

    def matches(event: CloudEvent) -> bool:
        for check in ordered:  # noqa: SIM110 - no generator per event
            if not check(event):
                return False
        return True

    return matches


def _compile_subject(prefix: str, suffix: str, case_sensitive: bool) -> Predicate:
    if case_sensitive:

        def sensitive(event: CloudEvent) -> bool:
            subject = event.subject
            return subject is not None and subject.startswith(prefix) and subject.endswith(suffix)

        return sensitive
    prefix, suffix = prefix.lower(), suffix.lower()

    def insensitive(event: CloudEvent) -> bool:
        subject = event.subject
        if subject is None:
            return False
        subject = subject.lower()
        return subject.startswith(prefix) and subject.endswith(suffix)

    return insensitive
