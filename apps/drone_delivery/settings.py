"""The application's settings, validated in one place, loaded from the environment by one function.

    DRONE_DELIVERY_FLEET_SIZE              drones in the fleet (default 50)
    DRONE_DELIVERY_FLIGHT_SECONDS          flight time of a delivery (default 30; halved when expedited)
    DRONE_DELIVERY_FAULTS                  failure injection (see drone_delivery.faults)
    DRONE_DELIVERY_DEADLINE_SECONDS        the monitor's deadline for a delivery (default 45)
    DRONE_DELIVERY_MAX_WEIGHT_KG           heaviest package accepted (default 25)
    DRONE_DELIVERY_RETRY_BACKOFF_SECONDS   retry steps of the forward steps (default "1,2,4,8")
    DRONE_DELIVERY_MAX_DELIVERY_ATTEMPTS   attempts before a forward step is dead-lettered (default 5)

With the defaults a step that keeps failing is dead-lettered 15 s after its first attempt and
reported as failed; a step that never answers is timed out by the monitor at 45 s; either way the
delivery ends ``Failed`` (compensated) well within 60 s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from choreograph import ConfigError, RetryPolicy, ValidationError
from drone_delivery.faults import FAULTS_VARIABLE, Faults

__all__ = ["DEFAULT_RETRY_POLICY", "PREFIX", "Settings"]

PREFIX: Final = "DRONE_DELIVERY_"
MAX_FLEET_SIZE: Final = 10_000
DEFAULT_RETRY_POLICY: Final = RetryPolicy(
    backoff_seconds=(1.0, 2.0, 4.0, 8.0), max_delivery_attempts=5
)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What the Drone Delivery system can be told; every field is validated on construction."""

    fleet_size: int = 50
    flight_seconds: float = 30.0
    deadline_seconds: float = 45.0
    max_weight_kg: float = 25.0
    faults: Faults = field(default_factory=Faults)
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY
    """Retry policy of the forward steps (package, drone assignment, scheduling)."""

    def __post_init__(self) -> None:
        fleet = self.fleet_size
        if (
            isinstance(fleet, bool)
            or not isinstance(fleet, int)
            or not 1 <= fleet <= MAX_FLEET_SIZE
        ):
            raise ConfigError(
                f"fleet_size must be an integer from 1 to {MAX_FLEET_SIZE}, got {fleet!r}"
            )
        for name in ("flight_seconds", "deadline_seconds", "max_weight_kg"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.faults, Faults):
            raise ConfigError(f"faults must be Faults, got {type(self.faults).__name__}")
        if not isinstance(self.retry_policy, RetryPolicy):
            raise ConfigError(
                f"retry_policy must be a RetryPolicy, got {type(self.retry_policy).__name__}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from ``DRONE_DELIVERY_*`` variables (pass ``os.environ``, or a dict in tests).

        Raises :class:`~choreograph.ConfigError` naming the variable and the rule.
        """
        values: dict[str, object] = {}
        if (text := _get(environ, "FLEET_SIZE")) is not None:
            values["fleet_size"] = _integer("FLEET_SIZE", text, 1, MAX_FLEET_SIZE)
        for suffix, name in (
            ("FLIGHT_SECONDS", "flight_seconds"),
            ("DEADLINE_SECONDS", "deadline_seconds"),
            ("MAX_WEIGHT_KG", "max_weight_kg"),
        ):
            if (text := _get(environ, suffix)) is not None:
                values[name] = _positive(suffix, text)
        if (text := _get(environ, FAULTS_VARIABLE[len(PREFIX) :])) is not None:
            values["faults"] = Faults.parse(text)
        backoff = DEFAULT_RETRY_POLICY.backoff_seconds
        attempts = DEFAULT_RETRY_POLICY.max_delivery_attempts
        if (text := _get(environ, "RETRY_BACKOFF_SECONDS")) is not None:
            steps = [part.strip() for part in text.split(",")]
            if not 1 <= len(steps) <= 30:
                raise _invalid("RETRY_BACKOFF_SECONDS", text, "a list of 1 to 30 delays")
            backoff = tuple(_number("RETRY_BACKOFF_SECONDS", step, text) for step in steps)
            if any(step < 0 for step in backoff):
                raise _invalid("RETRY_BACKOFF_SECONDS", text, "delays of 0 s or more")
        if (text := _get(environ, "MAX_DELIVERY_ATTEMPTS")) is not None:
            attempts = _integer("MAX_DELIVERY_ATTEMPTS", text, 1, 30)
        try:
            values["retry_policy"] = RetryPolicy(
                backoff_seconds=backoff, max_delivery_attempts=attempts
            )
        except ValidationError as exc:
            raise ConfigError(f"{PREFIX}RETRY_BACKOFF_SECONDS: {exc}") from exc
        return cls(**values)  # type: ignore[arg-type]  # each value was checked above


def _get(environ: Mapping[str, str], suffix: str) -> str | None:
    text = environ.get(PREFIX + suffix)
    if text is None or not text.strip():
        return None
    return text.strip()


def _invalid(suffix: str, text: str, rule: str) -> ConfigError:
    return ConfigError(f"{PREFIX}{suffix} must be {rule}, got {text!r}")


def _number(suffix: str, text: str, whole: str | None = None) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise _invalid(suffix, whole or text, "a number" if whole is None else "numbers")
    return value


def _positive(suffix: str, text: str) -> float:
    value = _number(suffix, text)
    if value <= 0:
        raise _invalid(suffix, text, "a positive number")
    return value


def _integer(suffix: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _invalid(suffix, text, f"an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise _invalid(suffix, text, f"an integer from {low} to {high}")
    return value
