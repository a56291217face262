"""Fixtures of the command-line tests: the Typer app with its commands registered, run in-process
by a ``CliRunner``; ``choreograph up`` as a real process; both in an environment without the
Drone Delivery variables of the shell."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import choreograph.cli
from up_process import Server, free_port, start_up

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``DRONE_DELIVERY_*`` setting leaks in from the shell running the tests."""
    for name in list(os.environ):
        if name.startswith("DRONE_DELIVERY_"):
            monkeypatch.delenv(name)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """Runs ``choreograph`` in-process; ``tests.cli.*`` modules are importable for --services."""
    choreograph.cli._register_commands()
    monkeypatch.syspath_prepend(str(PROJECT_ROOT))
    return CliRunner()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A running ``choreograph up`` on a free port, its data in ``tmp_path/data``."""
    running = start_up(tmp_path / "data", free_port(), tmp_path)
    try:
        running.wait_healthy()
        yield running
    finally:
        running.kill()
