"""Operations on a whole NATS bus rather than one topic."""

from __future__ import annotations

import socket
from typing import Final
from urllib.parse import urlsplit

from choreograph.backends.nats.engine import Engine, engine_errors
from choreograph.backends.nats.settings import NatsSettings
from choreograph.errors import ConfigError

__all__ = ["delete_namespace", "server_unreachable"]

DEFAULT_PORT: Final = 4222


async def delete_namespace(url: str) -> list[str]:
    """Delete every stream and bucket of the bus at ``url`` (which must name a ``namespace``):
    its topics, deliveries, dead letters and catalog. Returns the deleted stream names.

    Test suites give each run a namespace of its own and delete it at the end; nothing outside
    the namespace is touched.
    """
    settings = NatsSettings.from_url(url)
    if not settings.namespace:
        raise ConfigError(f"deleting a bus needs a URL with a namespace, got {url!r}")
    engine = Engine(settings)
    await engine.connect()
    try:
        with engine_errors(f"deleting namespace {settings.namespace}"):
            owned = [name for name in await engine.stream_names() if engine.names.owns_stream(name)]
            for name in owned:
                await engine.delete_stream(name)
    finally:
        await engine.close()
    return owned


def server_unreachable(url: str, *, timeout_seconds: float = 1.0) -> str | None:
    """Why no server of the bus at ``url`` accepts a connection, or None when one does.

    A TCP connect only, for test suites deciding whether to run (it blocks up to
    ``timeout_seconds`` per server)."""
    reasons = []
    for server in NatsSettings.from_url(url).servers:
        parts = urlsplit(server)
        address = (parts.hostname or "", parts.port or DEFAULT_PORT)
        try:
            socket.create_connection(address, timeout=timeout_seconds).close()
        except OSError as exc:
            reasons.append(f"{address[0]}:{address[1]}: {exc}")
        else:
            return None
    return "no NATS server reachable (" + "; ".join(reasons) + ")"
