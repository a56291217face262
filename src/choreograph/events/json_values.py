"""What JSON can carry faithfully, and the decoding of a JSON body."""

from __future__ import annotations

import math
from typing import Any

import msgspec

from choreograph.errors import InvalidEventError


def _decode_json(body: bytes | str) -> Any:
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidEventError(f"the body is not valid JSON: {reason}") from exc


def check_json(value: object, path: str) -> None:
    """Refuse what JSON cannot carry faithfully: msgspec would turn a set into an array, bytes
    into base64 text, ``inf`` into null and a number key into a string. ``path`` names the value
    in the error (``data``, ``state packages/p1``)."""
    try:
        problem = _not_json(value)
    except RecursionError:
        problem = ("", "is nested too deeply")
    if problem is not None:
        where, message = problem
        raise InvalidEventError(f"`{path}{where}` {message}", attribute=f"{path}{where}")


def _not_json(value: object) -> tuple[str, str] | None:
    """Where in ``value`` JSON stops, and why; None when it is JSON throughout. The path is
    built only on the way back from a failure, so valid data costs no string work."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return None
    if kind is float:
        return None if math.isfinite(value) else ("", f"must be a finite number, got {value!r}")  # type: ignore[arg-type]
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                return "", f"keys must be strings, got {type(key).__name__} {key!r}"
            problem = _not_json(item)
            if problem is not None:
                return f".{key}{problem[0]}", problem[1]
        return None
    if kind is list or kind is tuple:
        for index, item in enumerate(value):  # type: ignore[arg-type]
            problem = _not_json(item)
            if problem is not None:
                return f"[{index}]{problem[0]}", problem[1]
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else ("", f"must be a finite number, got {value!r}")
    if isinstance(value, bool | int | str):  # subclasses such as enums encode as their value
        return None
    return "", (
        "must be JSON (objects, arrays, strings, numbers, booleans, null), "
        f"got {type(value).__name__}"
    )
