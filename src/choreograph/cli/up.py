"""``choreograph up``: the Drone Delivery system in one process on the embedded SQLite bus, with
the gateway (publish, management, metrics) on the same port; ``--processes`` runs it as separate
processes instead (see :mod:`choreograph.cli.processes`).

The gateway's management API takes ``Authorization: Bearer <CHOREOGRAPH_ADMIN_TOKEN>``; when that
variable is unset, ``up`` generates a token for the run and prints it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from pathlib import Path
from typing import Annotated

import typer
from starlette.applications import Starlette
from starlette.routing import Mount

from choreograph.bus.bus import Bus
from choreograph.cli import app
from choreograph.cli.loading import fail
from choreograph.errors import ChoreographError
from choreograph.gateway import GatewaySettings, create_app
from choreograph.gateway.validation import (
    PendingValidations,
    validate_pending_subscriptions,
    validation_hook,
    validation_routes,
)
from choreograph.gateway.webhook import WebhookEndpointFactory, WebhookSettings
from choreograph.sdk.asgi import serve
from choreograph.sdk.remote import ADMIN_TOKEN_VARIABLE

EXAMPLE_REQUEST = """{"ownerId": "owner-1", "pickupLocation": "47.64,-122.13", "dropoffLocation": "47.61,-122.33", "packageInfo": {"packageId": "package-1", "size": "small", "weight": 2.5}}"""


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts, so a busy port is a clear error."""
    try:
        listener = socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    listener.set_inheritable(True)
    return listener


# --- the gateway beside the system (choreograph up serves it on its own port) -----------------
def _gateway_settings() -> tuple[GatewaySettings, bool]:
    """The gateway's settings from the environment, with a generated admin token when
    ``CHOREOGRAPH_ADMIN_TOKEN`` is unset (and the management API is not explicitly left open);
    whether the token was generated."""
    generated = not os.environ.get(ADMIN_TOKEN_VARIABLE) and os.environ.get(
        "CHOREOGRAPH_INSECURE_NO_ADMIN_TOKEN", ""
    ).strip().lower() not in ("1", "true", "yes", "on")
    token = secrets.token_urlsafe(24) if generated else None
    try:
        return GatewaySettings.from_env(os.environ, admin_token=token), generated
    except ChoreographError as exc:
        raise fail(str(exc)) from exc


def _banner(title: str, base: str, gateway: str, settings: GatewaySettings, generated: bool) -> str:
    token = settings.admin_token
    if token is None:
        auth = "UNPROTECTED (CHOREOGRAPH_INSECURE_NO_ADMIN_TOKEN)"
    elif generated:
        auth = f"{token} (generated for this run; set {ADMIN_TOKEN_VARIABLE} to choose one)"
    else:
        auth = f"from {ADMIN_TOKEN_VARIABLE}"
    return (
        f"{title}\n"
        f"  Ingestion API   {base}/deliveries\n"
        f"  Transactions    {base}/transactions/<deliveryId>\n"
        f"  Health          {base}/healthz\n"
        f"  Gateway         {gateway}/topics/<topic>/api/events\n"
        f"  Management      {gateway}/management/topics (Authorization: Bearer <admin token>)\n"
        f"  Metrics         {gateway}/metrics\n"
        f"  Admin token     {auth}\n"
    )


def _try(base: str) -> str:
    return (
        f"Try:\n  curl -i -X POST {base}/deliveries -H 'Content-Type: application/json' "
        f"-d '{EXAMPLE_REQUEST}'\n"
        "Press Ctrl-C to stop; a restart resumes the transactions in flight."
    )


async def _serve(
    data_dir: Path,
    listener: socket.socket,
    host: str,
    port: int,
    gateway_settings: GatewaySettings,
    generated: bool,
) -> None:
    """Order: the webhook client opens before the bus and closes after it; the system starts on
    the bus; the gateway's routes are served after the system's (its ``/healthz`` wins)."""
    from drone_delivery.settings import Settings
    from drone_delivery.system import DroneDeliverySystem

    settings = Settings.from_env(os.environ)
    base = f"http://{host}:{port}"
    async with (
        WebhookEndpointFactory(WebhookSettings(allow_private_addresses=True)) as webhooks,
        Bus("sqlite:///" + str(data_dir / "bus.db"), endpoints=webhooks) as bus,
        PendingValidations(bus) as pending,
        DroneDeliverySystem(bus, data_dir=data_dir, settings=settings) as system,
    ):
        hook = validation_hook(bus, validation_base_url=base, client=webhooks, pending=pending)
        gateway = create_app(
            bus,
            gateway_settings,
            on_webhook_subscription=hook,
            extra_routes=validation_routes(pending),
        )
        both = Starlette(routes=[*system.app.routes, Mount("", app=gateway)])
        typer.echo(
            _banner(
                f"Drone Delivery is running (data in {data_dir}).",
                base,
                base,
                gateway_settings,
                generated,
            )
            + _try(base)
        )

        async def revalidate() -> None:
            await validate_pending_subscriptions(
                bus, validation_base_url=base, client=webhooks, pending=pending
            )

        await serve(both, [listener], on_listening=revalidate)
    typer.echo("Stopped.")


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Port of the Ingestion API.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the bus and the services keep their data.")
    ] = Path(".choreograph"),
    processes: Annotated[
        bool,
        typer.Option(
            "--processes",
            help="Run the gateway (with the monitor) and each service as separate processes.",
        ),
    ] = False,
    gateway_port: Annotated[
        int | None,
        typer.Option(
            "--gateway-port", help="With --processes: port of the gateway (default PORT + 1)."
        ),
    ] = None,
) -> None:
    """Start the Drone Delivery system: bus (SQLite), four services, monitor, HTTP API and gateway."""
    if not 0 < port < 65536:
        raise fail(f"--port must be from 1 to 65535, got {port}")
    if gateway_port is not None and not processes:
        raise fail("--gateway-port goes with --processes (otherwise the gateway is on --port)")
    gateway_port = port + 1 if gateway_port is None else gateway_port
    if processes and (not 0 < gateway_port < 65536 or gateway_port == port):
        raise fail(f"--gateway-port must be from 1 to 65535 and not --port, got {gateway_port}")
    gateway_settings, generated = _gateway_settings()
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if processes:  # --- up --processes (choreograph.cli.processes) ---
        from choreograph.cli.processes import run_processes

        base, gateway = f"http://{host}:{port}", f"http://{host}:{gateway_port}"
        title = f"Drone Delivery is running as separate processes (data in {data_dir})."
        banner = _banner(title, base, gateway, gateway_settings, generated)
        run_processes(
            host=host,
            port=port,
            gateway_port=gateway_port,
            data_dir=data_dir,
            admin_token=gateway_settings.admin_token,
            banner=banner
            + f"  Processes       {{processes}}\n  Logs            {data_dir / 'logs'}\n"
            + _try(base),
        )
        return
    listener = _bind(host, port)
    try:
        asyncio.run(_serve(data_dir, listener, host, port, gateway_settings, generated))
    except ChoreographError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        typer.echo("Stopped.")
    finally:
        listener.close()
