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
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from choreograph.bus.bus import Bus
from choreograph.errors import ChoreographError
from choreograph.gateway.errors import (
    HTTPProblem,
    error_response,
    http_exception_handler,
    problem_from_error,
    problem_handler,
)
from choreograph.gateway.management import WebhookSubscriptionHook, management_routes
from choreograph.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from choreograph.gateway.openapi import openapi_document
from choreograph.gateway.publish import (
    PublishHandler,
    publish_handler,
    publish_path_params,
    publish_routes,
)
from choreograph.gateway.settings import GatewaySettings

__all__ = ["GatewayApp", "create_app"]

logger = logging.getLogger(__name__)


class GatewayApp(Starlette):
    """The gateway's Starlette application. Publishing is the hot path: a ``POST`` to a publish
    route goes straight to its handler, past the routing and the middleware the other routes
    need, with the same answers (the Event Grid error body for a refusal, 500 for a bug)."""

    def __init__(self, publish: PublishHandler, **options: Any) -> None:
        super().__init__(**options)
        self._publish = publish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await super().__call__(scope, receive, send)
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        params = publish_path_params(path)
        if params is None:
            return await super().__call__(scope, receive, send)
        scope["app"] = self
        scope["path_params"] = params
        try:
            response = await self._publish(Request(scope, receive))
        except HTTPProblem as problem:
            response = error_response(problem)
        except ChoreographError as exc:
            response = error_response(problem_from_error(exc))
        except Exception:
            bug = HTTPProblem(500, "internal error", code="InternalError")
            await error_response(bug)(scope, receive, send)
            raise  # for the server to log, as Starlette's error middleware does
        await response(scope, receive, send)


def create_app(
    bus: Bus,
    settings: GatewaySettings,
    *,
    open_bus: bool = False,
    on_webhook_subscription: WebhookSubscriptionHook | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    metrics: GatewayMetrics | None = None,
) -> GatewayApp:
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

    publish = publish_handler(bus, settings, counters)
    app = GatewayApp(
        publish,
        routes=[
            *publish_routes(publish),
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
