"""``choreograph demo``: drive N delivery requests and account for every transaction."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from choreograph.bus.bus import Bus
from choreograph.cli import app
from choreograph.cli.loading import fail
from choreograph.errors import ChoreographError

if TYPE_CHECKING:
    from drone_delivery.driver import DriveReport


@contextlib.asynccontextmanager
async def _embedded(
    faults: str | None, data_dir: Path, deliveries: int
) -> AsyncIterator[httpx.AsyncClient]:
    """A Drone Delivery system in this process, on a SQLite bus under ``data_dir``."""
    from drone_delivery.settings import Settings
    from drone_delivery.system import DroneDeliverySystem

    environ = dict(os.environ)
    if faults is not None:
        environ["DRONE_DELIVERY_FAULTS"] = faults
    # A fleet that can fly every request at once, unless the environment says otherwise: the
    # demo is about the choreography, not about queueing for drones.
    environ.setdefault("DRONE_DELIVERY_FLEET_SIZE", str(max(50, deliveries)))
    settings = Settings.from_env(environ)
    async with (
        Bus("sqlite:///" + str(data_dir / "bus.db")) as bus,
        DroneDeliverySystem(bus, data_dir=data_dir, settings=settings) as system,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=system.app), base_url="http://demo", timeout=60
        ) as client,
    ):
        yield client


async def _run(
    deliveries: int,
    concurrency: int,
    settle_seconds: float,
    url: str | None,
    faults: str | None,
    data_dir: Path,
    quiet: bool,
) -> DriveReport:
    from drone_delivery.driver import drive

    console = Console(stderr=True, quiet=quiet)
    with Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks = {
            "requested": bar.add_task("requested", total=deliveries),
            "settled": bar.add_task("settled", total=deliveries),
        }

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(tasks[phase], completed=done, total=total)

        if url is not None:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                return await drive(
                    client,
                    deliveries=deliveries,
                    concurrency=concurrency,
                    settle_seconds=settle_seconds,
                    progress=progress,
                )
        async with _embedded(faults, data_dir, deliveries) as client:
            return await drive(
                client,
                deliveries=deliveries,
                concurrency=concurrency,
                settle_seconds=settle_seconds,
                progress=progress,
            )


def _table(summary: dict[str, Any]) -> Table:
    table = Table(title="Drone Delivery demo", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows: list[tuple[str, Any]] = [
        ("requested", summary["requested"]),
        ("refused by the API", sum(summary["refused"].values())),
        ("completed (Scheduled)", summary["completed"]),
        ("compensated", summary["compensated"]),
        *((f"  {event}", count) for event, count in sorted(summary["failed"].items())),
        ("  of which timed out", summary["timedOut"]),
        ("  cancelled", summary["cancelled"]),
        ("lost", summary["lost"]),
        ("p50 latency (ms)", summary["p50_ms"]),
        ("p95 latency (ms)", summary["p95_ms"]),
        ("p99 latency (ms)", summary["p99_ms"]),
        ("wall time (s)", summary["seconds"]),
    ]
    for name, value in rows:
        table.add_row(name, "-" if value is None else str(value))
    return table


@app.command()
def demo(
    deliveries: Annotated[int, typer.Option(help="How many delivery requests to send.")] = 100,
    faults: Annotated[
        str | None,
        typer.Option(help="Failure injection for the embedded system, e.g. 'scheduler:error:0.2'."),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="A running system (choreograph up); default: an embedded one."),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 32,
    settle_seconds: Annotated[
        float, typer.Option(help="How long to wait for the transactions to settle.")
    ] = 120.0,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data of the embedded system (default: temporary)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Drive N delivery requests, then account for every transaction (exit 1 if any is lost)."""
    if deliveries < 1:
        raise fail(f"--deliveries must be at least 1, got {deliveries}")
    if concurrency < 1:
        raise fail(f"--concurrency must be at least 1, got {concurrency}")
    if url is not None and faults is not None:
        raise fail(
            "--faults applies to the embedded system; start the server with DRONE_DELIVERY_FAULTS"
        )
    if faults is not None:
        from drone_delivery.faults import Faults

        try:
            Faults.parse(faults)
        except ChoreographError as exc:
            raise fail(f"--faults: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="choreograph-demo-") as scratch:
        directory = (data_dir or Path(scratch)).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        try:
            report = asyncio.run(
                _run(deliveries, concurrency, settle_seconds, url, faults, directory, as_json)
            )
        except (ChoreographError, httpx.HTTPError) as exc:
            raise fail(str(exc)) from exc
    summary = report.to_dict()
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        Console().print(_table(summary))
    if report.lost:
        typer.echo(
            f"choreograph: {len(report.lost)} transactions never settled, e.g. {report.lost[0]}",
            err=True,
        )
        raise typer.Exit(1)
