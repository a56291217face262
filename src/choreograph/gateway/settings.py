"""Gateway configuration: one frozen dataclass, validated in one place, loadable from the environment.

    CHOREOGRAPH_ADMIN_TOKEN               bearer token of the management API (at least 16 characters)
    CHOREOGRAPH_INSECURE_NO_ADMIN_TOKEN   "1" to serve the management API without a token (local use)
    CHOREOGRAPH_GATEWAY_DEFAULT_TOPIC     topic of ``POST /api/events`` (none: that path answers 404)
    CHOREOGRAPH_GATEWAY_PUBLIC_URL        base URL clients reach the gateway at, behind a proxy
    CHOREOGRAPH_GATEWAY_MAX_REQUEST_BYTES largest publish request body (default 1 MB, as Event Grid)

Without an admin token the gateway refuses to start, unless ``insecure_no_admin_token`` says so
explicitly: the management API hands out topic keys and deletes topics.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from choreograph.bus.topic import validate_topic_name
from choreograph.errors import ConfigError, InvalidTopicError

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "MIN_ADMIN_TOKEN_LENGTH", "GatewaySettings"]

DEFAULT_MAX_REQUEST_BYTES: Final = 1_048_576
"""Event Grid's limit on a publish request (and on one event)."""
MAX_REQUEST_BYTES_CEILING: Final = 64 * 1_048_576
MIN_ADMIN_TOKEN_LENGTH: Final = 16

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off"})
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: it travels in a header


@dataclass(frozen=True, kw_only=True, slots=True)
class GatewaySettings:
    """How the gateway serves publish and management requests."""

    admin_token: str | None = field(default=None, repr=False)
    """Bearer token the management API requires (``Authorization: Bearer <token>``)."""
    insecure_no_admin_token: bool = False
    """Serve the management API to anyone: only for a gateway on a developer's machine."""
    default_topic: str | None = None
    """Topic that ``POST /api/events`` publishes to; None leaves that path unrouted (404)."""
    public_url: str | None = None
    """Base URL (``https://events.example.com``) clients use, when a proxy sits in front: SAS
    tokens are matched against it and topic resources advertise endpoints under it. Without
    it, the request's own scheme and ``Host`` are used."""
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    """Largest publish request body; a larger one is refused with 413 before it is parsed."""

    def __post_init__(self) -> None:
        token = self.admin_token
        if token is not None:
            if not isinstance(token, str) or not _TOKEN.fullmatch(token):
                raise ConfigError(
                    "the admin token (CHOREOGRAPH_ADMIN_TOKEN) must be printable ASCII "
                    "without spaces"
                )
            if len(token) < MIN_ADMIN_TOKEN_LENGTH:
                raise ConfigError(
                    f"the admin token (CHOREOGRAPH_ADMIN_TOKEN) must be at least "
                    f"{MIN_ADMIN_TOKEN_LENGTH} characters, got {len(token)}"
                )
            if self.insecure_no_admin_token:
                raise ConfigError(
                    "an admin token is set, so --insecure-no-admin-token "
                    "(CHOREOGRAPH_INSECURE_NO_ADMIN_TOKEN) makes no sense; give one or the other"
                )
        elif not self.insecure_no_admin_token:
            raise ConfigError(
                "no admin token: set CHOREOGRAPH_ADMIN_TOKEN (at least "
                f"{MIN_ADMIN_TOKEN_LENGTH} characters) to protect the management API, or pass "
                "--insecure-no-admin-token to serve it unprotected on a development machine"
            )
        if self.default_topic is not None:
            try:
                validate_topic_name(self.default_topic)
            except InvalidTopicError as exc:
                raise ConfigError(f"the default topic: {exc}") from exc
        if self.public_url is not None:
            object.__setattr__(self, "public_url", _check_public_url(self.public_url))
        size = self.max_request_bytes
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or not 1024 <= size <= MAX_REQUEST_BYTES_CEILING
        ):
            raise ConfigError(
                f"max_request_bytes must be an integer from 1024 to {MAX_REQUEST_BYTES_CEILING}, "
                f"got {size!r}"
            )

    @property
    def management_protected(self) -> bool:
        return self.admin_token is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> GatewaySettings:
        """Settings from ``CHOREOGRAPH_…`` variables; ``overrides`` that are not None (command
        line flags) take precedence."""
        values: dict[str, Any] = {}
        if token := environ.get("CHOREOGRAPH_ADMIN_TOKEN"):
            values["admin_token"] = token
        insecure = environ.get("CHOREOGRAPH_INSECURE_NO_ADMIN_TOKEN", "").strip().lower()
        if insecure in _TRUE:
            values["insecure_no_admin_token"] = True
        elif insecure not in _FALSE:
            raise ConfigError(
                f"CHOREOGRAPH_INSECURE_NO_ADMIN_TOKEN must be 1 or 0, got {insecure!r}"
            )
        if topic := environ.get("CHOREOGRAPH_GATEWAY_DEFAULT_TOPIC"):
            values["default_topic"] = topic
        if url := environ.get("CHOREOGRAPH_GATEWAY_PUBLIC_URL"):
            values["public_url"] = url
        if size := environ.get("CHOREOGRAPH_GATEWAY_MAX_REQUEST_BYTES"):
            try:
                values["max_request_bytes"] = int(size)
            except ValueError:
                raise ConfigError(
                    f"CHOREOGRAPH_GATEWAY_MAX_REQUEST_BYTES must be an integer, got {size!r}"
                ) from None
        known = {f.name for f in dataclasses.fields(cls)}
        for name, value in overrides.items():
            if name not in known:
                raise TypeError(f"GatewaySettings has no setting {name!r}")
            if value is not None:
                values[name] = value
        return cls(**values)


def _check_public_url(url: object) -> str:
    if not isinstance(url, str):
        raise ConfigError(f"the public URL must be a string, got {url!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"the public URL {url!r} is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the public URL must be http(s)://host[:port][/path], got {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"the public URL must not have a query or fragment, got {url!r}")
    return url.rstrip("/")
