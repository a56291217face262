"""Helpers for testing code built on choreograph: a fake clock and the backend conformance suite."""

from choreograph.testing.clock import FakeClock

__all__ = ["FakeClock"]
