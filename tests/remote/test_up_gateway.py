"""``choreograph up`` (one process) also serves the gateway on its port: a user publishes to the
running application's topics, inspects them and redrives their dead letters, with the admin
token (``CHOREOGRAPH_ADMIN_TOKEN``, or one ``up`` generates and prints)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from remote_helpers import ADMIN_TOKEN, settled, start_up

pytestmark = pytest.mark.slow


def test_up_serves_the_gateway_beside_the_application(tmp_path: Path) -> None:
    running = start_up(tmp_path, processes=False, CHOREOGRAPH_ADMIN_TOKEN=ADMIN_TOKEN)
    try:
        running.wait_ready()
        output = running.text()
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        delivery_id = str(uuid.uuid4())
        requested = {
            "specversion": "1.0",
            "id": f"{delivery_id}:requested",
            "source": "/tests",
            "type": "DeliveryRequested",
            "subject": f"/deliveries/{delivery_id}",
            "correlationid": delivery_id,
            "data": {
                "deliveryId": delivery_id,
                "ownerId": "owner-1",
                "pickupLocation": "47.64,-122.13",
                "dropoffLocation": "47.61,-122.33",
                "pickupTime": None,
                "expedited": False,
                "packageInfo": {"packageId": f"p-{delivery_id}", "size": "small", "weight": 1},
            },
        }
        with httpx.Client(base_url=running.url, timeout=10.0) as client:
            refused = client.get("/management/topics")
            topics = client.get("/management/topics", headers=auth).json()["value"]
            key = client.post("/management/topics/deliveries/listKeys", headers=auth).json()
            published = client.post(
                "/topics/deliveries/api/events",
                json=[requested],
                headers={
                    "aeg-sas-key": key["key1"],
                    "Content-Type": "application/cloudevents-batch+json",
                },
            )
            record = settled(client, delivery_id, {"Scheduled", "Failed", "Cancelled"})
            subscriptions = client.get(
                "/management/topics/drones/eventSubscriptions", headers=auth
            ).json()["value"]
            redrive = client.post(
                "/management/topics/drones/eventSubscriptions/delivery-schedule-delivery"
                "/deadLetters/redrive",
                json={},
                headers=auth,
            )
            metrics = client.get("/metrics")
            health = client.get("/healthz").json()

        assert f"{running.url}/management/topics" in output
        assert "Admin token     from CHOREOGRAPH_ADMIN_TOKEN" in output
        assert ADMIN_TOKEN not in output
        assert refused.status_code == 401
        assert {"deliveries", "packages", "drones"} <= {topic["name"] for topic in topics}
        assert published.status_code == 200, published.text
        assert record["status"] == "Scheduled", record
        assert "delivery-schedule-delivery" in {item["name"] for item in subscriptions}
        assert redrive.json() == {"redriven": 0}
        assert "choreograph_published_events_total" in metrics.text
        assert health["services"] == ["delivery", "ingestion", "package", "scheduler"]
        assert running.interrupt() == 0
        assert running.text().rstrip().endswith("Stopped.")
    finally:
        running.kill()


def test_up_generates_an_admin_token_when_none_is_set(tmp_path: Path) -> None:
    running = start_up(tmp_path, processes=False)
    try:
        running.wait_ready()
        token = running.admin_token()
        with httpx.Client(base_url=running.url, timeout=10.0) as client:
            allowed = client.get("/management/topics", headers={"Authorization": f"Bearer {token}"})

        assert len(token) >= 16
        assert allowed.status_code == 200
        assert running.interrupt() == 0
    finally:
        running.kill()
