"""Validation shared by the event schemas: error-message rendering and the attribute rules."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

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


_VALID_SECONDS: set[str] = set()
"""Leading ``YYYY-MM-DDTHH:MM:SS`` of UTC timestamps found valid. With the ``Z`` zone, whether
``fromisoformat`` accepts a timestamp the pattern matched depends on those 19 characters only, and
events come many a second: most checks end with a set lookup."""
_VALID_SECONDS_LIMIT: Final = 4096


def _require_timestamp(name: str, value: object) -> None:
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        utc = value[-1] in "Zz"
        if utc and value[:19] in _VALID_SECONDS:
            return
        try:  # the pattern checks the form, fromisoformat the ranges (month 13, hour 25...)
            datetime.fromisoformat(value.upper())
        except ValueError:
            pass
        else:
            if utc:
                if len(_VALID_SECONDS) >= _VALID_SECONDS_LIMIT:
                    _VALID_SECONDS.clear()
                _VALID_SECONDS.add(value[:19])
            return
    _require_string(name, value)
    raise InvalidEventError(
        f"`{name}` must be an RFC 3339 timestamp with a time zone, got {_describe(value)}",
        attribute=name,
    )
