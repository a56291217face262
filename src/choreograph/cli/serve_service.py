"""``choreograph serve service MODULE:SERVICE``: one service as a webhook app behind the gateway.

``MODULE:SERVICE`` names a :class:`~choreograph.sdk.Service`, a
:class:`~choreograph.sdk.asgi.ServiceWithApi`, or a function without arguments returning
either (so that the module reads its settings when the process starts, not when it is
imported). The admin token of the gateway's management API comes from
``CHOREOGRAPH_ADMIN_TOKEN``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from choreograph.cli.loading import fail, load_object
from choreograph.cli.serve import serve_app
from choreograph.errors import ChoreographError
from choreograph.sdk.asgi import ServiceWebhook, ServiceWithApi, serve
from choreograph.sdk.remote import ADMIN_TOKEN_VARIABLE, GatewayClient
from choreograph.sdk.service import Service

__all__ = ["listener", "public_url_for", "service"]

GATEWAY_OPTION = typer.Option(
    "--gateway",
    envvar="CHOREOGRAPH_GATEWAY_URL",
    help="Base URL of the gateway (publish and management API).",
)
FD_OPTION = typer.Option("--fd", hidden=True, help="Serve on this inherited, listening socket.")


def listener(host: str, port: int, fd: int | None) -> socket.socket:
    """The listening socket: inherited (``--fd``, from ``up --processes``) or bound now, so that
    a busy port is a one-line error before anything starts."""
    if fd is not None:
        try:
            return socket.socket(fileno=fd)
        except OSError as exc:
            raise fail(f"--fd {fd} is not a socket: {exc.strerror or exc}") from exc
    if not 0 < port < 65536:
        raise fail(f"--port must be from 1 to 65535, got {port}")
    try:
        return socket.create_server((host, port))
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def public_url_for(host: str, listening: socket.socket, public_url: str | None) -> str:
    """Where the gateway reaches this process: ``--public-url``, else the address it listens on."""
    if public_url:
        return public_url.rstrip("/")
    port = listening.getsockname()[1]
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def _load_service(reference: str) -> tuple[Service, ServiceWithApi | None]:
    loaded: Any = load_object(reference)
    if callable(loaded) and not isinstance(loaded, Service | ServiceWithApi):
        try:
            loaded = loaded()
        except ChoreographError as exc:
            raise fail(f"{reference}: {exc}") from exc
    if isinstance(loaded, ServiceWithApi):
        return loaded.service, loaded
    if isinstance(loaded, Service):
        return loaded, None
    raise fail(
        f"{reference} is a {type(loaded).__name__}; expected a Service, a ServiceWithApi or a "
        "function returning one"
    )


async def _serve(
    definition: Service,
    with_api: ServiceWithApi | None,
    *,
    gateway_url: str,
    store: str,
    data_dir: Path,
    listening: socket.socket,
    public_url: str,
) -> None:
    token = os.environ.get(ADMIN_TOKEN_VARIABLE) or None
    async with (
        GatewayClient(gateway_url, admin_token=token) as gateway,
        ServiceWebhook(
            definition,
            gateway,
            public_url=public_url,
            store=store,
            api=with_api.api if with_api is not None else None,
            data_dir=data_dir,
        ) as webhook,
    ):

        async def register() -> None:
            await webhook.register()
            handlers = ", ".join(spec.name for spec in definition.handlers) or "none"
            typer.echo(
                f"Service {definition.name} at {public_url} (gateway {gateway_url})\n"
                f"  Handlers        {public_url}/handlers/<name>: {handlers}\n"
                f"  Health          {public_url}/healthz\n"
                "Press Ctrl-C to stop."
            )

        await serve(webhook.app, [listening], on_listening=register)


@serve_app.command("service")
def service(
    reference: Annotated[
        str,
        typer.Argument(metavar="MODULE:SERVICE", help="The service, e.g. shop.billing:service."),
    ],
    gateway: Annotated[str, GATEWAY_OPTION],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            envvar="CHOREOGRAPH_SERVICE_PUBLIC_URL",
            help="Base URL the gateway reaches this service at (default http://HOST:PORT).",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(help="The service's store: sqlite:///path.db or memory://."),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option("--data-dir", help="Where the store is kept by default (<service>.db)."),
    ] = Path(".choreograph"),
    fd: Annotated[int | None, FD_OPTION] = None,
) -> None:
    """Serve one service as webhooks: register its subscriptions with the gateway, handle what
    the bus pushes, publish what it emits."""
    definition, with_api = _load_service(reference)
    data_dir = data_dir.resolve()
    if store is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        store = f"sqlite:///{data_dir / definition.name}.db"
    listening = listener(host, port, fd)
    try:
        asyncio.run(
            _serve(
                definition,
                with_api,
                gateway_url=gateway,
                store=store,
                data_dir=data_dir,
                listening=listening,
                public_url=public_url_for(host, listening, public_url),
            )
        )
    except ChoreographError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        pass  # uvicorn stopped on the signal, then raised it again
    finally:
        listening.close()
    typer.echo("Stopped.")
