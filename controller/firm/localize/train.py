"""Datasets of labelled instance-windows, the SVM's training, and the evaluation against the baselines.

**Dataset** (one row per instance per window; Parquet, read by pyarrow or pandas; a manifest
beside it): ``window`` (id), ``source`` (``synthetic`` or ``campaign``), ``graph`` / ``campaign``,
``kind`` (the fault of the window, ``none`` for a quiet one), ``service``, ``instance``, ``label``
(1 = culprit), ``target`` (the aim of the injection), the classifier's inputs
(:data:`~firm.localize.model.MODEL_INPUTS`) and the two training-free scores (``rules_score``:
relative blame; ``baseline_score``: growth of cp_share).

**Training** follows the original (FIRM, Section 3.3): scikit-learn ``SGDClassifier(loss="hinge",
penalty="l2")`` trained incrementally with ``partial_fit`` on shuffled mini-batches for several
epochs; the classes are weighted by their inverse frequency (culprits are rare), the inputs
standardised (mean and scale saved with the model).

**Evaluation** per row: accuracy, precision, recall and F1 of the culprit verdict; per window with
a culprit: top-1 and top-3 (the culprit among the highest scores of its window).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from firm import __version__
from firm.localize.errors import DatasetError
from firm.localize.localizer import RuleConfig, rule_score
from firm.localize.model import MODEL_INPUTS, LinearModel, model_inputs
from firm.localize.telemetry_features import TELEMETRY_FEATURE_DOCS
from firm.tracing.culprit_features import CulpritFeatureConfig, CulpritWindow

__all__ = [
    "DATASET_FORMAT",
    "EvalResult",
    "TrainConfig",
    "compare",
    "concat_datasets",
    "evaluate",
    "held_out_decisions",
    "read_dataset",
    "rows_of_window",
    "split_windows",
    "train_svm",
    "write_dataset",
]

DATASET_FORMAT = "firm-culprit-dataset"
DATASET_VERSION = 1
_META = ("window", "source", "graph", "kind", "service", "instance")
_F = npt.NDArray[np.float64]


def rows_of_window(
    window_id: str,
    cw: CulpritWindow,
    culprits: Mapping[tuple[str, str], bool],
    *,
    source: str,
    graph: str,
    kind: str,
    targets: Iterable[tuple[str, str]] = (),
    telemetry: Mapping[str, Mapping[str, float | None]] | None = None,
) -> list[dict[str, Any]]:
    """Dataset rows of one window: every instance of ``cw``, labelled 1 when ``culprits`` says so;
    with ``telemetry`` (instance name -> ``tm_*`` features), those as extra columns."""
    x = model_inputs(cw)
    tset = set(targets)
    rows = []
    for inst, vec in zip(cw.instances, x, strict=True):
        key = (inst.service, inst.instance)
        row: dict[str, Any] = {
            "window": window_id,
            "source": source,
            "graph": graph,
            "kind": kind,
            "service": inst.service,
            "instance": inst.instance,
            "label": int(bool(culprits.get(key, False))),
            "target": key in tset,
        }
        row.update({name: float(v) for name, v in zip(MODEL_INPUTS, vec, strict=True)})
        row["rules_score"] = rule_score(inst.features)
        row["baseline_score"] = float(inst.features.get("cp_share_growth") or 0.0)
        if telemetry is not None:
            tm = telemetry.get(inst.instance, {})
            row.update({name: tm.get(name) for name in TELEMETRY_FEATURE_DOCS})
        rows.append(row)
    return rows


def write_dataset(rows: Sequence[Mapping[str, Any]], folder: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``rows`` to ``folder/windows.parquet`` and ``folder/manifest.json``; returns the Parquet path."""
    if not rows:
        raise DatasetError("the dataset has no rows", "generate windows first (more cases, longer campaigns)")
    folder.mkdir(parents=True, exist_ok=True)
    cols = [*_META, "label", "target", *MODEL_INPUTS, "rules_score", "baseline_score"]
    cols += [c for c in TELEMETRY_FEATURE_DOCS if any(c in r for r in rows)]
    cols += [c for c in ("slo_violated",) if any(c in r for r in rows)]
    table = pa.table({c: [r.get(c) for r in rows] for c in cols})
    path = folder / "windows.parquet"
    pq.write_table(table, path)
    labels = [int(r["label"]) for r in rows]
    doc = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "firm": __version__,
        "rows": len(rows),
        "windows": len({r["window"] for r in rows}),
        "positives": sum(labels),
        "columns": cols,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        **dict(manifest),
    }
    (folder / "manifest.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


def read_dataset(path: Path) -> dict[str, Any]:
    """The columns of a dataset (a Parquet file or the folder holding ``windows.parquet``) as
    lists/arrays: ``x`` (rows, inputs), ``y``, ``window``, and every other column by name."""
    if path.is_dir():
        path = path / "windows.parquet"
    try:
        table = pq.read_table(path)
    except FileNotFoundError as err:
        raise DatasetError(
            f"{path}: no such dataset", "give the folder or file firm localize-dataset wrote"
        ) from err
    except (OSError, pa.ArrowException) as err:
        raise DatasetError(
            f"{path}: not a readable Parquet dataset ({err})",
            "give the folder or file firm localize-dataset wrote",
        ) from err
    missing = [
        c
        for c in (*_META, "label", *MODEL_INPUTS, "rules_score", "baseline_score")
        if c not in table.column_names
    ]
    if missing:
        raise DatasetError(
            f"{path}: the dataset lacks the columns {', '.join(missing)}",
            "generate it again with this version of firm (firm localize-dataset)",
        )
    cols = {c: table.column(c).to_pylist() for c in table.column_names}
    x = np.asarray([cols[c] for c in MODEL_INPUTS], dtype=np.float64).T.reshape(
        table.num_rows, len(MODEL_INPUTS)
    )
    if not np.all(np.isfinite(x)):
        raise DatasetError(
            f"{path}: the dataset holds values that are not finite numbers",
            "generate it again (firm localize-dataset)",
        )
    out: dict[str, Any] = dict(cols)
    out["x"] = x
    out["y"] = np.asarray(cols["label"], dtype=np.int64)
    out["path"] = str(path)
    return out


def concat_datasets(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several datasets (as :func:`read_dataset` returns them) as one: the rows of each in turn,
    the columns they all have. Raises :class:`DatasetError` when a window id occurs in two."""
    if len(parts) == 1:
        return dict(parts[0])
    seen: set[str] = set()
    for part in parts:
        ids = set(part["window"])
        if ids & seen:
            raise DatasetError(
                f"{part['path']}: windows of this dataset also occur in another one given",
                "give each dataset once",
            )
        seen |= ids
    common = set.intersection(*(set(p) for p in parts)) - {"x", "y", "path"}
    out: dict[str, Any] = {c: [v for p in parts for v in p[c]] for c in common}
    out["x"] = np.vstack([p["x"] for p in parts])
    out["y"] = np.concatenate([p["y"] for p in parts])
    out["path"] = str(parts[0]["path"])
    return out


def split_windows(
    data: Mapping[str, Any], test_share: float, seed: int, by: str = "window"
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Boolean masks (train, test) that keep every window (or every value of column ``by``) whole."""
    groups = sorted(set(data[by]))
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    n_test = max(1, round(len(groups) * test_share)) if len(groups) > 1 else 0
    test_groups = set(groups[:n_test])
    test = np.asarray([g in test_groups for g in data[by]], dtype=bool)
    return ~test, test


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of the SVM's training (the original's, FIRM Section 3.3, where it had them)."""

    epochs: int = 20
    """Passes over the data (count)."""
    batch: int = 1000
    """Rows per partial_fit call (count)."""
    alpha: float = 1e-4
    """L2 regularisation strength (scikit-learn's alpha, dimensionless)."""
    seed: int = 0
    """Seed of the shuffling and of the classifier."""
    threshold: float = 0.0
    """Decision value above which an instance is a culprit."""
    features: tuple[str, ...] = MODEL_INPUTS
    """The inputs the model uses (names from MODEL_INPUTS)."""
    average: bool = True
    """Average the weights over the updates (averaged SGD): the same optimum, far steadier
    weights from run to run than the last iterate (Polyak-Ruppert averaging)."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1:
            raise ValueError("epochs and batch must be at least 1")
        unknown = [f for f in self.features if f not in MODEL_INPUTS]
        if unknown or not self.features:
            raise ValueError(
                f"features must be names from {', '.join(MODEL_INPUTS)}; not {unknown or 'none'}"
            )
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, not {self.alpha}")


def train_svm(
    x: _F,
    y: npt.NDArray[np.int64],
    config: TrainConfig,
    *,
    feature_config: CulpritFeatureConfig | None = None,
    data_summary: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LinearModel:
    """Train the linear SVM on rows ``x`` (shape (n, len(MODEL_INPUTS))) with labels ``y`` (0/1),
    on the columns of ``config.features``.

    Raises :class:`DatasetError` for no rows, one class only, or shapes that do not fit.
    """
    from sklearn.linear_model import SGDClassifier  # type: ignore[import-untyped]  # noqa: PLC0415

    if x.ndim != 2 or x.shape[1] != len(MODEL_INPUTS) or x.shape[0] != y.shape[0]:
        raise DatasetError(
            f"the data has shape {x.shape} for {y.shape[0]} labels; expected (n, {len(MODEL_INPUTS)})",
            "build the dataset with firm localize-dataset",
        )
    n = x.shape[0]
    if n == 0:
        raise DatasetError("the dataset has no rows", "generate windows first")
    classes = np.unique(y)
    if classes.size < 2:
        only = "culprits" if classes.size and classes[0] == 1 else "innocent instances"
        raise DatasetError(
            f"the dataset holds only {only}, so nothing can be learnt",
            "add windows with faults and without (more campaigns, several targets)",
        )
    x = x[:, [MODEL_INPUTS.index(f) for f in config.features]]
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    z = (x - mean) / scale
    pos = int(y.sum())
    weights = {0: n / (2.0 * (n - pos)), 1: n / (2.0 * pos)}
    clf = SGDClassifier(
        loss="hinge",
        penalty="l2",
        alpha=config.alpha,
        class_weight=weights,
        random_state=config.seed,
        learning_rate="optimal",
        average=config.average,
    )
    rng = np.random.default_rng(config.seed)
    for epoch in range(config.epochs):
        order = rng.permutation(n)
        for lo in range(0, n, config.batch):
            idx = order[lo : lo + config.batch]
            clf.partial_fit(z[idx], y[idx], classes=np.array([0, 1]))
        if progress is not None:
            progress(epoch + 1, config.epochs)
    coef = [float(v) for v in clf.coef_[0]]
    intercept = float(clf.intercept_[0])
    if not all(math.isfinite(v) for v in [*coef, intercept]):
        raise DatasetError(
            "training diverged (the weights are not finite)",
            "lower --alpha's inverse (raise --alpha) or check the dataset for extreme values",
        )
    summary = {"rows": n, "positives": pos, **dict(data_summary or {})}
    return LinearModel(
        features=tuple(config.features),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        coef=tuple(coef),
        intercept=intercept,
        threshold=config.threshold,
        config={
            **asdict(config),
            "features": list(config.features),
            "classifier": "SGDClassifier(loss='hinge', penalty='l2')",
            "class_weight": weights,
            "python": platform.python_version(),
        },
        feature_config=asdict(feature_config or CulpritFeatureConfig()),
        data=summary,
    )


@dataclass(frozen=True)
class EvalResult:
    """How well one scorer did on a dataset."""

    method: str
    accuracy: float
    precision: float
    recall: float
    f1: float
    top1: float
    top3: float
    windows: int
    """Windows with at least one culprit (the denominator of top-1 / top-3)."""
    rows: int
    per_kind: Mapping[str, Mapping[str, float]]
    """Top-1 / top-3 and windows per fault kind."""

    def as_dict(self) -> dict[str, Any]:
        """Stable JSON form."""
        d = asdict(self)
        d["per_kind"] = {k: dict(v) for k, v in self.per_kind.items()}
        return d


def evaluate(
    method: str,
    scores: _F,
    verdicts: npt.NDArray[np.bool_],
    data: Mapping[str, Any],
    mask: npt.NDArray[np.bool_] | None = None,
    tiebreak: _F | None = None,
) -> EvalResult:
    """Row metrics of ``verdicts`` and window top-1 / top-3 of ``scores`` against ``data``'s labels
    (rows where ``mask`` is true); equal scores are ordered by ``tiebreak`` (higher first), then
    by service and instance, as :class:`~firm.localize.Localizer` orders them."""
    y = np.asarray(data["y"], dtype=np.int64)
    m = np.ones(y.shape[0], dtype=bool) if mask is None else mask
    yt, vt = y[m] == 1, verdicts[m]
    tp = int(np.sum(yt & vt))
    fp = int(np.sum(~yt & vt))
    fn = int(np.sum(yt & ~vt))
    acc = float(np.mean(yt == vt)) if yt.size else 0.0
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    groups: dict[str, list[int]] = {}
    for i in np.flatnonzero(m):
        groups.setdefault(data["window"][i], []).append(int(i))
    hits1 = hits3 = total = 0
    kinds: dict[str, list[int]] = {}
    for rows in groups.values():
        if not any(y[i] == 1 for i in rows):
            continue
        order = sorted(
            rows,
            key=lambda i: (
                -scores[i],
                -(tiebreak[i] if tiebreak is not None else 0.0),
                data["service"][i],
                data["instance"][i],
            ),
        )
        h1 = int(y[order[0]] == 1)
        h3 = int(any(y[i] == 1 for i in order[:3]))
        hits1 += h1
        hits3 += h3
        total += 1
        k = kinds.setdefault(str(data["kind"][rows[0]]), [0, 0, 0])
        k[0] += h1
        k[1] += h3
        k[2] += 1
    per_kind = {
        k: {"top1": v[0] / v[2], "top3": v[1] / v[2], "windows": float(v[2])}
        for k, v in sorted(kinds.items())
    }
    return EvalResult(
        method,
        acc,
        prec,
        rec,
        f1,
        hits1 / total if total else 0.0,
        hits3 / total if total else 0.0,
        total,
        int(m.sum()),
        per_kind,
    )


def held_out_decisions(
    data: Mapping[str, Any],
    config: TrainConfig,
    by: str = "graph",
    extra: Mapping[str, Any] | None = None,
) -> tuple[_F, list[str]]:
    """Leave-one-group-out decisions: for every value of column ``by`` (a campaign), an SVM trained
    on the rows of every other value (and on every row of ``extra``, a dataset that is trained on
    but never scored) scores that value's rows. Returns the decisions (one per row, each from a
    model that never saw its campaign) and the groups.

    Raises :class:`DatasetError` for fewer than two groups or a fold whose training rows hold one
    class only.
    """
    groups = sorted(set(data[by]))
    if len(groups) < 2:
        raise DatasetError(
            f"the dataset holds one {by} only ({groups[0] if groups else 'none'}), so none can be held out",
            "record several campaigns (firm localize-testbed-dataset --campaign NAME)",
        )
    x, y = data["x"], data["y"]
    column = np.asarray(data[by])
    out = np.zeros(y.shape[0], dtype=np.float64)
    ex = extra["x"] if extra is not None else x[:0]
    ey = extra["y"] if extra is not None else y[:0]
    for g in groups:
        test = column == g
        model = train_svm(np.vstack([x[~test], ex]), np.concatenate([y[~test], ey]), config)
        out[test] = model.decision(x[test])
    return out, groups


def _verdicts(scores: _F, data: Mapping[str, Any], min_score: float, vs_top: float) -> npt.NDArray[np.bool_]:
    """Culprit verdicts of a training-free score: at least ``min_score``, above zero and at least
    ``vs_top`` of its window's top score."""
    top: dict[str, float] = {}
    for w, s in zip(data["window"], scores, strict=True):
        top[w] = max(top.get(w, float("-inf")), float(s))
    return np.asarray(
        [
            s >= min_score and s > 0 and s >= vs_top * top[w]
            for w, s in zip(data["window"], scores, strict=True)
        ],
        dtype=bool,
    )


def compare(
    data: Mapping[str, Any],
    mask: npt.NDArray[np.bool_] | None = None,
    model: LinearModel | None = None,
    decisions: _F | None = None,
    *,
    slo_violating: bool = False,
) -> list[EvalResult]:
    """Evaluations, on the rows of ``mask`` (all rows when None), of the SVM (``model``'s decisions,
    or ``decisions`` given per row; left out when neither is given), the rules (``rules_score``),
    the cp_share-growth baseline (ties by the rules' score) and FIRM's RI (ties by CI), as
    ``firm localize-eval`` prints them. Every scorer's equal scores are ordered as
    :class:`~firm.localize.Localizer` orders them. With ``slo_violating``, only the windows whose
    ``slo_violated`` is true count (the issue's "top-1 over SLO-violating windows"); a dataset
    without that column (only testbed runs have it) raises :class:`DatasetError`."""
    rc = RuleConfig()
    if slo_violating:
        if "slo_violated" not in data:
            raise DatasetError(
                f"{data.get('path', 'the dataset')}: no slo_violated column, so SLO-violating windows "
                "are not known",
                "build it from kept testbed runs with this firm (firm localize-dataset --runs DIR)",
            )
        violating = np.asarray([v is True for v in data["slo_violated"]], dtype=bool)
        mask = violating if mask is None else mask & violating
    out = []
    rules = np.asarray(data["rules_score"], dtype=np.float64)
    if model is not None or decisions is not None:
        dec = model.decision(data["x"]) if decisions is None else decisions  # type: ignore[union-attr]
        threshold = model.threshold if model is not None else 0.0
        out.append(evaluate("svm", dec, dec > threshold, data, mask, tiebreak=rules))
    out.append(evaluate("rules", rules, _verdicts(rules, data, rc.min_score, rc.culprit_vs_top), data, mask))
    for method, score, tie in (
        ("cp_share_growth", "cp_share_growth", "rules_score"),
        ("firm_ri", "ri", "log_ci"),
    ):
        col = data["x"][:, MODEL_INPUTS.index(score)] if score in MODEL_INPUTS else data[score]
        values = np.asarray(col, dtype=np.float64)
        ties = data["x"][:, MODEL_INPUTS.index(tie)] if tie in MODEL_INPUTS else data[tie]
        out.append(
            evaluate(
                method,
                values,
                _verdicts(values, data, 1e-9, rc.culprit_vs_top),
                data,
                mask,
                tiebreak=np.asarray(ties, dtype=np.float64),
            )
        )
    return out
