"""Validation of the Ingestion API's request bodies: types and presence, with messages naming the
field (``packageInfo.weight must be a positive number``). The business rules (known sizes, the
weight limit) belong to the Package service, which rejects what breaks them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final

import msgspec

from drone_delivery.events import DeliveryRequestedData, PackageInfo, parse_timestamp

__all__ = [
    "MAX_BODY_BYTES",
    "RequestError",
    "decode_body",
    "parse_delivery_request",
    "parse_reschedule",
    "valid_delivery_id",
]

MAX_BODY_BYTES: Final = 64 * 1024
MAX_TEXT: Final = 256
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,63}")
_DELIVERY_FIELDS: Final = frozenset(
    {
        "deliveryId",
        "ownerId",
        "pickupLocation",
        "dropoffLocation",
        "pickupTime",
        "expedited",
        "packageInfo",
    }
)
_PACKAGE_FIELDS: Final = frozenset({"packageId", "size", "weight", "tag"})
_RESCHEDULE_FIELDS: Final = frozenset({"pickupTime"})


class RequestError(ValueError):
    """A request body the API refuses (400, or 413 for ``status`` 413), naming the field."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 400) -> None:
        self.field = field
        self.status = status
        super().__init__(message)


def valid_delivery_id(value: object) -> bool:
    """Whether ``value`` may be a delivery id (it appears in URLs and event ids)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object in a request body."""
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(f"the request body exceeds {MAX_BODY_BYTES // 1024} KB", status=413)
    if not body.strip():
        raise RequestError("the request body is empty; send a JSON object")
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RequestError("the request body must be a JSON object")
    return value


def _unknown(body: dict[str, Any], known: frozenset[str], prefix: str = "") -> None:
    for name in body:
        if name not in known:
            raise RequestError(
                f"{prefix}{name} is not a known field; expected {', '.join(sorted(known))}",
                field=f"{prefix}{name}",
            )


def _text(
    body: dict[str, Any], name: str, prefix: str = "", *, required: bool = True
) -> str | None:
    field = f"{prefix}{name}"
    value = body.get(name)
    if value is None:
        if required:
            raise RequestError(f"{field} is required", field=field)
        return None
    if not isinstance(value, str) or not value.strip():
        raise RequestError(f"{field} must be a non-empty string", field=field)
    if len(value) > MAX_TEXT:
        raise RequestError(f"{field} must be at most {MAX_TEXT} characters", field=field)
    return value


def _timestamp(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise RequestError(f"{name} is required", field=name)
        return None
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        parse_timestamp(value)
    except ValueError:
        raise RequestError(
            f"{name} must be an RFC 3339 timestamp with a time zone, e.g. 2026-01-01T12:00:00Z",
            field=name,
        ) from None
    return value


def parse_delivery_request(
    body: dict[str, Any], *, new_id: Callable[[], str]
) -> DeliveryRequestedData:
    """The ``DeliveryRequested`` data of a ``POST /deliveries`` body (``new_id()`` gives the
    delivery id when the body has none)."""
    _unknown(body, _DELIVERY_FIELDS)
    if "deliveryId" in body and not valid_delivery_id(body["deliveryId"]):
        raise RequestError(
            "deliveryId must be 1-64 letters, digits, '.', '_', '~' or '-', starting with a "
            "letter or digit",
            field="deliveryId",
        )
    owner = _text(body, "ownerId")
    pickup = _text(body, "pickupLocation")
    dropoff = _text(body, "dropoffLocation")
    pickup_time = _timestamp(body, "pickupTime", required=False)
    expedited = body.get("expedited", False)
    if not isinstance(expedited, bool):
        raise RequestError("expedited must be true or false", field="expedited")
    info = body.get("packageInfo")
    if info is None:
        raise RequestError("packageInfo is required", field="packageInfo")
    if not isinstance(info, dict):
        raise RequestError("packageInfo must be an object", field="packageInfo")
    _unknown(info, _PACKAGE_FIELDS, "packageInfo.")
    package_id = _text(info, "packageId", "packageInfo.")
    size = _text(info, "size", "packageInfo.")
    weight = info.get("weight")
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or weight <= 0
    ):
        raise RequestError(
            "packageInfo.weight must be a positive number", field="packageInfo.weight"
        )
    tag = _text(info, "tag", "packageInfo.", required=False)
    package: PackageInfo = {"packageId": str(package_id), "size": str(size), "weight": weight}
    if tag is not None:
        package["tag"] = tag
    return {
        "deliveryId": body.get("deliveryId") or new_id(),
        "ownerId": str(owner),
        "pickupLocation": str(pickup),
        "dropoffLocation": str(dropoff),
        "pickupTime": pickup_time,
        "expedited": expedited,
        "packageInfo": package,
    }


def parse_reschedule(body: dict[str, Any]) -> str:
    """The new pickup time of a ``PATCH /deliveries/{id}`` body."""
    _unknown(body, _RESCHEDULE_FIELDS)
    value = _timestamp(body, "pickupTime", required=True)
    assert value is not None
    return value
