"""``choreograph serve gateway``: the HTTP gateway (publish and management API) over one bus."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer
import uvicorn

from choreograph.bus.bus import Bus
from choreograph.cli.loading import fail
from choreograph.cli.serve import serve_app
from choreograph.errors import ChoreographError
from choreograph.gateway import GatewaySettings, create_app
from choreograph.gateway.validation import (
    PendingValidations,
    validate_pending_subscriptions,
    validation_hook,
    validation_routes,
)
from choreograph.gateway.webhook import WebhookEndpointFactory, WebhookSettings

DEFAULT_BUS_URL = "sqlite:///.choreograph/bus.db"


async def _serve(
    bus_url: str,
    settings: GatewaySettings,
    webhook_settings: WebhookSettings,
    host: str,
    port: int,
) -> None:
    """Serve until interrupted. Order: the webhook client opens before the bus and closes after
    it (the bus's dispatchers deliver through it); webhooks left unvalidated by a previous run
    are validated again while the gateway serves."""
    base = settings.public_url or f"http://{host}:{port}"
    async with (
        WebhookEndpointFactory(webhook_settings) as webhooks,
        Bus(bus_url, endpoints=webhooks) as bus,
        PendingValidations(bus) as pending,
    ):
        hook = validation_hook(bus, validation_base_url=base, client=webhooks, pending=pending)
        app = create_app(
            bus, settings, on_webhook_subscription=hook, extra_routes=validation_routes(pending)
        )
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        _announce(bus_url, settings, base)
        revalidation = asyncio.create_task(
            validate_pending_subscriptions(
                bus, validation_base_url=base, client=webhooks, pending=pending
            )
        )
        try:
            await server.serve()
        finally:
            revalidation.cancel()
            await asyncio.wait([revalidation])


def _announce(bus_url: str, settings: GatewaySettings, base: str) -> None:
    default = (
        f"  Default topic   {base}/api/events -> {settings.default_topic}\n"
        if settings.default_topic
        else ""
    )
    auth = (
        "Bearer token from CHOREOGRAPH_ADMIN_TOKEN"
        if settings.admin_token
        else "UNPROTECTED (--insecure-no-admin-token)"
    )
    typer.echo(
        f"Gateway on bus {bus_url}\n"
        f"  Publish         {base}/topics/<topic>/api/events\n"
        f"{default}"
        f"  Management      {base}/management/topics ({auth})\n"
        f"  OpenAPI         {base}/openapi.json\n"
        f"  Health, metrics {base}/healthz, {base}/metrics\n"
        "Press Ctrl-C to stop."
    )


@serve_app.command("gateway")
def gateway(
    host: Annotated[
        str, typer.Option(envvar="CHOREOGRAPH_GATEWAY_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="CHOREOGRAPH_GATEWAY_PORT", help="Port to listen on.")
    ] = 8080,
    bus: Annotated[
        str,
        typer.Option(
            envvar="CHOREOGRAPH_BUS_URL",
            help="The bus: memory://, sqlite:///path/bus.db or nats://host:4222.",
        ),
    ] = DEFAULT_BUS_URL,
    default_topic: Annotated[
        str | None,
        typer.Option(
            "--default-topic",
            envvar="CHOREOGRAPH_GATEWAY_DEFAULT_TOPIC",
            help="Topic that POST /api/events publishes to (none: that path answers 404).",
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            envvar="CHOREOGRAPH_GATEWAY_PUBLIC_URL",
            help="Base URL clients reach the gateway at, when a proxy sits in front.",
        ),
    ] = None,
    webhook_allow_private: Annotated[
        bool,
        typer.Option(
            "--webhook-allow-private",
            help="Let webhooks reach loopback and private addresses "
            "(CHOREOGRAPH_WEBHOOK_ALLOW_PRIVATE=1; development only).",
        ),
    ] = False,
    insecure_no_admin_token: Annotated[
        bool,
        typer.Option(
            "--insecure-no-admin-token",
            help="Serve the management API without CHOREOGRAPH_ADMIN_TOKEN (development only).",
        ),
    ] = False,
) -> None:
    """Serve the Event Grid-style HTTP gateway: publish, management API, health and metrics."""
    if not 0 < port < 65536:
        raise fail(f"--port must be from 1 to 65535, got {port}")
    try:
        settings = GatewaySettings.from_env(
            os.environ,
            default_topic=default_topic,
            public_url=public_url,
            insecure_no_admin_token=True if insecure_no_admin_token else None,
        )
        webhook_settings = WebhookSettings.from_env(
            os.environ, allow_private_addresses=True if webhook_allow_private else None
        )
        asyncio.run(_serve(bus, settings, webhook_settings, host, port))
    except ChoreographError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        typer.echo("Stopped.")
