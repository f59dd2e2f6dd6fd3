"""The arrival process: exponential gaps at the right rate, traces scaled and compressed, the mix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firm.load import (
    ConstantRate,
    LoadSpec,
    LoadSpecError,
    Mix,
    RateProfile,
    TraceRate,
    arrival_times,
    interarrival_times,
    rate_profile,
    read_rate_trace,
    scale_trace,
)
from tests.unit.tracing.shared_data import data_dir

URL = "http://127.0.0.1:8080"


def constant(rps: float, seconds: float) -> RateProfile:
    return rate_profile(LoadSpec(URL, ConstantRate(rps), duration_s=seconds))


def test_interarrival_mean_matches_the_rate() -> None:
    gaps = interarrival_times(200.0, 50_000, np.random.default_rng(7))
    assert gaps.mean() == pytest.approx(1 / 200, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.03)  # exponential: CV = 1


def test_schedule_of_a_constant_rate_has_exponential_gaps_and_the_right_count() -> None:
    times = arrival_times(constant(300, 100), np.random.default_rng(1)).times
    assert len(times) == pytest.approx(30_000, rel=0.03)
    gaps = np.diff(times)
    assert (gaps >= 0).all()
    assert gaps.mean() == pytest.approx(1 / 300, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    # Memoryless: the share of gaps above the mean is e^-1 for an exponential distribution.
    assert (gaps > gaps.mean()).mean() == pytest.approx(np.exp(-1), abs=0.01)
    assert times.min() >= 0 and times.max() <= 100


def test_the_same_seed_gives_the_same_schedule_and_another_seed_does_not() -> None:
    profile = constant(100, 20)
    a = arrival_times(profile, np.random.default_rng(42))
    b = arrival_times(profile, np.random.default_rng(42))
    c = arrival_times(profile, np.random.default_rng(43))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert len(a.times) != len(c.times) or not np.array_equal(a.times, c.times)


def test_mix_proportions_follow_the_weights() -> None:
    chunk = arrival_times(constant(500, 40), np.random.default_rng(3), Mix(10, 60, 30), users=962)
    shares = np.bincount(chunk.types, minlength=3) / len(chunk.types)
    assert shares == pytest.approx([0.1, 0.6, 0.3], abs=0.01)
    assert chunk.users.min() >= 0 and chunk.users.max() < 962
    assert len(np.unique(chunk.users)) > 900  # uniform over all users


def test_a_type_of_weight_zero_is_never_sent() -> None:
    chunk = arrival_times(constant(200, 10), np.random.default_rng(3), Mix(0, 1, 0))
    assert set(chunk.types.tolist()) == {1}


def test_trace_is_scaled_to_its_peak(tmp_path: Path) -> None:
    trace = tmp_path / "t.txt"
    trace.write_text("10\n40\n20\n0\n")
    assert read_rate_trace(trace).tolist() == [10, 40, 20, 0]
    profile = rate_profile(LoadSpec(URL, TraceRate(trace, peak_rps=200)))
    assert profile.rates.tolist() == [50, 200, 100, 0]
    assert profile.rates.max() == 200
    assert profile.duration_s == 4
    assert scale_trace([1, 2, 4], 8).tolist() == [2, 4, 8]


def test_requests_follow_the_trace_second_by_second(tmp_path: Path) -> None:
    trace = tmp_path / "t.txt"
    trace.write_text("\n".join(["100", "400", "0", "200"] * 25))  # 100 s
    profile = rate_profile(LoadSpec(URL, TraceRate(trace, peak_rps=400)))
    times = arrival_times(profile, np.random.default_rng(5)).times
    per_second = np.bincount(times.astype(int), minlength=100)[:100].reshape(25, 4).mean(axis=0)
    assert per_second[0] == pytest.approx(100, rel=0.06)
    assert per_second[1] == pytest.approx(400, rel=0.04)
    assert per_second[2] == 0  # a second of rate 0 gets no request at all
    assert per_second[3] == pytest.approx(200, rel=0.05)


def test_speedup_compresses_the_trace_in_time() -> None:
    trace = data_dir("workloads", "diurnal.txt")
    slow = rate_profile(LoadSpec(URL, TraceRate(trace, peak_rps=300)))
    fast = rate_profile(LoadSpec(URL, TraceRate(trace, peak_rps=300, speedup=60)))
    assert slow.duration_s == 3600
    assert fast.duration_s == pytest.approx(60)
    assert fast.rates.max() == pytest.approx(300)
    # The same shape in a sixtieth of the time: a sixtieth of the requests, at the same rates.
    assert fast.expected_requests() == pytest.approx(slow.expected_requests() / 60)
    times = arrival_times(fast, np.random.default_rng(9)).times
    assert len(times) == pytest.approx(fast.expected_requests(), rel=0.03)
    assert times.max() <= 60


def test_duration_cuts_a_trace_and_may_not_exceed_it(tmp_path: Path) -> None:
    trace = tmp_path / "t.txt"
    trace.write_text("5\n" * 100)
    assert rate_profile(LoadSpec(URL, TraceRate(trace, peak_rps=50), duration_s=30)).duration_s == 30
    with pytest.raises(LoadSpecError) as info:
        rate_profile(LoadSpec(URL, TraceRate(trace, peak_rps=50, speedup=10), duration_s=30))
    assert info.value.field == "duration_s"
    assert "longer than the trace" in str(info.value) and "10 s" in info.value.fix


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("5\nfive\n", "line 2: 'five' is not an integer"),
        ("5\n-1\n", "line 2: -1 is negative"),
        ("0\n0\n", "no second with a rate above 0"),
        ("", "no second with a rate above 0"),
    ],
)
def test_bad_trace_files_are_refused_with_the_line(tmp_path: Path, content: str, words: str) -> None:
    trace = tmp_path / "t.txt"
    trace.write_text(content)
    with pytest.raises(LoadSpecError) as info:
        rate_profile(LoadSpec(URL, TraceRate(trace, peak_rps=50)))
    assert info.value.field == "rate.path"
    assert words in str(info.value)
