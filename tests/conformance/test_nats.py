"""The bus conformance suite on the NATS JetStream backend, against the server on 127.0.0.1:4222.

Each test gets a namespace of its own on the shared server (its streams and buckets are named
after it) and deletes it at the end, so the suite's fixed topic names never meet and nothing
outside the namespace is touched. Without a server the tests are skipped, unless
``CHOREOGRAPH_REQUIRE_SERVICES=1`` (CI), which makes them fail.
"""

from __future__ import annotations

import pytest

from choreograph.testing.conformance import DurableBusConformance


@pytest.mark.requires_service("nats")
class TestNatsBus(DurableBusConformance):
    exclusive_store = False  # processes share a NATS store by design

    @pytest.fixture
    def bus_url(self, nats_url: str) -> str:
        return nats_url
