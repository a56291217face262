"""End to end on loopback: Drone Delivery with its Delivery service replaced by a plain Starlette
app (no SDK, no bus; uvicorn in a thread of the test) behind ``choreograph serve ambassador``.
The gateway (with the monitor), ingestion, package and scheduler run as their own processes.
The transaction still completes, and all its events share one correlation id and one trace."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from remote_helpers import (
    ADMIN_TOKEN,
    child_environment,
    delivery_request,
    serve_in_thread,
    settled,
    trace_id,
    wait_until,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from choreograph.cli.processes import Child, Supervisor, bind

pytestmark = pytest.mark.slow

MODULE = "drone_delivery.processes"


class PlainDelivery:
    """The Delivery service's forward step as a plain web app, plus a recorder of every event
    on the topics (a webhook subscription of the test's own)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.recorded: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    async def handle(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append({**body, "traceparent": request.headers.get("traceparent")})
        assigned = body["data"]
        scheduled = {
            "deliveryId": assigned["deliveryId"],
            "droneId": assigned["droneId"],
            "packageId": assigned.get("packageId"),
            "pickupTime": assigned["departureTime"],
            "eta": assigned["busyUntil"],
            "revision": assigned.get("revision", 0),
        }
        return JSONResponse({"events": [{"type": "DeliveryScheduled", "data": scheduled}]})

    async def record(self, request: Request) -> Response:
        if request.method == "OPTIONS":  # the CloudEvents handshake
            origin = request.headers.get("WebHook-Request-Origin", "")
            return Response(headers={"WebHook-Allowed-Origin": origin})
        event = await request.json()
        with self._lock:
            self.recorded.append(event)
        return Response(status_code=200)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/handle", self.handle, methods=["POST"]),
                Route("/recorder", self.record, methods=["POST", "OPTIONS"]),
            ]
        )

    def events_of(self, correlation_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.recorded if e.get("correlationid") == correlation_id]


def _child(name: str, args: list[str], logs: Path) -> Child:
    listening = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{listening.getsockname()[1]}"
    return Child(name, [*args, "--public-url", url], listening, url, logs / f"{name}.log")


@pytest.fixture
def plain() -> Iterator[tuple[PlainDelivery, str]]:
    service = PlainDelivery()
    with serve_in_thread(service.app()) as url:
        yield service, url


def test_a_plain_service_behind_an_ambassador_completes_the_transaction_correlated_and_traced(
    tmp_path: Path, plain: tuple[PlainDelivery, str]
) -> None:
    delivery, plain_url = plain
    data, logs = tmp_path / "data", tmp_path / "logs"
    gateway = _child(
        "gateway",
        [
            *("serve", "monitor", f"{MODULE}:workflows", "--webhook-allow-private"),
            *("--bus", f"sqlite:///{data / 'bus.db'}", "--data-dir", str(data)),
        ],
        logs,
    )

    def service(name: str) -> Child:
        args = ["serve", "service", f"{MODULE}:{name}", "--data-dir", str(data)]
        return _child(name, [*args, "--gateway", gateway.url], logs)

    ambassador = _child(
        "ambassador",
        [
            *("serve", "ambassador", "--name", "delivery", "--handler", "schedule-delivery"),
            *("--topic", "drones", "--consumes", "DroneAssigned"),
            *("--emits", "DeliveryScheduled=deliveries"),
            *("--service-url", f"{plain_url}/handle", "--gateway", gateway.url),
            *("--max-delivery-attempts", "5", "--retry-backoff", "1,2"),
        ],
        logs,
    )
    ingestion = service("ingestion")
    stages = [[gateway], [service("package"), service("scheduler"), ambassador], [ingestion]]
    environ = child_environment(CHOREOGRAPH_ADMIN_TOKEN=ADMIN_TOKEN, PYTHONUNBUFFERED="1")
    with Supervisor(stages, environ, die_with_parent=False) as supervisor:
        supervisor.start()
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        recorder = {
            "properties": {
                "destination": {
                    "endpointType": "WebHook",
                    "properties": {"endpointUrl": f"{plain_url}/recorder"},
                },
                "eventDeliverySchema": "CloudEventSchemaV1_0",
            }
        }
        with httpx.Client(base_url=gateway.url, headers=auth, timeout=30.0) as management:
            for topic in ("deliveries", "packages", "drones"):
                created = management.put(
                    f"/management/topics/{topic}/eventSubscriptions/test-recorder", json=recorder
                )
                assert created.json()["properties"]["provisioningState"] == "Succeeded", (
                    created.text
                )

        with httpx.Client(base_url=ingestion.url, timeout=10.0) as client:
            answer = client.post("/deliveries", json=delivery_request())
            assert answer.status_code == 202, answer.text
            delivery_id = answer.json()["deliveryId"]
            record = settled(client, delivery_id, {"Scheduled", "Failed", "Cancelled"})
            timeline = wait_until(
                lambda: (
                    (t := client.get(f"/transactions/{delivery_id}").json()).get("state")
                    == "Completed"
                    and t
                ),
                "the monitor saw the transaction complete",
            )
        events = wait_until(
            lambda: (found := delivery.events_of(delivery_id)) and len(found) >= 4 and found,
            "the recorder got the transaction's four events",
        )
        stopped = supervisor.stop()

    assert record["status"] == "Scheduled", (record, _logs(logs))
    assert record["droneId"] is not None
    by_type = {event["type"]: event for event in events}
    assert set(by_type) == {
        "DeliveryRequested",
        "PackageCreated",
        "DroneAssigned",
        "DeliveryScheduled",
    }
    assert {event["correlationid"] for event in events} == {delivery_id}
    assert len({trace_id(event["traceparent"]) for event in events}) == 1
    scheduled, assigned = by_type["DeliveryScheduled"], by_type["DroneAssigned"]
    assert scheduled["source"] == "/services/delivery"
    assert scheduled["causationid"] == assigned["id"]
    [request] = delivery.requests
    assert request["correlationId"] == delivery_id
    assert request["attempt"] == 1
    assert request["traceparent"] == scheduled["traceparent"]
    assert timeline["outcomeType"] == "DeliveryScheduled"
    assert stopped == dict.fromkeys(stopped, 0), _logs(logs)


def _logs(logs: Path) -> str:
    return "\n".join(f"== {path.name}\n{path.read_text()}" for path in sorted(logs.glob("*.log")))
