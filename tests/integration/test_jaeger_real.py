"""Against a real Jaeger query service: runs only when FIRM_JAEGER_URL is set.

    FIRM_JAEGER_URL=http://localhost:16686 .venv/bin/pytest tests/integration/test_jaeger_real.py

Optional: FIRM_JAEGER_SERVICE (default: the first service Jaeger lists other than its own).
It only reads from Jaeger.
"""

from __future__ import annotations

import os
import time

import pytest

from firm.tracing import JaegerClient, critical_path, trace_features

URL = os.environ.get("FIRM_JAEGER_URL", "")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not URL, reason="set FIRM_JAEGER_URL to a Jaeger query service (e.g. http://localhost:16686)"
    ),
]


@pytest.fixture(scope="module")
def client() -> JaegerClient:
    return JaegerClient(URL, timeout=15, retries=2)


@pytest.fixture(scope="module")
def service(client: JaegerClient) -> str:
    wanted = os.environ.get("FIRM_JAEGER_SERVICE")
    services = client.services()
    if wanted:
        assert wanted in services, f"{wanted} is not among Jaeger's services: {services}"
        return wanted
    others = [s for s in services if not s.startswith("jaeger")] or services
    if not others:
        pytest.skip(f"Jaeger at {URL} has no traces of any service yet")
    return others[0]


def test_search_parses_and_gives_paths(client: JaegerClient, service: str) -> None:
    end = time.time_ns() // 1000
    traces = client.search(service, end - 3600 * 1_000_000, end, limit=50)
    if not traces:
        pytest.skip(f"no trace of {service} in the last hour")
    for t in traces:
        assert any(s.service == service for s in t.spans), "Jaeger returned a trace without the service"
        cp = critical_path(t)
        main = cp.main
        assert main.latency == main.root.duration
        assert sum(s.end - s.start for s in main.sections) == main.root.duration
    one = client.trace(traces[0].trace_id)
    assert one.trace_id == traces[0].trace_id
    window = trace_features(traces, min_samples=2)
    assert window.requests == len(traces)


def test_operations_of_the_service(client: JaegerClient, service: str) -> None:
    assert isinstance(client.operations(service), list)
