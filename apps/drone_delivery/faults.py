"""Failure injection for demos and tests: ``DRONE_DELIVERY_FAULTS``.

The value is a comma-separated list of ``<service>:<kind>:<value>`` items, e.g.
``scheduler:error:0.2,delivery:delay_ms:500``. Services: ``ingestion``, ``package``,
``scheduler``, ``delivery``. Kinds:

- ``error:<probability>`` — a transient failure: the step raises :class:`InjectedFault`, the bus
  retries it on the subscription's retry policy (then dead-letters it, and the service reports
  the failure);
- ``reject:<probability>`` — a poison event: the step raises ``Reject``, the bus dead-letters
  it at once (the service reports the failure without retries);
- ``delay_ms:<milliseconds>`` — the step sleeps that long (real time, for demos) first.

Faults hit a service's *forward* step only (creating the package, assigning the drone,
scheduling the delivery; for ingestion, the write requests of its HTTP API: ``error`` answers
503, ``reject`` 422). Compensation and the handlers of dead letters are never faulted: the point
of the demo is to watch a failure being compensated, which needs the compensators to work.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Final

from choreograph import ConfigError, Reject
from choreograph.sdk import Context
from choreograph.sdk.service import Middleware

__all__ = [
    "FAULTS_VARIABLE",
    "SERVICES",
    "Faults",
    "InjectedFault",
    "ServiceFaults",
    "fault_middleware",
]

FAULTS_VARIABLE: Final = "DRONE_DELIVERY_FAULTS"
SERVICES: Final = ("delivery", "ingestion", "package", "scheduler")
KINDS: Final = ("delay_ms", "error", "reject")
MAX_DELAY_MS: Final = 600_000.0


class InjectedFault(Exception):
    """The transient failure raised by ``error:<probability>``."""


@dataclass(frozen=True, kw_only=True)
class ServiceFaults:
    """The faults of one service; the default injects none."""

    error_probability: float = 0.0
    reject_probability: float = 0.0
    delay_ms: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.error_probability or self.reject_probability or self.delay_ms)

    async def inject(self, rng: random.Random, where: str) -> None:
        """Sleep, then maybe reject or fail, as configured (``where`` names the step)."""
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000.0)
        if self.reject_probability and rng.random() < self.reject_probability:
            raise Reject(f"injected fault: {where} rejected the event")
        if self.error_probability and rng.random() < self.error_probability:
            raise InjectedFault(f"injected fault: {where} failed")


NO_FAULTS: Final = ServiceFaults()


@dataclass(frozen=True)
class Faults:
    """Faults by service name."""

    by_service: Mapping[str, ServiceFaults] = field(default_factory=dict)

    def of(self, service: str) -> ServiceFaults:
        return self.by_service.get(service, NO_FAULTS)

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """Parse ``DRONE_DELIVERY_FAULTS``; an empty value injects nothing.

        Raises :class:`~choreograph.ConfigError` naming the offending item and the rule.
        """
        settings: dict[str, dict[str, float]] = {}
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            parts = [part.strip() for part in item.split(":")]
            if len(parts) != 3:
                raise _error(item, "expected <service>:<kind>:<value>")
            service, kind, text = parts
            if service not in SERVICES:
                raise _error(
                    item, f"unknown service {service!r}; expected one of {_list(SERVICES)}"
                )
            if kind not in KINDS:
                raise _error(item, f"unknown kind {kind!r}; expected one of {_list(KINDS)}")
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if kind == "delay_ms":
                if not 0 <= value <= MAX_DELAY_MS:
                    raise _error(
                        item, f"delay_ms must be a number from 0 to {MAX_DELAY_MS:g}, got {text!r}"
                    )
            elif not 0 <= value <= 1:
                raise _error(item, f"{kind} must be a probability from 0 to 1, got {text!r}")
            options = settings.setdefault(service, {})
            if kind in options:
                raise _error(item, f"{service}:{kind} is given twice")
            options[kind] = value
        return cls(
            {
                service: ServiceFaults(
                    error_probability=options.get("error", 0.0),
                    reject_probability=options.get("reject", 0.0),
                    delay_ms=options.get("delay_ms", 0.0),
                )
                for service, options in settings.items()
            }
        )

    def describe(self) -> str:
        """The spec that parses back to these faults (empty when there are none)."""
        items = []
        for service, faults in sorted(self.by_service.items()):
            for kind, value in (
                ("delay_ms", faults.delay_ms),
                ("error", faults.error_probability),
                ("reject", faults.reject_probability),
            ):
                if value:
                    items.append(f"{service}:{kind}:{value:g}")
        return ",".join(items)


def _list(names: Collection[str]) -> str:
    return ", ".join(sorted(names))


def _error(item: str, rule: str) -> ConfigError:
    return ConfigError(f"{FAULTS_VARIABLE}: invalid item {item!r}: {rule}")


def fault_middleware(
    faults: ServiceFaults, rng: random.Random, handlers: Collection[str]
) -> Middleware:
    """A service middleware injecting ``faults`` before the handlers named in ``handlers``."""
    targets = frozenset(handlers)

    async def inject_faults(ctx: Context, call_next: Callable[[Context], Awaitable[None]]) -> None:
        if ctx.handler in targets:
            await faults.inject(rng, f"{ctx.service}.{ctx.handler}")
        await call_next(ctx)

    return inject_faults
