"""The fast reader (Jaeger JSON straight into columns) gives what the reference parser gives.

Without tags, :class:`TraceReader` decodes a Jaeger trace that needs no repair straight into
columns (:class:`firm.tracing.columns.ColumnTrace`) and any other through the reference path
(the full decode and the repairs, warnings and errors of :mod:`firm.tracing.parse`). The reader
with tags always takes the reference path; span equality ignores tags, so the two readers must
give equal traces, warnings, diagnostics and sources, or the same error, on every input: the
shared DeathStarBench and field traces, and random documents with every irregularity the reference
path repairs or refuses (hypothesis). Critical paths of column traces equal the reference walk's.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firm.tracing import TraceParseError, critical_path_walk, critical_paths
from firm.tracing.columns import ColumnTrace
from firm.tracing.model import Trace
from firm.tracing.parse import TraceReader
from firm.tracing.source import read_files
from firm.tracing.stream import JsonArraySplitter, StreamOptions, trace_batches, write_critical_paths
from tests.unit.tracing.shared_data import data_dir, deathstarbench_files

cp_module = sys.modules["firm.tracing.critical_path"]


def _read(text: bytes, *, fast: bool) -> tuple[list[Trace], list[str], dict[str, list[str]]] | str:
    """Traces, diagnostics and sources of ``text`` read whole; or the error's message. ``fast``:
    without tags, columns on; else with tags (always the reference path)."""
    reader = TraceReader(keep_tags=not fast)
    try:
        reader.read_text(text, "doc.json")
        traces = reader.traces()
    except TraceParseError as err:
        return f"error: {err}"
    return traces, list(reader.diagnostics), {t.trace_id: reader.sources(t.trace_id) for t in traces}


def _read_entries(text: bytes, *, fast: bool) -> tuple[list[Trace], list[str]] | str:
    """As the streaming reader reads a large file: the entries split out, then read one by one."""
    splitter = JsonArraySplitter("data", limit=len(text) + 1)
    try:
        entries = splitter.feed(text)
        splitter.close()
    except ValueError as err:
        return f"split: {err}"
    reader = TraceReader(keep_tags=not fast)
    try:
        reader.read_jaeger_entries(entries, "doc.json", 0)
        traces = reader.traces()
    except TraceParseError as err:
        return f"error: {err}"
    return traces, list(reader.diagnostics)


def _same_paths(fast: list[Trace], ref: list[Trace]) -> None:
    """Critical paths of the column traces (arrays, whole window) against the walk on the
    reference traces; a cycle is the same error on both."""
    try:
        got = cp_module._batch_paths(fast, 0)
    except TraceParseError as err:
        with pytest.raises(TraceParseError) as ref_err:
            cp_module._batch_paths(ref, 0)
        assert str(err) == str(ref_err.value)
        return
    assert len(got) == len(ref)
    for g, t in zip(got, ref, strict=True):
        want = critical_path_walk(t)
        assert g.as_dict() == want.as_dict()
        assert [r.instance_times() for r in g.roots] == [r.instance_times() for r in want.roots]
        assert [r.steps for r in g.roots] == [r.steps for r in want.roots]
        assert g.sections == want.sections


# -- Shared data -------------------------------------------------------------------------------


def _shared_files() -> list[Path]:
    field = sorted(p for p in data_dir("field-traces").iterdir() if p.suffix in (".json", ".jsonl"))
    return deathstarbench_files() + field


def test_shared_files_read_alike_and_deathstarbench_takes_the_column_path() -> None:
    files = _shared_files()
    assert files
    for path in files:
        text = path.read_bytes()
        fast, ref = _read(text, fast=True), _read(text, fast=False)
        assert fast == ref, path.name
        if isinstance(fast, tuple):
            assert isinstance(ref, tuple)
            _same_paths(fast[0], ref[0])
    dsb = _read(deathstarbench_files()[0].read_bytes(), fast=True)
    assert isinstance(dsb, tuple) and dsb[0] and all(isinstance(t, ColumnTrace) for t in dsb[0])


def test_shared_files_read_alike_in_small_batches() -> None:
    """All shared files as one input, in batches far smaller than the files (each file split
    into its traces, the entries read together): columns on and off give the same batches."""
    files = [p for p in _shared_files() if not p.name.endswith(".jsonl")]

    def batches(columns: bool) -> list[tuple[list[Trace], list[str], dict[str, list[str]]]]:
        options = StreamOptions(batch_bytes=3_000, columns=columns)
        return [(b.traces, b.diagnostics, b.sources) for b in trace_batches(files, options)]

    got, want = batches(True), batches(False)
    assert len(got) > 1
    assert got == want
    assert any(isinstance(t, ColumnTrace) for traces, _, _ in got for t in traces)


def test_critical_path_output_is_the_reference_output(tmp_path: Path) -> None:
    files = deathstarbench_files()
    out: list[bytes] = []
    write_critical_paths(files, out.append, indent=True, options=StreamOptions(batch_bytes=20_000))
    doc = json.loads(b"".join(out))
    want = []
    for t in read_files(files).traces:
        want.append(critical_path_walk(t).as_dict())
    assert [{k: v for k, v in e.items() if k not in ("source", "warnings")} for e in doc["traces"]] == want


# -- Random documents --------------------------------------------------------------------------

_NUMBERS = st.sampled_from(
    [
        -1,
        0,
        2**53,
        2**53 - 1,
        2**63,
        2**64 + 5,
        7 * 24 * 3600 * 1_000_000,
        7 * 24 * 3600 * 1_000_000 + 1,
        10**25,
        "12",
        "x",
        3.0,
        2.5,
        math.nan,
        math.inf,
        "NaN",
        True,
        None,
    ]
)
"""Irregular starts and durations: out of range, at the edges, of other types."""


@st.composite
def _span(draw: st.DrawFn, i: int, trace_id: str, ids: list[str], rate: int) -> dict[str, Any]:
    """A span; each of its fields is irregular with probability ``rate`` %."""

    def odd() -> bool:
        return draw(st.integers(0, 99)) < rate

    own = draw(st.sampled_from(ids)) if ids and odd() else f"s{trace_id}{i}"
    span: dict[str, Any] = {"traceID": trace_id, "spanID": own}
    for key in ("startTime", "duration"):
        if odd():
            if draw(st.booleans()):
                span[key] = draw(_NUMBERS)
            continue  # missing
        span[key] = draw(st.integers(0, 80))
    ref_kind = "none" if not i else "child"
    if odd() or draw(st.integers(0, 9)) == 0:
        ref_kind = draw(
            st.sampled_from(
                [
                    "none",
                    "empty",
                    "follows",
                    "lower",
                    "two",
                    "cross",
                    "missing",
                    "self",
                    "null",
                    "parent",
                    "bad",
                ]
            )
        )
    target = draw(st.sampled_from(ids)) if ids else "nobody"
    refs: Any = None
    if ref_kind == "child":
        refs = [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": target}]
    elif ref_kind == "empty":
        refs = []
    elif ref_kind == "follows":
        refs = [{"refType": "FOLLOWS_FROM", "traceID": trace_id, "spanID": target}]
    elif ref_kind == "lower":
        refs = [{"refType": "child_of", "spanID": target}]
    elif ref_kind == "two":
        refs = [{"refType": "FOLLOWS_FROM", "spanID": target}, {"refType": "CHILD_OF", "spanID": target}]
    elif ref_kind == "cross":
        refs = [{"refType": "CHILD_OF", "traceID": "other", "spanID": target}]
    elif ref_kind == "missing":
        refs = [{"refType": "CHILD_OF", "spanID": "gone"}]
    elif ref_kind == "self":
        refs = [{"refType": "CHILD_OF", "spanID": own}]
    elif ref_kind == "null":
        refs = [{"refType": None, "spanID": target}]
    elif ref_kind == "parent":
        span["parentSpanID"] = draw(st.sampled_from([target, "gone", "", 5]))
    elif ref_kind == "bad":
        refs = draw(st.sampled_from(["x", {"spanID": target}, [5]]))
    if refs is not None:
        span["references"] = refs
    proc = draw(st.sampled_from(["p1", "p2", "p3", None, "inline"] if odd() else ["p1", "p2"]))
    if proc == "inline":
        span["processID"] = "p1"
        span["process"] = {"serviceName": "inl", "tags": [{"key": "hostname", "value": "h9"}]}
    elif proc is not None:
        span["processID"] = proc
    op = draw(st.sampled_from([None, 7, "missing"] if odd() else ["op", "op2", "missing"]))
    if op != "missing":
        span["operationName"] = op
    kind = draw(st.sampled_from([None, None, "server", "client", "SERVER", 3]))
    span["tags"] = [{"key": "x", "type": "string", "value": "y"}] + (
        [{"key": "span.kind", "type": "string", "value": kind}] if kind is not None else []
    )
    return span


@st.composite
def _trace(draw: st.DrawFn, trace_id: str, rate: int) -> dict[str, Any]:
    n = draw(st.integers(0, 12) if draw(st.integers(0, 99)) < rate else st.integers(1, 12))
    spans: list[dict[str, Any]] = []
    ids: list[str] = []
    for i in range(n):
        span = draw(_span(i, trace_id, ids, rate))
        spans.append(span)
        ids.append(span["spanID"])
        if draw(st.integers(0, 99)) < rate:
            spans.append(dict(span))  # an exact repeat
    processes: Any = {
        "p1": {"serviceName": "a", "tags": [{"key": "hostname", "value": "h1"}]},
        "p2": {
            "serviceName": "b",
            "tags": [{"key": "ip", "value": "10.0.0.2"}, {"key": "host.name", "value": ""}],
        },
    }
    if draw(st.integers(0, 199)) < rate:
        processes = draw(st.sampled_from([None, [], {"p1": {"tags": []}}, {"p1": {"serviceName": 5}}]))
    doc: dict[str, Any] = {"traceID": trace_id, "spans": spans, "processes": processes, "warnings": None}
    if draw(st.integers(0, 299)) < rate:
        doc["traceID"] = draw(st.sampled_from(["", None, 5]))
    return doc


@st.composite
def _document(draw: st.DrawFn) -> bytes:
    pool = ["00000000000000000000000000000001", "0000000000000001", "abc", "ABC", "t2", "t3", "t4"]
    count = draw(st.integers(1, 5))
    rate = draw(st.sampled_from([0, 0, 1, 3, 10, 30]))  # % of irregular fields
    traces = [draw(_trace(draw(st.sampled_from(pool)), rate)) for _ in range(count)]
    if draw(st.integers(0, 9)) == 0:
        return json.dumps(traces).encode()
    doc: dict[str, Any] = {"data": traces}
    if draw(st.booleans()):
        doc["errors"] = draw(
            st.sampled_from([None, [{"code": 5, "msg": "partial", "traceID": "ABC"}], "oops"])
        )
    return json.dumps(doc).encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_document())
def test_random_documents_read_alike(text: bytes) -> None:
    fast, ref = _read(text, fast=True), _read(text, fast=False)
    assert fast == ref
    if isinstance(fast, tuple):
        assert isinstance(ref, tuple)
        _same_paths(fast[0], ref[0])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_document())
def test_random_documents_read_alike_entry_by_entry(text: bytes) -> None:
    assert _read_entries(text, fast=True) == _read_entries(text, fast=False)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_document())
def test_columns_off_is_the_reference_path_without_tags(text: bytes) -> None:
    """``columns=False`` (the benchmark's baseline) reads as the reader with tags does."""
    reader = TraceReader(keep_tags=False, columns=False)
    try:
        reader.read_text(text, "doc.json")
        got: object = (reader.traces(), list(reader.diagnostics))
    except TraceParseError as err:
        got = f"error: {err}"
    assert not isinstance(got, tuple) or not any(isinstance(t, ColumnTrace) for t in got[0])
    want = _read(text, fast=False)
    assert got == (want if isinstance(want, str) else want[:2])


def test_clean_traces_take_the_column_path_and_build_equal_spans() -> None:
    doc = {
        "data": [
            {
                "traceID": "00000000000000000000000000000abc",
                "spans": [
                    {
                        "spanID": "r",
                        "startTime": 10,
                        "duration": 50,
                        "processID": "p1",
                        "operationName": "root",
                        "tags": [{"key": "span.kind", "value": "SERVER"}],
                    },
                    {
                        "spanID": "q",
                        "startTime": 12,
                        "duration": 5,
                        "processID": "p2",
                        "references": [{"refType": "FOLLOWS_FROM", "spanID": "r"}],
                        "tags": [{"key": "span\\u002ekind", "value": "client"}],
                    },
                ],
                "processes": {
                    "p1": {"serviceName": "a"},
                    "p2": {"serviceName": "b", "tags": [{"key": "ip", "value": "1"}]},
                },
            }
        ]
    }
    text = json.dumps(doc).encode().replace(b"span\\\\u002ekind", b"span\\u002ekind")
    fast = _read(text, fast=True)
    ref = _read(text, fast=False)
    assert isinstance(fast, tuple) and isinstance(ref, tuple)
    (trace,) = fast[0]
    assert isinstance(trace, ColumnTrace)
    assert trace == ref[0][0] and ref[0][0] == trace and hash(trace) == hash(ref[0][0])
    assert [s.kind for s in trace.spans] == ["server", "client"]
    assert trace.trace_id == "0000000000000abc"
    assert [r.as_dict() for r in critical_paths([trace] * 600)[0].roots] == [
        r.as_dict() for r in critical_path_walk(ref[0][0]).roots
    ]


def _one_span_doc(**span: Any) -> bytes:
    base = {"spanID": "a", "startTime": 10, "duration": 5, "processID": "p1"}
    child = {
        "spanID": "b",
        "startTime": 11,
        "duration": 1,
        "processID": "p1",
        "references": [{"spanID": "a"}],
    }
    doc = {
        "data": [
            {"traceID": "t1", "spans": [{**base, **span}, child], "processes": {"p1": {"serviceName": "s"}}}
        ]
    }
    return json.dumps(doc).encode()


@pytest.mark.parametrize("value", [*_NUMBERS.elements, -(2**63), 2**63 - 1, -(2**64)])  # type: ignore[attr-defined]
@pytest.mark.parametrize("key", ["startTime", "duration"])
def test_every_edge_number_reads_alike(key: str, value: object) -> None:
    text = _one_span_doc(**{key: value})
    assert _read(text, fast=True) == _read(text, fast=False)


def test_the_last_believed_microsecond_reads_alike() -> None:
    for start, duration in [(2**53 - 6, 5), (2**53 - 5, 5), (0, 7 * 24 * 3600 * 1_000_000)]:
        text = _one_span_doc(startTime=start, duration=duration)
        assert _read(text, fast=True) == _read(text, fast=False)
