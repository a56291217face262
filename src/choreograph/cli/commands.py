"""Imports every command module so that their commands register on the app."""

from choreograph.cli import (  # noqa: F401
    demo,
    graph,
    serve,
    serve_ambassador,
    serve_gateway,
    serve_monitor,
    serve_service,
    trace,
    up,
)
