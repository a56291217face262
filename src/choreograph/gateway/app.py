"""The gateway's ASGI application: publish, management, health, metrics and the OpenAPI document.

    app = create_app(bus, GatewaySettings.from_env(os.environ))

Routes (see :mod:`~choreograph.gateway.publish` and :mod:`~choreograph.gateway.management`):

    POST /topics/{topic}/api/events     publish (topic key or SAS token)
    POST /api/events                    publish to the default topic
    …    /management/…                  topics, keys, subscriptions, dead letters (admin token)
    GET  /healthz                       200 while the bus serves, 503 otherwise
    GET  /metrics                       Prometheus text format
    GET  /openapi.json                  OpenAPI 3 description of all of the above

Every error answers with Event Grid's body ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from choreograph.bus.bus import Bus
from choreograph.errors import ChoreographError
from choreograph.gateway.errors import HTTPProblem, http_exception_handler, problem_handler
from choreograph.gateway.management import WebhookSubscriptionHook, management_routes
from choreograph.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from choreograph.gateway.openapi import openapi_document
from choreograph.gateway.publish import publish_routes
from choreograph.gateway.settings import GatewaySettings

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(
    bus: Bus,
    settings: GatewaySettings,
    *,
    open_bus: bool = False,
    on_webhook_subscription: WebhookSubscriptionHook | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    metrics: GatewayMetrics | None = None,
) -> Starlette:
    """The gateway over ``bus``.

    ``open_bus``: the application opens the bus at start-up and closes it at shutdown (ASGI
    lifespan); otherwise the caller owns an already open bus. ``on_webhook_subscription`` is
    awaited after a management ``PUT`` created a webhook subscription or changed its endpoint,
    to validate the endpoint (see ``WebhookSubscriptionHook``); ``extra_routes`` are served
    too (the ``validationUrl`` routes of webhook validation). ``metrics`` lets the caller keep
    the gateway's counters (delivery counters come from ``bus.metrics``).
    """
    counters = metrics if metrics is not None else GatewayMetrics()
    document = openapi_document()
    if settings.admin_token is None:
        logger.warning(
            "the management API is served WITHOUT an admin token (insecure_no_admin_token): "
            "anyone who reaches this gateway can read topic keys and delete topics"
        )

    async def healthz(request: Request) -> Response:
        try:
            await bus.list_topics()
        except ChoreographError as exc:
            logger.warning("health check failed: %s", exc)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_text(request: Request) -> Response:
        return Response(await counters.render(bus), media_type=CONTENT_TYPE)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not open_bus:
            yield
            return
        async with bus:
            logger.info("gateway serving bus %s", bus.url)
            yield

    app = Starlette(
        routes=[
            *publish_routes(bus, settings, counters),
            management_routes(bus, settings, on_webhook_subscription),
            *extra_routes,
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_text, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        exception_handlers={
            HTTPProblem: problem_handler,
            ChoreographError: problem_handler,
            HTTPException: http_exception_handler,
        },
        lifespan=lifespan,
    )
    app.state.bus = bus
    app.state.settings = settings
    app.state.metrics = counters
    return app
