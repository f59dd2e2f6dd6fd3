"""A disk_io anomaly lasts the duration it was asked for, then expires (real sysbench, root).

sysbench 1.0 aborts with "The event queue is full" once its threads fall behind ``--rate``; the
anomaly must outlive such an abort. The rate is forced far beyond any disk here so that it does.
"""

from __future__ import annotations

import dataclasses
import time

from ansible_collections.firm.core.plugins.module_utils import anomaly
from tests.integration.test_anomaly_real import env, prepare_sysbench, start, workers_alive

__all__ = ["env"]

DURATION_S = 12
MARGIN_S = 2.0
"""Start-up and the polling step: the workers must be alive until DURATION_S - MARGIN_S (s)."""


def test_disk_io_lasts_its_duration_even_when_sysbench_falls_behind_its_rate(
    env: anomaly.Environment,
) -> None:
    assert env.sysbench_dir is not None
    prepare_sysbench(env.sysbench_dir)
    overloaded = dataclasses.replace(env, disk_iops_at_full=200_000)  # a rate no disk keeps up with
    began = time.monotonic()
    record = start(overloaded, "disk_io", 100, DURATION_S, name="disk")
    while time.monotonic() - began < DURATION_S - MARGIN_S:
        assert workers_alive(record), (
            f"disk_io ended after {time.monotonic() - began:.1f} s of {DURATION_S} s"
        )
        time.sleep(0.2)
    deadline = began + DURATION_S + 10.0  # expiry: the worker's own deadline plus the supervisor's reaping
    while workers_alive(record) or anomaly.Store(env.state_dir).load("disk") is not None:
        assert time.monotonic() < deadline, "disk_io did not expire"
        time.sleep(0.2)
