"""``choreograph serve service MODULE:SERVICE``: one service in this process, either

- ``--gateway URL``: as a webhook app behind the gateway (the bus pushes to it over HTTP); or
- ``--bus URL``: in process on the bus itself, with no gateway. On a shared bus (NATS) this is
  how a service scales out: every process of it attaches to the same subscriptions as competing
  consumers, and with a shared store (``--store postgresql://…``) they share its inbox, its
  state and its locks. It serves HTTP only for a service with an API of its own (and
  ``/healthz``), or when given ``--port``; it runs until SIGINT or SIGTERM, then stops taking
  deliveries, lets those in progress finish (within the bus's grace period) and exits.

``MODULE:SERVICE`` names a :class:`~choreograph.sdk.Service`, a
:class:`~choreograph.sdk.asgi.ServiceWithApi`, or a function without arguments returning
either (so that the module reads its settings when the process starts, not when it is
imported). The admin token of the gateway's management API comes from
``CHOREOGRAPH_ADMIN_TOKEN``. A ``postgresql://`` store URL without ``schema=`` gets the
service's name as its schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import typer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from choreograph.bus.bus import Bus
from choreograph.cli.loading import fail, load_object
from choreograph.cli.serve import serve_app
from choreograph.errors import ChoreographError
from choreograph.sdk.asgi import ApiContext, ServiceWebhook, ServiceWithApi, serve
from choreograph.sdk.remote import ADMIN_TOKEN_VARIABLE, GatewayClient
from choreograph.sdk.service import Service
from choreograph.urls import without_password

__all__ = ["listener", "public_url_for", "service"]

GATEWAY_OPTION = typer.Option(
    "--gateway",
    envvar="CHOREOGRAPH_GATEWAY_URL",
    help="Base URL of the gateway (publish and management API): serve as webhooks.",
)
BUS_OPTION = typer.Option(
    "--bus",
    help="Run in process on this bus (nats://host:4222 to scale out), without a gateway.",
)
DEFAULT_PORT = 8100
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


def store_for(store: str, service_name: str) -> str:
    """A ``postgresql://`` store URL without a schema gets the service's name as its schema."""
    if not store.startswith("postgresql://"):
        return store
    parts = urlsplit(store)
    options = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "schema" for key, _ in options):
        return store
    query = urlencode([*options, ("schema", service_name)])
    return urlunsplit(parts._replace(query=query))


async def _run_on_bus(
    definition: Service,
    with_api: ServiceWithApi | None,
    *,
    bus_url: str,
    store: str,
    data_dir: Path,
    listening: socket.socket | None,
    base_url: str | None,
) -> None:
    """Order: the bus opens, the service attaches (its store opened, its startup run), its API
    starts; on SIGINT or SIGTERM everything stops in reverse."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    try:
        async with (
            Bus(bus_url) as bus,
            definition.run(bus, store=store) as running,
            contextlib.AsyncExitStack() as stack,
        ):
            subscriptions = [
                f"{topic}/{definition.subscription_name(spec)}"
                for spec in definition.handlers
                for topic in dict.fromkeys(spec.topics.values())
            ]

            async def health(request: Request) -> Response:
                return JSONResponse(
                    {"status": "ok", "service": definition.name, "subscriptions": subscriptions}
                )

            routes: list[BaseRoute] = [Route("/healthz", health, methods=["GET"])]
            if with_api is not None:
                context = ApiContext(
                    publisher=bus, store=running.store, clock=running.clock, data_dir=data_dir
                )
                routes.extend(await stack.enter_async_context(with_api.api(context)))
            handlers = ", ".join(spec.name for spec in definition.handlers) or "none"
            lines = [
                f"Service {definition.name} on bus {without_password(bus_url)} (store {without_password(store)}, "
                f"pid {os.getpid()})",
                f"  Handlers        {handlers}",
            ]
            if base_url is not None:
                lines.append(f"  Health          {base_url}/healthz")
            typer.echo("\n".join([*lines, "Press Ctrl-C to stop."]))
            if listening is None:
                await stop.wait()
            else:  # uvicorn takes the signals while it serves
                await serve(Starlette(routes=routes), [listening])
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)


@serve_app.command("service")
def service(
    reference: Annotated[
        str,
        typer.Argument(metavar="MODULE:SERVICE", help="The service, e.g. shop.billing:service."),
    ],
    gateway: Annotated[str | None, GATEWAY_OPTION] = None,
    bus: Annotated[str | None, BUS_OPTION] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            help=f"Port to listen on (default {DEFAULT_PORT}; with --bus, HTTP is served only "
            "for a service with an API, or when a port is given)."
        ),
    ] = None,
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
        typer.Option(
            help="The service's store: sqlite:///path.db, memory://, or "
            "postgresql://user@host/database?schema=name (shared by the service's processes)."
        ),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option("--data-dir", help="Where the store is kept by default (<service>.db)."),
    ] = Path(".choreograph"),
    fd: Annotated[int | None, FD_OPTION] = None,
) -> None:
    """Serve one service: as webhooks behind the gateway (--gateway), or in process on a bus
    (--bus), several processes of it sharing its subscriptions on NATS."""
    if gateway is None and bus is None:
        raise fail(
            "give --gateway URL (webhooks behind the gateway) or --bus URL (in process on the bus)"
        )
    if gateway is not None and bus is not None:
        raise fail(
            "--gateway (or CHOREOGRAPH_GATEWAY_URL) and --bus both given: a service runs behind "
            "the gateway or on the bus, not both"
        )
    definition, with_api = _load_service(reference)
    data_dir = data_dir.resolve()
    if store is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        store = f"sqlite:///{data_dir / definition.name}.db"
    store = store_for(store, definition.name)
    if bus is not None:
        _serve_on_bus(definition, with_api, bus, store, data_dir, host, port, fd)
        return
    assert gateway is not None
    listening = listener(host, DEFAULT_PORT if port is None else port, fd)
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


def _serve_on_bus(
    definition: Service,
    with_api: ServiceWithApi | None,
    bus_url: str,
    store: str,
    data_dir: Path,
    host: str,
    port: int | None,
    fd: int | None,
) -> None:
    listening = None
    if with_api is not None or port is not None or fd is not None:
        listening = listener(host, DEFAULT_PORT if port is None else port, fd)
    try:
        asyncio.run(
            _run_on_bus(
                definition,
                with_api,
                bus_url=bus_url,
                store=store,
                data_dir=data_dir,
                listening=listening,
                base_url=None if listening is None else public_url_for(host, listening, None),
            )
        )
    except ChoreographError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        pass  # a second Ctrl-C while stopping
    finally:
        if listening is not None:
            listening.close()
    typer.echo("Stopped.")
