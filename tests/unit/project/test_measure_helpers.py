"""The test helpers that judge physical effects (tests/helpers/measure.py) are themselves checked."""

from __future__ import annotations

import os
import time

import pytest

from tests.helpers.measure import BusyMonitor


def monitor_with(
    samples: list[tuple[float, float, float]], processes: list[dict[int, tuple[str, float]]] | None = None
) -> BusyMonitor:
    monitor = BusyMonitor(lambda: 0.0)
    monitor.samples = samples
    monitor.processes = processes if processes is not None else [{} for _ in samples]
    return monitor


# (wall-clock s, machine CPU s, our CPU s): 10 s in which other work took 0.1 cores, but for one
# second (t = 4 to 5) in which it took 0.9
BURST = [(t, 0.1 * t + (0.8 if t >= 5 else 0.0) + 0.5 * t, 0.5 * t) for t in range(11)]


def test_the_mean_over_a_stretch_hides_a_burst_that_the_peak_shows() -> None:
    monitor = monitor_with([(float(t), busy, ours) for t, busy, ours in BURST])
    assert monitor.other_cores(0, 10) == pytest.approx(0.18)
    assert monitor.peak_other_cores(0, 10) == pytest.approx(0.9)
    assert monitor.peak_other_cores(0, 10, width_s=2.0) == pytest.approx(0.5)
    assert monitor.peak_other_cores(5, 10) == pytest.approx(0.1)  # the burst lies outside
    cores, start, end = monitor.peak(0, 10)
    assert cores == pytest.approx(0.9) and (start, end) == (4.0, 5.0)


def test_the_busiest_processes_of_a_stretch_are_named_by_their_cpu_there() -> None:
    processes = [
        {10: ("redis-server", 1.0), 11: ("kworker/0:1", 0.5)},
        {10: ("redis-server", 1.1), 11: ("kworker/0:1", 0.5), 12: ("stress-ng", 0.8)},
        {10: ("redis-server", 1.2), 11: ("kworker/0:1", 0.8), 12: ("stress-ng", 1.7)},
    ]
    monitor = monitor_with([(0.0, 0.0, 0.0), (1.0, 1.0, 0.0), (2.0, 2.0, 0.0)], processes)
    # a process that started within the stretch counts all of its CPU time
    assert monitor.busiest(0, 2) == "stress-ng[12] 0.85, kworker/0:1[11] 0.15, redis-server[10] 0.10"
    assert monitor.busiest(1, 2, count=1) == "stress-ng[12] 0.90"
    assert monitor.busiest(0.5, 1.5) == ""
    monitor.mine = lambda pid: pid == 12  # the test's own work is not named
    assert monitor.busiest(0, 2) == "kworker/0:1[11] 0.15, redis-server[10] 0.10"
    assert monitor.busiest(1, 2) == "kworker/0:1[11] 0.30, redis-server[10] 0.10"


def test_fewer_than_two_samples_in_a_stretch_measure_nothing() -> None:
    monitor = monitor_with([(float(t), busy, ours) for t, busy, ours in BURST])
    assert monitor.other_cores(3.5, 3.9) == 0.0
    assert monitor.peak_other_cores(3.5, 4.0) == 0.0
    assert monitor_with([]).other_cores(0, 10) == 0.0


def test_our_own_work_is_not_other_work() -> None:
    monitor = monitor_with([(0.0, 0.0, 0.0), (1.0, 1.5, 1.5), (2.0, 2.0, 2.5)])
    assert monitor.other_cores(0, 1) == 0.0
    assert monitor.other_cores(0, 2) == 0.0  # never negative, whatever the clocks' rounding


def test_a_running_monitor_samples_until_its_block_ends() -> None:
    with BusyMonitor(lambda: 0.0, interval_s=0.01) as monitor:
        while len(monitor.samples) < 3:
            pass  # busy: the machine's CPU counters must move
    count = len(monitor.samples)
    assert count >= 4 and len(monitor.processes) == count  # the last one is taken on leaving
    assert os.getpid() in monitor.processes[0]
    assert f"[{os.getpid()}]" not in monitor.busiest(0, time.time() + 1, count=10_000)  # never itself
    assert [s[0] for s in monitor.samples] == sorted(s[0] for s in monitor.samples)
    assert monitor.samples[-1][1] >= monitor.samples[0][1]
