"""Drone Delivery's Delivery step as a plain HTTP service: no SDK, no bus, standard library only.

It sits behind ``choreograph serve ambassador`` (its sidecar), which POSTs each ``DroneAssigned``
event as JSON to ``/handle`` and publishes the events this service answers with
(``choreograph.ambassador.contract``). The step is a pure function of the event, so a redelivery
(the ambassador keeps no inbox) answers the same, and the ambassador gives the answer the same
event id, which the topic's de-duplication absorbs.

    PORT=9001 HOST=127.0.0.1 python delivery_app.py
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def schedule(assigned: dict[str, Any]) -> dict[str, Any]:
    """``DroneAssigned`` → the ``DeliveryScheduled`` the service answers with."""
    return {
        "type": "DeliveryScheduled",
        "data": {
            "deliveryId": assigned["deliveryId"],
            "droneId": assigned["droneId"],
            "packageId": assigned.get("packageId"),
            "pickupTime": assigned["departureTime"],
            "eta": assigned["busyUntil"],
            "revision": assigned.get("revision", 0),
        },
    }


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200, {"status": "ok"})
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path != "/handle":
            self._answer(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            event = json.loads(self.rfile.read(length))
            answer = {"events": [schedule(event["data"])]}
        except (ValueError, KeyError, TypeError) as exc:
            self._answer(400, {"error": f"not a DroneAssigned event: {exc!r}"})  # dead-lettered
            return
        self._answer(200, answer)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, message_format: str, *args: Any) -> None:
        pass  # one line per request would drown the pod's log


def main() -> None:
    address = (os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "9001")))
    with ThreadingHTTPServer(address, Handler) as server:
        print(f"delivery step on http://{address[0]}:{address[1]}/handle", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
