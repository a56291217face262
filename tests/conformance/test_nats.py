"""The bus conformance suite on the NATS JetStream backend, against the server on 127.0.0.1:4222.

Each test gets a namespace of its own on the shared server (its streams and buckets are named
after it) and deletes it at the end, so the suite's fixed topic names never meet and nothing
outside the namespace is touched. Without a server the tests are skipped, unless
``CHOREOGRAPH_REQUIRE_SERVICES=1`` (CI), which makes them fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest

from choreograph.testing.conformance import DurableBusConformance

if os.environ.get("CHOREOGRAPH_REQUIRE_SERVICES") == "1":
    import choreograph.backends.nats as nats
else:
    nats = pytest.importorskip("choreograph.backends.nats")

NATS_URL = "nats://127.0.0.1:4222"


def require_nats() -> None:
    """Skip the test when no NATS server runs, or fail it where services are required."""
    reason = nats.server_unreachable(NATS_URL)
    if reason is None:
        return
    if os.environ.get("CHOREOGRAPH_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}; CHOREOGRAPH_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(reason)


@pytest.mark.requires_service("nats")
class TestNatsBus(DurableBusConformance):
    exclusive_store = False  # processes share a NATS store by design

    @pytest.fixture
    async def bus_url(self) -> AsyncIterator[str]:
        require_nats()
        url = f"{NATS_URL}?namespace=test-{secrets.token_hex(6)}"
        yield url
        await nats.delete_namespace(url)
