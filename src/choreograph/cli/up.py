"""``choreograph up``: the Drone Delivery system in one process on the embedded SQLite bus."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from choreograph.bus.bus import Bus
from choreograph.cli import app
from choreograph.cli.loading import fail
from choreograph.errors import ChoreographError

EXAMPLE_REQUEST = """{"ownerId": "owner-1", "pickupLocation": "47.64,-122.13", "dropoffLocation": "47.61,-122.33", "packageInfo": {"packageId": "package-1", "size": "small", "weight": 2.5}}"""


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts, so a busy port is a clear error."""
    try:
        listener = socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    listener.set_inheritable(True)
    return listener


async def _serve(data_dir: Path, listener: socket.socket, host: str, port: int) -> None:
    from drone_delivery.settings import Settings
    from drone_delivery.system import DroneDeliverySystem

    settings = Settings.from_env(os.environ)
    async with (
        Bus("sqlite:///" + str(data_dir / "bus.db")) as bus,
        DroneDeliverySystem(bus, data_dir=data_dir, settings=settings) as system,
    ):
        config = uvicorn.Config(
            system.app, host=host, port=port, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        base = f"http://{host}:{port}"
        typer.echo(
            f"Drone Delivery is running (data in {data_dir}).\n"
            f"  Ingestion API   {base}/deliveries\n"
            f"  Transactions    {base}/transactions/<deliveryId>\n"
            f"  Health          {base}/healthz\n"
            f"Try:\n  curl -i -X POST {base}/deliveries -H 'Content-Type: application/json' "
            f"-d '{EXAMPLE_REQUEST}'\n"
            "Press Ctrl-C to stop; a restart resumes the transactions in flight."
        )
        await server.serve(sockets=[listener])
    typer.echo("Stopped.")


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Port of the Ingestion API.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the bus and the services keep their data.")
    ] = Path(".choreograph"),
) -> None:
    """Start the Drone Delivery system: bus (SQLite), four services, monitor and HTTP API."""
    if not 0 < port < 65536:
        raise fail(f"--port must be from 1 to 65535, got {port}")
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    listener = _bind(host, port)
    try:
        asyncio.run(_serve(data_dir, listener, host, port))
    except ChoreographError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        typer.echo("Stopped.")
    finally:
        listener.close()
