"""Conversion of wire (JSON) forms into validated property structs."""

from __future__ import annotations

from typing import TypeVar

import msgspec

__all__ = ["convert_wire"]

T = TypeVar("T")


def convert_wire(value: object, kind: type[T], error: type[Exception], what: str) -> T:
    """``msgspec.convert`` whose failures become ``error`` with a message naming the property.

    Errors raised by a struct's own validation keep their message; msgspec's ``- at `$.a.b```
    suffix is rewritten as ``at `a.b```.
    """
    if value is None:
        value = {}
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, error):
            raise cause from exc
        message = str(exc).replace("`$.", "`").replace("`$`", "the top level")
        raise error(f"invalid {what}: {message}") from exc
