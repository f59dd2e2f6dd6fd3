"""The library API the control loop calls: Localizer, Ranking, InstanceScore."""

from __future__ import annotations

import json

import pytest

from firm.localize import EmptyWindowError, InstanceScore, Localizer, NoOverlapError, Ranking
from firm.tracing import Trace
from tests.unit.localize.helpers import fanout_trace, span


def window(n: int, tag: str, **kw: int) -> list[Trace]:
    return [
        fanout_trace(
            f"{tag}{i}",
            1_700_000_000_000_000 + i * 10_000,
            own_b=kw.get("own_b", 100) + (i * 7) % 13,
            resp_gap=kw.get("resp_gap", 50) + (i * 3) % 7,
        )
        for i in range(n)
    ]


def test_rank_sorts_by_score_and_names_the_culprit() -> None:
    r = Localizer.rules().rank(window(40, "w", resp_gap=5000), window(40, "r"))
    assert isinstance(r, Ranking)
    assert r.reference_used and "no_reference" not in r.flags
    assert all(isinstance(i, InstanceScore) for i in r.instances)
    scores = [i.score for i in r.instances]
    assert scores == sorted(scores, reverse=True)
    assert (r.instances[0].service, r.instances[0].instance) == ("backend", "backend")
    assert r.instances[0].culprit and not r.instances[1].culprit
    assert r.culprits == (r.instances[0],)
    assert r.method == "rules"


def test_as_dict_is_stable_json() -> None:
    r = Localizer.rules().rank(window(30, "w", own_b=3000), window(30, "r"))
    doc = json.loads(json.dumps(r.as_dict()))
    assert set(doc) == {"instances", "referenceUsed", "flags", "method", "window"}
    assert set(doc["instances"][0]) == {"service", "instance", "score", "culprit", "features"}
    assert doc["instances"][0]["service"] == "backend"


def test_without_a_reference_it_ranks_and_says_so() -> None:
    r = Localizer.rules().rank(window(30, "w"))
    assert not r.reference_used
    assert "no_reference" in r.flags
    assert len(r.instances) == 3


def test_an_empty_reference_is_flagged_not_fatal() -> None:
    r = Localizer.rules().rank(window(30, "w"), [])
    assert "empty_reference" in r.flags and not r.reference_used


def test_an_empty_window_is_an_error() -> None:
    with pytest.raises(EmptyWindowError, match="no traces"):
        Localizer.rules().rank([], window(3, "r"))


def test_a_reference_of_another_application_is_an_error() -> None:
    other = [Trace(f"o{i}", (span("x", "other", 0, 100),)) for i in range(5)]
    with pytest.raises(NoOverlapError, match="share no service instance"):
        Localizer.rules().rank(window(5, "w"), other)


def test_few_requests_and_partial_overlap_are_flagged() -> None:
    extra = [Trace("e", (span("x", "frontend", 0, 100, inst="frontend"), span("y", "new", 10, 50, "x")))]
    r = Localizer.rules().rank(window(5, "w") + extra, window(5, "r"))
    assert "few_requests" in r.flags and "partial_overlap" in r.flags


def test_load_without_a_path_works_out_of_the_box() -> None:
    loc = Localizer.load()
    assert loc.method in ("svm", "rules")
    r = loc.rank(window(30, "w", resp_gap=5000), window(30, "r"))
    assert r.instances[0].service == "backend"


def test_the_baseline_ranks_by_cp_share_growth() -> None:
    r = Localizer.baseline().rank(window(30, "w", own_b=3000), window(30, "r"))
    assert r.method == "cp_share_growth"
    assert r.instances[0].service == "backend"
