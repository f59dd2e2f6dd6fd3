"""Critical paths: Jaeger UI's conformance cases, DeathStarBench traces, real-data robustness."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

import pytest

from firm.tracing import (
    CriticalPath,
    PathStep,
    RefType,
    RootPath,
    Span,
    Trace,
    TraceParseError,
    critical_path,
    critical_path_walk,
    critical_paths,
    load_traces,
    parse_traces,
)
from tests.unit.tracing.shared_data import DATA_DIR, data_dir, deathstarbench_files


def _cases() -> list[dict[str, object]]:
    path = DATA_DIR / "critical-path" / "jaeger-ui-cases.json"
    if not path.exists():
        return []
    cases: list[dict[str, object]] = json.loads(path.read_text())
    return cases


def span(
    sid: str,
    start: int,
    duration: int,
    parent: str | None = None,
    *,
    ref: RefType = RefType.CHILD_OF,
    service: str = "svc",
    instance: str = "",
) -> Span:
    return Span(sid, service, instance or service, f"op-{sid}", start, duration, parent, ref)


def trace(*spans: Span) -> Trace:
    return Trace("t1", spans)


def path_ids(rp: RootPath) -> list[str]:
    return [s.span.span_id for s in rp.steps]


def sections(cp: CriticalPath | RootPath) -> list[tuple[str, int, int]]:
    return [(s.span_id, s.start, s.end) for s in cp.sections]


def assert_tiles(rp: RootPath) -> None:
    """The sections cover the root's interval exactly once, and self times add up to it."""
    pieces = sorted((s.start, s.end) for s in rp.sections)
    at = rp.root.start
    for s, e in pieces:
        assert s == at, f"gap or overlap at {at}: {pieces}"
        assert e > s
        at = e
    assert at == rp.root.end or (not pieces and rp.root.duration == 0)
    assert rp.latency == rp.root.duration
    assert sum(e - s for _, s, e in sections(rp)) == rp.root.duration


# -- Jaeger UI's conformance cases ------------------------------------------------------------


def test_all_nine_jaeger_ui_cases_are_present() -> None:
    data_dir("critical-path", "jaeger-ui-cases.json")
    assert [c["case"] for c in _cases()] == [f"test{i}" for i in range(1, 10)]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: str(c["case"]))
def test_jaeger_ui_case(case: dict[str, object]) -> None:
    [t] = parse_traces(case["trace"], source=str(case["case"]))
    cp = critical_path(t)
    assert [s.as_dict() for s in cp.sections] == case["expectedCriticalPathSections"]
    # The span-by-span walk gives the same answer.
    assert [s.as_dict() for s in critical_path_walk(t).sections] == case["expectedCriticalPathSections"]


def test_jaeger_ui_case_1_path_is_the_chain_forward_in_time() -> None:
    """Case 1: C calls D then E; the path is C, D, E in time order (the original had it reversed)."""
    [case] = [c for c in _cases() if c["case"] == "test1"] or [pytest.skip("cases file missing")]
    [t] = parse_traces(case["trace"])
    rp = critical_path(t).main
    assert path_ids(rp) == ["span-C", "span-D", "span-E"]
    assert [s.self_time for s in rp.steps] == [70, 20, 10]
    assert [s.depth for s in rp.steps] == [0, 1, 1]


# -- The walk ---------------------------------------------------------------------------------


def test_parallel_children_that_overlap_the_chain_are_off_the_path() -> None:
    # root 0..100: A 10..40 and B 20..35 run in parallel; C 50..90 comes after both.
    t = trace(span("r", 0, 100), span("A", 10, 30, "r"), span("B", 20, 15, "r"), span("C", 50, 40, "r"))
    rp = critical_path(t).main
    assert path_ids(rp) == ["r", "A", "C"]
    assert sections(rp) == [("r", 90, 100), ("C", 50, 90), ("r", 40, 50), ("A", 10, 40), ("r", 0, 10)]
    assert_tiles(rp)


def test_only_a_chain_is_on_the_path_not_every_earlier_child() -> None:
    # The original added every child ending before the LRC: here both P1 and P2 end before L
    # starts, but P1 overlaps P2, so only P2 (the later one) and what precedes it are on the path.
    t = trace(span("r", 0, 100), span("P1", 5, 30, "r"), span("P2", 20, 40, "r"), span("L", 70, 25, "r"))
    assert path_ids(critical_path(t).main) == ["r", "P2", "L"]


def test_child_ending_exactly_when_the_next_starts_is_sequential() -> None:
    t = trace(span("r", 0, 30), span("a", 0, 10, "r"), span("b", 10, 10, "r"), span("c", 20, 10, "r"))
    rp = critical_path(t).main
    assert path_ids(rp) == ["r", "a", "b", "c"]
    assert rp.steps[0].self_time == 0


def test_nested_path_is_in_pre_order() -> None:
    t = trace(
        span("r", 0, 100),
        span("a", 0, 50, "r"),
        span("a1", 5, 20, "a"),
        span("a2", 30, 15, "a"),
        span("b", 60, 30, "r"),
        span("b1", 65, 20, "b"),
    )
    rp = critical_path(t).main
    assert path_ids(rp) == ["r", "a", "a1", "a2", "b", "b1"]
    assert [s.depth for s in rp.steps] == [0, 1, 2, 2, 1, 2]
    assert_tiles(rp)


def test_deep_chain_needs_no_recursion() -> None:
    n = 50_000  # far beyond Python's recursion limit
    spans = [span(str(i), i, 2 * (n - i), str(i - 1) if i else None) for i in range(n)]
    cp = critical_path(Trace("deep", tuple(spans)))
    assert cp.main.step_span.size == n
    assert cp.main.latency == 2 * n
    walk = critical_path_walk(Trace("deep", tuple(spans)))
    assert walk.main.step_span.tolist() == cp.main.step_span.tolist()


def test_long_sequential_fan_out() -> None:
    # 5000 sequential calls of one parent: the chain is longer than the vectorised path follows
    # step by step, so it is marked by binary lifting.
    n = 5000
    spans = [span("r", 0, 10 * n)] + [span(f"c{i}", 10 * i + 1, 8, "r") for i in range(n)]
    rp = critical_path(Trace("fan", tuple(spans))).main
    assert path_ids(rp) == ["r"] + [f"c{i}" for i in range(n)]
    assert rp.steps[0].self_time == 2 * n
    assert_tiles(rp)


# -- Real data: skew, async children, missing parents, several roots --------------------------


def test_child_starting_before_its_parent_is_trimmed_to_the_parent_start() -> None:
    t = trace(span("r", 10, 20), span("c", 5, 15, "r"))  # clock skew: c starts 5 us early
    cp = critical_path(t)
    assert sections(cp) == [("r", 20, 30), ("c", 10, 20)]
    assert cp.main.steps[1].start == 10
    assert cp.trimmed == 1


def test_child_outliving_its_parent_is_trimmed_to_the_parent_end() -> None:
    t = trace(span("r", 0, 20), span("c", 10, 30, "r"), span("g", 25, 10, "c"))
    cp = critical_path(t)
    assert sections(cp) == [("c", 10, 20), ("r", 0, 10)]  # g starts after r ends: dropped
    assert cp.excluded == 1
    assert cp.trimmed == 1


def test_follows_from_children_and_their_subtrees_are_not_waited_for() -> None:
    t = trace(
        span("r", 0, 100),
        span("sync", 10, 20, "r"),
        span("async", 40, 50, "r", ref=RefType.FOLLOWS_FROM),
        span("under-async", 45, 10, "async"),
    )
    cp = critical_path(t)
    assert path_ids(cp.main) == ["r", "sync"]
    assert cp.excluded == 2


def test_missing_parent_makes_another_root_and_the_longest_root_is_main() -> None:
    t = trace(
        span("r", 0, 100),
        span("c", 10, 50, "r"),
        span("orphan", 20, 30, "gone"),
        span("o-child", 25, 10, "orphan"),
    )
    cp = critical_path(t)
    assert [r.root.span_id for r in cp.roots] == ["r", "orphan"]
    assert cp.main.root.span_id == "r"
    assert path_ids(cp.roots[1]) == ["orphan", "o-child"]
    # Jaeger UI concatenates the sections of every root.
    assert sections(cp) == sections(cp.roots[0]) + sections(cp.roots[1])
    assert "orphan" not in json.dumps(cp.as_dict()["path"])
    assert cp.as_dict()["otherRoots"][0]["rootSpanID"] == "orphan"  # type: ignore[index]


def test_several_roots_main_is_the_longest() -> None:
    t = trace(span("short", 0, 10), span("long", 5, 100), span("x", 20, 10, "long"))
    cp = critical_path(t)
    assert [r.root.span_id for r in cp.roots] == ["short", "long"]
    assert cp.main.root.span_id == "long"
    for rp in cp.roots:
        assert_tiles(rp)


def test_parent_cycle_is_an_error_naming_the_trace_and_a_span() -> None:
    t = trace(span("r", 0, 10), span("a", 1, 5, "b"), span("b", 2, 3, "a"))
    for fn in (critical_path, critical_path_walk):
        with pytest.raises(TraceParseError, match=r"trace t1, span [ab]: .*cycle"):
            fn(t)


def test_own_parent_is_an_error() -> None:
    with pytest.raises(TraceParseError, match="span a: the span is its own parent"):
        critical_path(trace(span("a", 0, 10, "a")))


def test_duplicate_span_ids_are_refused_by_the_model() -> None:
    with pytest.raises(TraceParseError, match="span a: the span ID occurs more than once"):
        trace(span("a", 0, 10), span("a", 1, 2))


def test_small_overlap_is_parallel_by_default_and_sequential_with_a_tolerance() -> None:
    # a and b are sequential calls whose spans overlap by 2 us (clock noise between hosts).
    t = trace(span("r", 0, 100), span("a", 10, 42, "r"), span("b", 50, 40, "r"), span("a1", 48, 4, "a"))
    strict = critical_path(t)
    assert path_ids(strict.main) == ["r", "b"]
    tolerant = critical_path(t, overlap_tolerance_us=3)
    assert path_ids(tolerant.main) == ["r", "a", "a1", "b"]
    a, a1 = tolerant.main.steps[1:3]
    assert (a.start, a.end) == (10, 50)  # cut at b's start: sections never overlap
    assert (a1.start, a1.end) == (48, 50)  # and its child trimmed into the cut interval
    assert_tiles(tolerant.main)
    assert critical_path(t, overlap_tolerance_us=1).main.step_span.size == 2  # 2 us > 1 us
    with pytest.raises(ValueError, match="overlap_tolerance_us"):
        critical_path(t, overlap_tolerance_us=-1)


def _random_trace(rnd: random.Random, n: int) -> Trace:
    spans = []
    for i in range(n):
        parent = str(rnd.randrange(i)) if i and rnd.random() < 0.95 else None
        if i and rnd.random() < 0.03:
            parent = "missing"
        duration = rnd.choice([0, rnd.randrange(40), rnd.randrange(5)])
        ref = RefType.FOLLOWS_FROM if rnd.random() < 0.05 else RefType.CHILD_OF
        spans.append(span(str(i), rnd.randrange(100), duration, parent, ref=ref))
    return Trace("random", tuple(spans))


def _same(a: CriticalPath, b: CriticalPath) -> None:
    assert (a.main_index, a.excluded, a.trimmed) == (b.main_index, b.excluded, b.trimmed)
    assert len(a.roots) == len(b.roots)
    for ra, rb in zip(a.roots, b.roots, strict=True):
        assert ra.root == rb.root
        assert ra.steps == rb.steps
        assert ra.sections == rb.sections


@pytest.mark.parametrize("tolerance", [0, 3])
def test_vectorised_evaluation_equals_the_walk_on_random_traces(tolerance: int) -> None:
    """Random trees with skew, zero-length spans, ties, async children and orphans."""
    rnd = random.Random(20200805 + tolerance)
    for _ in range(800):
        t = _random_trace(rnd, rnd.choice([1, 2, 3, 5, 10, 30, 100]))
        fast = critical_path(t, overlap_tolerance_us=tolerance)
        _same(fast, critical_path_walk(t, overlap_tolerance_us=tolerance))
        for rp in fast.roots:
            assert_tiles(rp)


# -- DeathStarBench -----------------------------------------------------------------------------


def _children_on_path(rp: RootPath, parent_op: str) -> list[str]:
    steps: Sequence[PathStep] = rp.steps
    [parent] = [s for s in steps if s.span.operation == parent_op]
    return [s.span.operation for s in steps if s.span.parent_id == parent.span.span_id]


@pytest.mark.parametrize(
    "name",
    [
        "R500__trace_01",
        "R500__trace_02",
        "R500__trace_03",
        "R1000__trace_01",
        "R1000__trace_02",
        "R1000__trace_03",
    ],
)
def test_compose_post_path_makes_sense(name: str) -> None:
    """compose-post: ComposePostService first composes the post from parallel calls (text,
    creator, media, unique ID), then stores it and writes the timelines one after another. The
    request cannot finish before the last sequential write, so the path must end in the
    storage/timeline writes; of the parallel calls only the one that returns last (text, which
    itself waits on user mentions or URLs) or a call that precedes it can be on the path, never
    the short creator/media calls that run beside it."""
    [f] = deathstarbench_files(f"compose-post_{name}")
    [t] = load_traces(f)
    cp = critical_path(t)
    rp = cp.main
    kids = _children_on_path(rp, "compose_post_server")
    assert kids[-4:] == [
        "compose_text_client",
        "store_post_client",
        "write_user_timeline_client",
        "write_home_timeline_client",
    ]
    assert not {"compose_creator_client", "compose_media_client"} & set(kids)
    # The last thing the request waits for is the home-timeline Redis update, after the followers.
    assert _children_on_path(rp, "write_home_timeline_server") == [
        "get_followers_client",
        "write_home_timeline_redis_update_client",
    ]
    assert rp.steps[-1].span.operation == "write_home_timeline_redis_update_client"
    _assert_chain(cp)


@pytest.mark.parametrize(
    "f", deathstarbench_files("read-home-timeline") if DATA_DIR.exists() else [], ids=lambda p: p.stem
)
def test_read_home_timeline_path_is_the_whole_sequential_trace(f: object) -> None:
    """read-home-timeline: the timeline service first reads post IDs from Redis, then reads the
    posts from post-storage (which reads memcached): every call waits for the previous one, so
    all 7 spans are on the path, in that order."""
    [t] = load_traces(f)  # type: ignore[arg-type]
    cp = critical_path(t)
    ops = [s.span.operation for s in cp.main.steps]
    assert ops == [
        "/wrk2-api/home-timeline/read",
        "/wrk2-api/home-timeline/read",
        "read_home_timeline_client",
        "read_home_timeline_server",
        "read_home_timeline_redis_find_client",
        "post_storage_read_posts_server",
        "post_storage_mmc_mget_client",
    ]
    _assert_chain(cp)


def _assert_chain(cp: CriticalPath) -> None:
    """The path is a chain: every step's parent precedes it on the path, on-path siblings never
    overlap, the sections tile the request's time and the self times add up to its duration."""
    rp = cp.main
    seen: dict[str, tuple[int, int]] = {}
    last_child_end: dict[str, int] = {}
    for s in rp.steps:
        if s.depth:
            assert s.span.parent_id in seen
            ps, pe = seen[s.span.parent_id]
            assert ps <= s.start <= s.end <= pe
            assert s.start >= last_child_end.get(s.span.parent_id, ps)
            last_child_end[s.span.parent_id] = s.end
        seen[s.span.span_id] = (s.start, s.end)
    assert_tiles(rp)
    # The recorded traces have one child outliving the root by a few microseconds (clock
    # skew): trimmed, it does not make the path longer than the request.
    assert cp.trimmed >= 1
    assert rp.latency == rp.root.duration


def test_every_deathstarbench_trace_agrees_with_the_walk() -> None:
    for f in deathstarbench_files():
        for t in load_traces(f):
            _same(critical_path(t), critical_path_walk(t))


# -- Many traces at once ------------------------------------------------------------------------


def test_a_window_of_traces_gives_what_each_trace_gives_alone() -> None:
    rnd = random.Random(11)
    window = [_random_trace(rnd, rnd.choice([1, 5, 20, 60])) for _ in range(200)]
    window = [Trace(f"t{k}", t.spans) for k, t in enumerate(window)]  # same span IDs in every trace
    window += [load_traces(f)[0] for f in deathstarbench_files()]
    together = critical_paths(window, overlap_tolerance_us=2)
    assert [cp.trace_id for cp in together] == [t.trace_id for t in window]
    for t, cp in zip(window, together, strict=True):
        _same(cp, critical_path(t, overlap_tolerance_us=2))
    assert critical_paths([]) == []


def test_a_parent_id_found_only_in_another_trace_is_no_parent() -> None:
    a = Trace("a", (span("a-root", 0, 10), span("shared-parent", 1, 5, "a-root")))
    b = Trace("b", (span("b-root", 0, 10), span("b-child", 2, 3, "shared-parent")))
    _, cb = critical_paths([a, b])
    assert [r.root.span_id for r in cb.roots] == ["b-root", "b-child"]


def test_a_cycle_in_one_trace_of_a_window_names_that_trace() -> None:
    good = trace(span("r", 0, 10))
    bad = Trace("t2", (span("x", 0, 5, "y"), span("y", 1, 2, "x")))
    with pytest.raises(TraceParseError, match=r"trace t2, span [xy]: parent references form a cycle"):
        critical_paths([good, bad])
