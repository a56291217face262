"""The ``choreograph`` command line: one Typer app, one module per command group.

Commands report bad input with a one-line message and a non-zero exit status.
"""

from __future__ import annotations

import logging
import sys

import typer

from choreograph.tuning import tune_process

__all__ = ["app", "main"]

app = typer.Typer(
    name="choreograph",
    help="Run and inspect choreographed services on Event-Grid-style buses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Run and inspect choreographed services on Event-Grid-style buses."""


def _register_commands() -> None:
    """Import the command modules, each of which adds its commands to ``app``."""
    from choreograph.cli import commands  # noqa: F401


def main() -> None:
    """Entry point of the ``choreograph`` script."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    tune_process()
    _register_commands()
    app()
