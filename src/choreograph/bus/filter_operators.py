"""How one advanced filter reads its key from a :class:`CloudEvent` and compares the value.

The semantics are described in :mod:`choreograph.bus.filters`; this module only compiles them.
Everything is decided once, when a subscription's filter is compiled: the key's reader, the
lower-cased operands and the comparison, so that evaluating an event allocates next to nothing.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Final

import msgspec

from choreograph.events import CloudEvent

__all__ = ["OPERATORS", "compile_operator"]

OPERATORS: Final[dict[str, tuple[str, str, str, bool]]] = {
    "NumberIn": ("values", "number", "NumberIn", False),
    "NumberNotIn": ("values", "number", "NumberIn", True),
    "NumberLessThan": ("value", "number", "NumberLessThan", False),
    "NumberGreaterThan": ("value", "number", "NumberGreaterThan", False),
    "NumberLessThanOrEquals": ("value", "number", "NumberLessThanOrEquals", False),
    "NumberGreaterThanOrEquals": ("value", "number", "NumberGreaterThanOrEquals", False),
    "NumberInRange": ("ranges", "number", "NumberInRange", False),
    "NumberNotInRange": ("ranges", "number", "NumberInRange", True),
    "BoolEquals": ("value", "bool", "BoolEquals", False),
    "StringContains": ("values", "string", "StringContains", False),
    "StringNotContains": ("values", "string", "StringContains", True),
    "StringBeginsWith": ("values", "string", "StringBeginsWith", False),
    "StringNotBeginsWith": ("values", "string", "StringBeginsWith", True),
    "StringEndsWith": ("values", "string", "StringEndsWith", False),
    "StringNotEndsWith": ("values", "string", "StringEndsWith", True),
    "StringIn": ("values", "string", "StringIn", False),
    "StringNotIn": ("values", "string", "StringIn", True),
    "IsNullOrUndefined": ("none", "null", "IsNullOrUndefined", False),
    "IsNotNull": ("none", "null", "IsNotNull", False),
}
"""Every ``operatorType`` -> (operand shape: ``value``, ``values``, ``ranges`` or ``none``; operand
kind: ``number``, ``bool``, ``string`` or ``null``; positive counterpart; whether it is a NOT)."""

_MATCH_MISSING: Final = frozenset({"NumberNotIn", "StringNotIn"})
_ATTRIBUTES: Final = {
    "id": "id",
    "eventid": "id",
    "topic": "source",
    "source": "source",
    "type": "type",
    "eventtype": "type",
    "subject": "subject",
    "specversion": "specversion",
    "time": "time",
    "datacontenttype": "datacontenttype",
    "dataschema": "dataschema",
}
_EXTENSION_ALIASES: Final = {"eventtypeversion": "dataversion"}


def _getter(key: str) -> Callable[[CloudEvent], Any]:
    """The function reading a key from an event; None stands for both missing and null."""
    head, dot, rest = key.partition(".")
    name = head.lower()
    if name == "data":
        if not dot:
            return lambda event: None if event.data is msgspec.UNSET else event.data
        segments = tuple(rest.split("."))
        if len(segments) == 1:
            segment = segments[0]

            def one(event: CloudEvent) -> Any:
                data = event.data
                return data.get(segment) if isinstance(data, dict) else None

            return one

        def path(event: CloudEvent) -> Any:
            value = event.data
            for segment in segments:
                if not isinstance(value, dict):
                    return None
                value = value.get(segment)
            return value

        return path
    attribute = _ATTRIBUTES.get(name)
    if attribute is not None:
        return operator.attrgetter(attribute)
    extension = _EXTENSION_ALIASES.get(name, name)
    return lambda event: event.extensions.get(extension)


# kind -> (the types of its operands, an excluded class): a bool is an int but never a number.
_KINDS: Final[dict[str, tuple[type | tuple[type, ...], type]]] = {
    "number": ((int, float), bool),
    "string": (str, type(None)),
    "bool": (bool, type(None)),
}


def _matcher(positive: str, bound: Any, values: Any) -> Callable[[Any], bool]:
    """The positive comparison, for a value already known to be of the operator's type."""
    if positive == "NumberIn":
        return frozenset(values).__contains__
    if positive == "NumberLessThan":
        return lambda value: bool(value < bound)
    if positive == "NumberGreaterThan":
        return lambda value: bool(value > bound)
    if positive == "NumberLessThanOrEquals":
        return lambda value: bool(value <= bound)
    if positive == "NumberGreaterThanOrEquals":
        return lambda value: bool(value >= bound)
    if positive == "BoolEquals":
        return lambda value: bool(value == bound)
    if positive == "NumberInRange":
        pairs = tuple((low, high) for low, high in values)
        if len(pairs) == 1:
            low, high = pairs[0]
            return lambda value: bool(low <= value <= high)

        def in_range(value: Any) -> bool:
            for low, high in pairs:  # noqa: SIM110 - no generator per event
                if low <= value <= high:
                    return True
            return False

        return in_range
    strings = tuple(item.lower() for item in values)
    if positive == "StringIn":
        members = frozenset(strings)
        return lambda value: value.lower() in members
    if positive == "StringBeginsWith":
        return lambda value: bool(value.lower().startswith(strings))
    if positive == "StringEndsWith":
        return lambda value: bool(value.lower().endswith(strings))
    if len(strings) == 1:  # StringContains
        needle = strings[0]
        return lambda value: needle in value.lower()

    def contains(value: Any) -> bool:
        lowered = value.lower()
        for needle in strings:  # noqa: SIM110 - no generator per event
            if needle in lowered:
                return True
        return False

    return contains


def compile_operator(
    operator_type: str, key: str, value: Any, values: Any, *, arrays: bool
) -> Callable[[CloudEvent], bool]:
    """The predicate of one advanced filter, already validated; ``arrays`` is the arrays flag."""
    get = _getter(key)
    if operator_type == "IsNullOrUndefined":
        return lambda event: get(event) is None
    if operator_type == "IsNotNull":
        return lambda event: get(event) is not None
    _, kind, positive, negated = OPERATORS[operator_type]
    types, excluded = _KINDS[kind]
    match = _matcher(positive, value, values)
    on_missing = operator_type in _MATCH_MISSING

    def evaluate(event: CloudEvent) -> bool:
        found = get(event)
        if found is None:
            return on_missing
        if isinstance(found, types) and found.__class__ is not excluded:  # the common case
            return match(found) != negated
        if isinstance(found, (list, tuple)):
            if not arrays:
                return False
            for item in found:
                if isinstance(item, types) and item.__class__ is not excluded and match(item):
                    return not negated
        return negated  # another type, or no element matched

    return evaluate
