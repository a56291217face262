"""Drone Delivery as separate processes (``choreograph up --processes``): what each one runs.

    choreograph serve monitor drone_delivery.processes:workflows ...   gateway, bus and monitor
    choreograph serve service drone_delivery.processes:package ...     one per business service
    choreograph serve service drone_delivery.processes:ingestion ...   its HTTP API too

Each function reads the ``DRONE_DELIVERY_*`` settings when the process starts, so every process
of a system runs with the same settings as the one-process mode. The ingestion process serves
the Ingestion API and, read-only from the monitor's trace store in the same data directory,
``/transactions``: a client sees the same URLs in both modes.

Scaled out on NATS, each business service runs in as many processes as wanted, sharing its
subscriptions and one PostgreSQL store (the monitor and ingestion stay single)::

    choreograph serve monitor drone_delivery.processes:workflows --bus nats://host:4222
    choreograph serve service drone_delivery.processes:ingestion --bus nats://host:4222 --port 8000
    choreograph serve service drone_delivery.processes:scheduler --bus nats://host:4222 \
        --store 'postgresql://user@db/drones?schema=scheduler'          # twice, or more

``DRONE_DELIVERY_DELIVERY_TIMEOUT_SECONDS`` sets the delivery timeout of every handler of these
processes (the bus default otherwise, 30 s). On NATS it also sets how soon the deliveries a
crashed process held go to another one: three timeouts and a few seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import AsyncIterator, Sequence
from typing import Final

from starlette.routing import BaseRoute

from choreograph import ConfigError, SystemClock
from choreograph.monitor import TRACE_STORE_FILE, TraceStore, Workflow, monitor_routes
from choreograph.sdk import Service
from choreograph.sdk.asgi import ApiContext, ServiceWithApi
from drone_delivery.delivery import build_delivery_service
from drone_delivery.ingestion import Ingestion
from drone_delivery.monitoring import drone_delivery_workflow
from drone_delivery.package import build_package_service
from drone_delivery.scheduler import build_scheduler_service
from drone_delivery.settings import Settings

__all__ = [
    "BUSINESS_SERVICES",
    "DELIVERY_TIMEOUT_VARIABLE",
    "delivery",
    "ingestion",
    "package",
    "scheduler",
    "workflows",
]

BUSINESS_SERVICES: Final = ("package", "scheduler", "delivery")
"""The services behind the Ingestion API, each its own process (started before ingestion)."""


DELIVERY_TIMEOUT_VARIABLE: Final = "DRONE_DELIVERY_DELIVERY_TIMEOUT_SECONDS"


def _settings() -> Settings:
    return Settings.from_env(os.environ)


def _delivery_timeout(service: Service) -> Service:
    """``service`` with every handler's delivery timeout from the environment, when set."""
    text = os.environ.get(DELIVERY_TIMEOUT_VARIABLE, "").strip()
    if not text:
        return service
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{DELIVERY_TIMEOUT_VARIABLE} must be a positive number, got {text!r}")
    service.handlers[:] = [
        dataclasses.replace(spec, delivery_timeout_seconds=seconds) for spec in service.handlers
    ]
    return service


def workflows() -> list[Workflow]:
    """What the monitor watches (beside the gateway)."""
    return [drone_delivery_workflow(_settings())]


def package() -> Service:
    return _delivery_timeout(build_package_service(_settings(), clock=SystemClock()))


def scheduler() -> Service:
    return _delivery_timeout(build_scheduler_service(_settings(), clock=SystemClock()))


def delivery() -> Service:
    return _delivery_timeout(build_delivery_service(_settings(), clock=SystemClock()))


def ingestion() -> ServiceWithApi:
    """The Ingestion service with its HTTP API, publishing through the gateway (or on the bus,
    when the process runs on one)."""
    tracker = Ingestion(_settings(), clock=SystemClock())
    _delivery_timeout(tracker.service)

    @contextlib.asynccontextmanager
    async def api(context: ApiContext) -> AsyncIterator[Sequence[BaseRoute]]:
        tracker.attach(context.publisher, context.store)
        routes: list[BaseRoute] = list(tracker.routes())
        traces = None
        if context.data_dir is not None and (context.data_dir / TRACE_STORE_FILE).exists():
            traces = TraceStore(context.data_dir / TRACE_STORE_FILE, read_only=True)
            routes.extend(monitor_routes(traces))
        try:
            yield routes
        finally:
            tracker.notifier.close()
            if traces is not None:
                traces.close()

    return ServiceWithApi(service=tracker.service, api=api)
