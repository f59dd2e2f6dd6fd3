"""Any window of well-formed traces ranks without an error and without a NaN (hypothesis)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from firm.localize import Localizer
from firm.tracing import Span, Trace
from firm.tracing.culprit_features import profile_window

SERVICES = ["a", "b", "c", "d"]


@st.composite
def traces(draw: st.DrawFn, tag: str) -> Trace:
    n = draw(st.integers(1, 8))
    spans: list[Span] = []
    for i in range(n):
        parent = None if i == 0 else f"s{draw(st.integers(0, i - 1))}"
        svc = draw(st.sampled_from(SERVICES))
        kind = draw(st.sampled_from(["", "client", "server", "internal"]))
        start = draw(st.integers(0, 10_000)) - 2_000  # clock offsets: children may start before parents
        spans.append(
            Span(
                f"s{i}",
                svc,
                f"{svc}-{draw(st.integers(0, 1))}",
                draw(st.sampled_from(["op", "op_client"])),
                1_700_000_000_000_000 + start,
                draw(st.integers(0, 5_000)),
                parent,
                kind=kind,
            )
        )
    return Trace(f"{tag}{draw(st.integers(0, 30))}", tuple(spans))


@settings(max_examples=60, deadline=None)
@given(window=st.lists(traces("w"), min_size=1, max_size=25), reference=st.lists(traces("w"), max_size=25))
def test_ranking_never_fails_and_never_yields_nan(window: list[Trace], reference: list[Trace]) -> None:
    loc = Localizer.rules()
    # instances after merging copies of a trace ID (the first copy of a span ID wins)
    keys_w, keys_r = profile_window(window).instances, profile_window(reference).instances
    if reference and not keys_w & keys_r:
        return  # a reference of another application is an error, tested elsewhere
    ranking = loc.rank(window, reference or None)
    scores = [i.score for i in ranking.instances]
    assert scores == sorted(scores, reverse=True)
    for inst in ranking.instances:
        assert math.isfinite(inst.score)
        assert all(v is None or math.isfinite(v) for v in inst.features.values())
    assert Localizer.load().rank(window, reference or None).instances
