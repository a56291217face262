"""What the remote tests share: a gateway on an in-memory bus reached in-process, the requests
the bus sends to a webhook, a recording publisher, and real processes on loopback.

Waiting on another process is the one place these tests poll, always with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from choreograph.bus import Bus
from choreograph.bus.endpoint import Attempt
from choreograph.events import CloudEvent
from choreograph.gateway import GatewaySettings, create_app
from choreograph.gateway.validation import VALIDATION_EVENT_TYPE
from choreograph.gateway.webhook import REQUEST_ORIGIN, notification_request
from choreograph.sdk.remote import GatewayClient, GatewayError
from up_process import CHOREOGRAPH, free_port

ADMIN_TOKEN: Final = "remote-tests-admin-token-0123456789"
TRACE_ID: Final = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT: Final = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
HEALTH_SECONDS: Final = 60.0
SETTLE_SECONDS: Final = 30.0
POLL_SECONDS: Final = 0.05


# in-process ------------------------------------------------------------------------------------
@dataclass
class Gateway:
    """A gateway app on an in-memory bus, and a client that reaches it without a network."""

    bus: Bus
    app: Starlette
    client: GatewayClient


@contextlib.asynccontextmanager
async def in_process_gateway() -> AsyncIterator[Gateway]:
    async with Bus("memory://", retry_jitter=0) as bus:
        app = create_app(bus, GatewaySettings(admin_token=ADMIN_TOKEN))
        transport = httpx.ASGITransport(app=app)
        async with GatewayClient(
            "http://gateway", admin_token=ADMIN_TOKEN, transport=transport
        ) as client:
            yield Gateway(bus, app, client)


def notification(
    event: CloudEvent, *, subscription: str, topic: str, delivery_count: int = 0
) -> dict[str, Any]:
    """The request the bus POSTs to a webhook for one attempt (the gateway's own builder)."""
    attempt = Attempt(
        topic=topic,
        subscription=subscription,
        delivery_count=delivery_count,
        event_delivery_schema="CloudEventSchemaV1_0",
        batched=False,
    )
    body, headers = notification_request([event], attempt)
    return {"content": body, "headers": headers}


def validation_request(subscription: str, code: str = "code-512d38b6") -> dict[str, Any]:
    """The Event Grid schema validation handshake (reference §5.1)."""
    body = [
        {
            "id": str(uuid.uuid4()),
            "topic": "/topics/orders",
            "subject": "",
            "data": {"validationCode": code, "validationUrl": "http://gateway/validate/x"},
            "eventType": VALIDATION_EVENT_TYPE,
            "eventTime": "2026-01-01T10:00:00Z",
            "metadataVersion": "1",
            "dataVersion": "1",
        }
    ]
    headers = {
        "aeg-event-type": "SubscriptionValidation",
        "aeg-subscription-name": subscription.upper(),  # Event Grid's samples upper-case it
        "aeg-delivery-count": "0",
    }
    return {"json": body, "headers": headers}


def options_request() -> dict[str, Any]:
    """The CloudEvents abuse-protection handshake (reference §5.2)."""
    return {"headers": {"WebHook-Request-Origin": REQUEST_ORIGIN}}


@dataclass
class RecordingPublisher:
    """A publisher that records every publish; ``failures`` publishes fail first."""

    failures: int = 0
    published: list[tuple[str, list[CloudEvent]]] = field(default_factory=list)

    async def publish(self, topic: str, events: CloudEvent | Sequence[CloudEvent]) -> None:
        if self.failures:
            self.failures -= 1
            raise GatewayError("the gateway is down", status=None)
        self.published.append((topic, [events] if isinstance(events, CloudEvent) else list(events)))

    @property
    def ids(self) -> list[str]:
        return [event.id for _, events in self.published for event in events]


def event(event_type: str, data: Any, *, correlation: str = "tx-1", **fields: Any) -> CloudEvent:
    return CloudEvent(
        id=fields.pop("id", str(uuid.uuid4())),
        type=event_type,
        source=fields.pop("source", "/tests"),
        subject=fields.pop("subject", f"/orders/{correlation}"),
        data=data,
        datacontenttype="application/json",
        extensions={"correlationid": correlation, "traceparent": TRACEPARENT},
    )


def trace_id(traceparent: object) -> str:
    assert isinstance(traceparent, str), traceparent
    return traceparent.split("-")[1]


# processes ---------------------------------------------------------------------------------------
def wait_until(condition: Callable[[], Any], what: str, *, timeout: float = SETTLE_SECONDS) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(POLL_SECONDS)


def healthy(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200
    return False


def child_pids(pid: int) -> list[int]:
    """The children of process ``pid`` (Linux ``/proc``); empty where it cannot be read."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def kill_all(pids: Sequence[int]) -> None:
    """SIGKILL every process of ``pids`` still running (cleanup in ``finally``)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def delivery_request(**package: Any) -> dict[str, Any]:
    return {
        "ownerId": "owner-1",
        "pickupLocation": "47.64,-122.13",
        "dropoffLocation": "47.61,-122.33",
        "packageInfo": {
            "packageId": f"package-{uuid.uuid4().hex[:12]}",
            "size": "small",
            "weight": 2.5,
            **package,
        },
    }


def settled(client: httpx.Client, delivery_id: str, statuses: set[str]) -> dict[str, Any]:
    """The delivery once its status is one of ``statuses`` (polled, with a deadline)."""

    def read() -> dict[str, Any] | None:
        record: dict[str, Any] = client.get(f"/deliveries/{delivery_id}").json()
        return record if record["status"] in statuses else None

    result: dict[str, Any] = wait_until(read, f"delivery {delivery_id} in {statuses}")
    return result


@dataclass
class ProcessOutput:
    """A process started by a test, its output in a file."""

    process: subprocess.Popen[bytes]
    output: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""


def start_choreograph(*args: str, output: Path, env: dict[str, str]) -> ProcessOutput:
    with output.open("ab") as sink:
        process = subprocess.Popen(
            [str(CHOREOGRAPH), *args], stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    return ProcessOutput(process, output)


# a plain web app in a thread -----------------------------------------------------------------
@contextlib.contextmanager
def serve_in_thread(app: Starlette) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "the test's web app started", timeout=10.0)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)
        listening.close()


# choreograph up (--processes) ------------------------------------------------------------------
_PROCESS = re.compile(r"(\w+) :(\d+) \(pid (\d+)\)")


@dataclass
class Up:
    """A ``choreograph up`` run (one process, or ``--processes``), its output in a file."""

    run: ProcessOutput
    port: int
    gateway_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.run.process

    def text(self) -> str:
        return self.run.text()

    def wait_ready(self, timeout: float = HEALTH_SECONDS) -> None:
        """Until it printed that it runs (every child is healthy by then)."""

        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"choreograph up exited with {self.process.returncode}:\n{self.text()}")
            return "Press Ctrl-C to stop" in self.text()

        wait_until(ready, "choreograph up printed its URLs", timeout=timeout)

    def admin_token(self) -> str:
        match = re.search(r"Admin token\s+(\S+) \(generated", self.text())
        assert match is not None, self.text()
        return match.group(1)

    def children(self) -> dict[str, tuple[int, int]]:
        """Each child's (port, pid), as printed."""
        line = next(line for line in self.text().splitlines() if "Processes" in line)
        return {name: (int(port), int(pid)) for name, port, pid in _PROCESS.findall(line)}

    def interrupt(self, timeout: float = 60.0) -> int:
        """Ctrl-C: SIGINT, then the exit status once it has shut down."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL it and every child it printed, if still running (for ``finally``)."""
        pids = [pid for _, pid in self.children().values()] if "Processes" in self.text() else []
        pids += child_pids(self.process.pid)
        kill_all([self.process.pid, *pids])
        self.process.wait(timeout=30)


def child_environment(**extra: str) -> dict[str, str]:
    """The environment of a child: no Drone Delivery or admin-token setting from the shell."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DRONE_DELIVERY_", "CHOREOGRAPH_"))
    }
    return {**inherited, **extra}


def start_up(tmp_path: Path, *, processes: bool, **extra_env: str) -> Up:
    port, gateway_port = free_port(), free_port()
    args = ["up", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    if processes:
        args += ["--processes", "--gateway-port", str(gateway_port)]
    else:
        gateway_port = port
    output = tmp_path / f"up-{port}.out"
    return Up(
        start_choreograph(*args, output=output, env=child_environment(**extra_env)),
        port,
        gateway_port,
    )
