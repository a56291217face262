"""The remote roles on the command line refuse bad input with a one-line message and a non-zero
exit status, before serving anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from remote_helpers import free_port
from typer.testing import CliRunner, Result

import choreograph.cli
from choreograph.cli import app


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    choreograph.cli._register_commands()
    for name in ("CHOREOGRAPH_ADMIN_TOKEN", "CHOREOGRAPH_GATEWAY_URL"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def one_line_error(result: Result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert len(errors) == 1, errors
    assert errors[0].startswith("choreograph: ")
    return errors[0]


def test_serve_lists_every_role(runner: CliRunner) -> None:
    result = runner.invoke(app, ["serve", "--help"])

    for role in ("gateway", "service", "ambassador", "monitor"):
        assert role in result.stdout


def test_serve_service_names_what_it_cannot_load(runner: CliRunner) -> None:
    result = runner.invoke(app, ["serve", "service", "no_such_module:x", "--gateway", "http://x"])

    assert "cannot import 'no_such_module'" in one_line_error(result)


def test_serve_service_refuses_what_is_no_service(runner: CliRunner) -> None:
    result = runner.invoke(app, ["serve", "service", "drone_delivery:Settings", "--gateway", "x"])

    assert "expected a Service" in one_line_error(result)


def test_serve_service_says_when_the_gateway_cannot_be_reached(
    runner: CliRunner, tmp_path: Path
) -> None:
    gateway = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(
        app,
        [
            *("serve", "service", "drone_delivery.processes:package", "--gateway", gateway),
            *("--port", str(free_port()), "--data-dir", str(tmp_path)),
        ],
    )

    assert f"cannot reach the gateway at {gateway}" in one_line_error(result)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--emits", "DeliveryScheduled"], "--emits takes TYPE=TOPIC"),
        (["--service-url", "localhost:9001"], "--service-url must be http"),
        (["--retry-backoff", "1,soon"], "--retry-backoff takes seconds"),
    ],
)
def test_serve_ambassador_refuses_bad_flags(
    runner: CliRunner, flags: list[str], message: str
) -> None:
    base = {
        "--name": "delivery",
        "--topic": "drones",
        "--consumes": "DroneAssigned",
        "--service-url": "http://127.0.0.1:9001/handle",
        "--gateway": "http://127.0.0.1:1",
        "--port": str(free_port()),
    }
    base.update(dict(zip(flags[::2], flags[1::2], strict=True)))
    args = [item for pair in base.items() for item in pair]
    result = runner.invoke(app, ["serve", "ambassador", *args])

    assert message in one_line_error(result)


def test_up_refuses_a_gateway_port_without_processes(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["up", "--gateway-port", "9999", "--data-dir", str(tmp_path / "data")]
    )

    assert "--gateway-port goes with --processes" in one_line_error(result)
    assert not (tmp_path / "data").exists()
