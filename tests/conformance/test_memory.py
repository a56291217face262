"""The bus conformance suite on the in-memory backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from choreograph.testing.conformance import BusConformance


class TestMemoryBus(BusConformance):
    @pytest.fixture
    def bus_url(self, tmp_path: Path) -> str:
        return "memory://"
