"""``choreograph serve ambassador``: the sidecar of a plain HTTP service that knows nothing of the bus.

Every flag has a ``CHOREOGRAPH_AMBASSADOR_…`` variable (lists comma-separated); the admin token
of the gateway's management API comes from ``CHOREOGRAPH_ADMIN_TOKEN``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Annotated

import typer

from choreograph.ambassador import Ambassador, AmbassadorSettings, parse_emits
from choreograph.bus.subscription import DEFAULT_BACKOFF_SECONDS, RetryPolicy
from choreograph.cli.loading import fail
from choreograph.cli.serve import serve_app
from choreograph.cli.serve_service import FD_OPTION, GATEWAY_OPTION, listener, public_url_for
from choreograph.errors import ChoreographError
from choreograph.sdk.asgi import serve
from choreograph.sdk.remote import ADMIN_TOKEN_VARIABLE, GatewayClient

__all__ = ["ambassador"]

_ENV = "CHOREOGRAPH_AMBASSADOR_"


def _split(values: list[str]) -> list[str]:
    """Repeated flags, or one comma-separated environment value."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _retry_policy(attempts: int | None, backoff: str | None) -> RetryPolicy | None:
    if attempts is None and backoff is None:
        return None
    try:
        steps = (
            tuple(float(step) for step in backoff.split(","))
            if backoff
            else DEFAULT_BACKOFF_SECONDS
        )
    except ValueError:
        raise fail(f"--retry-backoff takes seconds separated by commas, got {backoff!r}") from None
    try:
        return RetryPolicy(max_delivery_attempts=attempts or 30, backoff_seconds=steps)
    except ChoreographError as exc:
        raise fail(str(exc)) from exc


async def _serve(settings: AmbassadorSettings, gateway_url: str, listening: socket.socket) -> None:
    token = os.environ.get(ADMIN_TOKEN_VARIABLE) or None
    async with (
        GatewayClient(gateway_url, admin_token=token) as gateway,
        Ambassador(settings, gateway) as ambassador,
    ):

        async def register() -> None:
            await ambassador.register()
            emits = ", ".join(f"{t}={topic}" for t, topic in sorted(settings.emits.items()))
            typer.echo(
                f"Ambassador of {settings.name} at {settings.public_url} "
                f"(gateway {gateway_url})\n"
                f"  Subscription    {settings.topic}/{settings.subscription}: "
                f"{', '.join(settings.consumes)}\n"
                f"  Forwards to     {settings.service_url}\n"
                f"  Emits           {emits or 'nothing'}\n"
                f"  Publish         {settings.public_url}/publish\n"
                "Press Ctrl-C to stop."
            )

        await serve(ambassador.app, [listening], on_listening=register)


@serve_app.command("ambassador")
def ambassador(
    name: Annotated[
        str, typer.Option(envvar=_ENV + "NAME", help="The service's name (events' source).")
    ],
    topic: Annotated[
        str, typer.Option(envvar=_ENV + "TOPIC", help="The topic the service consumes from.")
    ],
    consumes: Annotated[
        list[str],
        typer.Option(envvar=_ENV + "CONSUMES", help="An event type the service consumes."),
    ],
    service_url: Annotated[
        str,
        typer.Option(
            "--service-url",
            envvar=_ENV + "SERVICE_URL",
            help="Where events are POSTed, e.g. http://127.0.0.1:9001/handle.",
        ),
    ],
    gateway: Annotated[str, GATEWAY_OPTION],
    emits: Annotated[
        list[str] | None,
        typer.Option(
            envvar=_ENV + "EMITS", help="TYPE=TOPIC: an event type the service may answer with."
        ),
    ] = None,
    handler: Annotated[
        str,
        typer.Option(
            envvar=_ENV + "HANDLER", help="The handler's name: subscription NAME-HANDLER."
        ),
    ] = "handle",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar=_ENV + "PORT", help="Port to listen on.")] = 8200,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            envvar=_ENV + "PUBLIC_URL",
            help="Base URL the gateway reaches the ambassador at (default http://HOST:PORT).",
        ),
    ] = None,
    service_timeout_seconds: Annotated[
        float,
        typer.Option(
            "--service-timeout-seconds",
            envvar=_ENV + "SERVICE_TIMEOUT_SECONDS",
            help="How long the service may take to answer.",
        ),
    ] = 25.0,
    max_delivery_attempts: Annotated[
        int | None,
        typer.Option(
            "--max-delivery-attempts",
            envvar=_ENV + "MAX_DELIVERY_ATTEMPTS",
            help="Attempts before an event is dead-lettered (1-30; default 30).",
        ),
    ] = None,
    retry_backoff: Annotated[
        str | None,
        typer.Option(
            "--retry-backoff",
            envvar=_ENV + "RETRY_BACKOFF",
            help="Seconds before each retry, comma-separated (default Event Grid's schedule).",
        ),
    ] = None,
    fd: Annotated[int | None, FD_OPTION] = None,
) -> None:
    """Serve the ambassador of a plain HTTP service: it registers the subscription, forwards
    each event as JSON, publishes the events the service answers with, and offers POST /publish."""
    policy = _retry_policy(max_delivery_attempts, retry_backoff)
    listening = listener(host, port, fd)
    try:
        settings = AmbassadorSettings(
            name=name,
            handler=handler,
            topic=topic,
            consumes=tuple(_split(consumes)),
            emits=parse_emits(_split(emits or [])),
            service_url=service_url,
            public_url=public_url_for(host, listening, public_url),
            service_timeout_seconds=service_timeout_seconds,
            retry_policy=policy,
        )
        asyncio.run(_serve(settings, gateway, listening))
    except ChoreographError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        pass  # uvicorn stopped on the signal, then raised it again
    finally:
        listening.close()
    typer.echo("Stopped.")
