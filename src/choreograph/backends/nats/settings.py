"""The ``nats://`` URL, and the names of everything the backend creates in JetStream.

    nats://host:4222[,host:4222...][?replicas=3][&namespace=staging]

``replicas`` is the replication of every stream (1 on a single server, 3 in a cluster);
``namespace`` keeps several buses apart on one server (each test run uses its own). Under a
namespace ``ns``, with topic ``t`` and subscription ``s``:

================================  ============================================================
``CG_ns_t``                       the topic's deliveries (work-queue retention), subjects
                                  ``cg-ns.t.s.ready`` (due now) and ``cg-ns.t.s.wait`` (retries)
``CGID_ns_t``                     one marker per published event, for de-duplication: subject
                                  ``cgid-ns.t``, kept for the topic's window
durable ``s-ready``, ``s-wait``   the subscription's two pull consumers on ``CG_ns_t``
KV ``CG_ns_CATALOG``              ``topic.t`` and ``subscription.t.s`` records
KV ``CG_ns_DEADLETTERS``          ``t.s.<record id>`` dead letters and ``t.s`` the dropped count
================================  ============================================================

Without a namespace the names drop it: ``CG_t``, ``cg.t.s.ready``, ``CG_CATALOG``... Topic and
subscription names are letters, digits and ``-``, so they are valid in every one of these places
and no name of one namespace can be read as a name of another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, urlsplit

from choreograph.errors import ConfigError

__all__ = ["MAX_REPLICAS", "Names", "NatsSettings"]

MAX_REPLICAS: Final = 5
_NAMESPACE = re.compile(r"[A-Za-z0-9-]{1,32}")
_OPTIONS: Final = ("replicas", "namespace")


@dataclass(frozen=True, kw_only=True, slots=True)
class NatsSettings:
    """The servers and options of a ``nats://`` bus URL."""

    servers: tuple[str, ...]
    replicas: int = 1
    namespace: str = ""

    @classmethod
    def from_url(cls, url: str) -> NatsSettings:
        """Parse and validate ``url``; ConfigError names what is wrong."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "nats":
            raise ConfigError(f"a NATS bus URL starts with nats://, got {url!r}")
        if parts.path not in ("", "/") or parts.fragment:
            raise ConfigError(
                f"a NATS bus URL is nats://host:port[,host:port...][?options], got {url!r}"
            )
        servers = tuple(_server(address, url) for address in parts.netloc.split(","))
        options: dict[str, str] = {
            key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()
        }
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ConfigError(
                f"unknown option {unknown[0]!r} in bus URL {url!r}; it takes {', '.join(_OPTIONS)}"
            )
        namespace = options.get("namespace", "")
        if "namespace" in options and not _NAMESPACE.fullmatch(namespace):
            raise ConfigError(
                f"`namespace` in a NATS bus URL must be 1-32 letters, digits or '-', got {namespace!r}"
            )
        return cls(
            servers=servers, replicas=_replicas(options.get("replicas", "1")), namespace=namespace
        )


def _server(address: str, url: str) -> str:
    if not address:
        raise ConfigError(f"a NATS bus URL names at least one server as host:port, got {url!r}")
    server = f"nats://{address}"
    try:
        parsed = urlsplit(server)
        parsed.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"invalid NATS server {address!r} in bus URL {url!r}: {exc}") from exc
    if not parsed.hostname:
        raise ConfigError(f"invalid NATS server {address!r} in bus URL {url!r}: no host")
    return server


def _replicas(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_REPLICAS:
        raise ConfigError(
            f"`replicas` in a NATS bus URL must be an integer from 1 to {MAX_REPLICAS}, got {text!r}"
        )
    return int(text)


class Names:
    """Stream, subject, consumer and bucket names under one namespace (see the module)."""

    def __init__(self, namespace: str = "") -> None:
        infix = f"{namespace}_" if namespace else ""
        suffix = f"-{namespace}" if namespace else ""
        self.namespace = namespace
        self._streams = f"CG_{infix}"
        self._markers = f"CGID_{infix}"
        self._root = f"cg{suffix}"
        self._marker_root = f"cgid{suffix}"
        self.catalog_bucket = f"CG_{infix}CATALOG"
        self.dead_letter_bucket = f"CG_{infix}DEADLETTERS"

    def stream(self, topic: str) -> str:
        return self._streams + topic

    def marker_stream(self, topic: str) -> str:
        return self._markers + topic

    def topic_subjects(self, topic: str) -> str:
        return f"{self._root}.{topic}.>"

    def subscription_subjects(self, topic: str, subscription: str) -> str:
        return f"{self._root}.{topic}.{subscription}.*"

    def ready(self, topic: str, subscription: str) -> str:
        return f"{self._root}.{topic}.{subscription}.ready"

    def wait(self, topic: str, subscription: str) -> str:
        return f"{self._root}.{topic}.{subscription}.wait"

    def marker(self, topic: str) -> str:
        return f"{self._marker_root}.{topic}"

    @staticmethod
    def ready_consumer(subscription: str) -> str:
        return f"{subscription}-ready"

    @staticmethod
    def wait_consumer(subscription: str) -> str:
        return f"{subscription}-wait"

    def owns_stream(self, name: str) -> bool:
        """Whether the stream ``name`` belongs to this namespace (for deleting a namespace)."""
        if name in (f"KV_{self.catalog_bucket}", f"KV_{self.dead_letter_bucket}"):
            return True
        for prefix in (self._streams, self._markers):
            if name.startswith(prefix):
                rest = name[len(prefix) :]
                # A topic name has no "_"; a longer rest belongs to a namespace of its own.
                return bool(rest) and "_" not in rest
        return False
