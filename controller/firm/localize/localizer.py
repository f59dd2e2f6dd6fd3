"""Rank the instances of a window by blame: the rules, FIRM's SVM, and the cp_share baseline.

:class:`Localizer` is what the control loop calls::

    loc = Localizer.load()              # the shipped model, or the rules when there is none
    ranking = loc.rank(window, reference)
    for inst in ranking.culprits: ...

**The rules** (training-free; see :mod:`firm.tracing.culprit_features` for the features): an
instance's score is its *relative blame* (ties, typically at zero when no growth stands out of the
noise, are broken by the same computed from growths not shrunk by noise): the growth of its own processing time and of its calls
to uninstrumented callees, plus its share of the growth of the request and response gaps of every
call it takes part in (shared between caller and callee by how consistently each side's other
calls grew), per request, over the reference's median latency. This ranks the instance a fault
sits in first for the signatures of CPU hogs (own time), CPU contention (late start of its server
spans, late pickup of its callees' responses) and network delay (late responses of calls into
it). An instance is a culprit when its score is at least ``min_score`` and at least
``culprit_vs_top`` of the top score. Without a reference, the score is the instance's share of
the time of an average request (own time, leaf calls and half of every gap it takes part in),
and culprits are instances holding at least ``min_share_alone`` of it: a ranking of where time
goes, not of what changed (flagged ``no_reference``).

**The SVM** (FIRM's Algorithm 2, with the inputs of :mod:`firm.localize.model`) scores with a
linear model read from a file; it needs a reference (without one the rules rank, flagged
``model_needs_reference``).

**The baseline** ranks by the growth of cp_share, the share of critical-path time (training-free,
FIRM's own feature compared across windows); it is what ``firm localize-eval`` measures against.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from firm.localize.errors import EmptyWindowError, NoOverlapError
from firm.localize.model import LinearModel, model_inputs
from firm.localize.ranking import InstanceScore, Ranking
from firm.localize.telemetry_features import TelemetryWindows, telemetry_features
from firm.tracing.culprit_features import CulpritFeatureConfig, CulpritWindow, culprit_features
from firm.tracing.model import Trace

__all__ = ["DEFAULT_MODEL", "Localizer", "RuleConfig", "rule_score"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
log = logging.getLogger(__name__)


def _default_model() -> Path:
    return Path(str(resources.files("firm.localize") / "models" / "default.json"))


DEFAULT_MODEL = _default_model()
"""The model shipped with firm (used by :meth:`Localizer.load` without a path, when present)."""


@dataclass(frozen=True)
class RuleConfig:
    """Thresholds of the training-free rules."""

    min_score: float = 0.01
    """Relative blame an instance needs to be a culprit (ratio of the reference's median latency)."""
    culprit_vs_top: float = 0.7
    """A culprit's score is at least this fraction of the top score (0..1)."""
    min_share_alone: float = 0.3
    """Without a reference: share of an average request's time that makes a culprit (0..1)."""
    min_requests: int = 20
    """Fewer requests than this in a window are flagged ``few_requests`` (count)."""
    tie_weight: float = 1e-6
    """Weight of the blame computed without noise shrinkage (``blame_raw_rel``) in the score: small
    enough to order only instances whose blame ties (typically at zero, when no growth stands out
    of the noise) (dimensionless)."""

    def __post_init__(self) -> None:
        for name in ("culprit_vs_top", "min_share_alone"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {getattr(self, name)}")
        if self.min_score < 0:
            raise ValueError(f"min_score must be >= 0, not {self.min_score}")
        if self.min_requests < 1:
            raise ValueError(f"min_requests must be >= 1, not {self.min_requests}")


def rule_score(features: Mapping[str, float | None], config: RuleConfig | None = None) -> float:
    """The rules' score of an instance compared with a reference: ``blame_rel + tie_weight x
    blame_raw_rel`` (ratio)."""
    rc = config or RuleConfig()
    return float(features.get("blame_rel") or 0.0) + rc.tie_weight * float(
        features.get("blame_raw_rel") or 0.0
    )


class Localizer:
    """Ranks the instances of a window of traces by how much they are to blame.

    Build it with :meth:`rules`, :meth:`baseline` or :meth:`load`; it holds no state between
    calls of :meth:`rank` and may be shared.
    """

    def __init__(
        self,
        method: str = "rules",
        *,
        model: LinearModel | None = None,
        features: CulpritFeatureConfig | None = None,
        rules: RuleConfig | None = None,
    ) -> None:
        if method not in ("rules", "svm", "cp_share_growth"):
            raise ValueError(f"method must be rules, svm or cp_share_growth, not {method!r}")
        if method == "svm" and model is None:
            raise ValueError("method 'svm' needs a model")
        self.method = method
        self.model = model
        self.feature_config = features or (model.feature_config_obj() if model else CulpritFeatureConfig())
        self.rule_config = rules or RuleConfig()

    @classmethod
    def rules(
        cls, features: CulpritFeatureConfig | None = None, rules: RuleConfig | None = None
    ) -> Localizer:
        """The training-free rule ranker."""
        return cls("rules", features=features, rules=rules)

    @classmethod
    def baseline(cls, features: CulpritFeatureConfig | None = None) -> Localizer:
        """The cp_share-growth baseline (training-free)."""
        return cls("cp_share_growth", features=features)

    @classmethod
    def load(cls, path: Path | None = None) -> Localizer:
        """The SVM of the model file at ``path``; with ``None``, the shipped model
        (:data:`DEFAULT_MODEL`) or, when firm ships none, the rules.

        Raises :class:`~firm.localize.errors.ModelError` for a missing, corrupt, newer or
        mismatched model file.
        """
        if path is None:
            if not DEFAULT_MODEL.is_file():
                return cls.rules()
            path = DEFAULT_MODEL
        model = LinearModel.load(path)
        return cls("svm", model=model)

    # -- Ranking --------------------------------------------------------------------------------

    def features(self, window: Sequence[Trace], reference: Sequence[Trace] | None = None) -> CulpritWindow:
        """The culprit features this localizer ranks by (see :func:`culprit_features`)."""
        return culprit_features(window, reference, self.feature_config, with_paths=True)

    def rank(
        self,
        window: Sequence[Trace],
        reference: Sequence[Trace] | None = None,
        telemetry: TelemetryWindows | None = None,
    ) -> Ranking:
        """Every instance of ``window``, most to blame first, compared with ``reference`` when given.

        ``telemetry`` (the instances' samples of the window and the reference, by instance name)
        adds the ``tm_*`` features of :mod:`firm.localize.telemetry_features` to the instances it
        names; it does not change the scores.

        ``window`` and ``reference`` may be :class:`~firm.tracing.culprit_features.WindowParts`
        (from a :class:`~firm.tracing.culprit_features.TracePartsCache`: each request's parts
        computed once, as the control loop does); the ranking is the same.

        Raises :class:`~firm.localize.errors.EmptyWindowError` when ``window`` has no traces and
        :class:`~firm.localize.errors.NoOverlapError` when ``reference`` has traces but no
        instance in common with ``window``. An empty ``reference`` ranks as if none was given
        (flagged ``empty_reference``).
        """
        flags: list[str] = []
        if not window:
            raise EmptyWindowError(
                "the window holds no traces, so no instance can be ranked",
                "give a window with traces (check the time range and the trace source)",
            )
        ref: Sequence[Trace] | None = reference
        if reference is not None and not reference:
            flags.append("empty_reference")
            ref = None
        cw = self.features(window, ref)
        return self.rank_features(cw, flags, telemetry)

    def rank_features(
        self, cw: CulpritWindow, flags: Sequence[str] = (), telemetry: TelemetryWindows | None = None
    ) -> Ranking:
        """Rank an already computed :class:`CulpritWindow` (see :meth:`rank`)."""
        out_flags = list(flags)
        extra = telemetry_features(telemetry.window, telemetry.reference) if telemetry is not None else {}
        if cw.requests == 0:
            raise EmptyWindowError(
                "the window holds no traces, so no instance can be ranked",
                "give a window with traces (check the time range and the trace source)",
            )
        rc = self.rule_config
        if cw.reference_used:
            seen = {
                (i.service, i.instance)
                for i in cw.instances
                if (i.features.get("calls_growth") is not None or i.features.get("own_ratio") is not None)
            }
            if not seen:
                raise NoOverlapError(
                    "the window and the reference share no service instance, so nothing can be compared",
                    "give a reference window from the same application (an instance is named by the first "
                    "non-empty of the process tags or resource attributes hostname, host.name, k8s.pod.name, "
                    "service.instance.id and ip, else by its service; docs/tracing.md), or leave the "
                    "reference out to rank the window alone",
                )
            if len(seen) < len(cw.instances):
                out_flags.append("partial_overlap")
            if (cw.reference_requests or 0) < rc.min_requests:
                out_flags.append("few_reference_requests")
            lat, lat_ref = cw.latency_p50_us or 0.0, cw.reference_latency_p50_us or 0.0
            if lat_ref > 0 and lat <= lat_ref:
                out_flags.append("no_latency_growth")
        else:
            out_flags.append("no_reference")
        if cw.requests < rc.min_requests:
            out_flags.append("few_requests")

        method = self.method
        if method == "svm" and not cw.reference_used:
            out_flags.append("model_needs_reference")
            method = "rules"
        if method == "cp_share_growth" and (not cw.reference_used or cw.paths is None):
            method = "rules"
        scores: list[tuple[float, bool]]
        if method == "svm":
            assert self.model is not None
            dec = self.model.decision(model_inputs(cw))
            scores = [(float(d), bool(d > self.model.threshold)) for d in dec]
        elif method == "cp_share_growth":
            vals = [float(i.features.get("cp_share_growth") or 0.0) for i in cw.instances]
            top = max(vals, default=0.0)
            scores = [(v, v > 0 and v >= rc.culprit_vs_top * top) for v in vals]
        elif cw.reference_used:
            vals = [rule_score(i.features, rc) for i in cw.instances]
            top = max(vals, default=0.0)
            scores = [(v, v >= rc.min_score and v >= rc.culprit_vs_top * top) for v in vals]
        else:
            vals = [float(i.features.get("blame_share") or 0.0) for i in cw.instances]
            scores = [(v, v >= rc.min_share_alone) for v in vals]
        items = [
            InstanceScore(i.service, i.instance, s, c, {**i.features, **extra.get(i.instance, {})})
            for i, (s, c) in zip(cw.instances, scores, strict=True)
        ]
        if telemetry is not None and not any(i.instance in extra for i in cw.instances):
            out_flags.append("no_telemetry_match")
        # Ties (e.g. at zero) are ordered by the rules' score, which breaks its own ties by growth
        # not shrunk by noise.
        items.sort(key=lambda x: (-x.score, -rule_score(x.features, rc), x.service, x.instance))
        window = {
            "requests": cw.requests,
            "referenceRequests": cw.reference_requests,
            "latencyP50": cw.latency_p50_us,
            "referenceLatencyP50": cw.reference_latency_p50_us,
            "notes": dict(cw.notes),
        }
        return Ranking(tuple(items), cw.reference_used, tuple(out_flags), method, window)

    def describe(self) -> dict[str, object]:
        """What this localizer is: method, configurations, and the model's data summary."""
        out: dict[str, object] = {
            "method": self.method,
            "features": asdict(self.feature_config),
            "rules": asdict(self.rule_config),
        }
        if self.model is not None:
            out["model"] = {
                "data": dict(self.model.data),
                "features": list(self.model.features),
                "version": self.model.version,
            }
        return out
