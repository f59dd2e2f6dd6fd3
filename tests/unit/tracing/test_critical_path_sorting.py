"""The array evaluation's sorts: keys packed into one integer sort as ``np.lexsort`` does, and a
window whose traces lie far apart in time (keys too wide to pack) still equals the walk."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firm.tracing import Trace, critical_path_walk, critical_paths
from tests.unit.tracing.test_critical_path_properties import _same, traces

cp_module = sys.modules["firm.tracing.critical_path"]


@st.composite
def key_sets(draw: st.DrawFn) -> list[np.ndarray]:
    n = draw(st.integers(0, 60))
    keys = []
    for _ in range(draw(st.integers(1, 4))):
        lo = draw(st.integers(-(2**62), 2**62))
        width = draw(st.sampled_from([0, 1, 3, 1_000, 2**20, 2**40, 2**62]))
        values = draw(st.lists(st.integers(0, width), min_size=n, max_size=n))
        keys.append(np.array([max(-(2**63), min(2**63 - 1, lo + v)) for v in values], dtype=np.int64))
    return keys


@settings(max_examples=300, deadline=None)
@given(keys=key_sets())
def test_packed_keys_sort_as_lexsort_does(keys: list[np.ndarray]) -> None:
    """Ties and all: the order is the stable one ``np.lexsort`` gives (last key primary)."""
    assert cp_module._lexsort(keys).tolist() == np.lexsort(keys).tolist()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    window=st.lists(traces(max_spans=20), min_size=2, max_size=8),
    shifts=st.lists(st.sampled_from([0, 10**6, 2**40, 2**52]), min_size=8, max_size=8),
    tol=st.sampled_from([0, 3]),
)
def test_a_window_spread_over_centuries_equals_the_walk(
    window: list[Trace], shifts: list[int], tol: int
) -> None:
    """Traces decades apart make the packed keys too wide: the evaluation falls back and agrees."""
    moved = [
        Trace(t.trace_id, tuple(replace(s, start=s.start + shift) for s in t.spans), t.warnings)
        for t, shift in zip(window, shifts, strict=False)
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cp_module, "ARRAY_MIN_SPANS", 0)
        got = critical_paths(moved, overlap_tolerance_us=tol)
    for t, cp in zip(moved, got, strict=True):
        _same(cp, critical_path_walk(t, overlap_tolerance_us=tol))
