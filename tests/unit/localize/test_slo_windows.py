"""SLO-violating windows: which windows the issue's top-1 counts, computed from the window's traces."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from firm.localize import MODEL_INPUTS, DatasetError
from firm.localize.testbed_runs import run_rows, slo_violated
from firm.localize.train import compare
from firm.tracing import Trace
from tests.unit.localize.helpers import chain_trace, span
from tests.unit.localize.test_testbed_runs import a_run, windows


def requests(durations_us: list[int], op: str = "compose_post") -> list[Trace]:
    return [
        Trace(f"t{k}", (span("a", "frontend", 1_000_000 + k * 1000, d, kind="server", op=op),))
        for k, d in enumerate(durations_us)
    ]


def test_a_window_violates_when_a_request_types_p99_is_above_its_slo() -> None:
    slo = {"compose-post": 250.0, "read-home-timeline": 120.0}
    fast = [100_000] * 100  # 100 ms
    assert slo_violated(requests(fast), slo) is False
    # 2 % of the requests at 400 ms: the p99 is above 250 ms (underscores read as dashes).
    assert slo_violated(requests(fast[:98] + [400_000] * 2), slo) is True
    # The same slow requests of a type without an SLO do not count; no typed request at all: None.
    mixed = requests(fast) + requests([400_000] * 5, op="other")
    assert slo_violated(mixed, slo) is False
    assert slo_violated(requests([400_000] * 5, op="other"), slo) is None
    assert slo_violated([], slo) is None


def test_the_root_span_names_the_request_type_and_gives_its_latency() -> None:
    trace = chain_trace("x", 1_000_000, own_b=300_000)  # root "GET /" lasts over 300 ms
    assert slo_violated([trace], {"GET /": 250.0}) is True
    assert slo_violated([trace], {"GET /": 10_000.0}) is False


def test_rows_of_a_run_carry_the_windows_verdict_only_when_asked() -> None:
    window, reference, ws, rs = windows(3, 400)
    run = a_run("c1", "cpu", "inside", ws, rs)
    assert all("slo_violated" not in r for r in run_rows(run, window, reference))
    assert {r["slo_violated"] for r in run_rows(run, window, reference, slo_ms={"GET /": 0.1})} == {True}
    assert {r["slo_violated"] for r in run_rows(run, window, reference, slo_ms={"GET /": 1e6})} == {False}


def dataset(violated: list[bool | None]) -> dict[str, Any]:
    """Two instances per window; the culprit is ``a``; the SVM's scores rank it first in every
    window, the rules' only in the windows that do not violate an SLO."""
    n = len(violated)
    x = np.zeros((2 * n, len(MODEL_INPUTS)))
    return {
        "window": [f"w{k}" for k in range(n) for _ in (0, 1)],
        "service": ["a", "b"] * n,
        "instance": ["a", "b"] * n,
        "kind": ["cpu"] * (2 * n),
        "y": np.array([1, 0] * n),
        "x": x,
        "rules_score": [v for k in range(n) for v in ((0.0, 1.0) if violated[k] else (1.0, 0.0))],
        "slo_violated": [v for v in violated for _ in (0, 1)],
        "path": "constructed",
    }


def test_compare_counts_only_slo_violating_windows_when_asked() -> None:
    d = dataset([True, True, False, None])
    decisions = np.array([1.0, 0.0] * 4)
    every = {r.method: r for r in compare(d, decisions=decisions)}
    assert every["rules"].windows == 4 and every["rules"].top1 == 0.5
    slo = {r.method: r for r in compare(d, decisions=decisions, slo_violating=True)}
    assert slo["rules"].windows == slo["svm"].windows == 2
    assert slo["rules"].top1 == 0.0 and slo["svm"].top1 == 1.0
    del d["slo_violated"]
    with pytest.raises(DatasetError, match="slo_violated"):
        compare(d, decisions=decisions, slo_violating=True)
