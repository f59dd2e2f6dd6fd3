"""Every fast way of computing critical paths gives what the reference walk gives (hypothesis).

The ways: :func:`critical_path_of` (plain Python for small traces, arrays for large ones) and
:func:`critical_paths` (a window evaluated together by arrays, or trace by trace);
on random trees with clock skew, zero-length spans, ties, asynchronous children, orphans and
several roots, with and without an overlap tolerance.
"""

from __future__ import annotations

import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firm.tracing import CriticalPath, RefType, Span, Trace, critical_path_walk, critical_paths
from firm.tracing.critical_path import critical_path_of
from firm.tracing.features import window_features

cp_module = sys.modules["firm.tracing.critical_path"]  # the package's name is the function


@st.composite
def traces(draw: st.DrawFn, max_spans: int = 40) -> Trace:
    """A random trace: span i's parent is an earlier span (or none, or a missing one)."""
    n = draw(st.integers(1, max_spans))
    tag = draw(st.sampled_from(["", "x", "y"]))
    spans = []
    for i in range(n):
        kind = draw(st.sampled_from(["child", "child", "child", "child", "root", "orphan"])) if i else "root"
        parent = None
        if kind == "child":
            parent = f"{tag}{draw(st.integers(0, i - 1))}"
        elif kind == "orphan":
            parent = "missing"
        start = draw(st.integers(0, 60))
        duration = draw(st.sampled_from([0, 1, 2, 5])) if draw(st.booleans()) else draw(st.integers(0, 60))
        ref = RefType.FOLLOWS_FROM if draw(st.integers(0, 19)) == 0 else RefType.CHILD_OF
        service = draw(st.sampled_from(["a", "b", "c"]))
        spans.append(
            Span(
                f"{tag}{i}",
                service,
                f"{service}-{draw(st.integers(0, 1))}",
                f"op{i}",
                start,
                duration,
                parent,
                ref,
            )
        )
    return Trace(f"t{tag}{n}", tuple(spans))


def _same(a: CriticalPath, b: CriticalPath) -> None:
    assert (a.trace_id, a.main_index, a.excluded, a.trimmed) == (
        b.trace_id,
        b.main_index,
        b.excluded,
        b.trimmed,
    )
    assert len(a.roots) == len(b.roots)
    for ra, rb in zip(a.roots, b.roots, strict=True):
        assert ra.root == rb.root
        assert ra.steps == rb.steps
        assert ra.sections == rb.sections
        assert ra.latency == rb.latency
        assert ra.step_span.tolist() == rb.step_span.tolist()
        assert ra.step_self.tolist() == rb.step_self.tolist()
        assert ra.as_dict() == rb.as_dict()
        assert [c.tolist() for c in ra.columns()] == [c.tolist() for c in rb.columns()]
        times: dict[tuple[str, str], int] = {}
        for s in rb.steps:
            key = (s.span.service, s.span.instance)
            times[key] = times.get(key, 0) + s.self_time
        assert ra.instance_times() == times
    assert a.as_dict() == b.as_dict()


TOLERANCES = st.sampled_from([0, 0, 1, 3])
SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@SETTINGS
@given(t=traces(), tol=TOLERANCES)
def test_one_trace_in_plain_python_equals_the_walk(t: Trace, tol: int) -> None:
    _same(critical_path_of(t, overlap_tolerance_us=tol), critical_path_walk(t, overlap_tolerance_us=tol))


@SETTINGS
@given(t=traces(), tol=TOLERANCES)
def test_one_trace_by_array_operations_equals_the_walk(t: Trace, tol: int) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cp_module, "SMALL_TRACE_SPANS", 0)
        fast = critical_path_of(t, overlap_tolerance_us=tol)
    _same(fast, critical_path_walk(t, overlap_tolerance_us=tol))


@SETTINGS
@given(
    window=st.lists(traces(max_spans=25), min_size=1, max_size=12),
    tol=TOLERANCES,
    thresholds=st.sampled_from([(0, 0), (0, 10**9), (6, 10**9), (10**9, 0)]),
)
def test_a_window_equals_the_walk_on_each_trace(
    window: list[Trace], tol: int, thresholds: tuple[int, int]
) -> None:
    """Evaluated together by array operations, or trace by trace (each in plain Python or by
    arrays); the same span IDs in several traces of the window, as in the strategy, must not mix
    them up."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cp_module, "SMALL_TRACE_SPANS", thresholds[0])
        mp.setattr(cp_module, "ARRAY_MIN_SPANS", thresholds[1])
        got = critical_paths(window, overlap_tolerance_us=tol)
    assert len(got) == len(window)
    for t, cp in zip(window, got, strict=True):
        _same(cp, critical_path_walk(t, overlap_tolerance_us=tol))


@SETTINGS
@given(window=st.lists(traces(max_spans=15), min_size=1, max_size=8))
def test_features_from_cached_paths_equal_features_from_the_walk(window: list[Trace]) -> None:
    """The loop computes each trace's path once and passes the results to window_features."""
    cached = [critical_path_of(t) for t in window]
    assert window_features(cached, min_samples=2) == window_features(
        [critical_path_walk(t) for t in window], min_samples=2
    )
