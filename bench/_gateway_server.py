"""The server processes of ``bench/gateway.py``: one uvicorn server per process.

    python bench/_gateway_server.py gateway --bus sqlite:////tmp/x/bus.db
    python bench/_gateway_server.py gateway --bus memory://
    python bench/_gateway_server.py bare        # bare ASGI app: 200 to any POST, counts them
    python bench/_gateway_server.py starlette   # one Starlette route that reads the body, 200

Every kind listens on a free port of 127.0.0.1 with uvicorn's settings for the benchmark (one
worker, no access log, log level warning, uvicorn's ``auto`` HTTP implementation) and, once
serving, prints one JSON line to stdout: ``port``, ``pid``, the HTTP protocol class and event
loop uvicorn runs, and for ``gateway`` the topic, its ``key1`` and the bus URL. It stops on
SIGTERM or SIGINT (and, on Linux, when the process that started it dies).

``gateway`` serves ``create_app(bus, settings)`` over a bus holding topic ``bench`` (CloudEvents
input, default de-duplication window) with one subscription, ``parked``, that has no handler
attached: every published event is stored as one queued delivery and nothing is delivered, as in
``bench/bus.py``'s publish measurements.

``bare`` is the raw limit: a plain ASGI callable that reads the request body and answers 200 with
an empty body. It counts POSTs; ``GET`` answers ``{"count": n, "last_monotonic": t}``, ``t`` the
``time.monotonic()`` of the last POST counted (CLOCK_MONOTONIC, the same clock in every process
of the machine), so the webhook measurement can stop its clock at the last delivery received.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TOPIC = "bench"
SUBSCRIPTION = "parked"


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this process when its parent dies (best effort elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if parent and os.getppid() != parent:  # the parent died before prctl
        sys.exit(0)


class BareApp:
    """200 to every POST after reading its body; counts them; ``GET`` reports the count."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            body = json.dumps({"count": self.count, "last_monotonic": self.last}).encode()
            headers = [(b"content-type", b"application/json")]
        else:
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False)
            self.count += 1
            self.last = time.monotonic()
            body = b""
            headers = []
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def starlette_app() -> Any:
    """The gateway's framework without the gateway: one route that reads the body, 200."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def accept(request: Request) -> Response:
        await request.body()
        return Response(status_code=200)

    return Starlette(routes=[Route("/topics/{topic}/api/events", accept, methods=["POST"])])


async def serve(app: Any, ready: dict[str, Any], lifespan: str) -> None:
    """Serve ``app`` on a free loopback port; print ``ready`` (plus the port) once serving."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        access_log=False,
        log_level="warning",
        lifespan=lifespan,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises a SIGTERM it caught once it has shut down, with the handler that was
    # there before it: a no-op one lets the caller's clean-up (closing the bus) run.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # raises what stopped it
            raise SystemExit("uvicorn stopped before serving")
        await asyncio.sleep(0.01)
    ready = {
        **ready,
        "port": sock.getsockname()[1],
        "pid": os.getpid(),
        "http": config.http_protocol_class.__name__,
        "loop": type(asyncio.get_running_loop()).__name__,
    }
    print(json.dumps(ready), flush=True)
    await task


async def serve_gateway(url: str) -> None:
    from choreograph import Bus
    from choreograph.gateway import GatewaySettings, create_app

    async with Bus(url) as bus:
        await bus.put_topic(TOPIC)
        await bus.put_subscription(TOPIC, SUBSCRIPTION)
        key = (await bus.get_topic(TOPIC)).key1
        settings = GatewaySettings(admin_token=secrets.token_urlsafe(24))
        app = create_app(bus, settings)
        await serve(app, {"kind": "gateway", "bus": url, "topic": TOPIC, "key": key}, "on")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("gateway", "bare", "starlette"))
    parser.add_argument("--bus", default="memory://", help="bus URL of the gateway")
    parser.add_argument("--parent", type=int, default=0, help="pid to die with")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    if args.kind == "gateway":
        asyncio.run(serve_gateway(args.bus))
    elif args.kind == "bare":
        asyncio.run(serve(BareApp(), {"kind": "bare"}, "off"))
    else:
        asyncio.run(serve(starlette_app(), {"kind": "starlette"}, "off"))


if __name__ == "__main__":
    main()
