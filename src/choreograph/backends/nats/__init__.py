"""``nats://host:4222``: the bus on NATS JetStream (install ``choreograph[nats]``)."""

from choreograph.backends.nats.admin import delete_namespace, server_unreachable
from choreograph.backends.nats.backend import NatsBackend

__all__ = ["NatsBackend", "delete_namespace", "server_unreachable"]
