"""``choreograph up --processes``: the Drone Delivery system as separate OS processes on loopback
(the gateway with the monitor, and each service), talking HTTP, behaving as the one-process mode:
a delivery is scheduled, a cancellation is compensated by every service, and Ctrl-C stops every
process cleanly."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from remote_helpers import Up, alive, child_pids, delivery_request, settled, start_up, wait_until

pytestmark = pytest.mark.slow

CURL = re.compile(r"^\s*(curl .*)$", re.MULTILINE)
ROLES = {"gateway", "package", "scheduler", "delivery", "ingestion"}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """One ``up --processes`` for the behaviour tests of this module."""
    running = start_up(tmp_path_factory.mktemp("processes"), processes=True)
    try:
        running.wait_ready()
        yield running
    finally:
        running.kill()


def test_every_role_is_its_own_process_and_the_urls_are_printed(system: Up) -> None:
    output = system.text()
    children = system.children()

    assert set(children) == ROLES
    assert len({pid for _, pid in children.values()}) == len(ROLES)
    assert sorted(child_pids(system.process.pid)) == sorted(pid for _, pid in children.values())
    assert children["ingestion"][0] == system.port
    assert children["gateway"][0] == system.gateway_port
    for path in ("/deliveries", "/transactions/<deliveryId>", "/healthz"):
        assert f"{system.url}{path}" in output, output
    assert f"{system.gateway_url}/management/topics" in output


def test_the_curl_example_schedules_a_delivery_across_the_processes(system: Up) -> None:
    example = CURL.search(system.text())
    assert example is not None
    words = shlex.split(example.group(1))
    body = json.loads(words[words.index("-d") + 1])

    with httpx.Client(base_url=system.url, timeout=10.0) as client:
        answer = client.post("/deliveries", json=body)
        assert answer.status_code == 202, answer.text
        delivery_id = answer.json()["deliveryId"]
        record = settled(client, delivery_id, {"Scheduled", "Failed", "Cancelled"})
        transaction = wait_until(
            lambda: (
                client.get(f"/transactions/{delivery_id}").json().get("state") == "Completed"
                and client.get(f"/transactions/{delivery_id}").json()
            ),
            "the monitor saw the transaction complete",
        )

    assert record["status"] == "Scheduled", record
    assert [entry["type"] for entry in record["history"]] == [
        "DeliveryRequested",
        "PackageCreated",
        "DroneAssigned",
        "DeliveryScheduled",
    ]
    assert transaction["correlationId"] == delivery_id
    assert transaction["outcomeType"] == "DeliveryScheduled"


def test_a_cancellation_is_compensated_by_every_service(system: Up) -> None:
    with httpx.Client(base_url=system.url, timeout=10.0) as client:
        delivery_id = client.post("/deliveries", json=delivery_request()).json()["deliveryId"]
        settled(client, delivery_id, {"Scheduled"})
        cancelled = client.delete(f"/deliveries/{delivery_id}", params={"reason": "changed mind"})
        record = settled(client, delivery_id, {"Cancelled"})
        compensated = wait_until(
            lambda: (
                {
                    entry["type"]
                    for entry in client.get(f"/deliveries/{delivery_id}").json()["history"]
                }
                >= {"PackageCancelled", "DroneReleased", "ScheduleCancelled"}
            ),
            "every service compensated",
        )

    assert cancelled.status_code == 202
    assert compensated
    assert record["failureReason"] == "changed mind"


def test_the_gateway_serves_publish_management_and_metrics_with_the_printed_token(
    system: Up,
) -> None:
    auth = {"Authorization": f"Bearer {system.admin_token()}"}
    with httpx.Client(base_url=system.gateway_url, timeout=10.0) as client:
        refused = client.get("/management/topics")
        subscriptions = client.get(
            "/management/topics/drones/eventSubscriptions", headers=auth
        ).json()["value"]
        key = client.post("/management/topics/deliveries/listKeys", headers=auth).json()["key1"]
        published = client.post(
            "/topics/deliveries/api/events",
            json=[{"specversion": "1.0", "id": "probe-1", "source": "/tests", "type": "Probe"}],
            headers={"aeg-sas-key": key, "Content-Type": "application/cloudevents-batch+json"},
        )
        metrics = client.get("/metrics")

    assert refused.status_code == 401
    webhooks = {
        item["name"]: item["properties"]
        for item in subscriptions
        if item["properties"]["destination"]["endpointType"] == "WebHook"
    }
    assert webhooks["delivery-schedule-delivery"]["provisioningState"] == "Succeeded"
    assert webhooks["ingestion-track-drones"]["provisioningState"] == "Succeeded"
    assert published.status_code == 200, published.text
    assert "choreograph_published_events_total" in metrics.text


def test_ctrl_c_stops_every_process_cleanly(tmp_path: Path) -> None:
    running = start_up(tmp_path, processes=True)
    try:
        running.wait_ready()
        pids = [pid for _, pid in running.children().values()]

        assert running.interrupt() == 0, running.text()
        assert running.text().rstrip().endswith("Stopped.")
        assert not [pid for pid in pids if alive(pid)]
        for role in ROLES:
            log = (tmp_path / "data" / "logs" / f"{role}.log").read_text()
            assert log.rstrip().endswith("Stopped."), (role, log)
            assert "Traceback" not in log, (role, log)
    finally:
        running.kill()


def test_a_child_that_dies_stops_the_others_and_up_fails_naming_it(tmp_path: Path) -> None:
    running = start_up(tmp_path, processes=True)
    try:
        running.wait_ready()
        children = running.children()
        _, package = children["package"]

        os.kill(package, signal.SIGKILL)
        status = running.process.wait(timeout=60)

        assert status == 1
        assert "choreograph: the package process exited with status -9" in running.text()
        assert not [pid for _, pid in children.values() if alive(pid)]
    finally:
        running.kill()
