"""The seeded anomaly schedule: reproducible, inside the run, overlapping, never two at once beside one service."""

from __future__ import annotations

import pytest

from firm.experiment import ExperimentInputError
from firm.experiment.schedule import parse_kinds, plan_anomalies

SERVICES = ["compose-post", "text", "post-storage", "home-timeline", "user-timeline", "social-graph"]


def test_same_seed_same_schedule_and_different_seed_differs() -> None:
    kinds = ["cpu", "memory_bandwidth", "disk_io"]
    one = plan_anomalies(1, 120.0, kinds, SERVICES)
    assert one == plan_anomalies(1, 120.0, kinds, SERVICES)
    assert one != plan_anomalies(2, 120.0, kinds, SERVICES)


@pytest.mark.parametrize("seed", range(20))
def test_schedule_shape(seed: int) -> None:
    kinds = ["cpu", "memory_bandwidth", "llc", "disk_io"]
    plans = plan_anomalies(seed, 200.0, kinds, SERVICES)
    assert [p.kind for p in plans] == kinds
    for p in plans:
        assert p.start_s >= 0 and p.end_s <= 0.85 * 200.0 + 1e-9
        assert 50 <= p.intensity <= 80 and p.duration_s >= 4
    overlapping = [
        (a, b)
        for i, a in enumerate(plans)
        for b in plans[i + 1 :]
        if a.start_s < b.end_s and b.start_s < a.end_s
    ]
    assert overlapping, "consecutive anomalies overlap"
    assert all(a.service != b.service for a, b in overlapping)


def test_one_anomaly_and_none() -> None:
    (only,) = plan_anomalies(3, 100.0, ["cpu"], SERVICES)
    assert only.duration_s == 40
    assert plan_anomalies(3, 100.0, [], SERVICES) == []


def test_too_short_or_too_few_services() -> None:
    with pytest.raises(ExperimentInputError, match="too short"):
        plan_anomalies(1, 10.0, ["cpu", "llc", "disk_io", "memory_bandwidth"], SERVICES)
    with pytest.raises(ExperimentInputError, match="too few"):
        plan_anomalies(1, 120.0, ["cpu", "llc"], ["text"])


def test_parse_kinds() -> None:
    assert parse_kinds("cpu, disk-io") == ["cpu", "disk_io"]
    assert parse_kinds("none") == []
    assert parse_kinds("all", ["cpu", "llc"]) == ["cpu", "llc"]
    with pytest.raises(ExperimentInputError, match="unknown kinds 'gpu'"):
        parse_kinds("cpu,gpu")
    with pytest.raises(ExperimentInputError, match="twice"):
        parse_kinds("cpu,cpu")
