"""Helpers of the command-line tests: invoking the app, reading what it printed, and
``choreograph up`` as a real process on a free loopback port."""

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
from typer.testing import CliRunner, Result

from choreograph.cli import app

CHOREOGRAPH = Path(sys.executable).with_name("choreograph")
"""The console script installed beside the interpreter: the real entry point."""
HEALTH_SECONDS = 30.0
SETTLE_SECONDS = 30.0
POLL_SECONDS = 0.05


def invoke(runner: CliRunner, *args: str, env: Mapping[str, str] | None = None) -> Result:
    """``choreograph ARGS`` in-process."""
    return runner.invoke(app, list(args), env=env)


def lines(text: str) -> list[str]:
    """The non-blank lines of ``text``."""
    return [line for line in text.splitlines() if line.strip()]


def assert_one_line_error(result: Result | subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with ``code`` and a single ``choreograph: ...`` line on stderr."""
    returncode = result.exit_code if isinstance(result, Result) else result.returncode
    errors = lines(result.stderr)
    assert returncode == code, (returncode, result.stdout, result.stderr)
    assert len(errors) == 1, errors
    assert errors[0].startswith("choreograph: "), errors
    return errors[0]


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

    def output(self) -> str:
        return self.stdout.read_text(errors="replace")

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait_healthy(self, timeout: float = HEALTH_SECONDS) -> None:
        """Poll ``GET /healthz`` until it answers 200; fail if the process exits first (waiting
        on another process is the one place the tests poll)."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    pytest.fail(
                        f"choreograph up exited with {self.process.returncode}:\n"
                        f"{self.output()}\n{self.errors()}"
                    )
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"choreograph up did not answer within {timeout} s")
                time.sleep(POLL_SECONDS)

    def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C: SIGINT, then the exit status once it has shut down."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the process if it still runs, and reap it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def start_up(data_dir: Path, port: int, output_dir: Path) -> Server:
    """``choreograph up --port PORT --data-dir DATA_DIR`` through the console script."""
    stdout, stderr = output_dir / f"up-{port}.out", output_dir / f"up-{port}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [str(CHOREOGRAPH), "up", "--port", str(port), "--data-dir", str(data_dir)],
            stdout=out,
            stderr=err,
        )
    return Server(process, port, stdout, stderr)


def run_choreograph(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``choreograph ARGS`` through the console script, its output captured."""
    return subprocess.run(
        [str(CHOREOGRAPH), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_settled(client: httpx.Client, location: str) -> dict[str, object]:
    """Poll a delivery of a running ``up`` until its status is final."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        record: dict[str, object] = client.get(location).json()
        if record["status"] in {"Scheduled", "Failed", "Cancelled"}:
            return record
        if time.monotonic() > deadline:
            pytest.fail(f"the delivery did not settle within {SETTLE_SECONDS} s: {record}")
        time.sleep(POLL_SECONDS)
