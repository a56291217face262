"""The inbox filter of the SQLite service store: never says "not seen" of a key it was given,
whatever it grew to; rarely says "seen" of another; gives up (everything may be seen) past its
size limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from choreograph.sdk import seen
from choreograph.sdk.seen import MIN_CAPACITY, SeenKeys


@given(st.lists(st.text(), max_size=200))
def test_every_key_added_is_seen(keys: list[str]) -> None:
    filter_ = SeenKeys()
    for key in keys:
        filter_.add(key)
    assert all(key in filter_ for key in keys)


def test_a_filter_that_fills_up_grows_and_still_knows_every_key() -> None:
    filter_ = SeenKeys()
    keys = [f"assign-drone\nevent-{number}" for number in range(3 * MIN_CAPACITY)]
    for key in keys:
        filter_.add(key)
    assert all(key in filter_ for key in keys)
    others = [f"assign-drone\nother-{number}" for number in range(20_000)]
    false_positives = sum(1 for key in others if key in filter_)
    assert false_positives < len(others) * 0.05  # about 1 % per filter, three filters


def test_past_its_limit_the_filter_says_every_key_may_be_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(seen, "MAX_KEYS", 10)
    filter_ = SeenKeys()
    for number in range(10):
        filter_.add(f"k{number}")
    assert "never-added" not in filter_
    filter_.add("the eleventh")
    assert not filter_.enabled
    assert "never-added" in filter_
