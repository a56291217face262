"""The inbox filter of the SQLite service store: never says "not seen" of a key it was given and
the inbox still holds, whatever it grew to; rarely says "seen" of another; forgets the keys the
inbox forgot, a generation at a time; gives up (everything may be seen) past its size limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from choreograph.sdk import seen
from choreograph.sdk.seen import GENERATION_SECONDS, MIN_CAPACITY, SeenKeys

DAY = GENERATION_SECONDS


@given(st.lists(st.text(), max_size=200))
def test_every_key_added_is_seen(keys: list[str]) -> None:
    filter_ = SeenKeys()
    for key in keys:
        filter_.add(key, 0.0)
    assert all(key in filter_ for key in keys)


def test_a_filter_that_fills_up_grows_and_still_knows_every_key() -> None:
    filter_ = SeenKeys()
    keys = [f"assign-drone\nevent-{number}" for number in range(3 * MIN_CAPACITY)]
    for key in keys:
        filter_.add(key, 0.0)
    assert all(key in filter_ for key in keys)
    others = [f"assign-drone\nother-{number}" for number in range(20_000)]
    false_positives = sum(1 for key in others if key in filter_)
    assert false_positives < len(others) * 0.05  # about 1 % per filter, three filters


# A history: each step adds a few keys a quarter of a generation after the last ones, then maybe
# forgets before some time.
steps = st.lists(
    st.tuples(st.integers(0, 5), st.one_of(st.none(), st.integers(0, 40))), max_size=40
)


@given(steps)
def test_forgetting_never_loses_a_key_the_inbox_still_holds(
    history: list[tuple[int, int | None]],
) -> None:
    filter_ = SeenKeys()
    added: list[tuple[str, float]] = []
    cutoff = float("-inf")
    for step, (count, forget) in enumerate(history):
        time = step * DAY / 4
        for number in range(count):
            key = f"h\n{step}-{number}"
            filter_.add(key, time)
            added.append((key, time))
        if forget is not None:
            filter_.forget_before(forget * DAY / 4)
            cutoff = max(cutoff, forget * DAY / 4)
    held = [key for key, at in added if at >= cutoff]
    assert all(key in filter_ for key in held)


def test_a_generation_whose_keys_were_all_forgotten_is_dropped() -> None:
    filter_ = SeenKeys()
    for number in range(100):
        filter_.add(f"old-{number}", 0.0)
    for number in range(50):
        filter_.add(f"new-{number}", DAY)  # a day later: the next generation
    filter_.forget_before(DAY / 2)  # the old keys are gone from the inbox
    assert len(filter_) == 50
    assert all(f"new-{number}" in filter_ for number in range(50))
    assert sum(f"old-{number}" in filter_ for number in range(100)) < 10  # false positives only


def test_a_generation_with_a_key_still_held_is_kept() -> None:
    filter_ = SeenKeys()
    filter_.add("first", 0.0)
    filter_.add("second", DAY / 2)  # same generation
    filter_.forget_before(DAY / 4)  # "first" forgotten, "second" not
    assert "second" in filter_
    assert len(filter_) == 2


def test_a_week_of_daily_forgetting_holds_about_eight_generations() -> None:
    filter_ = SeenKeys()
    hour = DAY / 24
    for number in range(60 * 24):  # sixty days, a key an hour, forgetting past seven days
        filter_.add(f"k{number}", number * hour)
        filter_.forget_before(number * hour - 7 * DAY)
    assert len(filter_) <= 8 * 24
    assert all(f"k{number}" in filter_ for number in range(53 * 24, 60 * 24))


def test_past_its_limit_the_filter_says_every_key_may_be_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(seen, "MAX_KEYS", 10)
    filter_ = SeenKeys()
    for number in range(10):
        filter_.add(f"k{number}", 0.0)
    assert "never-added" not in filter_
    filter_.add("the eleventh", 0.0)
    assert not filter_.enabled
    assert "never-added" in filter_


def test_a_filter_that_forgets_as_it_goes_stays_under_its_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(seen, "MAX_KEYS", 10)
    filter_ = SeenKeys()
    for day in range(20):  # 60 keys in all, never more than 6 held
        for number in range(3):
            filter_.add(f"k{day}-{number}", day * DAY)
        filter_.forget_before((day - 1) * DAY)
    assert filter_.enabled
    assert len(filter_) <= 6
    assert "never-added" not in filter_
