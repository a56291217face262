"""``choreograph --help`` through the console script: the entry point and its commands."""

from __future__ import annotations

import pytest
from cli_helpers import invoke, run_choreograph
from typer.testing import CliRunner

COMMANDS = ("demo", "graph", "trace", "up")


def test_help_lists_the_commands() -> None:
    result = run_choreograph("--help")

    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("Commands", 1)[1]
    for command in COMMANDS:
        assert f" {command} " in listed, result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(runner: CliRunner, command: str) -> None:
    result = invoke(runner, command, "--help")

    assert result.exit_code == 0, result.output
    assert f"choreograph {command}" in result.stdout


def test_an_unknown_command_is_refused(runner: CliRunner) -> None:
    result = invoke(runner, "launch")

    assert result.exit_code == 2
    assert "launch" in result.stderr
