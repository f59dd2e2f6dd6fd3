"""The firm decider computes each request's per-trace parts once, and decides as without a cache."""

from __future__ import annotations

from pathlib import Path

from firm.localize import Localizer
from firm.loop.audit import AuditLog
from firm.loop.config import LoopConfig, Reclaim
from firm.loop.deciders import FirmDecider
from firm.loop.observe import TraceSummaries, summarize
from firm.loop.runner import ControlLoop
from tests.unit.loop.fakes import (
    FakeAgent,
    MemoryTarget,
    bounds,
    build_state,
    observation,
    sample,
    view,
    window,
)

PATHS = {"compose-post": ["compose-post-0", "text-0"], "read-home-timeline": ["home-timeline-0"]}
VIEWS = [view(n, {"cpu": 0.5}) for n in ("frontend-0", "compose-post-0", "text-0", "home-timeline-0")]


def _decider(config: LoopConfig | None = None) -> FirmDecider:
    return FirmDecider(
        config or LoopConfig(),
        Localizer.rules(),
        FakeAgent(2.0),
        build_state=build_state,
        bounds=bounds,
        request_types=["compose-post", "read-home-timeline"],
    )


def test_parts_computed_at_ingest_are_not_computed_again_and_rank_the_same() -> None:
    reference = window(
        {"compose-post": [100.0 + i for i in range(30)], "read-home-timeline": [40.0] * 30}, PATHS
    )
    traces = window(
        {"compose-post": [400.0 + i for i in range(30)], "read-home-timeline": [40.0] * 30}, PATHS
    )
    decider = _decider()
    assert decider.ingest(reference) == 60 and decider.ingest(traces) == 60
    assert decider.ingest(traces) == 0  # seen already
    obs = observation(traces, VIEWS, reference=reference)
    decider.decide(obs)
    decider.decide(obs)
    assert decider.parts.computed == 120  # the decisions computed nothing per trace
    direct = Localizer.rules().rank(traces, reference)
    assert [c["instance"] for c in decider.explanation.ranking] == [i.instance for i in direct.instances][:5]
    decider.forget()
    decider.decide(obs)
    assert decider.parts.computed == 120  # a cold decision computes every request of both windows


def test_the_cache_is_bounded() -> None:
    decider = _decider(LoopConfig.model_validate({"firm": {"trace_cache": 50}}))
    decider.ingest(window({"compose-post": [100.0] * 80}, PATHS))
    assert len(decider.parts) == 50


def test_the_loop_ingests_every_step_before_deciding(tmp_path: Path) -> None:
    target = MemoryTarget({n.name: {"cpu": 0.5} for n in VIEWS})
    loop = ControlLoop(
        LoopConfig(reclaim=Reclaim(enabled=False)),
        target,
        _decider(),
        slo_ms={"compose-post": 250.0},
        window_s=5.0,
        audit=AuditLog(None, path=tmp_path / "a.jsonl"),
        clock=lambda: 1000.0,
    )
    loop.start()
    target.traces = window({"compose-post": [100.0] * 10}, PATHS)
    target.samples = {n: sample(n, 999.5) for n in target.names()}
    record = loop.step()
    assert "ingest" in record["stages_ms"] and record["status"] != "stale"
    assert isinstance(loop.decider, FirmDecider) and loop.decider.parts.computed == 10


def test_summaries_read_each_request_once_and_agree() -> None:
    traces = window({"compose-post": [400.0, 100.0], "read-home-timeline": [40.0] * 3}, PATHS)
    cache = TraceSummaries(max_traces=3)
    assert summarize(traces, cache) == summarize(traces)
    assert summarize(traces[1:], cache) == summarize(traces[1:])
    assert len(cache._entries) == 3  # bounded
