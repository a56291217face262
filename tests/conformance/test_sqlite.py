"""The bus conformance suite on the SQLite backend, one fresh database file per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from choreograph.testing.conformance import DurableBusConformance


class TestSqliteBus(DurableBusConformance):
    @pytest.fixture
    def bus_url(self, tmp_path: Path) -> str:
        return "sqlite:///" + str(tmp_path / "bus.db")
