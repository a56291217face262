"""The ambassador: a sidecar that talks to the bus for a plain HTTP service in any language.

    choreograph serve ambassador --name delivery --handler schedule \\
        --topic drones --consumes DroneAssigned --emits DeliveryScheduled=deliveries \\
        --service-url http://127.0.0.1:9001/handle --gateway http://127.0.0.1:8080 --port 9000

The contract with the service is in :mod:`choreograph.ambassador.contract`.
"""

from choreograph.ambassador.app import Ambassador
from choreograph.ambassador.contract import AnswerError, NextEvent, PublishRequest
from choreograph.ambassador.settings import AmbassadorSettings, parse_emits

__all__ = [
    "Ambassador",
    "AmbassadorSettings",
    "AnswerError",
    "NextEvent",
    "PublishRequest",
    "parse_emits",
]
