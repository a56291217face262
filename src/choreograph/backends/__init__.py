"""Backends, chosen by URL: ``memory://``, ``sqlite:///relative/bus.db`` or
``sqlite:////absolute/bus.db`` (``?synchronous=normal`` to trade power-cut safety for speed),
``nats://host:4222[,host:4222...]``. Optional backends are imported only when named."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from choreograph.backends.base import Backend
from choreograph.errors import ConfigError

__all__ = ["Backend", "open_backend"]


def open_backend(url: str) -> Backend:
    """The backend for ``url`` (not yet opened)."""
    if not isinstance(url, str):
        raise ConfigError(f"a bus URL must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    options = {
        key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()
    }
    if scheme == "memory":
        _refuse_options(url, options, allowed=())
        from choreograph.backends.memory import MemoryBackend

        return MemoryBackend(url)
    if scheme == "sqlite":
        _refuse_options(url, options, allowed=("synchronous",))
        path = url[len("sqlite://") :].split("?", 1)[0]
        if not path.startswith("/") or path == "/":
            raise ConfigError(
                f"a SQLite bus URL names a file: sqlite:///relative/bus.db or sqlite:////abs/bus.db, got {url!r}"
            )
        from choreograph.backends.sqlite import SqliteBackend

        return SqliteBackend(url, path[1:], synchronous=options.get("synchronous", "full"))
    if scheme == "nats":
        try:
            from choreograph.backends.nats import NatsBackend  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ConfigError(
                "the NATS backend needs nats-py: pip install 'choreograph[nats]'"
            ) from exc
        backend: Backend = NatsBackend(url)
        return backend
    raise ConfigError(
        f"unknown bus URL scheme in {url!r}; expected memory://, sqlite:/// or nats://"
    )


def _refuse_options(url: str, options: dict[str, str], *, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        hint = f"; it takes {', '.join(allowed)}" if allowed else ""
        raise ConfigError(f"unknown option {unknown[0]!r} in bus URL {url!r}{hint}")
