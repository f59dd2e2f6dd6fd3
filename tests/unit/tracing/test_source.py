"""Choosing the trace source from a command line's inputs: files, a Jaeger query service, or a store."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils.errors import InvalidInputError
from firm.tracing.model import Trace
from firm.tracing.source import TraceQuery, TraceSourceError, read_traces
from tests.unit.tracing.shared_data import deathstarbench_files


class FakeStore:
    """A TraceSource that records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, int, int, str | None]] = []

    def fetch(
        self, service: str, start: int, end: int, limit: int = 100, operation: str | None = None
    ) -> list[Trace]:
        self.asked.append((service, start, end, limit, operation))
        return []


def test_files_are_read_as_one_window_with_their_sources() -> None:
    files = deathstarbench_files()[:2]
    found = read_traces(files)
    assert found.traces and set(found.sources) == {t.trace_id for t in found.traces}
    assert all(set(names) <= {str(f) for f in files} for names in found.sources.values())


def test_a_store_is_asked_for_the_last_window_of_the_service() -> None:
    store = FakeStore()
    read_traces([], store=store, query=TraceQuery("frontend", "login", "30s", 5), now_us=100_000_000)
    assert store.asked == [("frontend", 70_000_000, 100_000_000, 5, "login")]
    read_traces([], store=store, query=TraceQuery("frontend"), now_us=400_000_000)
    assert store.asked[-1] == ("frontend", 100_000_000, 400_000_000, 1000, None)  # 5m, 1000 by default


@pytest.mark.parametrize(
    ("files", "url", "query", "says", "option"),
    [
        ((), None, TraceQuery(), "give trace FILES, or --jaeger-url with --service", None),
        ((Path("x.json"),), "http://127.0.0.1:9", TraceQuery("s"), "not both", None),
        ((), "http://127.0.0.1:9", TraceQuery(), "--jaeger-url needs --service", "--service"),
        ((Path("x.json"),), None, TraceQuery(window="5m"), "apply to --jaeger-url only", None),
        ((), "http://127.0.0.1:9", TraceQuery("s", window="soon"), "", "--window"),
        ((), "http://127.0.0.1:9", TraceQuery("s", window="0s"), "longer than zero", "--window"),
    ],
)
def test_a_wrong_combination_is_refused_before_anything_is_read(
    files: tuple[Path, ...], url: str | None, query: TraceQuery, says: str, option: str | None
) -> None:
    with pytest.raises(TraceSourceError, match=says or None) as raised:
        read_traces(files, jaeger_url=url, query=query)
    assert raised.value.option == option and isinstance(raised.value, InvalidInputError)
