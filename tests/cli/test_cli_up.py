"""``choreograph up``: the Drone Delivery system as a real process on loopback, through the
console script. It says where it listens, serves the API, stops cleanly on Ctrl-C, and refuses
to share its data directory with another ``up``."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import httpx
import pytest
from cli_helpers import assert_one_line_error, invoke, lines, run_choreograph, wait_settled
from typer.testing import CliRunner

from up_process import Server, free_port

CURL = re.compile(r"^\s*(curl .*)$", re.MULTILINE)


def test_up_prints_its_urls_and_a_curl_example_that_works(server: Server) -> None:
    output = server.output()
    for path in ("/deliveries", "/transactions/<deliveryId>", "/healthz"):
        assert f"{server.url}{path}" in output, output
    example = CURL.search(output)
    assert example is not None, output
    words = shlex.split(example.group(1))
    assert words[:5] == ["curl", "-i", "-X", "POST", f"{server.url}/deliveries"], words
    body = json.loads(words[words.index("-d") + 1])

    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        answer = client.post("/deliveries", json=body)
        assert answer.status_code == 202, answer.text
        delivery_id = answer.json()["deliveryId"]
        assert answer.headers["Location"] == f"/deliveries/{delivery_id}"
        record = wait_settled(client, answer.headers["Location"])
        transaction = client.get(f"/transactions/{delivery_id}")

    assert record["status"] == "Scheduled", record
    assert record["deliveryId"] == delivery_id
    assert transaction.status_code == 200, transaction.text
    assert transaction.json()["correlationId"] == delivery_id
    assert server.interrupt() == 0, server.errors()
    assert server.output().rstrip().endswith("Stopped.")
    assert server.errors() == ""


def test_up_stops_cleanly_on_ctrl_c(server: Server) -> None:
    assert server.interrupt() == 0, server.errors()
    assert server.output().rstrip().endswith("Stopped.")
    assert server.errors() == ""


def test_a_second_up_on_the_same_data_dir_fails_while_the_first_runs(
    server: Server, tmp_path: Path
) -> None:
    second = run_choreograph("up", "--port", str(free_port()), "--data-dir", str(tmp_path / "data"))

    error = assert_one_line_error(second, 2)
    assert "bus.db" in error
    assert "in use" in error
    assert "running" not in second.stdout
    # The first one goes on serving.
    assert httpx.get(f"{server.url}/healthz", timeout=10.0).status_code == 200
    assert server.interrupt() == 0, server.errors()


def test_up_on_a_port_in_use_is_a_one_line_error(server: Server, tmp_path: Path) -> None:
    second = run_choreograph(
        "up", "--port", str(server.port), "--data-dir", str(tmp_path / "other")
    )

    assert "is running" not in second.stdout
    assert "address already in use" in assert_one_line_error(second, 2).lower()


def test_demo_drives_a_running_system_by_url(server: Server) -> None:
    result = run_choreograph("demo", "--url", server.url, "--deliveries", "5", "--json")

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["requested"] == 5
    assert summary["completed"] == 5
    assert summary["lost"] == 0


@pytest.mark.parametrize("port", ["0", "65536"])
def test_up_refuses_a_port_out_of_range(runner: CliRunner, tmp_path: Path, port: str) -> None:
    result = invoke(runner, "up", "--port", port, "--data-dir", str(tmp_path / "data"))

    assert "--port must be from 1 to 65535" in assert_one_line_error(result, 2)
    assert not (tmp_path / "data").exists()
    assert lines(result.stdout) == []
