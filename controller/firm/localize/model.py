"""The culprit classifier's inputs and its model file.

**Inputs.** The SVM sees, per instance, numbers that do not depend on an application's absolute
timings (:data:`MODEL_INPUTS`, derived from :mod:`firm.tracing.culprit_features`):

- ``blame_rel``, ``blame_vs_top``, ``blame_share``: the instance's blame against the reference
  latency, the largest blame of the window and all blame of the window;
- ``own_rel``, ``in_rel``, ``out_rel``: its own-time, incoming-gap and outgoing-gap blame over the
  reference's median latency;
- ``log_own_ratio``: log of its own time per request now over then (0 when unknown);
- ``cp_share_growth``: growth of its share of critical-path time (FIRM's features, fixed);
- ``ri``, ``log_ci``: FIRM's RI and log CI (0 when not computable);
- ``log_latency_growth``: log of the window's median latency over the reference's (window-wide);
- ``req_in_rel``, ``resp_in_rel``, ``req_out_rel``, ``resp_out_rel``: growth of the request and
  response gaps of the calls into the instance and of its outgoing calls, per request, over the
  reference's median latency, *before* the growth is split between caller and callee (a lossy or
  slow interface delays both directions of the instance's own calls, which Jaeger charges to it);
- ``cp_share_vs_top``: ``cp_share_growth`` over the largest ``cp_share_growth`` of the window
  (-1..1; 0 when no instance's share grew): where the instance stands in its window;
- ``log_calls_growth``: log of its calls per trace now over then (0 when unknown);
- ``blame_sat``: ``blame_rel / (blame_rel + 0.05)`` (0..1): whether the instance's blame stands
  out (half-way at 5 % of the reference latency), not how large it is; beside ``cp_share_growth``
  it lets a linear score pick, among the instances whose growth stands out, the one whose share
  of the critical path grew most.

Inputs are only ever appended: a model names the inputs it uses, so older model files keep
loading, and a file naming an input this version does not compute is refused.

**File.** A model is one JSON file (small, diffable, no code runs when it is read)::

    {"format": "firm-culprit-svm", "version": 1, "features": [...],
     "scaler": {"mean": [...], "scale": [...]}, "coef": [...], "intercept": x,
     "threshold": 0.0, "config": {...}, "featureConfig": {...}, "data": {...}, "metrics": {...}}

A score is ``((x - mean) / scale) . coef + intercept``; an instance is a culprit when its score is
above ``threshold``. Reading refuses a file that is not JSON, of another format, of a newer version,
with features this code does not compute, or with lengths or numbers that do not fit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from firm.localize.errors import ModelError
from firm.tracing.culprit_features import CulpritFeatureConfig, CulpritWindow

__all__ = [
    "MODEL_FORMAT",
    "MODEL_INPUTS",
    "MODEL_VERSION",
    "LinearModel",
    "model_inputs",
]

MODEL_FORMAT = "firm-culprit-svm"
MODEL_VERSION = 1
MODEL_INPUTS: tuple[str, ...] = (
    "blame_rel",
    "blame_vs_top",
    "blame_share",
    "own_rel",
    "in_rel",
    "out_rel",
    "log_own_ratio",
    "cp_share_growth",
    "ri",
    "log_ci",
    "log_latency_growth",
    "req_in_rel",
    "resp_in_rel",
    "req_out_rel",
    "resp_out_rel",
    "cp_share_vs_top",
    "log_calls_growth",
    "blame_sat",
)
"""Names of the classifier's inputs, in order (see the module doc)."""
BLAME_SAT_AT = 0.05
"""``blame_rel`` at which ``blame_sat`` is one half (ratio of the reference's median latency)."""

_F = npt.NDArray[np.float64]


def _log(v: float | None, cap: float = 5.0) -> float:
    if v is None or not math.isfinite(v) or v <= 0:
        return 0.0
    return max(-cap, min(cap, math.log(v)))


def model_inputs(window: CulpritWindow) -> _F:
    """The inputs of every instance of ``window`` (rows in ``window.instances`` order), shape
    (instances, len(MODEL_INPUTS)). Needs a window computed against a reference."""
    lat = window.reference_latency_p50_us or window.latency_p50_us or 0.0
    top_growth = max(
        (
            float(v)
            for i in window.instances
            if (v := i.features.get("cp_share_growth")) is not None and math.isfinite(v)
        ),
        default=0.0,
    )
    rows: list[list[float]] = []
    for inst in window.instances:
        f = inst.features

        def g(name: str, f: Mapping[str, float | None] = f) -> float:
            v = f.get(name)
            return 0.0 if v is None or not math.isfinite(v) else float(v)

        def rel(name: str) -> float:
            return g(name) / lat if lat > 0 else 0.0

        rows.append(
            [
                g("blame_rel"),
                g("blame_vs_top"),
                g("blame_share"),
                rel("blame_own_us"),
                rel("blame_in_us"),
                rel("blame_out_us"),
                _log(f.get("own_ratio")),
                g("cp_share_growth"),
                g("ri"),
                _log(f.get("ci")),
                _log(f.get("latency_growth")),
                rel("req_in_growth_us"),
                rel("resp_in_growth_us"),
                rel("req_out_growth_us"),
                rel("resp_out_growth_us"),
                max(-1.0, min(1.0, g("cp_share_growth") / top_growth)) if top_growth > 0 else 0.0,
                _log(f.get("calls_growth")),
                max(0.0, g("blame_rel")) / (max(0.0, g("blame_rel")) + BLAME_SAT_AT),
            ]
        )
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(MODEL_INPUTS))


@dataclass(frozen=True)
class LinearModel:
    """A linear culprit classifier with its scaling, and what made it."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float = 0.0
    """Score above which an instance is a culprit."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """The training configuration (hyperparameters, seed)."""
    feature_config: Mapping[str, Any] = field(default_factory=dict)
    """The :class:`CulpritFeatureConfig` the training features were computed with."""
    data: Mapping[str, Any] = field(default_factory=dict)
    """Summary of the data that produced the model: source, rows, positives, windows, command."""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    """Held-out results measured when it was trained."""
    version: int = MODEL_VERSION

    def __post_init__(self) -> None:
        n = len(self.features)
        if not n:
            raise ModelError("the model has no features", "train it again with firm train-svm")
        unknown = [f for f in self.features if f not in MODEL_INPUTS]
        if unknown:
            raise ModelError(
                f"the model uses features this version of firm does not compute: {', '.join(unknown)}",
                "use a model trained by this version (firm train-svm), or the rules (no --model)",
            )
        for name in ("mean", "scale", "coef"):
            if len(getattr(self, name)) != n:
                raise ModelError(
                    f"the model's {name} has {len(getattr(self, name))} values for {n} features",
                    "the file is damaged: train the model again with firm train-svm",
                )
        values = [*self.mean, *self.scale, *self.coef, self.intercept, self.threshold]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ModelError(
                "the model holds a value that is not a finite number",
                "the file is damaged: train the model again with firm train-svm",
            )
        if any(s <= 0 for s in self.scale):
            raise ModelError(
                "the model's scale holds a value <= 0",
                "the file is damaged: train the model again with firm train-svm",
            )

    def feature_config_obj(self) -> CulpritFeatureConfig:
        """The feature configuration the model was trained with."""
        fc = dict(self.feature_config)
        try:
            return CulpritFeatureConfig(**fc)
        except (TypeError, ValueError) as err:
            raise ModelError(
                f"the model's featureConfig is not valid: {err}",
                "train the model again with this version of firm",
            ) from err

    def decision(self, x: _F) -> _F:
        """Scores of the rows of ``x`` (columns in :data:`MODEL_INPUTS` order), shape (rows,)."""
        cols = [MODEL_INPUTS.index(f) for f in self.features]
        z = (x[:, cols] - np.asarray(self.mean)) / np.asarray(self.scale)
        out: _F = z @ np.asarray(self.coef) + self.intercept
        return out

    def as_dict(self) -> dict[str, Any]:
        """The file's JSON content."""
        return {
            "format": MODEL_FORMAT,
            "version": self.version,
            "features": list(self.features),
            "scaler": {"mean": list(self.mean), "scale": list(self.scale)},
            "coef": list(self.coef),
            "intercept": self.intercept,
            "threshold": self.threshold,
            "config": dict(self.config),
            "featureConfig": dict(self.feature_config),
            "data": dict(self.data),
            "metrics": dict(self.metrics),
        }

    def save(self, path: Path) -> None:
        """Write the model to ``path`` (JSON), replacing it atomically."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=1, sort_keys=True) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> LinearModel:
        """Read a model file; :class:`ModelError` says what is wrong with a bad one."""
        try:
            text = path.read_text()
        except FileNotFoundError as err:
            raise ModelError(
                f"{path}: no such model file", "give the path of a file written by firm train-svm"
            ) from err
        except (OSError, UnicodeDecodeError) as err:
            raise ModelError(
                f"{path}: cannot read the model file: {err}", "check the path and its permissions"
            ) from err
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise ModelError(
                f"{path}: the model file is not JSON ({err.msg} at line {err.lineno})",
                "the file is damaged or not a firm model: train it again with firm train-svm",
            ) from err
        return cls.from_dict(doc, str(path))

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<model>") -> LinearModel:
        """A model from its JSON content (as :meth:`as_dict` writes it)."""
        if not isinstance(doc, dict) or doc.get("format") != MODEL_FORMAT:
            raise ModelError(
                f"{source}: not a firm culprit model (the field 'format' is not {MODEL_FORMAT!r})",
                "give a file written by firm train-svm",
            )
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ModelError(
                f"{source}: the field 'version' is missing or not an integer",
                "the file is damaged: train the model again with firm train-svm",
            )
        if version > MODEL_VERSION:
            raise ModelError(
                f"{source}: the model is of version {version}, newer than this firm reads ({MODEL_VERSION})",
                "upgrade firm, or train a model with this version (firm train-svm)",
            )
        if version < 1:
            raise ModelError(
                f"{source}: unknown model version {version}", "train the model again with firm train-svm"
            )
        try:
            feats = doc["features"]
            scaler = doc["scaler"]
            if not isinstance(feats, list) or not all(isinstance(f, str) for f in feats):
                raise TypeError("'features' must be a list of names")
            model = cls(
                features=tuple(feats),
                mean=tuple(_floats(scaler["mean"], "scaler.mean")),
                scale=tuple(_floats(scaler["scale"], "scaler.scale")),
                coef=tuple(_floats(doc["coef"], "coef")),
                intercept=_float(doc["intercept"], "intercept"),
                threshold=_float(doc.get("threshold", 0.0), "threshold"),
                config=_mapping(doc.get("config", {}), "config"),
                feature_config=_mapping(doc.get("featureConfig", {}), "featureConfig"),
                data=_mapping(doc.get("data", {}), "data"),
                metrics=_mapping(doc.get("metrics", {}), "metrics"),
                version=version,
            )
        except ModelError as err:
            raise ModelError(f"{source}: {err.message}", err.fix) from err
        except (KeyError, TypeError, ValueError) as err:
            field_name = err.args[0] if isinstance(err, KeyError) else str(err)
            raise ModelError(
                f"{source}: the model file lacks or mangles the field {field_name!r}",
                "the file is damaged: train the model again with firm train-svm",
            ) from err
        model.feature_config_obj()
        return model


def _float(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number")
    return float(v)


def _floats(v: Any, name: str) -> Sequence[float]:
    if not isinstance(v, list):
        raise TypeError(f"{name} must be a list of numbers")
    return [_float(x, name) for x in v]


def _mapping(v: Any, name: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise TypeError(f"{name} must be an object")
    return dict(v)
