"""The SVM's training and the evaluation metrics on constructed data."""

from __future__ import annotations

import numpy as np
import pytest

from firm.localize import MODEL_INPUTS, DatasetError
from firm.localize.train import TrainConfig, evaluate, train_svm


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(MODEL_INPUTS)))
    y = (x[:, 0] + 0.1 * rng.normal(size=n) > 1.0).astype(np.int64)
    return x, y


def test_training_learns_a_separable_rule_and_is_seeded() -> None:
    x, y = data(3000, 1)
    m1 = train_svm(x, y, TrainConfig(epochs=5, seed=3))
    m2 = train_svm(x, y, TrainConfig(epochs=5, seed=3))
    assert m1 == m2
    xt, yt = data(1000, 2)
    acc = float(np.mean((m1.decision(xt) > 0) == (yt == 1)))
    assert acc > 0.9
    assert m1.data["positives"] == int(y.sum())
    assert m1.config["class_weight"][1] > m1.config["class_weight"][0]


def test_a_feature_subset_is_kept_in_the_model() -> None:
    x, y = data(500, 4)
    m = train_svm(x, y, TrainConfig(epochs=2, features=("blame_rel", "own_rel")))
    assert m.features == ("blame_rel", "own_rel")
    assert m.decision(x).shape == (500,)
    with pytest.raises(ValueError, match="features"):
        TrainConfig(features=("nope",))


def test_one_class_or_no_rows_is_refused() -> None:
    x, _ = data(100, 5)
    with pytest.raises(DatasetError, match="only innocent"):
        train_svm(x, np.zeros(100, dtype=np.int64), TrainConfig())
    with pytest.raises(DatasetError, match="only culprits"):
        train_svm(x, np.ones(100, dtype=np.int64), TrainConfig())
    with pytest.raises(DatasetError, match="shape"):
        train_svm(x[:, :3], np.zeros(100, dtype=np.int64), TrainConfig())


def test_metrics_on_a_hand_made_dataset() -> None:
    d = {
        "y": np.array([1, 0, 0, 0, 1, 0]),
        "window": ["a", "a", "a", "b", "b", "b"],
        "service": list("xyzxyz"),
        "instance": list("xyzxyz"),
        "kind": ["cpu"] * 6,
    }
    scores = np.array([0.9, 0.1, 0.0, 0.5, 0.4, 0.3])  # a: culprit first; b: culprit second
    verdicts = np.array([True, False, False, True, False, False])
    r = evaluate("m", scores, verdicts, d)
    assert r.top1 == 0.5 and r.top3 == 1.0 and r.windows == 2
    assert r.precision == 0.5 and r.recall == 0.5 and r.accuracy == pytest.approx(4 / 6)
    assert r.per_kind["cpu"]["top1"] == 0.5
