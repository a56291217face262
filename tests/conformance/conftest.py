"""Rewrite the asserts of the conformance suite, which lives in the package, not under tests/.

Registering the package name covers every module in it, as long as none is imported yet.
"""

from __future__ import annotations

import sys

import pytest

if "choreograph.testing.conformance" not in sys.modules:
    pytest.register_assert_rewrite("choreograph.testing.conformance")
