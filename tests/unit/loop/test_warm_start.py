"""No step of the loop computes a whole window's per-trace work: not the first one (start() warms
the caches), not the first one after telemetry or the trace store came back."""

from __future__ import annotations

import threading

import redis

from firm.loop.config import Guard, LoopConfig, Reclaim, default_guards
from firm.loop.deciders import FirmDecider
from firm.loop.runner import ControlLoop
from firm.tracing.model import Trace
from tests.unit.loop.fakes import (
    REDIS_DOWN,
    SLO,
    FakeAgent,
    FakeLocalizer,
    MemoryTarget,
    bounds,
    build_state,
    sample,
    window,
)

LIMITS = {"frontend-0": {"cpu": 1.0}, "compose-post-0": {"cpu": 0.5}, "text-0": {"cpu": 0.4}}
PATHS = {"compose-post": ["compose-post-0", "text-0"]}
CONFIG = LoopConfig(
    guards={**default_guards(cpus=2), "cpu": Guard(min=0.1, max=2.0, max_step=0.5, cooldown_s=0)},
    reclaim=Reclaim(enabled=False),
)


def _loop() -> tuple[ControlLoop, MemoryTarget, FirmDecider, list[float]]:
    target = MemoryTarget(LIMITS)
    decider = FirmDecider(
        CONFIG,
        FakeLocalizer({"compose-post-0": 0.9}),
        FakeAgent(1.5),
        build_state=build_state,
        bounds=bounds,
        request_types=["compose-post"],
    )
    now = [1000.0]
    loop = ControlLoop(CONFIG, target, decider, slo_ms=SLO, window_s=5.0, clock=lambda: now[0])
    return loop, target, decider, now


def _fresh(target: MemoryTarget, now: float) -> None:
    target.samples = {n: sample(n, now - 0.5) for n in LIMITS}


def test_start_computes_the_windows_requests_so_the_first_step_decides_from_the_cache() -> None:
    loop, target, decider, now = _loop()
    target.traces = window({"compose-post": [400.0] * 40}, PATHS)  # violated
    loop.start()
    assert decider.parts.computed == 40 and len(loop.summaries._entries) == 40
    _fresh(target, now[0])
    record = loop.step()
    assert record["status"] == "acted" and record["decision"]["mode"] == "raise"
    assert decider.parts.computed == 40  # nothing computed again in the first step
    # a later step computes only the requests new to it
    target.traces = target.traces[10:] + window({"compose-post": [400.0] * 10}, PATHS)
    now[0] += 2
    _fresh(target, now[0])
    loop.step()
    assert decider.parts.computed == 50


def test_a_store_that_does_not_answer_at_start_leaves_the_work_to_the_first_step() -> None:
    loop, target, decider, now = _loop()
    target.traces = window({"compose-post": [400.0] * 20}, PATHS)
    target.trace_error = REDIS_DOWN
    loop.start()  # does not raise
    assert decider.parts.computed == 0
    target.trace_error = None
    _fresh(target, now[0])
    assert loop.step()["status"] == "acted" and decider.parts.computed == 20


def test_steps_stale_for_telemetry_still_compute_their_requests_so_the_next_decision_is_cached() -> None:
    loop, target, decider, now = _loop()
    loop.start()
    target.telemetry_error = redis.ConnectionError("telemetry down")
    seen = 0
    for _ in range(3):  # telemetry down: stale steps, the new requests computed all the same
        target.traces = target.traces[-20:] + window({"compose-post": [400.0] * 10}, PATHS)
        seen += 10
        now[0] += 2
        assert loop.step()["status"] == "stale"
        assert decider.parts.computed == seen
    target.telemetry_error = None
    _fresh(target, now[0])
    record = loop.step()
    assert record["status"] == "acted" and decider.parts.computed == seen


class Counting(MemoryTarget):
    """Counts the reads of the trace store; ``prefetch`` as a target whose reads are incremental."""

    def __init__(self, prefetch: bool) -> None:
        super().__init__(LIMITS)
        self.prefetch = prefetch
        self.reads = 0

    def read_traces(self, start_us: int, end_us: int) -> list[Trace]:
        self.reads += 1
        return super().read_traces(start_us, end_us)


class Stop(threading.Event):
    """A stop event that does not sleep: it records each wait and is set after ``waits`` of them."""

    def __init__(self, waits: int) -> None:
        super().__init__()
        self.left = waits
        self.waited: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waited.append(timeout or 0.0)
        self.left -= 1
        if self.left <= 0:
            self.set()
        return self.is_set()


def _run(prefetch: bool) -> tuple[int, Counting, FirmDecider, Stop]:
    target = Counting(prefetch)
    decider = FirmDecider(
        CONFIG,
        FakeLocalizer({"compose-post-0": 0.9}),
        FakeAgent(1.5),
        build_state=build_state,
        bounds=bounds,
        request_types=["compose-post"],
    )
    loop = ControlLoop(CONFIG, target, decider, slo_ms=SLO, window_s=5.0)
    target.traces = window({"compose-post": [400.0] * 20}, PATHS)
    loop.start()
    stop = Stop(waits=6)
    return loop.run(stop=stop), target, decider, stop


def test_run_reads_and_computes_new_requests_between_steps_when_the_target_reads_incrementally() -> None:
    steps, target, decider, stop = _run(prefetch=True)
    prefetches = target.reads - 1 - steps  # one read at start, one per step
    assert steps >= 1 and prefetches >= 1
    assert len(stop.waited) == steps + prefetches  # a wait up to each prefetch, one after it
    assert decider.parts.computed == 20  # each request computed once, whoever read it first


def test_a_target_that_reads_whole_windows_is_read_once_per_step() -> None:
    steps, target, _, stop = _run(prefetch=False)
    assert target.reads == 1 + steps and len(stop.waited) == steps
