"""Telemetry features of instances, and the localizer carrying them beside the trace features."""

from __future__ import annotations

from typing import Any

import pytest

from firm.localize import Localizer
from firm.localize.telemetry_features import TELEMETRY_FEATURE_DOCS, TelemetryWindows, telemetry_features
from firm.telemetry.model import Sample
from tests.unit.localize.helpers import chain_trace


def sample(
    name: str,
    t: float,
    cpu: float | None,
    thr: float | None = 0.0,
    net: float | None = 1000.0,
    wait: float | None = None,
) -> Sample:
    return Sample(
        instance=name,
        service=name,
        timestamp=t,
        interval_s=1.0,
        cpu_cores=cpu,
        cpu_throttled_ratio=thr,
        cpu_throttled_s_per_s=None,
        memory_bytes=None,
        disk_read_bps=10.0,
        disk_write_bps=30.0,
        net_rx_bps=net,
        net_tx_bps=None if net is None else net / 2,
        cpu_wait_s_per_s=wait,
    )


def test_window_means_and_growth_against_the_reference() -> None:
    window = {"backend": [sample("backend", 1, 0.4, 0.5, wait=0.3), sample("backend", 2, 0.6, 0.3, wait=0.5)]}
    reference = {"backend": [sample("backend", 0, 0.25, 0.1, wait=0.1).as_dict()]}  # mappings work too
    f = telemetry_features(window, reference)["backend"]
    assert set(f) == set(TELEMETRY_FEATURE_DOCS)
    assert f["tm_cpu_cores"] == pytest.approx(0.5) and f["tm_cpu_ratio"] == pytest.approx(2.0)
    assert f["tm_throttled"] == pytest.approx(0.4) and f["tm_throttled_growth"] == pytest.approx(0.3)
    assert f["tm_disk_bps"] == pytest.approx(40.0) and f["tm_disk_ratio"] == pytest.approx(1.0)
    assert f["tm_net_bps"] == pytest.approx(1500.0) and f["tm_samples"] == 2.0
    assert f["tm_cpu_wait"] == pytest.approx(0.4) and f["tm_cpu_wait_growth"] == pytest.approx(0.3)


def test_missing_figures_are_none_not_errors() -> None:
    window: dict[str, list[Any]] = {"a": [sample("a", 1, None, None, None)], "b": [{"cpu_cores": "x"}, {}]}
    f = telemetry_features(window, None)
    assert f["a"]["tm_cpu_cores"] is None and f["a"]["tm_cpu_ratio"] is None and f["a"]["tm_net_bps"] is None
    assert f["b"]["tm_cpu_cores"] is None and f["b"]["tm_samples"] == 2.0
    # A reference that used nothing gives no ratio rather than a division by zero.
    g = telemetry_features({"a": [sample("a", 1, 0.5)]}, {"a": [sample("a", 0, 0.0, net=0.0)]})["a"]
    assert g["tm_cpu_ratio"] is None and g["tm_net_ratio"] is None


def test_the_localizer_adds_telemetry_to_the_instances_it_names() -> None:
    ref = [chain_trace(f"r{k}", 1_000_000 * k) for k in range(30)]
    win = [chain_trace(f"w{k}", 1_000_000 * k, own_b=400) for k in range(30)]
    loc = Localizer.rules()
    plain = loc.rank(win, ref)
    tm = TelemetryWindows({"backend": [sample("backend", 1, 0.8)]}, {"backend": [sample("backend", 0, 0.4)]})
    ranked = loc.rank(win, ref, tm)
    assert [i.instance for i in ranked.instances] == [i.instance for i in plain.instances]
    assert [i.score for i in ranked.instances] == [i.score for i in plain.instances]
    by = {i.instance: i for i in ranked.instances}
    assert by["backend"].features["tm_cpu_ratio"] == pytest.approx(2.0)
    assert "tm_cpu_ratio" not in by["frontend"].features
    assert "no_telemetry_match" not in ranked.flags
    other = loc.rank(win, ref, TelemetryWindows({"elsewhere-0": [sample("elsewhere-0", 1, 0.1)]}))
    assert "no_telemetry_match" in other.flags
