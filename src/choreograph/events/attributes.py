"""Validation shared by the event schemas: error-message rendering and the attribute rules."""

from __future__ import annotations

import re
from datetime import datetime

from choreograph.errors import InvalidEventError

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


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
