"""Trace files read in batches (firm.tracing.stream): the splitter against the whole-text parse
(hypothesis), batches against the whole-file reader, the commands' output against building it whole,
and memory bounded by the batch, not the file."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firm.tracing import TraceParseError, critical_paths, load_trace_files, load_traces, trace_features
from firm.tracing.export import jaeger_document, jaeger_trace, json_bytes
from firm.tracing.model import Trace
from firm.tracing.stream import (
    JsonArraySplitter,
    StreamOptions,
    stream_features,
    trace_batches,
    write_critical_paths,
)
from tests.unit.tracing.shared_data import data_dir, deathstarbench_files

# -- the splitter -------------------------------------------------------------------------------

NASTY = st.text(alphabet=st.sampled_from(list('ab"\\{}[],: \n\t\u00e9\u2028\U0001f600')), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | NASTY
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NASTY, inner, max_size=4),
    max_leaves=12,
)
ENTRIES = st.lists(st.dictionaries(NASTY, VALUES, max_size=5) | st.lists(VALUES, max_size=3), max_size=8)


@st.composite
def documents(draw: st.DrawFn) -> tuple[bytes, list[Any], bool]:
    """A JSON text holding an array of entries, as a query-API object (other keys around it, in any
    order) or as the text itself; written with random layout."""
    entries = draw(ENTRIES)
    top_array = draw(st.booleans())
    if top_array:
        doc: Any = entries
    else:
        others = draw(st.dictionaries(NASTY.filter(lambda k: k != "data"), VALUES, max_size=3))
        items = [*others.items(), ("data", entries)]
        order = draw(st.permutations(items))
        doc = dict(order)
    indent = draw(st.sampled_from([None, 1, 2]))
    ascii_ = draw(st.booleans())
    text = json.dumps(doc, indent=indent, ensure_ascii=ascii_)
    pad = draw(st.sampled_from(["", " ", "\n", " \n\t"]))
    return (pad + text + pad).encode(), entries, top_array


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=documents(), cuts=st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_the_splitter_gives_the_entries_the_whole_parse_gives(
    case: tuple[bytes, list[Any], bool], cuts: list[int]
) -> None:
    text, entries, top_array = case
    splitter = JsonArraySplitter("data", limit=10**9)
    got: list[bytes] = []
    pos = 0
    k = 0
    while pos < len(text):  # pieces of random sizes, so that every token is cut somewhere
        size = cuts[k % len(cuts)]
        got.extend(splitter.feed(text[pos : pos + size]))
        pos += size
        k += 1
    splitter.close()
    assert splitter.streamable is True
    assert splitter.top_level_array is top_array
    assert [json.loads(e) for e in got] == entries
    if not top_array:
        whole = json.loads(text)
        assert json.loads(splitter.envelope) == {**whole, "data": []}


@pytest.mark.parametrize(
    ("text", "streamable"),
    [
        (b'{"resourceSpans": [{"a": 1}]}', False),
        (b'{"data": {"x": [1]}}', False),
        (b'{"spans": [], "traceID": "t"}', False),
        (b'"just text"', False),
        (b'{"nodata": "[{\\"data\\": [1]}]", "data": [{"a": 1}]}', True),
    ],
)
def test_the_splitter_tells_other_shapes(text: bytes, streamable: bool) -> None:
    splitter = JsonArraySplitter("data")
    entries = splitter.feed(text)
    assert splitter.streamable is streamable
    if streamable:
        splitter.close()
        assert [json.loads(e) for e in entries] == [{"a": 1}]


@pytest.mark.parametrize(
    "text",
    [
        b'{"data": [{"a": 1} {"b": 2}]}',
        b'{"data": [{"a": 1},, {"b": 2}]}',
        b'{"data": [{"a": 1}, 3]}',
        b'{"data": [{"a": 1},]}',
        b'{"data": [{"a": 1}',
        b'[{"a": 1}] [2]',
    ],
)
def test_the_splitter_refuses_malformed_structure(text: bytes) -> None:
    splitter = JsonArraySplitter("data")
    with pytest.raises(ValueError, match=r"byte|after the array"):
        splitter.feed(text)
        splitter.close()


# -- batches ------------------------------------------------------------------------------------


def _copies(count: int, seed: int) -> list[Trace]:
    """``count`` copies of the DeathStarBench traces under fresh trace and span IDs."""
    templates = [load_traces(f)[0] for f in deathstarbench_files()]
    rnd = random.Random(seed)
    out = []
    for k in range(count):
        t = templates[k % len(templates)]
        new = {s.span_id: f"{rnd.getrandbits(64):016x}" for s in t.spans}
        spans = tuple(
            replace(s, span_id=new[s.span_id], parent_id=new.get(s.parent_id) if s.parent_id else None)
            for s in t.spans
        )
        out.append(Trace(f"{rnd.getrandbits(64):016x}", spans))
    return out


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A query-API file of 300 traces (about 2.7 MB), several times the batches below."""
    path = tmp_path_factory.mktemp("stream") / "export.json"
    doc = jaeger_document(_copies(300, 1))
    doc["errors"] = [{"code": 500, "msg": "one trace could not be read"}]
    path.write_bytes(json_bytes(doc))
    return path


def _same_input(a: list[Trace], b: list[Trace]) -> None:
    assert [t.trace_id for t in a] == [t.trace_id for t in b]
    for x, y in zip(a, b, strict=True):
        assert x.spans == y.spans and x.warnings == y.warnings


@pytest.mark.parametrize("batch", [100_000, 1_000_000, 10**9])
def test_batches_hold_what_the_whole_file_holds(export: Path, batch: int) -> None:
    whole = load_trace_files([export])
    batches = list(trace_batches([export], StreamOptions(batch_bytes=batch, keep_tags=True)))
    if batch < export.stat().st_size:
        assert len(batches) > 1
    _same_input([t for b in batches for t in b.traces], whole.traces())
    assert [d for b in batches for d in b.diagnostics] == whole.diagnostics
    assert all(b.sources[t.trace_id] == [str(export)] for b in batches for t in b.traces)


def test_without_tags_only_the_tags_differ(export: Path) -> None:
    tagged = load_trace_files([export]).traces()
    bare = [t for b in trace_batches([export], StreamOptions(batch_bytes=500_000)) for t in b.traces]
    assert [[replace(s, tags=()) for s in t.spans] for t in tagged] == [list(t.spans) for t in bare]
    assert [[s.kind for s in t.spans] for t in tagged] == [[s.kind for s in t.spans] for t in bare]
    assert all(not s.tags for t in bare for s in t.spans)


def test_a_list_of_traces_and_json_lines_are_streamed_too(tmp_path: Path) -> None:
    traces = _copies(40, 2)
    as_list = tmp_path / "list.json"
    as_list.write_bytes(json_bytes([jaeger_trace(t) for t in traces], indent=True))
    lines = tmp_path / "lines.jsonl"
    lines.write_bytes(b"\n".join(json_bytes(jaeger_document([t])) for t in traces) + b"\n")
    for path in (as_list, lines):
        whole = load_trace_files([path])
        streamed = list(trace_batches([path], StreamOptions(batch_bytes=20_000, keep_tags=True)))
        assert len(streamed) > 1
        _same_input([t for b in streamed for t in b.traces], whole.traces())
        assert [b.sources[t.trace_id] for b in streamed for t in b.traces] == [
            whole.sources(t.trace_id) for t in whole.traces()
        ]


def test_other_shapes_larger_than_the_batch_are_read_whole() -> None:
    path = data_dir("jaeger-fixtures", "example_trace.json")
    [batch] = trace_batches([path], StreamOptions(batch_bytes=100, keep_tags=True))
    _same_input(batch.traces, load_trace_files([path]).traces())


def test_a_trace_split_over_batches_is_reported_in_parts(tmp_path: Path) -> None:
    first, second = (
        data_dir("field-traces", "split-trace-part1.json"),
        data_dir("field-traces", "split-trace-part2.json"),
    )
    filler = tmp_path / "filler.json"
    filler.write_bytes(json_bytes(jaeger_document(_copies(5, 3))))
    batch = filler.stat().st_size  # the filler makes a batch of its own between the parts
    got = [
        t for b in trace_batches([first, filler, second], StreamOptions(batch_bytes=batch)) for t in b.traces
    ]
    parts = [t for t in got if t.trace_id == load_traces(first)[0].trace_id]
    assert len(parts) == 2
    assert any("came after the batch" in w for w in parts[1].warnings)
    merged = list(trace_batches([first, second, filler], StreamOptions(batch_bytes=batch)))
    assert sum(t.trace_id == parts[0].trace_id for b in merged for t in b.traces) == 1


def test_malformed_streamed_files_name_the_file(tmp_path: Path) -> None:
    good = b",".join(
        b'{"traceID": "t%d", "spans": [{"spanID": "s", "startTime": 1, "duration": 1, "processID": "p"}], '
        b'"processes": {"p": {"serviceName": "a"}}}' % k
        for k in range(50)
    )
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"data": [' + good + b', {"traceID": "u", "spans": [}]}')
    with pytest.raises(TraceParseError, match=rf"{bad}: trace #50: not valid JSON \(Expecting value"):
        list(trace_batches([bad], StreamOptions(batch_bytes=100)))
    cut = tmp_path / "cut.json"
    cut.write_bytes(b'{"data": [' + good)
    with pytest.raises(TraceParseError, match="ends inside"):
        list(trace_batches([cut], StreamOptions(batch_bytes=100)))


# -- the commands -------------------------------------------------------------------------------


def _whole_output(files: list[Path], indent: bool) -> bytes:
    reader = load_trace_files(files)
    traces = reader.traces()
    out = [
        {"source": ", ".join(reader.sources(t.trace_id)), **cp.as_dict(), "warnings": list(t.warnings)}
        for t, cp in zip(traces, critical_paths(traces), strict=True)
    ]
    return json_bytes({"traces": out}, indent=indent)


@pytest.mark.parametrize("indent", [True, False])
@pytest.mark.parametrize("batch", [300_000, 10**9])
def test_critical_paths_written_in_batches_are_the_whole_document(
    export: Path, indent: bool, batch: int
) -> None:
    out = io.BytesIO()
    warnings: list[str] = []
    n = write_critical_paths(
        [export], out.write, indent=indent, options=StreamOptions(batch_bytes=batch), warn=warnings.append
    )
    assert n == 300
    assert out.getvalue() == _whole_output([export], indent)
    assert warnings == [f"{export}: the query API reported an error: one trace could not be read (code 500)"]


def test_no_traces_is_an_empty_list(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text('{"data": []}')
    for indent in (True, False):
        out = io.BytesIO()
        assert write_critical_paths([empty], out.write, indent=indent) == 0
        assert out.getvalue() == json_bytes({"traces": []}, indent=indent)


def test_features_in_batches_equal_features_of_the_whole_file(export: Path) -> None:
    whole = trace_features(load_trace_files([export]).traces(), min_samples=5)
    streamed = stream_features([export], min_samples=5, options=StreamOptions(batch_bytes=250_000))
    assert streamed == whole


# -- memory -------------------------------------------------------------------------------------

_PEAK = """
import resource, sys
from firm.tracing.stream import StreamOptions, write_critical_paths
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
count = write_critical_paths([sys.argv[1]], lambda b: None, options=StreamOptions(batch_bytes=int(sys.argv[2])))
print(count, base * 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def test_memory_grows_with_the_batch_not_the_file(tmp_path: Path) -> None:
    """A file of about 27 MB in batches of 1 MiB: the process grows by less than half the file (a
    whole-file read grows by about ten times the file)."""
    path = tmp_path / "large.json"
    traces = _copies(250, 4)
    with path.open("wb") as f:
        f.write(b'{"data": [')
        for k in range(12):  # the same traces again under other trace IDs
            docs = [jaeger_trace(replace(t, trace_id=f"{k:04x}{t.trace_id[4:]}")) for t in traces]
            f.write((b"," if k else b"") + b",".join(orjson.dumps(d) for d in docs))
        f.write(b"]}")
    size = path.stat().st_size
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path), str(2**20)], capture_output=True, text=True, check=True
    )
    count, base, peak = map(int, proc.stdout.split())
    assert count == 3_000
    assert peak - base < size / 2, (peak - base, size)


def test_a_pipe_is_read_whole_though_its_size_is_zero(tmp_path: Path) -> None:
    """``firm features <(cat FILE)``: a pipe reports size 0; its traces are still handed over."""
    source = deathstarbench_files()[0]
    fifo = tmp_path / "traces.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(source.read_bytes()), daemon=True)
    writer.start()
    through_pipe = [t.trace_id for batch in trace_batches([fifo]) for t in batch.traces]
    writer.join(timeout=30)
    assert through_pipe, "the traces read from the pipe were dropped"
    assert through_pipe == [t.trace_id for batch in trace_batches([source]) for t in batch.traces]
