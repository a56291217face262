"""The clock module's timestamp format: RFC 3339 UTC with microseconds, exactly as
``datetime.fromtimestamp(...).strftime`` writes it (the module formats faster, the same)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given
from hypothesis import strategies as st

from choreograph.clock import format_timestamp

_LAST_SECOND_OF_9999 = 253_402_300_799


@given(st.floats(min_value=-86_400 * 365, max_value=_LAST_SECOND_OF_9999 + 0.999))
@example(0.0)
@example(1.9999995)  # rounds up into the next second
@example(1.0000005)
@example(-0.0000004)  # rounds to the second before the epoch
@example(1_700_000_000.9999996)
def test_format_timestamp_writes_what_datetime_writes(epoch_seconds: float) -> None:
    try:
        expected = datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (ValueError, OverflowError):
        return  # past year 9999 once rounded: neither can write it
    assert format_timestamp(epoch_seconds) == expected


def test_consecutive_times_in_one_second_and_the_next() -> None:
    assert format_timestamp(1_700_000_000.25) == "2023-11-14T22:13:20.250000Z"
    assert format_timestamp(1_700_000_000.5) == "2023-11-14T22:13:20.500000Z"
    assert format_timestamp(1_700_000_001.0) == "2023-11-14T22:13:21.000000Z"
    assert format_timestamp(1_700_000_000.75) == "2023-11-14T22:13:20.750000Z"
