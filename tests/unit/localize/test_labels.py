"""Ground truth from campaign records: units, mid-window starts, concurrent anomalies, shared resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.firm.core.plugins.module_utils import anomaly
from firm.localize.errors import DatasetError
from firm.localize.labels import LabelledInjection, injections, label_window, read_campaign_file, to_us

T0_S = 1_764_500_000.0  # a present-day time in seconds
T0_US = int(T0_S * 1_000_000)
W = 60_000_000  # a one-minute window, us


def started(
    name: str, service: str, start_s: float, duration_s: float, kind: str = "cpu", **extra: Any
) -> dict[str, Any]:
    return {
        "event": "started",
        "campaign": "c1",
        "name": name,
        "kind": kind,
        "intensity": 80,
        "duration_s": duration_s,
        "labels": {"campaign": "c1", "service": service, **extra},
        "started_at": start_s,
        "expires_at": start_s + duration_s,
        "ended_at": None,
    }


@pytest.mark.parametrize(
    ("value", "scale"), [(T0_S, 1e6), (T0_S * 1e3, 1e3), (T0_S * 1e6, 1.0), (T0_S * 1e9, 1e-3)]
)
def test_times_in_any_unit_become_microseconds(value: float, scale: float) -> None:
    assert to_us(value) == pytest.approx(T0_US, abs=2)


@pytest.mark.parametrize("bad", [0.0, -5.0, float("nan"), 12345.0])
def test_implausible_times_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="time"):
        to_us(bad)


def test_an_anomaly_covering_half_the_window_labels_it() -> None:
    # Starts 30 s into the window and lasts past its end: covers exactly half.
    inj = injections([started("a", "geo", T0_S + 30, 120)])
    labels = label_window(T0_US, T0_US + W, [("geo", "geo"), ("rate", "rate")], inj)
    assert labels[("geo", "geo")].positive and labels[("geo", "geo")].target
    assert labels[("geo", "geo")].cover == pytest.approx(0.5)
    assert not labels[("rate", "rate")].positive


def test_an_anomaly_starting_late_in_the_window_does_not() -> None:
    inj = injections([started("a", "geo", T0_S + 45, 120)])
    labels = label_window(T0_US, T0_US + W, [("geo", "geo")], inj)
    assert not labels[("geo", "geo")].positive
    assert labels[("geo", "geo")].cover == pytest.approx(0.25)


def test_the_recorded_end_wins_over_the_planned_one() -> None:
    entries = [
        started("a", "geo", T0_S, 120),
        {"event": "ended", "campaign": "c1", "name": "a", "started_at": T0_S, "ended_at": T0_S + 20},
    ]
    inj = injections(entries)
    assert inj[0].end_us == T0_US + 20_000_000
    assert not label_window(T0_US, T0_US + W, [("geo", "geo")], inj)[("geo", "geo")].positive


def test_two_concurrent_anomalies_label_both_targets() -> None:
    inj = injections(
        [started("a", "geo", T0_S - 10, 120), started("b", "rate", T0_S, 60, kind="network_delay")]
    )
    labels = label_window(T0_US, T0_US + W, [("geo", "geo"), ("rate", "rate"), ("user", "user")], inj)
    assert labels[("geo", "geo")].positive and labels[("rate", "rate")].positive
    assert not labels[("user", "user")].positive
    assert labels[("rate", "rate")].kinds == ("network_delay",)


def test_two_short_anomalies_on_one_instance_add_up() -> None:
    inj = injections([started("a", "geo", T0_S, 20), started("b", "geo", T0_S + 30, 20)])
    label = label_window(T0_US, T0_US + W, [("geo", "geo")], inj)[("geo", "geo")]
    assert label.cover == pytest.approx(40 / 60)
    assert label.positive


def test_records_and_windows_in_different_units_line_up() -> None:
    in_ms = started("a", "geo", T0_S * 1e3, 120)
    in_ms["expires_at"] = (T0_S + 120) * 1e3
    in_ns = started("b", "rate", T0_S * 1e9, 120)
    in_ns["expires_at"] = (T0_S + 120) * 1e9
    labels = label_window(T0_US, T0_US + W, [("geo", "geo"), ("rate", "rate")], injections([in_ms, in_ns]))
    assert labels[("geo", "geo")].positive and labels[("rate", "rate")].positive


def test_beside_placement_labels_every_instance_sharing_the_resource() -> None:
    inj = injections([started("a", "geo", T0_S, 120, placement="beside")])
    cpu0 = {("geo", "geo"), ("rate", "rate")}

    def sharing(i: LabelledInjection) -> set[tuple[str, str]]:
        return cpu0 if i.target in cpu0 else set()

    labels = label_window(
        T0_US, T0_US + W, [("geo", "geo"), ("rate", "rate"), ("user", "user")], inj, sharing=sharing
    )
    assert labels[("geo", "geo")].positive and labels[("geo", "geo")].target
    assert labels[("rate", "rate")].positive and not labels[("rate", "rate")].target
    assert not labels[("user", "user")].positive


def test_inside_placement_labels_only_the_target_and_instances_are_named() -> None:
    inj = injections([started("a", "geo", T0_S, 120, placement="inside", instance="geo-2")])
    labels = label_window(
        T0_US, T0_US + W, [("geo", "geo-1"), ("geo", "geo-2")], inj, sharing=lambda i: {("geo", "geo-1")}
    )
    assert labels[("geo", "geo-2")].positive
    assert not labels[("geo", "geo-1")].positive


def test_node_wide_or_unnamed_injections_are_refused() -> None:
    with pytest.raises(DatasetError, match="names no service"):
        injections([started("a", "node", T0_S, 10)])
    bad = started("a", "geo", T0_S, 10)
    bad["started_at"] = "soon"
    with pytest.raises(DatasetError, match="started_at"):
        injections([bad])


def test_campaign_file(tmp_path: Path) -> None:
    f = tmp_path / "c1.jsonl"
    f.write_text(
        "\n".join(
            json.dumps(e)
            for e in [{"event": "planned", "campaign": "c1", "schedule": []}, started("a", "geo", T0_S, 120)]
        )
        + "\n"
    )
    assert [i.name for i in read_campaign_file(f)] == ["a"]
    f.write_text("{not json\n")
    with pytest.raises(DatasetError, match="not JSON"):
        read_campaign_file(f)


def test_window_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="empty"):
        label_window(T0_US, T0_US, [], [])
    with pytest.raises(ValueError, match="min_cover"):
        label_window(T0_US, T0_US + 1, [], [], min_cover=0)


@pytest.mark.parametrize("kind", anomaly.kind_names())
def test_without_a_placement_the_registry_decides_inside_or_beside(kind: str) -> None:
    [inj] = injections([started("a", "geo", T0_S, 120, kind=kind)])
    on_interface = anomaly.REGISTRY[kind].placement == "interface"
    assert inj.placement == ("inside" if on_interface else "beside")
