"""Imports every command module so that their commands register on the app."""

from choreograph.cli import demo, graph, serve, serve_gateway, trace, up  # noqa: F401
