"""``choreograph serve …``: one role of the system per process (the gateway, a service, an
ambassador). Each role's command module adds itself to :data:`serve_app`."""

from __future__ import annotations

import typer

from choreograph.cli import app

__all__ = ["serve_app"]

serve_app = typer.Typer(
    help="Serve one role of the system (gateway, service, ambassador) in this process.",
    no_args_is_help=True,
)
app.add_typer(serve_app, name="serve")
