"""Kept testbed runs: saved, read back, labelled from their records, and evaluated by campaign."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.localize import train
from firm.localize.errors import DatasetError
from firm.localize.testbed_runs import KeptRun, load_runs, run_rows, save_run
from firm.tracing import Trace
from tests.unit.localize.helpers import chain_trace

T0_US = 1_700_000_000_000_000
"""A present-day time, microseconds since the epoch."""


def windows(
    seed: int, own_window: int, resp_window: int = 50, n: int = 40, t0: int = T0_US
) -> tuple[list[Trace], list[Trace], tuple[int, int], tuple[int, int]]:
    """A reference of ``n`` quiet chain requests from ``t0`` and a window of ``n`` in which the
    backend's own time is ``own_window`` us and the response gap into it ``resp_window`` us
    (seeded jitter)."""
    rng = np.random.default_rng(seed)
    ref_span = (t0, t0 + 10_000_000)
    win_span = (t0 + 12_000_000, t0 + 22_000_000)
    reference = [
        chain_trace(f"r{seed}-{k}", ref_span[0] + k * 200_000, own_b=100 + int(rng.integers(0, 10)))
        for k in range(n)
    ]
    window = [
        chain_trace(
            f"w{seed}-{k}",
            win_span[0] + k * 200_000,
            own_b=own_window + int(rng.integers(0, 10)),
            resp_gap=resp_window + int(rng.integers(0, 5)),
        )
        for k in range(n)
    ]
    return window, reference, win_span, ref_span


def a_run(
    campaign: str,
    kind: str,
    placement: str,
    win_span: tuple[int, int],
    ref_span: tuple[int, int],
    *,
    started_s: float | None = None,
    ended_s: float | None = None,
    shared: tuple[tuple[str, str], ...] = (),
) -> KeptRun:
    start = win_span[0] / 1e6 - 2 if started_s is None else started_s
    end = win_span[1] / 1e6 + 3 if ended_s is None else ended_s
    return KeptRun(
        id=f"{campaign}-{kind}-backend-{int(start)}",
        campaign=campaign,
        kind=kind,
        target="backend",
        instance="backend",
        intensity=60,
        placement=placement,
        record={"started_at": start, "ended_at": end, "expires_at": end + 5, "name": "testbed-" + kind},
        window=win_span,
        reference=ref_span,
        shared=shared,
        telemetry={"window": {"backend": [{"cpu_cores": 0.5}]}, "reference": {}},
    )


def labels_of(rows: list[dict[str, object]]) -> dict[object, object]:
    return {r["service"]: r["label"] for r in rows}


def test_a_kept_run_reads_back_and_labels_its_target(tmp_path: Path) -> None:
    window, reference, ws, rs = windows(1, own_window=400)
    run = a_run("c1", "network_loss", "inside", ws, rs)
    save_run(tmp_path, run, window, reference)
    [(back, win, ref)] = load_runs(tmp_path)
    assert back == run and len(win) == len(window) and len(ref) == len(reference)
    rows = run_rows(back, win, ref)
    assert labels_of(rows) == {"frontend": 0, "backend": 1}
    assert {r["graph"] for r in rows} == {"c1"} and {r["kind"] for r in rows} == {"network_loss"}
    assert [r["service"] for r in rows if r["target"]] == ["backend"]


def test_a_beside_run_labels_every_instance_sharing_the_resource(tmp_path: Path) -> None:
    window, reference, ws, rs = windows(2, own_window=400)
    shared = (("backend", "backend"), ("frontend", "frontend"))
    rows = run_rows(a_run("c1", "cpu", "beside", ws, rs, shared=shared), window, reference)
    assert labels_of(rows) == {"frontend": 1, "backend": 1}
    assert [r["service"] for r in rows if r["target"]] == ["backend"]


def test_an_anomaly_that_ended_early_labels_nothing(tmp_path: Path) -> None:
    window, reference, ws, rs = windows(3, own_window=400)
    # 10 s window from ws[0]: the anomaly covers its first 4 s only (< half).
    run = a_run("c1", "network_loss", "inside", ws, rs, ended_s=ws[0] / 1e6 + 4)
    assert labels_of(run_rows(run, window, reference)) == {"frontend": 0, "backend": 0}
    # Records in milliseconds line up the same way.
    ms = a_run("c1", "network_loss", "inside", ws, rs)
    ms = KeptRun(**{**ms.__dict__, "record": {**ms.record, "started_at": ms.record["started_at"] * 1000}})
    assert labels_of(run_rows(ms, window, reference))["backend"] == 1


def test_runs_without_traces_give_no_rows() -> None:
    _, reference, ws, rs = windows(4, own_window=400)
    assert run_rows(a_run("c1", "cpu", "inside", ws, rs), [], reference) == []


def test_damaged_or_missing_runs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no kept testbed runs"):
        load_runs(tmp_path)
    window, reference, ws, rs = windows(5, own_window=400)
    run = a_run("c1", "cpu", "inside", ws, rs)
    save_run(tmp_path, run, window, reference)
    path = tmp_path / f"{run.id}-run.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "version": 99}))
    with pytest.raises(DatasetError, match="version 99"):
        load_runs(tmp_path)
    del doc["window"]
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="window is missing"):
        load_runs(tmp_path)
    for field, value, said in [
        ("window", [5, "soon"], r"window\[1\] is 'soon'; give a whole number"),
        ("window", [9, 1], "window ends"),
        ("intensity", 250, "intensity is 250; give at most 100"),
        ("placement", "under", "placement is 'under'; give one of 'inside' or 'beside'"),
        ("record", [1], "record is \\[1\\]; give a mapping"),
    ]:
        path.write_text(json.dumps({**doc, "window": [1, 2], field: value}))
        with pytest.raises(DatasetError, match=said) as raised:
            load_runs(tmp_path)
        assert "Input should" not in str(raised.value) and "object is not" not in str(raised.value)
    path.write_text("{")
    with pytest.raises(DatasetError, match="cannot read"):
        load_runs(tmp_path)


def kept_campaigns(folder: Path) -> None:
    """Three campaigns of backend faults (own time or responses) and quiet-fault decoys."""
    for c in range(3):
        for k in range(3):
            seed = 10 * c + k
            own, resp = (400, 50) if k % 2 else (100, 600)
            window, reference, ws, rs = windows(
                seed, own_window=own, resp_window=resp, t0=T0_US + seed * 60_000_000
            )
            kind = "cpu" if k % 2 else "network_loss"
            save_run(folder / f"c{c}", a_run(f"c{c}", kind, "inside", ws, rs), window, reference)


def test_a_dataset_from_kept_runs_is_evaluated_on_held_out_campaigns(tmp_path: Path) -> None:
    kept_campaigns(tmp_path / "runs")
    ds = tmp_path / "ds"
    result = CliRunner().invoke(
        main, ["localize-dataset", "--runs", str(tmp_path / "runs"), "--out", str(ds)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["windows"] == 9 and summary["positives"] == 9
    manifest = json.loads((ds / "manifest.json").read_text())
    assert manifest["campaigns"] == ["c0", "c1", "c2"] and manifest["source"] == "testbed"
    data = train.read_dataset(ds)
    decisions, groups = train.held_out_decisions(
        data, train.TrainConfig(epochs=5, features=("blame_rel", "blame_vs_top"))
    )
    assert groups == ["c0", "c1", "c2"] and decisions.shape == (len(data["y"]),)
    result = CliRunner().invoke(
        main,
        [
            "localize-eval",
            "--dataset",
            str(ds),
            "--cross-validate",
            "--features",
            "blame_rel,blame_vs_top",
            "--epochs",
            "5",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["model"] == "cross-validated by campaign"
    assert set(doc["results"]) == {"svm", "rules", "cp_share_growth", "firm_ri"}
    assert doc["results"]["svm"]["windows"] == 9
    for r in doc["results"].values():
        assert 0.0 <= r["top1"] <= r["top3"] <= 1.0


def test_cross_validation_needs_two_campaigns(tmp_path: Path) -> None:
    window, reference, ws, rs = windows(7, own_window=400)
    save_run(tmp_path / "runs", a_run("only", "cpu", "inside", ws, rs), window, reference)
    ds = tmp_path / "ds"
    assert (
        CliRunner()
        .invoke(main, ["localize-dataset", "--runs", str(tmp_path / "runs"), "--out", str(ds)])
        .exit_code
        == 0
    )
    result = CliRunner().invoke(main, ["localize-eval", "--dataset", str(ds), "--cross-validate"])
    assert result.exit_code == 1 and "one graph only" in result.stderr
    model = ds.parent / "x.json"
    model.write_text("{}")
    result = CliRunner().invoke(
        main, ["localize-eval", "--dataset", str(ds), "--cross-validate", "--model", str(model)]
    )
    assert result.exit_code == 2 and "not both" in result.stderr


def test_train_svm_takes_several_datasets(tmp_path: Path) -> None:
    kept_campaigns(tmp_path / "runs")
    runs_ds, syn_ds = tmp_path / "runs-ds", tmp_path / "syn-ds"
    runner = CliRunner()
    assert (
        runner.invoke(
            main, ["localize-dataset", "--runs", str(tmp_path / "runs"), "--out", str(runs_ds)]
        ).exit_code
        == 0
    )
    args = ["localize-dataset", "--out", str(syn_ds), "--synthetic", "1", "--graphs", "hotel", "--seed", "3"]
    assert runner.invoke(main, args).exit_code == 0
    model = tmp_path / "m.json"
    args = ["train-svm", "--from", str(runs_ds), "--from", str(syn_ds), "--out", str(model)]
    result = runner.invoke(main, [*args, "--holdout-graph", "c2", "--epochs", "3"])
    assert result.exit_code == 0, result.output
    data = json.loads(model.read_text())["data"]
    assert data["source"] == "testbed+synthetic" and len(data["manifest"]["datasets"]) == 2
    both = train.concat_datasets([train.read_dataset(runs_ds), train.read_dataset(syn_ds)])
    assert data["rows"] + data["testRows"] == len(both["y"]) == both["x"].shape[0]
    result = runner.invoke(
        main, ["train-svm", "--from", str(runs_ds), "--from", str(runs_ds), "--out", str(model)]
    )
    assert result.exit_code == 1 and "also occur in another" in result.stderr
