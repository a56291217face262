"""The inbox filter of the SQLite service store: never says "not seen" of a key it was given and
the inbox still holds, whatever it grew to; rarely says "seen" of another; forgets the keys the
inbox forgot, a generation at a time; gives up (everything may be seen) past its size limit."""

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


# A history: each step adds a few keys at the next time, then maybe forgets before some time.
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
    for time, (count, forget) in enumerate(history):
        for number in range(count):
            key = f"h\n{time}-{number}"
            filter_.add(key, float(time))
            added.append((key, float(time)))
        if forget is not None:
            filter_.forget_before(float(forget))
            cutoff = max(cutoff, float(forget))
    held = [key for key, at in added if at >= cutoff]
    assert all(key in filter_ for key in held)


def test_a_generation_whose_keys_were_all_forgotten_is_dropped() -> None:
    filter_ = SeenKeys()
    for number in range(100):
        filter_.add(f"old-{number}", 10.0)
    filter_.forget_before(5.0)  # nothing that old: all kept, and a new generation begins
    for number in range(50):
        filter_.add(f"new-{number}", 20.0)
    assert len(filter_) == 150
    filter_.forget_before(15.0)
    assert len(filter_) == 50
    assert all(f"new-{number}" in filter_ for number in range(50))
    assert sum(f"old-{number}" in filter_ for number in range(100)) < 10  # false positives only


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
    for time in range(20):  # 60 keys in all, never more than 6 held
        for number in range(3):
            filter_.add(f"k{time}-{number}", float(time))
        filter_.forget_before(float(time - 1))
    assert filter_.enabled
    assert len(filter_) <= 6
    assert "never-added" not in filter_
