"""The report computed from a recorded run against hand-computed values."""

from __future__ import annotations

import json

import pytest

from firm.experiment.report import (
    OTHER_WORK_AVG,
    OTHER_WORK_PEAK,
    AnomalyWindow,
    CpuSample,
    RecordedRun,
    Request,
    build_report,
    episodes,
    intervals,
    mitigation,
    nearest_rank,
    ratio,
    summarize,
)

SLO = {"a": 100.0}


def _run(policy: str = "firm") -> RecordedRun:
    requests = [
        Request("a", 1.0, 10.0),
        Request("a", 4.9, 20.0),  # [0, 5): p99 20, met
        Request("a", 5.0, 50.0),
        Request("a", 9.0, 150.0),  # [5, 10): p99 150, violated
        Request("a", 11.0, 30.0, failed=True),  # [10, 15): a failure, violated
        Request("a", 15.5, 40.0),  # [15, 20): met
        Request("a", 20.0, 999.0),  # after the end: left out
        Request("b", 6.0, 5000.0),  # no SLO: never violated
    ]
    cpu = [
        CpuSample(0.0, 2.0, 1.0),
        CpuSample(2.5, 4.0, 1.0),
        CpuSample(7.0, 3.0, None),
        CpuSample(16.0, 1.0, 0.5),
    ]
    anomalies = [AnomalyWindow("cpu", "text", 6.0, 14.0, 80), AnomalyWindow("llc", "user", 16.0, 19.0, 90)]
    return RecordedRun(
        policy, 20.0, requests, cpu, anomalies, actions=3, scale_events=1, errors={"timeout": 1}
    )


def test_nearest_rank() -> None:
    assert nearest_rank([], 99) is None
    assert nearest_rank([5.0], 99) == 5.0
    assert nearest_rank([float(v) for v in range(1, 101)], 99) == 99.0
    assert nearest_rank([float(v) for v in range(1, 101)], 99.9) == 100.0
    assert nearest_rank([10.0, 20.0, 40.0, 50.0, 150.0], 50) == 40.0


def test_intervals() -> None:
    table = intervals(_run(), SLO, 5.0)
    assert [i.start_s for i in table] == [0.0, 5.0, 10.0, 15.0]
    assert [i.p99_ms["a"] for i in table] == [20.0, 150.0, float("inf"), 40.0]
    assert [i.any_violated for i in table] == [False, True, True, False]
    assert table[1].violated["b"] is False and table[1].p99_ms["b"] == 5000.0
    assert [i.cpu_allocated for i in table] == [3.0, 3.0, 3.0, 1.0]  # interval 2 carries the sample at 7 s
    assert [i.cpu_used for i in table] == [1.0, None, None, 0.5]


def test_episodes() -> None:
    assert episodes([]) == 0
    assert episodes([True, True, False, True, False, False, True]) == 3


def test_summary_figures() -> None:
    entry = summarize(_run(), SLO, 5.0)
    assert entry["slo_violation_s"] == 10.0
    assert entry["slo_violation_count"] == 1
    assert entry["slo_attainment"] == 0.5
    assert entry["per_type"]["a"] == {
        "slo_ms": 100.0,
        "violation_s": 10.0,
        "violation_count": 1,
        "requests": 6,
        "failed": 1,
        "p50_ms": 40.0,
        "p99_ms": 150.0,
        "p999_ms": 150.0,
    }
    assert entry["per_type"]["b"]["violation_s"] == 0.0
    assert entry["failed_requests"] == 1 and entry["requests"] == 7
    assert entry["failed_by_error"] == {"timeout": 1}
    assert entry["cpu_cores_avg"] == 2.5
    assert entry["cpu_cores_peak"] == 4.0
    assert entry["cpu_used_avg"] == 0.75 and entry["cpu_used_peak"] == 1.0
    assert entry["core_seconds_met"] == 20.0  # 3 cores x 5 s + 1 core x 5 s
    # cpu at 6 s: violated from the interval at 5 s, met again at 15 s -> 9 s, after its end at 14 s
    # llc at 16 s: no violation while it ran -> 0
    assert entry["mitigation_s"] == [9.0, 0.0]
    assert [a["before_end"] for a in entry["anomalies"]] == [False, True]
    assert entry["actions"] == 3 and entry["scale_events"] == 1
    assert entry["series"]["violated"] == [False, True, True, False]
    json.dumps(entry, allow_nan=False)  # no NaN or infinity reaches the JSON


def test_mitigation_never_and_before_end() -> None:
    run = RecordedRun(
        "x", 15.0, [Request("a", 1.0, 10.0), Request("a", 6.0, 500.0), Request("a", 11.0, 500.0)]
    )
    table = intervals(run, SLO, 5.0)
    assert mitigation(table, AnomalyWindow("cpu", "s", 4.0, 12.0), 5.0) == (None, False)
    run = RecordedRun(
        "x", 20.0, [Request("a", 6.0, 500.0), Request("a", 11.0, 50.0), Request("a", 16.0, 50.0)]
    )
    table = intervals(run, SLO, 5.0)
    # violated in [5, 10), back in [10, 15): 10 - 4 = 6 s, before the end at 18 s
    assert mitigation(table, AnomalyWindow("cpu", "s", 4.0, 18.0), 5.0) == (6.0, True)
    # an anomaly starting after the violation: the interval it starts in is met -> 0
    assert mitigation(table, AnomalyWindow("cpu", "s", 10.0, 18.0), 5.0) == (0.0, True)


def test_ratios_and_report() -> None:
    assert ratio(20.0, 10.0) == 2.0
    assert ratio(0.0, 0.0) == 1.0
    assert ratio(5.0, 0.0) is None
    assert ratio(None, 1.0) is None
    firm = _run("firm")
    static = _run("static")
    static.cpu = [CpuSample(0.0, 5.0, 1.0)]
    static.requests = [*static.requests, Request("a", 16.0, 500.0)]  # [15, 20) violated too
    report = build_report([firm, static], slo_ms=SLO, interval_s=5.0, seed=7, meta={"duration_s": 20.0})
    assert report["seed"] == 7 and report["interval_s"] == 5.0 and report["duration_s"] == 20.0
    assert report["policies"]["static"]["slo_violation_s"] == 15.0
    assert report["ratios_to_firm"]["static"]["slo_violation_s"] == 1.5
    assert report["ratios_to_firm"]["static"]["cpu_cores_avg"] == 2.0
    assert report["verdict"] == {
        "fewer_violation_s_than": {"static": True},
        "cpu_not_above_static": True,
        # the cpu anomaly's violation ended only after the anomaly did (9 s after its start at 6 s,
        # its end at 14 s): expiry is not mitigation
        "mitigated_every_anomaly": False,
        "disturbed": [],
    }
    json.dumps(report, allow_nan=False)
    firm.anomalies = [a for a in firm.anomalies if a.kind != "cpu"]
    report = build_report([firm, static], slo_ms=SLO, interval_s=5.0, seed=7, meta={"duration_s": 20.0})
    assert report["verdict"]["mitigated_every_anomaly"] is True


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        intervals(_run(), SLO, 0.0)


def test_other_work_per_interval_and_the_runs_it_disturbed() -> None:
    """Samples (end of their stretch, cores) fall into the interval they end in: [0, 5) holds 0.02
    and 0.04 (mean 0.03), [5, 10) none, [10, 15) 0.1 and 0.3 (0.2), [15, 20) 0.02; average over the
    three measured intervals (0.03 + 0.2 + 0.02) / 3 = 0.0833, busiest 0.2. A quiet run is not
    disturbed; one with an interval above OTHER_WORK_PEAK (0.6), or above OTHER_WORK_AVG on average,
    is named."""
    assert OTHER_WORK_AVG < OTHER_WORK_PEAK
    quiet = _run("firm")
    quiet.other_work = [(0.5, 0.02), (4.9, 0.04), (10.0, 0.1), (14.0, 0.3), (19.5, 0.02)]
    entry = summarize(quiet, SLO, 5.0)
    assert entry["series"]["other_work"] == [0.03, None, 0.2, 0.02]
    assert entry["other_work_cores_avg"] == pytest.approx(0.083, abs=1e-3)
    assert entry["other_work_cores_peak"] == 0.2
    burst = _run("static")
    burst.other_work = [(1.0, 0.02), (12.0, 0.6), (17.0, 0.02)]
    busy = _run("aimd")
    busy.other_work = [(t, OTHER_WORK_AVG + 0.05) for t in (1.0, 6.0, 11.0, 16.0)]
    unmeasured = _run("hpa")
    report = build_report([quiet, burst, busy, unmeasured], slo_ms=SLO, interval_s=5.0, seed=1)
    assert report["verdict"]["disturbed"] == ["static", "aimd"]
    assert report["policies"]["hpa"]["other_work_cores_avg"] is None
    json.dumps(report, allow_nan=False)
