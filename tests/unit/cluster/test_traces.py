"""The Jaeger window source against a local HTTP server answering with the recorded DeathStarBench
traces (Jaeger's search is imitated by the test: traces with a span of the service that started
in the window; every trace served is recorded)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from firm.cluster.traces import JaegerBehindError, JaegerWindow
from firm.tracing.jaeger import JaegerClient
from tests.unit.cluster.fixture_server import DATA, FixtureServer, Reply, Request, data_file

FILES = [
    "compose-post_R1000__trace_01_shortest.json",
    "compose-post_R1000__trace_02_median.json",
    "compose-post_R1000__trace_03_longest.json",
    "compose-post_R500__trace_02_median.json",
]


def recorded_traces() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for name in FILES:
        found += json.loads(data_file(f"jaeger-traces/deathstarbench/{name}").read_text())["data"]
    return found


class Jaeger:
    """Serves /api/traces; ``hold`` makes it wait (a slow Jaeger) until ``release``."""

    def __init__(self, server: FixtureServer) -> None:
        self.traces = recorded_traces()
        self.gate = threading.Event()
        self.gate.set()
        server.route("GET", "/api/traces", self.search)

    def search(self, request: Request) -> Reply:
        self.gate.wait(30)
        service = request.query["service"][0]
        start, end = int(request.query["start"][0]), int(request.query["end"][0])
        limit = int(request.query["limit"][0])
        hits = [
            t
            for t in self.traces
            if any(
                t["processes"][s["processID"]]["serviceName"] == service and start <= s["startTime"] <= end
                for s in t["spans"]
            )
        ]
        return Reply(
            200,
            json.dumps({"data": hits[:limit], "total": 0, "limit": 0, "offset": 0, "errors": None}).encode(),
        )


@pytest.fixture
def jaeger(fixture_server: FixtureServer) -> Iterator[Jaeger]:
    assert DATA.exists() or pytest.skip("no recorded data")
    fake = Jaeger(fixture_server)
    yield fake
    fake.gate.set()


def test_one_window_per_read_completed_requests_only(fixture_server: FixtureServer, jaeger: Jaeger) -> None:
    source = JaegerWindow(
        JaegerClient(fixture_server.url, retries=0), ["nginx-web-server"], horizon_s=1.0, deadline_s=10.0
    )
    # the R1000 run's three traces end at ...693157936 (longest), ...693583792 (median), ...693987103 (shortest)
    first = source.read(1782331693100000, 1782331693600000)
    assert [t.trace_id for t in first] == ["174d3a708f62ad84", "082eca87d4103aa3"]
    second = source.read(1782331693600000, 1782331694100000)
    assert [t.trace_id for t in second] == ["268aaad8442de4c2"]
    query = fixture_server.sent("GET", "/api/traces")[0].query
    assert query["service"] == ["nginx-web-server"]
    assert int(query["start"][0]) == 1782331693100000 - 1_000_000  # the horizon catches earlier starts
    assert source.queries == 2


def test_back_pressure_when_jaeger_is_slow(fixture_server: FixtureServer, jaeger: Jaeger) -> None:
    source = JaegerWindow(
        JaegerClient(fixture_server.url, retries=0, timeout=30),
        ["nginx-web-server"],
        horizon_s=1.0,
        deadline_s=0.2,
        limit=400,
        min_limit=100,
    )
    jaeger.gate.clear()
    with pytest.raises(JaegerBehindError, match="no new query"):
        source.read(1782331693100000, 1782331693600000)
    with pytest.raises(JaegerBehindError):
        source.read(1782331693600000, 1782331694100000)
    assert len(fixture_server.sent("GET", "/api/traces")) <= 1  # no second query while the first is under way
    assert source.queries == 1 and source.behind == 2
    assert source.limit == 100  # halved twice
    jaeger.gate.set()
    late = source.read(1782331693100000, 1782331694100000)  # the answer of the query under way
    assert {t.trace_id for t in late} == {"174d3a708f62ad84", "082eca87d4103aa3"}
    fresh = source.read(1782331693100000, 1782331694100000)
    assert len(fresh) == 3 and source.queries == 2
    source.close()


def test_a_full_page_raises_the_limit(fixture_server: FixtureServer, jaeger: Jaeger) -> None:
    source = JaegerWindow(
        JaegerClient(fixture_server.url, retries=0),
        ["nginx-web-server"],
        horizon_s=1.0,
        deadline_s=10.0,
        limit=1,
        min_limit=1,
        max_limit=4,
    )
    source.read(1782331693100000, 1782331694100000)
    assert source.truncated == 1 and source.limit == 2
