"""Culprit localization: which service instance is to blame for a window's latency.

FIRM's second stage. :class:`Localizer` ranks every instance of a window of traces, compared with
a reference window from before the trouble when there is one, by training-free rules
(:meth:`Localizer.rules`), by a linear SVM read from a model file (:meth:`Localizer.load`), or by
the growth of the share of critical-path time (:meth:`Localizer.baseline`). See
``docs/localization.md``.
"""

from firm.localize.errors import DatasetError, EmptyWindowError, LocalizeError, ModelError, NoOverlapError
from firm.localize.localizer import DEFAULT_MODEL, Localizer, RuleConfig
from firm.localize.model import MODEL_INPUTS, LinearModel
from firm.localize.ranking import InstanceScore, Ranking

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_INPUTS",
    "DatasetError",
    "EmptyWindowError",
    "InstanceScore",
    "LinearModel",
    "LocalizeError",
    "Localizer",
    "ModelError",
    "NoOverlapError",
    "Ranking",
    "RuleConfig",
]
