"""Loading objects named ``module:attribute`` on the command line."""

from __future__ import annotations

import importlib
from typing import Any

import typer

__all__ = ["fail", "load_object"]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and return the exit to raise."""
    typer.echo(f"choreograph: {message}", err=True)
    return typer.Exit(code)


def load_object(reference: str) -> Any:
    """The object named by ``package.module:attribute``; a clear message when it is not there."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise fail(f"{reference!r} must look like package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise fail(f"cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attribute)
    except AttributeError as exc:
        raise fail(f"module {module_name!r} has no attribute {attribute!r}") from exc
