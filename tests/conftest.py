"""Fixtures for the tests that need a server on loopback (NATS, PostgreSQL).

Without the server such a test is skipped, unless ``CHOREOGRAPH_REQUIRE_SERVICES=1`` (CI), which
makes it fail instead.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from typing import Final, NoReturn

import pytest

NATS_SERVER: Final = "nats://127.0.0.1:4222"
POSTGRES_SERVER: Final = "postgresql://postgres@127.0.0.1:5432/test"


def unavailable(reason: str) -> NoReturn:
    """Skip the test for want of a server, or fail it where services are required."""
    if os.environ.get("CHOREOGRAPH_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}; CHOREOGRAPH_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def nats_server() -> str:
    """The loopback NATS server's URL, once it answers."""
    if os.environ.get("CHOREOGRAPH_REQUIRE_SERVICES") == "1":
        import choreograph.backends.nats as nats
    else:
        nats = pytest.importorskip("choreograph.backends.nats")
    if (reason := nats.server_unreachable(NATS_SERVER)) is not None:
        unavailable(reason)
    return NATS_SERVER


@pytest.fixture
async def nats_url(nats_server: str) -> AsyncIterator[str]:
    """A bus URL on the loopback NATS server in a namespace of the test's own, deleted after."""
    from choreograph.backends.nats import delete_namespace

    url = f"{nats_server}?namespace=test-{secrets.token_hex(6)}"
    yield url
    await delete_namespace(url)


@pytest.fixture
def postgres_server() -> str:
    """The loopback PostgreSQL server's URL (database ``test``), once it accepts connections."""
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1.0).close()
    except OSError as exc:
        unavailable(f"no PostgreSQL server on 127.0.0.1:5432 ({exc})")
    return POSTGRES_SERVER
