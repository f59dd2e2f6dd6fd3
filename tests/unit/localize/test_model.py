"""The model file: round trip, and a clear refusal of every kind of bad file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from firm.localize import MODEL_INPUTS, LinearModel, Localizer, ModelError


def model() -> LinearModel:
    n = len(MODEL_INPUTS)
    return LinearModel(
        features=MODEL_INPUTS,
        mean=(0.0,) * n,
        scale=(1.0,) * n,
        coef=tuple(float(i == 0) for i in range(n)),
        intercept=-0.5,
        data={"source": "synthetic"},
    )


def write(tmp_path: Path, doc: Any) -> Path:
    p = tmp_path / "m.json"
    p.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return p


def test_save_then_load_gives_the_same_model(tmp_path: Path) -> None:
    m = model()
    m.save(tmp_path / "m.json")
    again = LinearModel.load(tmp_path / "m.json")
    assert again == m
    x = np.zeros((2, len(MODEL_INPUTS)))
    x[0, 0] = 2.0
    assert list(again.decision(x)) == [1.5, -0.5]
    assert Localizer.load(tmp_path / "m.json").method == "svm"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=99), "newer than this firm reads"),
        (lambda d: d.update(format="something-else"), "not a firm culprit model"),
        (lambda d: d.update(features=[*d["features"][:-1], "colour"]), "does not compute: colour"),
        (lambda d: d.update(coef=d["coef"][:-1]), "coef has"),
        (lambda d: d["scaler"].update(scale=[0.0] * len(MODEL_INPUTS)), "scale holds a value <= 0"),
        (lambda d: d.pop("intercept"), "intercept"),
        (lambda d: d.update(coef="many"), "coef"),
        (lambda d: d.update(version="1"), "version"),
        (lambda d: d.update(featureConfig={"trim": 3}), "featureConfig"),
    ],
)
def test_bad_model_files_are_refused_with_a_reason(tmp_path: Path, change: Any, message: str) -> None:
    doc = model().as_dict()
    change(doc)
    with pytest.raises(ModelError, match=message):
        LinearModel.load(write(tmp_path, doc))


@pytest.mark.parametrize("text", ["", "garbage", "[1, 2", "\x00\x01"])
def test_corrupt_files_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ModelError, match=r"not JSON|not a firm"):
        LinearModel.load(write(tmp_path, text))


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        Localizer.load(tmp_path / "nope.json")


def test_non_finite_weights_are_refused() -> None:
    m = model().as_dict()
    m["coef"][0] = float("nan")
    with pytest.raises(ModelError, match="not a finite number"):
        LinearModel.from_dict(json.loads(json.dumps(m)))
