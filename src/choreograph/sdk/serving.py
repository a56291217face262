"""Serving an ASGI app with uvicorn on sockets bound beforehand, while something else starts."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn
from starlette.applications import Starlette

__all__ = ["serve"]


async def serve(
    app: Starlette,
    sockets: list[socket.socket],
    *,
    on_listening: Callable[[], Coroutine[Any, Any, None]] | None = None,
    graceful_shutdown_seconds: float = 5.0,
) -> None:
    """Serve ``app`` with uvicorn on ``sockets`` (bound and listening) until interrupted, and run
    ``on_listening`` meanwhile: requests made to the app in the meantime wait in the sockets'
    backlog until uvicorn accepts them. If ``on_listening`` fails, the server stops and the
    error propagates."""
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=math.ceil(graceful_shutdown_seconds),
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=sockets))
    if on_listening is not None:
        starting = asyncio.create_task(on_listening())
        try:
            await asyncio.wait([serving, starting], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            starting.cancel()
            server.should_exit = True
            await asyncio.wait([serving, starting])
            raise
        if not starting.done():  # the server stopped first (Ctrl-C while registering)
            starting.cancel()
            await asyncio.wait([starting])
        elif starting.exception() is not None:
            server.should_exit = True
            await asyncio.wait([serving])
            starting.result()
    await serving
