"""The inbox form of what a handler emitted is the same bytes whether the events are encoded
again or their JSON, already made to check them, is spliced in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from choreograph.events import CloudEvent, encode_event
from choreograph.sdk.store import decode_emitted, encode_emitted

_TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)
_EVENT = st.builds(
    lambda event_type, data, correlation: CloudEvent(
        type=event_type,
        source="/services/test",
        data=data,
        extensions={"correlationid": correlation},
    ),
    st.from_regex(r"[A-Za-z][A-Za-z.]{0,20}", fullmatch=True),
    _JSON,
    st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True),
)


@given(st.lists(st.tuples(_TEXT, _EVENT), max_size=4))
def test_spliced_inbox_entries_equal_encoding_again(emitted: list[tuple[str, CloudEvent]]) -> None:
    spliced = encode_emitted(emitted, [encode_event(event) for _, event in emitted])
    assert spliced == encode_emitted(emitted)
    assert decode_emitted(spliced) == emitted
