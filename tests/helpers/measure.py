"""Measuring physical effects honestly: poll for a state with a deadline, and compare interleaved samples.

``poll`` waits for a condition (a working set written, a flood running) instead of a fixed sleep
and returns what it last saw and when, so that a test can say what it measured when the deadline
passes. ``Interleaved`` holds repeated victim measurements taken alone and under contention in
alternation (A X A Y A X A Y A ...), so that slow drifts of the host (another tenant, a vCPU moved)
affect both sides alike: each contended sample is compared with the mean of the two alone samples
around it, and each inner alone sample compared the same way with its neighbours gives the ratios
of no effect at all, whose typical deviation from 1 is the noise a real effect must clear.
"""

from __future__ import annotations

import itertools
import math
import os
import resource
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Polled(Generic[T]):
    """What a poll last read, how long it waited (seconds) and whether the condition was met."""

    value: T
    elapsed_s: float
    met: bool


def poll(
    read: Callable[[], T], done: Callable[[T], bool], timeout_s: float, interval_s: float = 0.1
) -> Polled[T]:
    """Read until ``done(value)`` or ``timeout_s`` seconds have passed (the last read is at or after the deadline)."""
    started = time.monotonic()
    while True:
        value = read()
        elapsed = time.monotonic() - started
        if done(value):
            return Polled(value, elapsed, True)
        if elapsed >= timeout_s:
            return Polled(value, elapsed, False)
        time.sleep(interval_s)


def steady(
    read: Callable[[], float],
    at_least: float,
    timeout_s: float,
    tolerance: float = 0.02,
    interval_s: float = 0.2,
) -> Polled[float]:
    """Poll until the value is at least ``at_least`` and moved by at most ``tolerance`` (a share) since the last read."""
    previous = [math.nan]

    def done(value: float) -> bool:
        last, previous[0] = previous[0], value
        return value >= at_least and abs(value - last) <= tolerance * value

    return poll(read, done, timeout_s, interval_s)


@dataclass(frozen=True)
class Interleaved:
    """Victim samples alone (``alone[0..n]``) with one contended sample between each neighbouring pair.

    ``between[i]`` names the condition measured between ``alone[i]`` and ``alone[i + 1]`` and
    ``contended[i]`` is that sample.
    """

    alone: Sequence[float]
    between: Sequence[str]
    contended: Sequence[float]

    def ratios(self, condition: str) -> list[float]:
        """Each sample of ``condition`` over the mean of the alone samples around it."""
        return [
            c / ((self.alone[i] + self.alone[i + 1]) / 2)
            for i, (name, c) in enumerate(zip(self.between, self.contended, strict=True))
            if name == condition
        ]

    def median_ratio(self, condition: str) -> float:
        return statistics.median(self.ratios(condition))

    def null_ratios(self) -> list[float]:
        """Each inner alone sample over the mean of its two neighbours: ratios taken as the contended ones
        are, where there is no effect at all (their spread is what noise alone does)."""
        return [
            b / ((a + c) / 2) for a, b, c in zip(self.alone, self.alone[1:], self.alone[2:], strict=False)
        ]

    def noise(self) -> float:
        """The typical deviation of a ratio from 1 without any effect: the median of the null ratios' deviations."""
        return statistics.median(abs(1 - r) for r in self.null_ratios())

    def after(self, condition: str) -> list[float]:
        """The alone samples taken right after each sample of ``condition`` (the relief)."""
        return [self.alone[i + 1] for i, name in enumerate(self.between) if name == condition]

    def describe(self) -> str:
        parts = [
            f"{name} ratios {[round(r, 3) for r in self.ratios(name)]}"
            for name in dict.fromkeys(self.between)
        ]
        return (
            f"alone {[round(a) for a in self.alone]}; "
            + "; ".join(parts)
            + f"; null ratios {[round(r, 3) for r in self.null_ratios()]} (typical deviation {self.noise():.1%})"
        )


def interleave(
    alone: Callable[[], float], conditions: Mapping[str, Callable[[], float]], rounds: int
) -> Interleaved:
    """Measure alone, then each condition in turn with an alone sample after each, ``rounds`` times."""
    alone_samples: list[float] = [alone()]
    between: list[str] = []
    contended: list[float] = []
    for _ in range(rounds):
        for name, measure in conditions.items():
            between.append(name)
            contended.append(measure())
            alone_samples.append(alone())
    return Interleaved(alone_samples, between, contended)


def binomial_tail(n: int, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(max(0, k), n + 1))


@dataclass(frozen=True)
class SloTest:
    """A latency SLO "p``quantile`` <= ``objective_ms``" tested on one phase's requests.

    The SLO says at most ``1 - quantile/100`` of requests are slower than the objective. With ``n``
    requests the number slower, ``k``, is then at most Binomial(n, 1 - quantile/100): a phase *meets*
    the SLO unless so many are slower that such a rate would give that many with probability below
    ``alpha`` (one-sided binomial test), and *breaks* it when that is the case. With 60 requests and
    p99, up to 3 slower requests are consistent with the SLO (a p99 of 250.17 ms against 250 ms is
    one slow request, not a violation); 360 requests allow up to 9.
    """

    latencies_ms: Sequence[float]
    objective_ms: float
    quantile: float = 99.0
    alpha: float = 0.01

    @property
    def slower(self) -> int:
        return sum(1 for latency in self.latencies_ms if latency > self.objective_ms)

    @property
    def p_value(self) -> float:
        """How likely this many slower requests (or more) are if the SLO held exactly."""
        return binomial_tail(len(self.latencies_ms), self.slower, 1 - self.quantile / 100)

    @property
    def meets(self) -> bool:
        return self.p_value >= self.alpha

    @property
    def breaks(self) -> bool:
        return self.p_value < self.alpha

    def describe(self) -> str:
        return (
            f"{self.slower} of {len(self.latencies_ms)} requests over {self.objective_ms:.0f} ms "
            f"(p = {self.p_value:.2g} under the SLO)"
        )


def rank_sum_p(lower: Sequence[float], other: Sequence[float]) -> float:
    """One-sided exact Wilcoxon-Mann-Whitney test: how likely ``lower`` ranks this low (or lower) among
    ``lower`` and ``other`` together if all were drawn alike (every labelling equally likely; ties
    share their mean rank). Small values mean ``lower`` really is lower. Exact, so for small samples
    only (6 and 11 samples: 12376 labellings)."""
    pooled = sorted([*lower, *other])
    rank = {value: statistics.mean(i + 1 for i, v in enumerate(pooled) if v == value) for value in pooled}
    ranks = [rank[v] for v in (*lower, *other)]
    observed = sum(rank[v] for v in lower)
    labellings = list(itertools.combinations(ranks, len(lower)))
    return sum(1 for chosen in labellings if sum(chosen) <= observed + 1e-9) / len(labellings)


def _machine_busy_s() -> tuple[float, float]:
    """(CPU seconds busy or stolen by the hypervisor, seconds of wall time) so far, over all CPUs, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (
            int(f) for f in stat.readline().split()[1:9]
        )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), time.monotonic()


def background_cores(ours: Callable[[], float], seconds: float = 2.0) -> float:
    """Cores this machine spent over ``seconds`` on anything but ``ours`` (cumulative CPU seconds of what
    the test runs): other users' work, and time the hypervisor gave to other guests (steal)."""
    busy_before, began = _machine_busy_s()
    ours_before = ours()
    time.sleep(seconds)  # the measurement window, not a wait for a condition
    busy_after, ended = _machine_busy_s()
    return max(0.0, (busy_after - busy_before) - (ours() - ours_before)) / (ended - began)


Sample = tuple[float, float, float]
"""(wall-clock time, machine CPU seconds busy or stolen, CPU seconds of what a test counts as its own)"""


class BusyMonitor:
    """Samples, every ``interval_s`` while in its ``with`` block, the CPU this machine spends on anything
    but ``ours`` (cumulative CPU seconds of what the test runs), steal included: the other work during
    any stretch of a run, not only in samples taken before and after it.

    ``other_cores(start, end)`` is the mean over the samples between two wall-clock times (Unix
    seconds), ``peak_other_cores`` the most over any ``width_s`` of them: a one-second burst that
    stalls a service hides in a thirteen-second mean. ``busiest`` names the processes that used the
    CPU in a stretch (every process's CPU time is sampled too), so that a burst has a name."""

    def __init__(
        self,
        ours: Callable[[], float],
        interval_s: float = 0.25,
        mine: Callable[[int], bool] = lambda pid: False,
    ) -> None:
        """``mine(pid)``: whether a process is the test's own work, left out of ``busiest``."""
        self.ours, self.interval_s, self.mine = ours, interval_s, mine
        self.samples: list[Sample] = []
        self.processes: list[dict[int, tuple[str, float]]] = []
        """per sample: pid -> (its name, its CPU seconds so far)"""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BusyMonitor:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        busy, _ = _machine_busy_s()
        self.samples.append((time.time(), busy, self.ours()))
        self.processes.append(_process_cpu_s())

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _between(self, start: float, end: float) -> list[int]:
        return [i for i, s in enumerate(self.samples) if start <= s[0] <= end]

    @staticmethod
    def _cores(first: Sample, last: Sample) -> float:
        elapsed = last[0] - first[0]
        return max(0.0, (last[1] - first[1]) - (last[2] - first[2])) / elapsed if elapsed > 0 else 0.0

    def other_cores(self, start: float, end: float) -> float:
        """Mean cores of other work between ``start`` and ``end``; 0.0 with fewer than two samples."""
        inside = self._between(start, end)
        return self._cores(self.samples[inside[0]], self.samples[inside[-1]]) if len(inside) >= 2 else 0.0

    def peak(self, start: float, end: float, width_s: float = 1.0) -> tuple[float, float, float]:
        """(cores, from, to): the most cores of other work over any ``width_s`` (or longer, to the next
        sample) between ``start`` and ``end``, and that stretch; (0.0, start, start) with fewer than
        two samples."""
        inside, best = self._between(start, end), (0.0, start, start)
        for n, i in enumerate(inside):
            first = self.samples[i]
            j = next((k for k in inside[n + 1 :] if self.samples[k][0] - first[0] >= width_s), None)
            if j is not None and self._cores(first, self.samples[j]) > best[0]:
                best = (self._cores(first, self.samples[j]), first[0], self.samples[j][0])
        return best

    def peak_other_cores(self, start: float, end: float, width_s: float = 1.0) -> float:
        """The cores of ``peak``."""
        return self.peak(start, end, width_s)[0]

    def busiest(self, start: float, end: float, count: int = 3) -> str:
        """The ``count`` processes (this one and ``mine`` excluded) that used the most CPU between
        ``start`` and ``end``, as ``name[pid] cores``; empty with fewer than two samples."""
        inside = self._between(start, end)
        if len(inside) < 2:
            return ""
        (t0, first), (t1, last) = ((self.samples[inside[i]][0], self.processes[inside[i]]) for i in (0, -1))
        used = sorted(
            (
                (cpu - first.get(pid, (name, 0.0))[1], name, pid)
                for pid, (name, cpu) in last.items()
                if pid != os.getpid()
            ),
            reverse=True,
        )
        others = (entry for entry in used if entry[0] > 0 and not self.mine(entry[2]))
        return ", ".join(
            f"{name}[{pid}] {cpu / (t1 - t0):.2f}" for cpu, name, pid in itertools.islice(others, count)
        )


def _process_cpu_s() -> dict[int, tuple[str, float]]:
    """Every process's name and CPU seconds so far (its threads' included), from /proc/PID/stat."""
    found: dict[int, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as stat:
                line = stat.read()
        except OSError:  # it ended meanwhile
            continue
        name, fields = line[line.find("(") + 1 : line.rfind(")")], line[line.rfind(")") + 2 :].split()
        found[int(entry)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return found


def own_cpu_s() -> float:
    """CPU seconds this process and its reaped children have used."""
    self_usage, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return self_usage.ru_utime + self_usage.ru_stime + children.ru_utime + children.ru_stime


def more_often(hits: int, n: int, baseline_hits: int, baseline_n: int) -> float:
    """One-sided Fisher exact test: how likely ``hits`` of ``n`` or more, if both samples shared the
    baseline's rate (``baseline_hits`` of ``baseline_n``). Small values mean the rate really rose."""
    total, successes = n + baseline_n, hits + baseline_hits
    denominator = math.comb(total, n)
    return (
        sum(
            math.comb(successes, i) * math.comb(total - successes, n - i)
            for i in range(hits, min(n, successes) + 1)
        )
        / denominator
    )
