"""``choreograph up`` as a real process on a free loopback port, for the tests that need the real
entry point (the command-line tests, the crash test): start it, wait until it answers, stop it
(SIGINT) or kill it (SIGKILL).

Waiting on another process is the one place where the tests poll, always with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

CHOREOGRAPH = Path(sys.executable).with_name("choreograph")
"""The console script installed beside the interpreter: the real entry point."""
HEALTH_SECONDS = 30.0
POLL_SECONDS = 0.05
KEEPALIVE_SECONDS = 1.0
"""Well under the server's 5 s keep-alive, so the client never reuses a connection the server
is closing at that very moment (the request would meet a reset)."""


def free_port() -> int:
    """A loopback port nobody listens on (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    """One ``choreograph up`` process; its stdout and stderr go to files beside each other."""

    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.AsyncClient:
        """A client of the server's HTTP API."""
        return httpx.AsyncClient(
            base_url=self.url,
            timeout=30.0,
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS),
        )

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") if self.stdout.exists() else ""

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""

    def text(self) -> str:
        """Everything it printed, for a failure message."""
        return f"{self.output()}\n{self.errors()}"

    def wait_healthy(self, timeout: float = HEALTH_SECONDS) -> None:
        """Poll ``GET /healthz`` until it answers 200; fail if the process exits first."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    pytest.fail(
                        f"choreograph up exited with {self.process.returncode}:\n{self.text()}"
                    )
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"choreograph up did not answer within {timeout} s:\n{self.text()}")
                time.sleep(POLL_SECONDS)

    def interrupt(self, timeout: float = 60.0) -> int:
        """Ctrl-C: SIGINT, then the exit status once it has shut down."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the process if it still runs, and reap it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def start_up(
    data_dir: Path, port: int, output_dir: Path, environ: Mapping[str, str] | None = None
) -> Server:
    """``choreograph up --port PORT --data-dir DATA_DIR`` through the console script, with the
    Drone Delivery settings ``environ`` alone (none from the shell running the tests). Its output
    goes to ``up-PORT.out`` and ``.err`` in ``output_dir``, appended to by a restart."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DRONE_DELIVERY_")}
    stdout, stderr = output_dir / f"up-{port}.out", output_dir / f"up-{port}.err"
    with stdout.open("ab") as out, stderr.open("ab") as err:
        process = subprocess.Popen(
            [str(CHOREOGRAPH), "up", "--port", str(port), "--data-dir", str(data_dir)],
            stdout=out,
            stderr=err,
            env={**inherited, **(environ or {})},
        )
    return Server(process, port, stdout, stderr)
