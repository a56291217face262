"""``choreograph trace``: print one transaction's timeline, from the trace store or a monitor's API.

Exit status: 0 shown, 1 no such transaction, 2 no store or monitor to read from.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.table import Table

from choreograph.cli import app
from choreograph.cli.loading import fail
from choreograph.errors import BackendError, NotFoundError
from choreograph.monitor.store import TRACE_STORE_FILE, TraceStore

__all__ = ["DEFAULT_DATA_DIR", "fetch_timeline", "read_timeline", "render_timeline", "trace"]

DEFAULT_DATA_DIR = Path(".choreograph")
HTTP_TIMEOUT_SECONDS = 10.0

http_transport: httpx.AsyncBaseTransport | None = None
"""Transport for ``--url`` requests; None is the network (tests put an ASGI transport here)."""


def read_timeline(data_dir: Path, correlation_id: str) -> dict[str, Any]:
    """The timeline from ``data_dir``'s trace store, opened read-only."""
    path = data_dir / TRACE_STORE_FILE
    if not path.is_file():
        raise fail(f"no trace store at {path}; is --data-dir the monitor's data directory?")
    try:
        with TraceStore(path, read_only=True) as store:
            timeline = store.timeline(correlation_id)
    except NotFoundError as exc:
        raise fail(str(exc), code=1) from exc
    except BackendError as exc:
        raise fail(str(exc)) from exc
    return timeline.to_dict()


async def fetch_timeline(url: str, correlation_id: str) -> dict[str, Any]:
    """The timeline from a monitor's HTTP API at ``url``."""
    async with httpx.AsyncClient(
        base_url=url, transport=http_transport, timeout=HTTP_TIMEOUT_SECONDS
    ) as client:
        try:
            response = await client.get(f"/transactions/{quote(correlation_id, safe='')}")
        except httpx.HTTPError as exc:
            raise fail(f"cannot reach the monitor at {url}: {exc}") from exc
    if response.status_code == 404:
        raise fail(_error_message(response, f"no transaction {correlation_id!r}"), code=1)
    if response.status_code != 200:
        raise fail(f"{url} answered {response.status_code}: {_error_message(response, '')}")
    try:
        body: dict[str, Any] = response.json()
    except ValueError as exc:
        raise fail(f"{url} did not answer JSON") from exc
    return body


def _error_message(response: httpx.Response, default: str) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return default or response.text[:200]
    return str(message)


def _ms(value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    if value == int(value):
        return f"{value:,.0f} ms"
    return f"{value:,.0f} ms" if abs(value) >= 10 else f"{value:.1f} ms"


_OUTCOME_STYLES = {
    "ok": "green",
    "failed": "red",
    "dead-lettered": "magenta",
    "timed-out": "yellow",
}
_STATE_STYLES = {"Completed": "green", "Failed": "red", "TimedOut": "yellow", "Running": "cyan"}


def render_timeline(timeline: dict[str, Any], console: Console) -> None:
    """A header line (state, workflow, duration) and a table of the hops."""
    state = timeline["state"]
    duration = _ms(timeline["durationMs"]) if timeline.get("durationMs") is not None else "running"
    console.print(
        f"[bold]{timeline['correlationId']}[/bold]  "
        f"[{_STATE_STYLES.get(state, 'white')}]{state}[/]  "
        f"workflow {timeline['workflow']}  duration {duration}  started {timeline['startedAt']}",
        highlight=False,
    )
    if timeline.get("failureReason"):
        console.print(f"reason: {timeline['failureReason']}", highlight=False)
    if timeline.get("lateOutcome"):
        console.print(f"late outcome: {timeline['lateOutcome']}", highlight=False)
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("At", justify="right", no_wrap=True)
    table.add_column("Event", no_wrap=True)
    table.add_column("Service", no_wrap=True)
    table.add_column("Attempt", justify="right")
    table.add_column("Since cause", justify="right", no_wrap=True)
    table.add_column("Outcome")
    for number, hop in enumerate(timeline["hops"], 1):
        outcome = hop["outcome"]
        shown = f"[{_OUTCOME_STYLES.get(outcome, 'white')}]{outcome}[/]"
        if hop.get("detail") and outcome != "ok":
            shown += f" ({hop['detail']})"
        table.add_row(
            str(number),
            f"+{_ms(hop['offsetMs'])}" if hop["offsetMs"] >= 0 else _ms(hop["offsetMs"]),
            hop["type"],
            hop["service"],
            "-" if hop.get("attempt") is None else str(hop["attempt"]),
            _ms(hop.get("sinceCauseMs")),
            shown,
        )
    console.print(table)


@app.command()
def trace(
    correlation_id: Annotated[str, typer.Argument(help="The transaction's correlation id.")],
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help=f"Read DIR/{TRACE_STORE_FILE}, the monitor's trace store.",
            show_default=str(DEFAULT_DATA_DIR),
            metavar="DIR",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Ask a running monitor instead, e.g. http://127.0.0.1:8000."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the timeline as JSON.")] = False,
) -> None:
    """Show a transaction's timeline: each hop, its service, attempt, durations and outcome."""
    if url is not None and data_dir is not None:
        raise fail("give --data-dir or --url, not both")
    if url is not None:
        timeline = asyncio.run(fetch_timeline(url.rstrip("/"), correlation_id))
    else:
        timeline = read_timeline(data_dir or DEFAULT_DATA_DIR, correlation_id)
    if as_json:
        typer.echo(json.dumps(timeline, indent=2, ensure_ascii=False))
    else:
        render_timeline(timeline, Console())
