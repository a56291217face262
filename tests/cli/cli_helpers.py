"""Helpers of the command-line tests: invoking the app and reading what it printed (``choreograph
up`` as a real process is ``up_process``)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping

import httpx
import pytest
from typer.testing import CliRunner, Result

from choreograph.cli import app
from up_process import CHOREOGRAPH, POLL_SECONDS

SETTLE_SECONDS = 30.0


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
