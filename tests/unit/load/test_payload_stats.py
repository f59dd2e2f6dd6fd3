"""Request bodies of the frontend contract; window statistics, SLO verdicts and the summary."""

from __future__ import annotations

import json
import random
import re

import pytest

from firm.load import RequestType, percentile, window_stats
from firm.load.payload import PayloadFactory
from firm.load.stats import Accounting

COMPOSE, HOME, USER = RequestType


def test_compose_post_bodies_follow_the_contract() -> None:
    factory = PayloadFactory(962, random.Random(1))
    posts = [json.loads(factory.body(COMPOSE, 17)) for _ in range(500)]
    for post in posts:
        assert set(post) == {"user_id", "text", "media"}
        assert post["user_id"] == 17
        assert isinstance(post["text"], str) and len(post["text"].split()) >= 5
        assert 0 <= len(post["media"]) <= 2
        for medium in post["media"]:
            assert set(medium) == {"id", "type"} and medium["type"] == "png" and isinstance(medium["id"], int)
    texts = [p["text"] for p in posts]
    urls = [t for t in texts if re.search(r"http://example\.com/[A-Za-z0-9]+", t)]
    mentions = [int(m) for t in texts for m in re.findall(r"@user_(\d+)", t)]
    assert 0.1 < len(urls) / len(posts) < 0.3
    assert mentions and all(0 <= m < 962 and m != 17 for m in mentions)
    assert {len(p["media"]) for p in posts} == {0, 1, 2}


@pytest.mark.parametrize("rt", [HOME, USER])
def test_timeline_bodies_follow_the_contract(rt: RequestType) -> None:
    body = json.loads(PayloadFactory(962, random.Random(1)).body(rt, 5))
    assert body == {"user_id": 5, "start": 0, "stop": 10}


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([*values, 1000.0], 99) == 100
    assert percentile([], 99) is None


def test_window_is_violated_when_p99_exceeds_the_slo() -> None:
    fast = [10.0] * 99
    ok = window_stats(1.0, HOME, [*fast, 30.0], 100, 0, slo_ms=50)
    slow = window_stats(1.0, HOME, [*fast[:97], 60.0, 70.0, 80.0], 100, 0, slo_ms=50)
    assert (ok.p99_ms, ok.violated) == (10.0, False)  # one request in 100 may exceed it
    assert (slow.p99_ms, slow.violated) == (70.0, True)
    assert slow.as_fields()["violated"] == "1" and ok.as_fields()["violated"] == "0"


def test_window_without_slo_or_requests_is_not_judged() -> None:
    assert window_stats(1.0, HOME, [99.0], 1, 0, slo_ms=None).violated is None
    empty = window_stats(1.0, HOME, [], 0, 0, slo_ms=50)
    assert (empty.violated, empty.p99_ms) == (None, None)
    assert empty.as_fields() == {
        "window_end": "1.000",
        "type": "read-home-timeline",
        "count": "0",
        "errors": "0",
        "p50_ms": "",
        "p99_ms": "",
        "slo_ms": "50.000",
        "violated": "",
    }


def test_window_where_everything_failed_is_violated() -> None:
    stats = window_stats(1.0, COMPOSE, [], 5, 5, slo_ms=50)
    assert stats.violated is True


def test_accounting_windows_by_completion_time_and_summarises() -> None:
    acct = Accounting([COMPOSE, HOME], {HOME: 50.0}, start_mono=100.0, start_epoch=1000.0, window_s=1.0)
    for _ in range(10):
        acct.sent(1)
    acct.sent(0)
    for i in range(8):
        acct.complete(1, 100.2 + i * 0.01, 5.0, "")  # window 0, fast
    acct.complete(1, 101.5, 400.0, "")  # window 1, slow: violates
    acct.complete(1, 101.6, 0.1, "overloaded")  # an error without latency
    acct.complete(0, 101.7, 3000.0, "timeout")  # a timeout counts with its latency
    assert acct.close_windows(100.9) == []  # window 0 has not ended yet
    (first,) = acct.close_windows(101.0)
    compose0, home0 = first
    assert (compose0.count, home0.count, home0.window_end, home0.violated) == (0, 8, 1001.0, False)
    (second,) = acct.close_windows(0.0, final=True)
    compose1, home1 = second
    assert (home1.count, home1.errors, home1.p99_ms, home1.violated) == (2, 1, 400.0, True)
    assert (compose1.count, compose1.errors, compose1.p99_ms, compose1.violated) == (1, 1, 3000.0, None)
    per_type, overall = acct.summaries()
    compose, home = per_type
    assert (home.sent, home.succeeded, dict(home.errors)) == (10, 9, {"overloaded": 1})
    assert home.success_ratio == 0.9
    assert (home.windows, home.violated_windows, home.slo_violation_ratio) == (2, 1, 0.5)
    assert home.max_ms == 400.0
    assert (compose.sent, compose.succeeded, compose.slo_violation_ratio) == (1, 0, None)
    assert (overall.sent, overall.succeeded, overall.windows, overall.violated_windows) == (11, 9, 2, 1)
    assert overall.max_ms == 3000.0
    assert overall.as_dict()["slo_violation_ratio"] == 0.5
