"""Subscriptions: where a topic's matching events go, and how hard the bus tries.

Property names and ranges follow Event Grid's ``eventSubscriptions`` resource; choreograph adds
``retryPolicy.backoffSeconds``, ``retryPolicy.nonRetryableStatusCodes`` and
``maxConcurrentDeliveries``. The wire form (``to_dict``/``from_dict``) nests destination
properties as Azure does: ``{"endpointType": "WebHook", "properties": {"endpointUrl": ...}}``.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

import msgspec

from choreograph.bus.filters import EventFilter
from choreograph.bus.wire import convert_wire
from choreograph.errors import InvalidSubscriptionError

__all__ = [
    "DEFAULT_BACKOFF_SECONDS",
    "DEFAULT_NON_RETRYABLE_STATUS_CODES",
    "DeliverySchema",
    "Destination",
    "InProcessDestination",
    "ProvisioningState",
    "RetryPolicy",
    "SubscriptionRecord",
    "SubscriptionSpec",
    "WebHookDestination",
    "validate_subscription_name",
]

DeliverySchema = Literal["CloudEventSchemaV1_0", "EventGridSchema"]
ProvisioningState = Literal["Succeeded", "AwaitingManualAction", "Failed", "Creating"]

DEFAULT_BACKOFF_SECONDS: Final = (
    10.0,
    30.0,
    60.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    10800.0,
    21600.0,
    43200.0,
)
"""Event Grid's retry schedule: 10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, 3 h, 6 h, then 12 h."""

DEFAULT_NON_RETRYABLE_STATUS_CODES: Final = (400, 401, 403, 413)
"""Webhook answers Event Grid dead-letters at once instead of retrying."""

_SUBSCRIPTION_NAME = re.compile(r"[A-Za-z0-9-]{3,64}")
MAX_DELIVERY_TIMEOUT_SECONDS: Final = 3600.0
MAX_BACKOFF_STEP_SECONDS: Final = 86_400.0


def validate_subscription_name(name: object) -> str:
    """Return ``name`` if it is 3-64 letters, digits or hyphens; raise otherwise."""
    if not isinstance(name, str) or not _SUBSCRIPTION_NAME.fullmatch(name):
        shown = repr(name) if not isinstance(name, str) else f'"{name}"'
        raise InvalidSubscriptionError(
            f"subscription name {shown} must be 3-64 characters of letters, digits and '-'"
        )
    return name


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidSubscriptionError(
            f"`{name}` must be an integer from {low} to {high}, got {value!r}"
        )


class RetryPolicy(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """How often and how long the bus retries a delivery that failed.

    Delivery stops at whichever limit comes first. ``backoff_seconds`` are the delays before the
    1st, 2nd ... retry, each measured from the previous attempt; the last one repeats.
    """

    max_delivery_attempts: int = 30
    event_time_to_live_in_minutes: int = 1440
    backoff_seconds: tuple[float, ...] = DEFAULT_BACKOFF_SECONDS
    non_retryable_status_codes: tuple[int, ...] = DEFAULT_NON_RETRYABLE_STATUS_CODES

    def __post_init__(self) -> None:
        _check_int("retryPolicy.maxDeliveryAttempts", self.max_delivery_attempts, 1, 30)
        _check_int(
            "retryPolicy.eventTimeToLiveInMinutes", self.event_time_to_live_in_minutes, 1, 1440
        )
        steps = self.backoff_seconds
        if not isinstance(steps, tuple | list) or not 1 <= len(steps) <= 30:
            raise InvalidSubscriptionError(
                f"`retryPolicy.backoffSeconds` must be a list of 1 to 30 delays, got {steps!r}"
            )
        for index, step in enumerate(steps):
            if not _is_number(step) or not 0 <= step <= MAX_BACKOFF_STEP_SECONDS:
                raise InvalidSubscriptionError(
                    f"`retryPolicy.backoffSeconds[{index}]` must be a number of seconds from 0 to "
                    f"{MAX_BACKOFF_STEP_SECONDS:g}, got {step!r}"
                )
        codes = self.non_retryable_status_codes
        if not isinstance(codes, tuple | list):
            raise InvalidSubscriptionError(
                f"`retryPolicy.nonRetryableStatusCodes` must be a list, got {codes!r}"
            )
        for index, code in enumerate(codes):
            if isinstance(code, bool) or not isinstance(code, int) or not 300 <= code <= 599:
                raise InvalidSubscriptionError(
                    f"`retryPolicy.nonRetryableStatusCodes[{index}]` must be a failure status "
                    f"code from 300 to 599, got {code!r}"
                )

    @property
    def time_to_live_seconds(self) -> float:
        return self.event_time_to_live_in_minutes * 60.0


def _check_batch(max_events: object, preferred_kb: object) -> None:
    _check_int("destination.properties.maxEventsPerBatch", max_events, 1, 5000)
    _check_int("destination.properties.preferredBatchSizeInKilobytes", preferred_kb, 1, 1024)


class InProcessDestination(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """Deliver to an async handler attached in this process (``Bus.subscribe``)."""

    max_events_per_batch: int = 1
    preferred_batch_size_in_kilobytes: int = 64

    def __post_init__(self) -> None:
        _check_batch(self.max_events_per_batch, self.preferred_batch_size_in_kilobytes)

    @property
    def endpoint_type(self) -> str:
        return "InProcess"


class WebHookDestination(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """POST events to an HTTP(S) endpoint, as Event Grid does."""

    endpoint_url: str
    max_events_per_batch: int = 1
    preferred_batch_size_in_kilobytes: int = 64

    def __post_init__(self) -> None:
        url = self.endpoint_url
        if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url) or len(url) > 2048:
            raise InvalidSubscriptionError(
                f"`destination.properties.endpointUrl` must be an http:// or https:// URL, got {url!r}"
            )
        _check_batch(self.max_events_per_batch, self.preferred_batch_size_in_kilobytes)

    @property
    def endpoint_type(self) -> str:
        return "WebHook"


Destination = InProcessDestination | WebHookDestination
_DESTINATION_TYPES: Final[dict[str, type[Destination]]] = {
    "InProcess": InProcessDestination,
    "WebHook": WebHookDestination,
}


class SubscriptionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The settable properties of a subscription.

    ``dead_letter_enabled=False`` is the explicit choice to drop undeliverable events (they are
    counted, never silently lost). ``event_delivery_schema`` defaults to CloudEvents, like the
    topic's input schema; Event Grid output is allowed only from an Event Grid input topic.
    """

    destination: Destination = msgspec.field(default_factory=InProcessDestination)
    event_filter: EventFilter = msgspec.field(default_factory=EventFilter)
    retry_policy: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    delivery_timeout_seconds: float = 30.0
    event_delivery_schema: DeliverySchema = "CloudEventSchemaV1_0"
    dead_letter_enabled: bool = True
    max_concurrent_deliveries: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.destination, InProcessDestination | WebHookDestination):
            raise InvalidSubscriptionError(
                "`destination` must be an InProcess or WebHook destination"
            )
        if not isinstance(self.event_filter, EventFilter):
            raise InvalidSubscriptionError("`filter` must be an EventFilter")
        if not isinstance(self.retry_policy, RetryPolicy):
            raise InvalidSubscriptionError("`retryPolicy` must be a RetryPolicy")
        timeout = self.delivery_timeout_seconds
        if not _is_number(timeout) or not 0 < timeout <= MAX_DELIVERY_TIMEOUT_SECONDS:
            raise InvalidSubscriptionError(
                "`deliveryTimeoutSeconds` must be a number of seconds above 0 and at most "
                f"{MAX_DELIVERY_TIMEOUT_SECONDS:g}, got {timeout!r}"
            )
        if self.event_delivery_schema not in ("CloudEventSchemaV1_0", "EventGridSchema"):
            raise InvalidSubscriptionError(
                '`eventDeliverySchema` must be "CloudEventSchemaV1_0" or "EventGridSchema", '
                f"got {self.event_delivery_schema!r}"
            )
        if not isinstance(self.dead_letter_enabled, bool):
            raise InvalidSubscriptionError(
                f"`deadLetterEnabled` must be true or false, got {self.dead_letter_enabled!r}"
            )
        _check_int("maxConcurrentDeliveries", self.max_concurrent_deliveries, 1, 1000)

    def to_dict(self) -> dict[str, Any]:
        """The wire form, named as Event Grid's ``eventSubscriptions`` properties."""
        destination = msgspec.to_builtins(self.destination)
        return {
            "destination": {
                "endpointType": self.destination.endpoint_type,
                "properties": destination,
            },
            "filter": msgspec.to_builtins(self.event_filter),
            "retryPolicy": msgspec.to_builtins(self.retry_policy),
            "deliveryTimeoutSeconds": self.delivery_timeout_seconds,
            "eventDeliverySchema": self.event_delivery_schema,
            "deadLetterEnabled": self.dead_letter_enabled,
            "maxConcurrentDeliveries": self.max_concurrent_deliveries,
        }

    @classmethod
    def from_dict(cls, properties: object) -> SubscriptionSpec:
        """Validate the wire form; every refusal names the property and the rule."""
        if properties is None:
            properties = {}
        if not isinstance(properties, dict):
            raise InvalidSubscriptionError(
                f"subscription properties must be a JSON object, got {type(properties).__name__}"
            )
        known = {
            "destination",
            "filter",
            "retryPolicy",
            "deliveryTimeoutSeconds",
            "eventDeliverySchema",
            "deadLetterEnabled",
            "maxConcurrentDeliveries",
        }
        unknown = sorted(set(properties) - known)
        if unknown:
            raise InvalidSubscriptionError(
                f"`{unknown[0]}` is not a subscription property; expected one of {', '.join(sorted(known))}"
            )
        fields: dict[str, Any] = {}
        if "destination" in properties:
            fields["destination"] = _destination_from_dict(properties["destination"])
        if "filter" in properties:
            fields["event_filter"] = convert_wire(
                properties["filter"], EventFilter, InvalidSubscriptionError, "`filter`"
            )
        if "retryPolicy" in properties:
            fields["retry_policy"] = convert_wire(
                properties["retryPolicy"], RetryPolicy, InvalidSubscriptionError, "`retryPolicy`"
            )
        for wire, attribute in (
            ("deliveryTimeoutSeconds", "delivery_timeout_seconds"),
            ("eventDeliverySchema", "event_delivery_schema"),
            ("deadLetterEnabled", "dead_letter_enabled"),
            ("maxConcurrentDeliveries", "max_concurrent_deliveries"),
        ):
            if wire in properties:
                fields[attribute] = properties[wire]
        return cls(**fields)


def _destination_from_dict(value: object) -> Destination:
    if not isinstance(value, dict):
        raise InvalidSubscriptionError(f"`destination` must be a JSON object, got {value!r}")
    endpoint_type = value.get("endpointType")
    kind = _DESTINATION_TYPES.get(endpoint_type) if isinstance(endpoint_type, str) else None
    if kind is None:
        raise InvalidSubscriptionError(
            f"`destination.endpointType` must be one of {', '.join(_DESTINATION_TYPES)}, "
            f"got {endpoint_type!r}"
        )
    unknown = sorted(set(value) - {"endpointType", "properties"})
    if unknown:
        raise InvalidSubscriptionError(f"`destination.{unknown[0]}` is not a destination property")
    return convert_wire(
        value.get("properties") or {}, kind, InvalidSubscriptionError, "`destination.properties`"
    )


class SubscriptionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A subscription as stored."""

    topic: str
    name: str
    spec: SubscriptionSpec
    created_at: float
    provisioning_state: ProvisioningState = "Succeeded"
