"""``choreograph serve monitor WORKFLOWS``: the transaction monitor, in the process of the bus it
watches, beside the gateway that serves that bus.

The monitor subscribes in process (its subscriptions take batches of events, one worker each),
so it runs where the bus runs: this command serves the gateway (publish, management, health,
metrics, webhook validation) and adds the monitor's ``/transactions`` routes. ``WORKFLOWS``
names a :class:`~choreograph.monitor.Workflow`, a list of them, or a function without arguments
returning either. The topics the workflows watch are created when missing.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from choreograph.bus.bus import Bus
from choreograph.cli.loading import fail, load_object
from choreograph.cli.serve import serve_app
from choreograph.cli.serve_service import FD_OPTION, listener, public_url_for
from choreograph.errors import ChoreographError
from choreograph.gateway import GatewaySettings, create_app
from choreograph.gateway.validation import (
    PendingValidations,
    validate_pending_subscriptions,
    validation_hook,
    validation_routes,
)
from choreograph.gateway.webhook import WebhookEndpointFactory, WebhookSettings
from choreograph.monitor import TRACE_STORE_FILE, Monitor, Workflow, monitor_routes
from choreograph.sdk.asgi import serve

__all__ = ["monitor"]


def _load_workflows(reference: str) -> list[Workflow]:
    loaded: Any = load_object(reference)
    if callable(loaded) and not isinstance(loaded, Workflow):
        try:
            loaded = loaded()
        except ChoreographError as exc:
            raise fail(f"{reference}: {exc}") from exc
    workflows = [loaded] if isinstance(loaded, Workflow) else loaded
    if (
        not isinstance(workflows, Sequence)
        or not workflows
        or not all(isinstance(item, Workflow) for item in workflows)
    ):
        raise fail(f"{reference} must be a Workflow, a list of them, or a function returning one")
    return list(workflows)


async def _serve(
    workflows: list[Workflow],
    *,
    bus_url: str,
    data_dir: Path,
    settings: GatewaySettings,
    webhook_settings: WebhookSettings,
    listening: socket.socket,
    base: str,
) -> None:
    """Order: the webhook client opens before the bus and closes after it; the topics, then the
    monitor (it subscribes to them), then the gateway serves; webhooks left unvalidated by a
    previous run are validated again while it serves."""
    async with (
        WebhookEndpointFactory(webhook_settings) as webhooks,
        Bus(bus_url, endpoints=webhooks) as bus,
        PendingValidations(bus) as pending,
    ):
        known = {topic.name for topic in await bus.list_topics()}
        for workflow in workflows:
            for topic in (*workflow.topics, workflow.timeout_topic):
                if topic not in known:
                    await bus.put_topic(topic)
                    known.add(topic)
        async with Monitor(bus, workflows, store_path=data_dir / TRACE_STORE_FILE) as watching:
            hook = validation_hook(bus, validation_base_url=base, client=webhooks, pending=pending)
            app = create_app(
                bus,
                settings,
                on_webhook_subscription=hook,
                extra_routes=[*validation_routes(pending), *monitor_routes(watching)],
            )

            async def revalidate() -> None:
                typer.echo(
                    f"Gateway and monitor on bus {bus_url}\n"
                    f"  Publish         {base}/topics/<topic>/api/events\n"
                    f"  Management      {base}/management/topics\n"
                    f"  Transactions    {base}/transactions/<correlationId>\n"
                    f"  Health, metrics {base}/healthz, {base}/metrics\n"
                    "Press Ctrl-C to stop."
                )
                await validate_pending_subscriptions(
                    bus, validation_base_url=base, client=webhooks, pending=pending
                )

            await serve(app, [listening], on_listening=revalidate)


@serve_app.command("monitor")
def monitor(
    workflows: Annotated[
        str,
        typer.Argument(metavar="WORKFLOWS", help="The workflows, e.g. shop.flows:workflows."),
    ],
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
    ] = "sqlite:///.choreograph/bus.db",
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the monitor keeps its trace (monitor.db).")
    ] = Path(".choreograph"),
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
            help="Let webhooks reach loopback and private addresses (development only).",
        ),
    ] = False,
    fd: Annotated[int | None, FD_OPTION] = None,
) -> None:
    """Serve the transaction monitor beside the gateway and the bus it watches."""
    loaded = _load_workflows(workflows)
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    listening = listener(host, port, fd)
    try:
        base = public_url_for(host, listening, public_url)
        settings = GatewaySettings.from_env(os.environ, public_url=public_url)
        webhook_settings = WebhookSettings.from_env(
            os.environ, allow_private_addresses=True if webhook_allow_private else None
        )
        asyncio.run(
            _serve(
                loaded,
                bus_url=bus,
                data_dir=data_dir,
                settings=settings,
                webhook_settings=webhook_settings,
                listening=listening,
                base=base,
            )
        )
    except ChoreographError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        pass  # uvicorn stopped on the signal, then raised it again
    finally:
        listening.close()
    typer.echo("Stopped.")
