"""The training-free rules rank the faulty instance first on seeded fault windows of several apps.

The windows are the recorded DeathStarBench traces and two call graphs built in code, laid out
again with noise, a changed request mix, clock offsets, duplicates and uninstrumented callees,
and perturbed with each fault's signature (firm.localize.synthetic). Seeds are fixed, so the
figures are deterministic; the thresholds sit below what the rules reach on larger sets
(docs/localization.md), so the test guards against regressions, not against noise.
"""

from __future__ import annotations

import pytest

from firm.localize import Localizer
from firm.localize.synthetic import FAULT_KINDS, graphs, make_case
from tests.unit.localize.helpers import dsb_dir

CASES = 8


def _top1(graph: str, kind: str) -> float:
    tpl = graphs([graph], dsb_dir() if graph == "dsb" else None)[graph]
    loc = Localizer.rules()
    hits = 0
    for seed in range(CASES):
        case = make_case(tpl, kind, 7_000 + seed)
        window, reference = case.traces()
        top = loc.rank(window, reference).instances[0]
        hits += (top.service, top.instance) == case.culprit
    return hits / CASES


@pytest.mark.parametrize("kind", FAULT_KINDS)
@pytest.mark.parametrize("graph", ["dsb", "hotel"])
def test_rules_top1(graph: str, kind: str) -> None:
    assert _top1(graph, kind) >= 0.75


def test_firm_ri_alone_does_much_worse_than_the_rules() -> None:
    tpl = graphs(["hotel"])["hotel"]
    rules = ri = 0
    for seed in range(CASES):
        case = make_case(tpl, "network_delay", 9_000 + seed)
        window, reference = case.traces()
        ranking = Localizer.rules().rank(window, reference)
        top = ranking.instances[0]
        rules += (top.service, top.instance) == case.culprit
        by_ri = max(ranking.instances, key=lambda i: (i.features["ri"] or -2.0, i.service))
        ri += (by_ri.service, by_ri.instance) == case.culprit
    assert rules > ri
