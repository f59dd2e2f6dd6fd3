"""Per-instance features on constructed windows whose answers are known."""

from __future__ import annotations

import json
import random

import pytest

from firm.tracing import Span, Trace, critical_path, load_traces, trace_features, window_features
from firm.tracing.features import (
    CONSTANT_END_TO_END,
    CONSTANT_LATENCY,
    EMPTY_WINDOW,
    TOO_FEW_SAMPLES,
    ZERO_MEDIAN,
    InstanceFeatures,
    WindowFeatures,
    format_table,
)
from tests.unit.tracing.shared_data import deathstarbench_files


def request(k: int, t0: int, calls: list[tuple[str, str, int, int]], gap: int = 10) -> Trace:
    """A frontend request that calls ``calls`` = (service, instance, offset, duration) and ends
    ``gap`` us after the last one; each call is a client span with a server span inside."""
    end = max(off + dur for _, _, off, dur in calls) + gap
    spans = [Span(f"r{k}", "frontend", "fe-1", "GET /", t0, end)]
    for i, (service, instance, off, dur) in enumerate(calls):
        spans.append(Span(f"c{k}.{i}", "frontend", "fe-1", f"call-{service}", t0 + off, dur, f"r{k}"))
        spans.append(Span(f"s{k}.{i}", service, instance, "handle", t0 + off + 1, dur - 2, f"c{k}.{i}"))
    return Trace(f"trace{k}", tuple(spans))


def by_instance(w: WindowFeatures) -> dict[str, InstanceFeatures]:
    return {f.instance: f for f in w.instances}


def test_a_slow_instance_correlates_with_end_to_end_latency() -> None:
    """db-2 is congested: its latency swings and drives the request's. cache-1 is steady."""
    rnd = random.Random(7)
    traces = []
    for k in range(200):
        cache_us = 100 + rnd.randrange(-5, 6)
        db_us = 300 + int(rnd.expovariate(1 / 400))  # heavy tail
        traces.append(
            request(k, k * 10_000, [("cache", "cache-1", 10, cache_us), ("db", "db-2", 20 + cache_us, db_us)])
        )
    w = trace_features(traces, min_samples=20)
    db, cache, fe = by_instance(w)["db-2"], by_instance(w)["cache-1"], by_instance(w)["fe-1"]
    assert db.ri is not None and db.ri > 0.99
    assert cache.ri is not None and abs(cache.ri) < 0.3
    assert db.ci is not None and cache.ci is not None and db.ci > 3 > cache.ci
    assert (db.samples, db.on_path_ratio, db.flags) == (200, 1.0, ())
    assert db.cp_share > cache.cp_share
    assert sum(f.cp_share for f in w.instances) == pytest.approx(1.0)
    # The frontend's own time on the path: the gaps and the client-side ends of each call.
    assert fe.p50_us == 10 + 10 + 10 + 2 + 2  # three gaps, and 2 us of each client span
    assert fe.flags == (CONSTANT_LATENCY,)
    assert w.instances[0].instance == "db-2"  # largest share first
    assert w.requests == 200 and w.flags == ()


def test_parallel_call_that_returns_early_is_not_on_the_path() -> None:
    traces = []
    for k in range(30):
        t = request(k, 0, [("db", "db-1", 10, 100 + k)])
        extra = (
            Span(f"p{k}", "frontend", "fe-1", "call-audit", 15, 30, f"r{k}"),
            Span(f"q{k}", "audit", "audit-1", "handle", 16, 28, f"p{k}"),
        )
        traces.append(Trace(t.trace_id, t.spans + extra))
    assert "audit-1" not in by_instance(trace_features(traces))


def test_constant_latency_is_flagged_not_nan() -> None:
    traces = [request(k, 0, [("cache", "cache-1", 10, 100), ("db", "db-1", 120, 200 + k)]) for k in range(25)]
    w = trace_features(traces)
    cache = by_instance(w)["cache-1"]
    assert cache.flags == (CONSTANT_LATENCY,)
    assert cache.ri is None
    assert cache.ci == 1.0
    assert by_instance(w)["db-1"].ri == pytest.approx(1.0)
    text = json.dumps(w.as_dict(), allow_nan=False)  # no NaN anywhere
    assert '"ri": null' in text


def test_constant_end_to_end_latency_is_flagged() -> None:
    # Two calls whose latencies trade off exactly: the request always takes the same time.
    traces = [request(k, 0, [("a", "a-1", 10, 100 + k), ("b", "b-1", 110 + k, 200 - k)]) for k in range(25)]
    w = trace_features(traces)
    assert CONSTANT_END_TO_END in w.flags
    assert by_instance(w)["a-1"].flags == (CONSTANT_END_TO_END,)
    assert by_instance(w)["a-1"].ri is None


def test_too_few_samples_are_flagged() -> None:
    traces = [request(k, 0, [("db", "db-1", 10, 100 + k)]) for k in range(25)]
    traces += [request(100 + k, 0, [("rare", "rare-1", 10, 50 + 7 * k)]) for k in range(3)]
    w = trace_features(traces, min_samples=10)
    rare = by_instance(w)["rare-1"]
    assert (rare.samples, rare.ri, rare.ci, rare.flags) == (3, None, None, (TOO_FEW_SAMPLES,))
    assert rare.on_path_ratio == pytest.approx(3 / 28)
    assert rare.p50_us == 50 + 7 - 2  # still described
    small = trace_features(traces[:5], min_samples=10)
    assert TOO_FEW_SAMPLES in small.flags
    assert all(TOO_FEW_SAMPLES in f.flags for f in small.instances)


def test_zero_median_is_flagged() -> None:
    # A span that is fully covered by its child has no time of its own on the path.
    traces = []
    for k in range(25):
        spans = (
            Span(f"r{k}", "fe", "fe-1", "GET", 0, 100 + k),
            Span(f"w{k}", "wrapper", "w-1", "wrap", 0, 100 + k, f"r{k}"),
            Span(f"x{k}", "work", "x-1", "work", 0, 100 + k, f"w{k}"),
        )
        traces.append(Trace(f"t{k}", spans))
    w = trace_features(traces)
    wrapper = by_instance(w)["w-1"]
    assert wrapper.flags == (CONSTANT_LATENCY, ZERO_MEDIAN)
    assert (wrapper.ri, wrapper.ci, wrapper.p50_us) == (None, None, 0.0)


def test_empty_window_and_time_filter() -> None:
    empty = window_features([])
    assert (empty.requests, empty.flags, empty.instances) == (0, (EMPTY_WINDOW,), ())
    assert json.dumps(empty.as_dict(), allow_nan=False)
    paths = [critical_path(request(k, k * 1000, [("db", "db-1", 10, 100 + k)])) for k in range(10)]
    w = window_features(paths, min_samples=2, start=3000, end=7000)
    assert w.requests == 4
    assert (w.start, w.end) == (3000, 6000 + 10 + 106 + 10)
    with pytest.raises(ValueError, match="min_samples"):
        window_features(paths, min_samples=1)


def test_deathstarbench_window() -> None:
    traces = [t for f in deathstarbench_files("compose-post") for t in load_traces(f)]
    w = trace_features(traces, min_samples=5)
    inst = by_instance(w)
    assert w.requests == 6
    # Every compose-post request passes through these; the timeline writers are sequential.
    for name in (
        "nginx-thrift",
        "compose-post-service",
        "post-storage-service",
        "user-timeline-service",
        "home-timeline-service",
    ):
        assert inst[name].samples == 6, name
    assert inst["compose-post-service"].ri is not None
    assert "unique-id-service" not in inst or inst["unique-id-service"].samples < 6
    table = format_table(w)
    assert table.splitlines()[1].split()[:3] == ["service", "instance", "samples"]
    assert "compose-post-service" in table
