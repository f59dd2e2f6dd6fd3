"""The SVM against the training-free baseline on recorded testbed campaigns it never saw.

``tests/data/localize/testbed/campaigns`` holds the windows of four campaigns of real anomalies on
the embedded testbed (campE-campH; recorded with ``firm localize-testbed-dataset --keep-traces``,
then ``firm localize-dataset --runs``; the commands are in its manifest and in
docs/localization.md). The issue's bar: on held-out testbed campaigns the SVM's top-1 is at least
10 points above the cp_share-growth baseline's, counted over SLO-violating windows with a culprit.
Nothing here is simulated, so the SVM can lose: the five-input SVM tried beside the shipped one
(``blame_sat`` and ``cp_share_vs_top`` added) leads by 7.4 points only in the last test's
measurement (3.7 with alpha 0.01), and fails it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from firm.localize import LinearModel
from firm.localize.localizer import DEFAULT_MODEL
from firm.localize.train import EvalResult, TrainConfig, compare, held_out_decisions, read_dataset

DATA = Path(__file__).resolve().parents[2] / "data" / "localize" / "testbed" / "campaigns"
BAR = 0.10
"""Points of top-1 (as a fraction) the SVM must lead the cp_share-growth baseline by."""


def by_method(results: list[EvalResult]) -> dict[str, EvalResult]:
    out = {r.method: r for r in results}
    print({m: (round(v.top1, 3), v.windows) for m, v in out.items()})
    return out


def dataset() -> dict[str, Any]:
    return read_dataset(DATA)


def test_the_recorded_campaigns_are_real_and_say_which_windows_violate_an_slo() -> None:
    d = dataset()
    assert sorted(set(d["graph"])) == ["campE", "campF", "campG", "campH"]
    assert set(d["source"]) == {"campaign"}
    assert len({w for w, y in zip(d["window"], d["y"], strict=True) if y == 1}) >= 30
    violating = {w for w, v in zip(d["window"], d["slo_violated"], strict=True) if v is True}
    assert 20 <= len(violating) < len(set(d["window"]))
    assert len(set(d["kind"])) >= 5


def test_shipped_model_leads_the_baseline_by_ten_points_on_the_campaign_it_never_saw() -> None:
    model = LinearModel.load(DEFAULT_MODEL)
    d = dataset()
    trained_on = set(model.data.get("trainGraphs", []))
    assert {"campE", "campF", "campG"} <= trained_on, "the shipped model says it was trained on others"
    held = np.asarray([g not in trained_on for g in d["graph"]])
    assert set(np.asarray(d["graph"])[held]) == {"campH"}
    r = by_method(compare(d, held, model, slo_violating=True))
    lead = r["svm"].top1 - r["cp_share_growth"].top1
    assert r["svm"].windows == r["cp_share_growth"].windows >= 5
    assert lead >= BAR, f"SVM {r['svm'].top1:.3f} vs baseline {r['cp_share_growth'].top1:.3f}"
    every = by_method(compare(d, held, model))
    assert every["svm"].top1 - every["cp_share_growth"].top1 >= BAR


def test_every_campaign_held_out_in_turn_the_svm_leads_by_ten_points() -> None:
    """Each campaign scored by an SVM with the shipped model's inputs and hyperparameters, trained
    on the other three campaigns alone (no simulated windows): 27 SLO-violating windows."""
    model = LinearModel.load(DEFAULT_MODEL)
    d = dataset()
    cfg = TrainConfig(
        epochs=int(model.config["epochs"]),
        alpha=float(model.config["alpha"]),
        seed=int(model.config["seed"]),
        features=model.features,
    )
    decisions, groups = held_out_decisions(d, cfg)
    assert len(groups) == 4
    r = by_method(compare(d, decisions=decisions, slo_violating=True))
    lead = r["svm"].top1 - r["cp_share_growth"].top1
    assert r["svm"].windows >= 20
    assert lead >= BAR, f"SVM {r['svm'].top1:.3f} vs baseline {r['cp_share_growth'].top1:.3f}"
