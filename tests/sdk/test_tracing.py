"""W3C ``traceparent`` arithmetic: parsing accepts well-formed headers and refuses the rest,
a child span stays in its parent's trace."""

from __future__ import annotations

import pytest

from choreograph.sdk.tracing import TraceContext, child_of, new_trace

from .support import PARENT_SPAN, TRACE_ID, TRACEPARENT

MALFORMED = [
    None,
    42,
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "",
    "garbage",
    f"ff-{TRACE_ID}-{PARENT_SPAN}-01",
    f"00-{'0' * 32}-{PARENT_SPAN}-01",
    f"00-{TRACE_ID}-{'0' * 16}-01",
    f"00-{TRACE_ID[:-1]}-{PARENT_SPAN}-01",
    f"00-{TRACE_ID}0-{PARENT_SPAN}-01",
    f"00-{TRACE_ID}-{PARENT_SPAN[:-1]}-01",
    f"00-{TRACE_ID}-{PARENT_SPAN}-1",
    f"0-{TRACE_ID}-{PARENT_SPAN}-01",
    f"00-{TRACE_ID[:-1]}g-{PARENT_SPAN}-01",
    f"00-{TRACE_ID}-{PARENT_SPAN}-0x",
    f"00_{TRACE_ID}_{PARENT_SPAN}_01",
    f"00-{TRACE_ID}-{PARENT_SPAN}",
    f"00-{TRACE_ID}-{PARENT_SPAN}-01-extra",
]


def test_a_valid_traceparent_is_parsed() -> None:
    context = TraceContext.parse(TRACEPARENT)
    assert context is not None
    assert (context.trace_id, context.span_id, context.flags) == (TRACE_ID, PARENT_SPAN, "01")
    assert context.traceparent == TRACEPARENT


@pytest.mark.parametrize("flags", ["00", "01", "03", "ff"])
def test_any_flags_are_kept(flags: str) -> None:
    context = TraceContext.parse(f"00-{TRACE_ID}-{PARENT_SPAN}-{flags}")
    assert context is not None
    assert context.flags == flags


def test_a_higher_version_of_the_same_shape_is_accepted() -> None:
    context = TraceContext.parse(f"cc-{TRACE_ID}-{PARENT_SPAN}-01")
    assert context is not None
    assert context.traceparent == TRACEPARENT  # written back as version 00


def test_surrounding_whitespace_is_ignored() -> None:
    assert TraceContext.parse(f"  {TRACEPARENT}\t") is not None


@pytest.mark.parametrize("header", MALFORMED)
def test_a_malformed_traceparent_is_refused(header: object) -> None:
    assert TraceContext.parse(header) is None


def test_an_upper_case_traceparent_is_refused() -> None:
    assert TraceContext.parse(TRACEPARENT.upper()) is None


def test_a_future_version_with_more_fields_keeps_the_trace() -> None:
    context = TraceContext.parse(f"cc-{TRACE_ID}-{PARENT_SPAN}-01-what-the-future-holds")
    assert context is not None
    assert context.trace_id == TRACE_ID


def test_a_child_stays_in_the_trace_with_a_new_span() -> None:
    child = child_of(TRACEPARENT)
    assert child.continued
    assert child.trace_id == TRACE_ID
    assert child.span_id != PARENT_SPAN
    assert child.flags == "01"
    assert TraceContext.parse(child.traceparent) is not None


def test_siblings_get_different_spans() -> None:
    assert len({child_of(TRACEPARENT).span_id for _ in range(50)}) == 50


def test_a_child_keeps_the_parent_s_flags() -> None:
    assert child_of(f"00-{TRACE_ID}-{PARENT_SPAN}-00").flags == "00"


@pytest.mark.parametrize("parent", [None, "garbage", f"00-{'0' * 32}-{PARENT_SPAN}-01"])
def test_a_child_of_nothing_valid_starts_a_new_sampled_trace(parent: object) -> None:
    child = child_of(parent)
    assert child.trace_id not in (TRACE_ID, "0" * 32)
    assert child.flags == "01"
    assert TraceContext.parse(child.traceparent) is not None


@pytest.mark.parametrize("parent", MALFORMED)
def test_a_child_of_a_malformed_traceparent_starts_a_new_trace(parent: object) -> None:
    child = child_of(parent)
    assert not child.continued
    assert child.trace_id != TRACE_ID


@pytest.mark.parametrize(
    "parent",
    [f"cc-{TRACE_ID}-{PARENT_SPAN}-01", f" {TRACEPARENT} ", f"cc-{TRACE_ID}-{PARENT_SPAN}-01-x"],
)
def test_a_child_of_another_well_formed_traceparent_stays_in_its_trace(parent: str) -> None:
    child = child_of(parent)
    assert child.continued
    assert child.trace_id == TRACE_ID


def test_new_traces_are_valid_and_distinct() -> None:
    traces = [new_trace() for _ in range(50)]
    assert all(TraceContext.parse(trace.traceparent) is not None for trace in traces)
    assert len({trace.trace_id for trace in traces}) == 50
