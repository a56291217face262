"""The whole Drone Delivery system on one bus: topics, the four services, the monitor, the HTTP app.

    async with Bus("sqlite:///data/bus.db") as bus:
        async with DroneDeliverySystem(bus, data_dir=Path("data"), settings=Settings()) as system:
            ...  # serve system.app (ingestion API + /transactions + /healthz)

Each service keeps its own store: ``data_dir/<service>.db`` (SQLite), or in memory when
``data_dir`` is None. The monitor always needs a SQLite file: ``data_dir/monitor.db``, or a
temporary directory removed on exit when ``data_dir`` is None (an in-memory system forgets
everything on exit anyway).

Start-up order: the topics, the monitor (so that it sees every transaction from its start), the
services (the scheduler's fleet is created on its first start), then the app is usable.
Shutdown runs in reverse: the notification streams end, the services detach (their queues wait
on the bus), the monitor stops.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from choreograph import (
    DEAD_LETTERED_EVENT_TYPE,
    SYSTEM_TOPIC,
    Bus,
    ChoreographError,
    Clock,
    SystemClock,
)
from choreograph.monitor import TRACE_STORE_FILE, Monitor, monitor_routes
from choreograph.sdk import RunningService, Service
from drone_delivery.delivery import build_delivery_service
from drone_delivery.events import DELIVERIES_TOPIC, DRONE_DELIVERY_TIMED_OUT, TOPICS
from drone_delivery.ingestion import Ingestion
from drone_delivery.monitoring import drone_delivery_workflow
from drone_delivery.package import build_package_service
from drone_delivery.scheduler import build_scheduler_service
from drone_delivery.settings import Settings

__all__ = ["SERVICE_NAMES", "DroneDeliverySystem", "declarations"]

SERVICE_NAMES: Final = ("ingestion", "package", "scheduler", "delivery")


def _services(
    settings: Settings, clock: Clock, rng: random.Random | None
) -> tuple[Ingestion, dict[str, Service]]:
    ingestion = Ingestion(settings, clock=clock, rng=rng)
    services = {
        "ingestion": ingestion.service,
        "package": build_package_service(settings, clock=clock, rng=rng),
        "scheduler": build_scheduler_service(settings, clock=clock, rng=rng),
        "delivery": build_delivery_service(settings, clock=clock, rng=rng),
    }
    return ingestion, services


def declarations() -> list[dict[str, Any]]:
    """What every participant consumes and emits, for ``choreograph graph``."""
    ingestion, services = _services(Settings(), SystemClock(), None)
    return [
        ingestion.declaration(),
        *(service.declaration() for name, service in services.items() if name != "ingestion"),
        {
            "service": "monitor",
            "description": "Times out stalled deliveries.",
            "publishes": [{"type": DRONE_DELIVERY_TIMED_OUT, "topic": DELIVERIES_TOPIC}],
        },
        {
            "service": "bus",
            "description": "Announces dead letters.",
            "publishes": [{"type": DEAD_LETTERED_EVENT_TYPE, "topic": SYSTEM_TOPIC}],
        },
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "NotFound", 405: "MethodNotAllowed"}
    return JSONResponse(
        {"error": {"code": codes.get(exc.status_code, "HttpError"), "message": exc.detail}},
        status_code=exc.status_code,
        headers=exc.headers,
    )


class DroneDeliverySystem:
    """The Drone Delivery system running on ``bus`` for the duration of an ``async with`` block.

    ``clock`` (default: the bus's) drives the services and the monitor; ``rng`` draws the
    injected faults (pass a seeded one for repeatable runs).
    """

    def __init__(
        self,
        bus: Bus,
        *,
        data_dir: Path | None,
        settings: Settings,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.bus = bus
        self.data_dir = None if data_dir is None else Path(data_dir).resolve()
        self.settings = settings
        self.clock: Clock = clock if clock is not None else bus.clock
        self.ingestion, self._definitions = _services(settings, self.clock, rng)
        self.services: dict[str, RunningService] = {}
        """The running services by name (their stores: ``services[name].store``)."""
        self._monitor: Monitor | None = None
        self._app: Starlette | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def app(self) -> Starlette:
        """The HTTP app: the Ingestion API, the monitor's ``/transactions`` and ``/healthz``."""
        if self._app is None:
            raise ChoreographError(
                "the system is not running; use `async with DroneDeliverySystem(...)`"
            )
        return self._app

    @property
    def monitor(self) -> Monitor:
        if self._monitor is None:
            raise ChoreographError(
                "the system is not running; use `async with DroneDeliverySystem(...)`"
            )
        return self._monitor

    async def __aenter__(self) -> Self:
        stack = self._stack
        try:
            await self._start(stack)
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        known = {topic.name for topic in await self.bus.list_topics()}
        for topic in TOPICS:
            if topic not in known:
                await self.bus.put_topic(topic)
        if self.data_dir is None:
            monitor_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="drone-")))
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            monitor_dir = self.data_dir
        workflow = drone_delivery_workflow(self.settings)
        self._monitor = await stack.enter_async_context(
            Monitor(
                self.bus, [workflow], store_path=monitor_dir / TRACE_STORE_FILE, clock=self.clock
            )
        )
        for name, service in self._definitions.items():
            store = "memory://" if self.data_dir is None else f"sqlite:///{self.data_dir / name}.db"
            self.services[name] = await stack.enter_async_context(
                service.run(self.bus, store=store, clock=self.clock)
            )
        self.ingestion.attach(self.bus, self.services["ingestion"].store)
        stack.callback(self.ingestion.notifier.close)
        self._app = Starlette(
            routes=[
                *self.ingestion.routes(),
                *monitor_routes(self._monitor),
                Route("/healthz", self._health, methods=["GET"]),
            ],
            exception_handlers={HTTPException: _http_error},
        )

    async def _stop(self) -> None:
        self._app = None
        try:
            await self._stack.aclose()
        finally:
            self._monitor = None
            self.services = {}

    async def _health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "services": sorted(self.services),
                "fleetSize": self.settings.fleet_size,
                "faults": self.settings.faults.describe(),
            }
        )
