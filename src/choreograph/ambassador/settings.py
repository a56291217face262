"""The ambassador's configuration: one frozen dataclass, validated in one place.

The plain service behind the ambassador is declared like an SDK service with one handler:
``name`` is the service (its events come from ``/services/<name>``), ``handler`` the handler,
so the subscription is ``<name>-<handler>`` on ``topic`` for the ``consumes`` types, and
``emits`` maps each type the service may answer with to its topic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from choreograph.bus.subscription import RetryPolicy
from choreograph.bus.topic import validate_topic_name
from choreograph.errors import ChoreographError, ConfigError, InvalidTopicError
from choreograph.events import CloudEvent
from choreograph.sdk.service import HandlerSpec, Service

__all__ = ["DEFAULT_HANDLER", "AmbassadorSettings", "parse_emits"]

DEFAULT_HANDLER: Final = "handle"
MAX_SERVICE_TIMEOUT_SECONDS: Final = 3600.0


def parse_emits(items: Sequence[str]) -> dict[str, str]:
    """``["TYPE=TOPIC", ...]`` (the ``--emits`` flags) as a mapping; ConfigError when malformed."""
    emits: dict[str, str] = {}
    for item in items:
        event_type, sep, topic = (part.strip() for part in item.partition("="))
        if not sep or not event_type or not topic:
            raise ConfigError(f"--emits takes TYPE=TOPIC, got {item!r}")
        if emits.get(event_type, topic) != topic:
            raise ConfigError(f"--emits gives {event_type!r} two topics")
        emits[event_type] = topic
    return emits


def _check_url(name: str, url: object) -> str:
    if not isinstance(url, str):
        raise ConfigError(f"{name} must be a URL, got {url!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"{name} {url!r} is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be http(s)://host[:port][/path], got {url!r}")
    return url


async def _never_called(event: CloudEvent, ctx: Any) -> None:  # pragma: no cover
    raise ChoreographError("the ambassador forwards events to its service over HTTP")


@dataclass(frozen=True, kw_only=True)
class AmbassadorSettings:
    """What the ambassador registers, where it forwards, and what it may publish."""

    name: str
    topic: str
    consumes: tuple[str, ...]
    service_url: str
    public_url: str
    emits: Mapping[str, str] = field(default_factory=dict)
    handler: str = DEFAULT_HANDLER
    service_timeout_seconds: float = 25.0
    """How long the service may take to answer a delivery (under the subscription's 30 s)."""
    retry_policy: RetryPolicy | None = None
    """The subscription's retry policy (the bus's default otherwise)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "service_url", _check_url("--service-url", self.service_url))
        public = _check_url("--public-url", self.public_url).rstrip("/")
        object.__setattr__(self, "public_url", public)
        object.__setattr__(self, "consumes", tuple(self.consumes))
        object.__setattr__(self, "emits", dict(self.emits))
        seconds = self.service_timeout_seconds
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or not 0 < seconds <= MAX_SERVICE_TIMEOUT_SECONDS
        ):
            raise ConfigError(
                f"the service timeout must be a number of seconds above 0 and at most "
                f"{MAX_SERVICE_TIMEOUT_SECONDS:g}, got {seconds!r}"
            )
        for topic in (self.topic, *self.emits.values()):
            try:
                validate_topic_name(topic)
            except InvalidTopicError as exc:
                raise ConfigError(str(exc)) from exc
        self.declaration()  # names and types are checked as an SDK service's are

    def declaration(self) -> tuple[Service, HandlerSpec]:
        """The plain service as an SDK declaration: a service with one handler (which the
        ambassador never calls: it forwards the events)."""
        service = Service(self.name, retry_policy=self.retry_policy)
        service.on(*self.consumes, topic=self.topic, emits=self.emits, name=self.handler)(
            _never_called
        )
        return service, service.handlers[0]

    @property
    def subscription(self) -> str:
        return f"{self.name}-{self.handler}"
