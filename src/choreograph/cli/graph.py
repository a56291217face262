"""``choreograph graph``: draw the workflow from the services' declarations."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Annotated, Any

import typer

from choreograph.cli import app
from choreograph.cli.loading import fail, load_object
from choreograph.sdk.graph import to_dot, to_mermaid, workflow_graph
from choreograph.sdk.service import Service

DEFAULT_DECLARATIONS = "drone_delivery.system:declarations"


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"


def _declarations(reference: str) -> list[dict[str, Any]]:
    found = load_object(reference)
    if inspect.isfunction(found):
        found = found()
    items: Iterable[Any] = found if isinstance(found, list | tuple) else [found]
    declarations = []
    for item in items:
        if isinstance(item, Service):
            declarations.append(item.declaration())
        elif isinstance(item, dict) and "service" in item:
            declarations.append(item)
        else:
            raise fail(
                f"{reference} must give Services or declarations, found {type(item).__name__}"
            )
    return declarations


@app.command()
def graph(
    services: Annotated[
        str,
        typer.Option(
            "--services",
            help="module:attribute naming a list of Services or declarations (or a function "
            "returning one).",
        ),
    ] = DEFAULT_DECLARATIONS,
    output: Annotated[GraphFormat, typer.Option("--format", help="Output language.")] = (
        GraphFormat.mermaid
    ),
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit with status 1 when there are warnings.")
    ] = False,
) -> None:
    """Print the workflow graph (Mermaid or DOT) and warn about loose ends."""
    drawn = workflow_graph(_declarations(services))
    render: Callable[[Any], str] = to_dot if output is GraphFormat.dot else to_mermaid
    typer.echo(render(drawn), nl=False)
    for warning in drawn.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if strict and drawn.warnings:
        raise typer.Exit(1)
