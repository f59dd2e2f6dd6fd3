"""Read traces: Jaeger query-API JSON, single Jaeger traces, Jaeger's domain JSON, and OTLP JSON.

Accepted documents (detected from their shape):

- Jaeger query API (``GET /api/traces``, ``GET /api/traces/{id}``): ``{"data": [trace, ...]}``;
- one Jaeger trace, as Jaeger UI downloads it: ``{"traceID", "spans": [...], "processes": {...}}``,
  or a JSON list of such traces;
- Jaeger's domain model (``model.Trace`` as JSON): base64 IDs, RFC 3339 start times, ``"5000ns"``
  durations, the process inline in each span or in ``processMap``;
- OTLP JSON (``{"resourceSpans": [...]}``, also wrapped in ``{"result": ...}`` as Jaeger's
  ``/api/v3`` returns it): hex IDs, nanosecond times (rounded down to microseconds), spans of
  several traces grouped by trace ID.

What is repaired rather than refused, each with a warning on the trace:

- a span that refers to a parent missing from the trace keeps that parent ID and becomes a root
  of its own tree;
- with several references, the parent is the first ``CHILD_OF`` reference to a span of the same
  trace, else the first ``FOLLOWS_FROM`` one (the span is then asynchronous);
- a span ID that occurs twice: an exact repeat is dropped; a client and a server span sharing an
  ID (Zipkin-style) are split, the server span getting the ID ``<id>~server`` and becoming the
  client's child, and the other spans under that ID moving to the server span, as Jaeger's own
  query service does; any other repeat is renamed ``<id>~2``, ``<id>~3``...

Trace identity is decided once, by :class:`TraceReader`, across every document and file of a
command: trace IDs are compared in one spelling (:func:`canonical_trace_id`: lower-case hex without
the zero high half Jaeger drops, so ``00000000000000000000000000000001`` and ``0000000000000001``
are one trace), the spans of one trace are gathered from every input (exporters flush in batches),
and a trace that arrives twice is one request (exact repeats of a span are dropped).

Instance identity has one rule in every format: the first non-empty of the process tags (Jaeger)
or resource attributes (OTLP) named in :data:`INSTANCE_KEYS` (``hostname``, as Jaeger clients and
DeathStarBench write it; ``host.name``, ``k8s.pod.name`` and ``service.instance.id``, as
OpenTelemetry SDKs write it; ``ip``), else the service name: replicas are told apart, and a
replica's spans from different processes are one instance.

Every number read from a trace is type- and range-checked: a start outside ``[0, MAX_TIME_US)``, a
negative duration, one longer than :data:`MAX_DURATION_US` (a wrapped unsigned 64-bit value, one
near 2^63, a number of 20 digits or more), a start or duration that is NaN or infinite (``NaN``,
``Infinity``, as numbers or text), one that is not a whole number (a fraction such as ``1.5``,
``null``, ``true``, other text, a list or an object) or is missing, a Jaeger domain time or
duration that cannot be read, or an OTLP span that ends before it starts is refused: the span is
dropped with a warning naming it, the field and the value (its children become roots), and the
command goes on; a trace left with no span is dropped with a warning. A JSON text nested deeper than the decoders go (about
1,000 levels; no trace format nests so) is refused naming the file, never with a recursion error;
a tag value nested too deeply to keep is replaced by a note.

Diagnostics that concern no single trace (the query API's per-trace ``errors``, dropped traces)
are collected in :attr:`TraceReader.diagnostics` for the command to print.

A span without a usable ID (all zeros, as its trace's ID, included: invalid in W3C Trace Context
and OpenTelemetry), or with a malformed reference, is refused the same way, the field named in
words; a Jaeger span whose own ``traceID`` names another trace is read in that trace, and Jaeger's
own ``warnings`` are passed on (one line a trace); an OTLP ``kind`` that is no span kind is read as
unspecified with a warning.

Everything else that is malformed (a span that is not an object, unknown process IDs) raises :class:`TraceParseError` naming the source, the trace (in the
spelling of :func:`canonical_trace_id`, as every message does) and the span; a document of the
wrong JSON type is named in JSON's words (:func:`json_kind`). In a JSON Lines text, a line that is
not JSON or not a trace document, or holds such a malformed trace, is skipped with a warning naming
the source and the line instead (:meth:`TraceReader.read_line`), and the other lines are read.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson

from firm.tracing.columns import ColumnTrace, SpanColumns
from firm.tracing.errors import TraceParseError
from firm.tracing.gcpause import paused_gc
from firm.tracing.model import RefType, Span, TagValue, Trace

__all__ = [
    "INSTANCE_KEYS",
    "MAX_DURATION_US",
    "MAX_TIME_US",
    "JsonTooDeep",
    "TraceReader",
    "canonical_span_id",
    "canonical_trace_id",
    "decode_json",
    "jaeger_kind",
    "json_kind",
    "load_trace_files",
    "load_traces",
    "loads_traces",
    "looks_like_json_lines",
    "parse_duration_us",
    "parse_traces",
]

INSTANCE_KEYS = ("hostname", "host.name", "k8s.pod.name", "service.instance.id", "ip")
"""Tags (Jaeger process tags, OTLP resource attributes) naming a span's instance, first non-empty wins."""

MAX_DURATION_US = 7 * 24 * 3600 * 1_000_000
"""The longest span duration believed, microseconds (a week); longer ones are refused."""

MAX_TIME_US = 2**53
"""Span starts and ends must lie in ``[0, MAX_TIME_US)`` microseconds since the epoch (year 2255)."""

_FORMATS_HINT = (
    'expected Jaeger query-API JSON ({"data": [...]}), a Jaeger trace ({"traceID", "spans", '
    '"processes"}), Jaeger domain JSON ({"spans": [{"spanId", "process", ...}]}) or OTLP JSON '
    '({"resourceSpans": [...]})'
)

_OTLP_KINDS = {
    0: "",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}

_OTLP_KIND_NAMES = {"UNSPECIFIED": "", **{v.upper(): v for v in _OTLP_KINDS.values() if v}}

_ZERO_ID = "0" * 16
"""An all-zero trace or span ID in its one spelling: invalid (W3C Trace Context, OpenTelemetry)."""

_ZERO_TRACE = "the trace ID is invalid (all zeros, as W3C Trace Context and OpenTelemetry define it)"
_ZERO_SPAN = "the span ID is invalid (all zeros, as W3C Trace Context and OpenTelemetry define it)"

_JAEGER_WARNINGS_SHOWN = 3
"""Jaeger's own warnings of a trace shown in its one diagnostic line; the rest are counted."""

# ---------------------------------------------------------------------------------------------
# Public entry points


def load_traces(path: str | Path) -> list[Trace]:
    """Read every trace of one file (any accepted form, JSON Lines too), merged by trace ID."""
    reader = TraceReader()
    reader.read_file(path)
    return reader.traces()


def load_trace_files(paths: Iterable[str | Path]) -> TraceReader:
    """Read every trace of several files as one input: a trace split over files is one trace.

    Returns the reader: :meth:`TraceReader.traces` and :attr:`TraceReader.diagnostics`. Raises
    :class:`TraceParseError` naming the file for a file that cannot be read or parsed.
    """
    reader = TraceReader()
    for path in paths:
        reader.read_file(path)
    return reader


def loads_traces(text: str | bytes, source: str = "<input>") -> list[Trace]:
    """Parse every trace of a JSON (or JSON Lines) text (any accepted form)."""
    reader = TraceReader()
    reader.read_text(text, source)
    return reader.traces()


def parse_traces(doc: Any, source: str = "<input>") -> list[Trace]:
    """Turn a decoded JSON document (any accepted form) into traces, in document order."""
    reader = TraceReader()
    reader.read_document(doc, source)
    return reader.traces()


def canonical_trace_id(trace_id: str) -> str:
    """One spelling of a trace ID: lower-case hex, 16 digits when the high half is zero, else 32.

    Leading zeros beyond those go, however many (``0000`` + 32 digits is the 32 digits). IDs that
    are not hex (``"t1"``), or of more than 128 bits, are kept as given, stripped of white space.
    """
    text = trace_id.strip()
    low = text.lower()
    if not low or low.strip(_HEX_DIGITS):
        return text
    digits = low.lstrip("0")
    if len(digits) > 32:
        return text
    return digits.rjust(16 if len(digits) <= 16 else 32, "0")


def canonical_span_id(span_id: str) -> str:
    """One spelling of a span ID (and of a reference to one), in every format: lower-case hex of
    at least 16 digits, leading zeros beyond those dropped (``00000000000000A1``, ``a1`` and
    ``000000000000000000a1`` are one span, ``00000000000000a1``), as Jaeger and OTLP write a 64-bit
    ID. IDs that are not hex (``"s1"``) are kept as given, stripped of white space."""
    if len(span_id) == 16 and not span_id.strip(_HEX_DIGITS):
        return span_id  # the common spelling, already canonical
    text = span_id.strip()
    low = text.lower()
    if not low or low.strip(_HEX_DIGITS):
        return text
    return low.lstrip("0").rjust(16, "0")


_HEX_DIGITS = "0123456789abcdef"


def _canonical_span_ids(ids: Sequence[str]) -> bool:
    """Are all of ``ids`` spelt as :func:`canonical_span_id` spells them (16 lower-case hex digits)?
    One test for a whole trace (the fast reader's check; any other spelling goes the reference way)."""
    joined = "".join(ids)
    return len(joined) == 16 * len(ids) and min(map(len, ids), default=16) == 16 and set(joined) <= _HEX_SET


_HEX_SET = frozenset(_HEX_DIGITS)


class JsonTooDeep(json.JSONDecodeError):
    """A JSON text nested deeper than the decoders go (a ``json.JSONDecodeError``, so that every
    reader that refuses malformed JSON refuses it too, in words from :func:`json_problem`)."""

    def __init__(self, text: str | bytes) -> None:
        doc = text if isinstance(text, str) else text[:200].decode("utf-8", "replace")
        super().__init__("values nested too deeply (arrays and objects over about 1,000 levels)", doc, 0)


_MAX_DIGITS = 4000
"""Integers of more digits than this are kept as :class:`LongNumber` (Python converts at most
``sys.get_int_max_str_digits()``, 4300 by default, and no trace number needs 20)."""


class LongNumber(int):
    """An integer written with more than :data:`_MAX_DIGITS` digits: held as a power of ten of
    the same sign and number of digits (so that every range check refuses it as it would the
    number itself), and shown as its first digits and their count, ``999999... (5000 digits)``
    (Python cannot print the number)."""

    digits: int
    shown: str

    def __new__(cls, text: str) -> LongNumber:
        negative = text.startswith("-")
        digits = len(text.lstrip("+-"))
        self = super().__new__(cls, -(10 ** (digits - 1)) if negative else 10 ** (digits - 1))
        self.digits = digits
        self.shown = f"{'-' if negative else ''}{text.lstrip('+-')[:6]}... ({digits} digits)"
        return self

    def __str__(self) -> str:
        return self.shown

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return str(self)


def _json_int(text: str) -> int:
    """A JSON integer's text as an int (:class:`LongNumber` when it has too many digits)."""
    return int(text) if len(text) <= _MAX_DIGITS else LongNumber(text)


_WHOLE = re.compile(r"[+-]?[0-9]+")


def whole_number(text: str) -> int | None:
    """The integer written as ``text`` (ASCII digits, an optional sign, white space around), or
    None: the one reading of numbers given as text in every format (OTLP's 64-bit values, Jaeger
    times and ``vInt64`` tags); other digits (Arabic-Indic, full-width ones) and ``1_000`` are no number."""
    t = text.strip()
    return _json_int(t) if _WHOLE.fullmatch(t) else None


def decode_json(text: str | bytes) -> Any:
    """Decode JSON with orjson; where it refuses (integers beyond 64 bits, NaN, another encoding
    than UTF-8, malformed text), with the standard library, whose result and errors then hold
    (an integer of thousands of digits is read as a :class:`LongNumber`, never refused by Python's
    limit on integer conversion). A text nested too deeply for either raises :class:`JsonTooDeep`."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text, parse_int=_json_int)
    except RecursionError:
        raise JsonTooDeep(text) from None


_loads = decode_json


def json_problem(err: ValueError, *, one_line: bool = False) -> str:
    """What is wrong with a text that did not decode, in words (no codec names): ``not UTF-8 text
    (byte N)`` or ``not valid JSON (reason, line L column C)``; ``one_line``: the text is one line
    of a JSON Lines text, named by the caller (only the column is given)."""
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text (byte {err.start}); save the file as UTF-8 JSON"
    if isinstance(err, JsonTooDeep):
        return f"not usable JSON: {err.msg}; no trace format nests so deeply"
    if isinstance(err, json.JSONDecodeError):
        if "utf-8" in err.msg.lower() or "surrogate" in err.msg.lower():
            return "not UTF-8 text; save the file as UTF-8 JSON"
        if one_line:
            return f"not valid JSON ({err.msg}, column {err.colno})"
        return f"not valid JSON ({err.msg}, line {err.lineno} column {err.colno})"
    return f"not valid JSON ({err})"


def looks_like_json_lines(head: str | bytes, *, whole: bool = False) -> bool:
    """Does the text starting with ``head`` hold one JSON document a line (JSON Lines, as
    OpenTelemetry's file exporter writes)? Yes when it has more than one non-blank line and its
    first non-blank line is a JSON document on its own, or, that line being damaged, its second
    one is a JSON object on its own (a pretty-printed document has neither). A line counts only
    when a newline ends it, unless ``whole`` (``head`` is the whole text). One rule for the
    whole-file reader and the streaming one (:func:`firm.tracing.stream.trace_batches`)."""
    nl = b"\n" if isinstance(head, bytes) else "\n"
    lines: list[Any] = []  # the first two non-blank lines that are whole
    pos = 0
    after = -1  # where the text after the first non-blank line starts
    while len(lines) < 2:
        end = head.find(nl, pos)  # type: ignore[arg-type]
        line = head[pos:] if end < 0 else head[pos:end]
        if line.strip():
            if end < 0 and not whole:
                break  # cut off by the end of ``head``: no judge of anything
            lines.append(line)
            if after < 0:
                after = len(head) if end < 0 else end + 1
        if end < 0:
            break
        pos = end + 1
    if after < 0 or not head[after:].strip():
        return False  # one line (or none): a JSON document, not JSON Lines
    try:
        decode_json(lines[0])
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    else:
        return True
    if len(lines) < 2:
        return False
    try:
        return isinstance(decode_json(lines[1]), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


class TraceReader:
    """Collects spans from any number of documents and files, then builds one trace per trace ID.

    Not thread-safe. ``diagnostics`` holds messages for the user that concern no single trace.
    """

    def __init__(self, *, keep_tags: bool = True, columns: bool = True) -> None:
        self.keep_tags = keep_tags
        """False: spans keep no tags (:attr:`Span.tags` is empty; ``span.kind`` is still read), which
        makes reading faster and smaller where tags are not used (critical paths, features)."""
        self.columns = columns and not keep_tags
        """Jaeger traces that need no repair are read straight into columns
        (:class:`firm.tracing.columns.ColumnTrace`; only without tags): the same traces, several
        times faster. False: every trace through the reference path (for comparisons)."""
        self._traces: dict[str, _Assembler | _Clean] = {}
        self._parts: dict[str, int] = {}
        self._built: list[Trace] | None = None
        self.diagnostics: list[str] = []
        """Query-API errors, repeated or split traces, dropped traces and refused spans."""

    def read_file(self, path: str | Path) -> None:
        """Add every trace of the file at ``path``."""
        p = Path(path)
        try:
            text = p.read_bytes()
        except OSError as err:
            raise TraceParseError(f"cannot read the file: {err.strerror or err}", source=str(p)) from err
        self.read_text(text, str(p))

    def read_text(self, text: str | bytes, source: str = "<input>") -> None:
        """Add every trace of a JSON text, or of a JSON Lines text (one document a line). An empty
        text, or one of white space only (what OpenTelemetry's file exporter leaves when there
        was no span), adds nothing: no trace, as an empty export."""
        if not text.strip():
            return
        with paused_gc():
            if self.columns and self._read_columns(text, source):
                return
            try:
                doc = _loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                if (
                    isinstance(err, json.JSONDecodeError) and err.msg == "Extra data"
                ) or looks_like_json_lines(text, whole=True):
                    self._read_lines(text, source)
                    return
                raise TraceParseError(json_problem(err), source=source, fix=_FORMATS_HINT) from err
            self.read_document(doc, source)

    def _read_columns(self, text: str | bytes, source: str) -> bool:
        """Read a query-API document or a list of Jaeger traces trace by trace with
        :meth:`read_jaeger_bytes`; False (nothing read) for a text of another shape or that the
        fast decoder refuses, which the reference decoder then reads (and names what is wrong)."""
        try:
            doc = _ENVELOPE.decode(text)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return False
        if isinstance(doc, list):
            entries = doc
        elif doc.data is None or len(doc.resource_spans) or len(doc.result):
            return False
        else:
            self.read_query_envelope({"errors": doc.errors}, source)
            entries = doc.data
        self.read_jaeger_entries(entries, source, 0)
        return True

    def read_jaeger_entries(self, entries: Sequence[bytes | msgspec.Raw], source: str, first: int) -> None:
        """Add Jaeger traces given as JSON texts, traces ``#first``, ``#first + 1``, ... of
        ``source``: :meth:`read_jaeger_bytes` on each, in order, the clean ones checked all at once
        (faster than one by one). Raises :class:`TraceParseError` naming the trace for a text that
        is not JSON or a malformed trace."""
        for k, entry in enumerate(entries):
            clean = _clean_trace(entry, source, first + k) if self.columns else None
            if clean is not None:
                self._add_clean(clean)
                continue
            try:
                doc = decode_json(entry if isinstance(entry, bytes) else bytes(entry))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise TraceParseError(f"trace #{first + k}: {json_problem(err)}", source=source) from None
            self.read_jaeger_trace(doc, source, first + k)

    def read_jaeger_bytes(self, entry: bytes | msgspec.Raw, source: str, position: int) -> None:
        """Add one Jaeger trace given as JSON text, trace ``#position`` of ``source``: as
        :meth:`read_jaeger_trace` on the decoded text, with the same result, warnings and
        errors. Without tags (``keep_tags`` False), a trace that needs no repair is decoded
        straight into columns (:class:`firm.tracing.columns.ColumnTrace`); any other trace is
        decoded and parsed in full. Raises ``json.JSONDecodeError`` or ``UnicodeDecodeError``
        for a text that is not JSON, :class:`TraceParseError` for a malformed trace."""
        if self.columns:
            clean = _clean_trace(entry, source, position)
            if clean is not None:
                self._add_clean(clean)
                return
        self.read_jaeger_trace(
            decode_json(entry if isinstance(entry, bytes) else bytes(entry)), source, position
        )

    def _add_clean(self, clean: _Clean) -> None:
        self._built = None
        key = canonical_trace_id(clean.trace_id)
        if key not in self._traces:
            self._parts[key] = 1
            self._traces[key] = clean
            return
        # A trace in several parts: merged by the reference path, which warns.
        self._add(clean.assembler(self.diagnostics, self.keep_tags))

    def _read_lines(self, text: str | bytes, source: str) -> None:
        # Lines end at "\n" only, as when a file is read line by line (trace_batches): the same
        # line numbers either way, and a line's text in another encoding is that line's fault.
        lines: list[str | bytes] = [*(text.split(b"\n") if isinstance(text, bytes) else text.split("\n"))]
        for number, line in enumerate(lines, 1):
            self.read_line(line, source, number)

    def read_line(self, line: str | bytes, source: str, number: int) -> bool:
        """Add every trace of line ``number`` (from 1) of a JSON Lines text; a blank line adds nothing.

        A line that is not JSON, or not a trace document (a number, null, a malformed trace...), is
        skipped with a warning in :attr:`diagnostics` naming ``source`` and the line, and the other
        lines are read (a file exporter that stopped mid-line leaves a truncated last line). Returns
        False for a skipped line. This is the one rule for JSON Lines, whole files and streamed ones
        alike; a file whose every line is skipped gives no trace, as an empty export does."""
        if not line.strip():
            return True
        # Without its line end, as a line split off a whole text: the same JSON, and errors, either way.
        line = line.rstrip(b"\r\n" if isinstance(line, bytes) else "\r\n")  # type: ignore[arg-type]
        where = f"{source}:{number}"
        before = len(self.diagnostics)
        try:
            assemblers = _parse_document(_loads(line), where, self.diagnostics, self.keep_tags)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            problem = json_problem(err, one_line=True)
        except TraceParseError as err:
            problem = err.message.removeprefix(f"{where}: ").removeprefix(f"{where}, ")
        else:
            for asm in assemblers:
                self._add(asm)
            return True
        del self.diagnostics[before:]  # nothing of a skipped line is kept, its warnings neither
        self.diagnostics.append(f"{source}: line {number} skipped: {problem}")
        return False

    def read_document(self, doc: Any, source: str = "<input>") -> None:
        """Add every trace of a decoded JSON document (any accepted form)."""
        for asm in _parse_document(doc, source, self.diagnostics, self.keep_tags):
            self._add(asm)

    def read_jaeger_trace(self, doc: Any, source: str, position: int) -> None:
        """Add one Jaeger trace (``{"traceID", "spans", "processes"}``), trace ``#position`` of the
        ``data`` list of a query-API document or of a list of traces: what :meth:`read_document`
        does for each entry of such a list."""
        for asm in _parse_jaeger_trace(doc, source, position, self.diagnostics, self.keep_tags):
            self._add(asm)

    def read_query_envelope(self, doc: Any, source: str) -> None:
        """Take the query API's ``errors`` of a ``{"data": [...], "errors": [...]}`` document whose
        traces are read one by one with :meth:`read_jaeger_trace` (its ``data`` is ignored here)."""
        errors = doc.get("errors") if isinstance(doc, dict) else None
        messages = (
            [query_error(e) for e in errors] if isinstance(errors, list) else [str(errors)] if errors else []
        )
        self.diagnostics.extend(f"{source}: the query API reported an error: {m}" for m in messages)

    def _add(self, asm: _Assembler) -> None:
        self._built = None
        key = canonical_trace_id(asm.trace_id)
        self._parts[key] = self._parts.get(key, 0) + 1
        held = self._traces.get(key)
        if held is None:
            asm.trace_id = key
            self._traces[key] = asm
            return
        if isinstance(held, _Clean):
            held = held.assembler(self.diagnostics, self.keep_tags)
            held.trace_id = key
            self._traces[key] = held
        held.raws.extend(asm.raws)
        held.warnings.extend(asm.warnings)
        held.refused += asm.refused
        if asm.source not in held.sources:
            held.sources.append(asm.source)

    def traces(self) -> list[Trace]:
        """The traces read so far, in the order their IDs were first seen (built once, then cached)."""
        if self._built is None:
            built: list[Trace] = []
            with paused_gc():
                self._build_all(built)
            self._built = built
        return list(self._built)

    def _build_all(self, built: list[Trace]) -> None:
        for key, asm in self._traces.items():
            if isinstance(asm, _Clean):
                built.append(ColumnTrace(key, asm.cols, sources=tuple(asm.sources)))
                continue
            if not asm.raws and asm.refused:
                where = ", ".join(asm.sources)
                self.diagnostics.append(f"{where}: trace {key} dropped: every span of it was refused")
                continue
            parts = self._parts[key]
            if parts > 1:
                where = " and ".join(asm.sources)
                asm.warnings.append(
                    f"trace {key}: came in {parts} parts ({where}); its spans are merged into one request"
                )
            built.append(asm.build())

    def sources(self, trace_id: str) -> list[str]:
        """The documents the spans of ``trace_id`` came from."""
        asm = self._traces.get(canonical_trace_id(trace_id))
        return list(asm.sources) if asm else []


def _parse_document(
    doc: Any, source: str, diagnostics: list[str], keep_tags: bool = True
) -> list[_Assembler]:
    if isinstance(doc, list):
        return [
            a for i, t in enumerate(doc) for a in _parse_jaeger_trace(t, source, i, diagnostics, keep_tags)
        ]
    if not isinstance(doc, dict):
        raise TraceParseError(f"{json_kind(doc)} is not a trace document", source=source, fix=_FORMATS_HINT)
    if "resourceSpans" in doc:
        return _parse_otlp(doc, source, diagnostics)
    result = doc.get("result")
    if isinstance(result, dict) and "resourceSpans" in result:
        return _parse_otlp(result, source, diagnostics)
    if "data" in doc:
        data = doc["data"]
        errors = doc.get("errors") or []
        messages = [query_error(e) for e in errors] if isinstance(errors, list) else [str(errors)]
        if data is None:
            msgs = "; ".join(messages)
            raise TraceParseError(f"the document holds no traces{': ' + msgs if msgs else ''}", source=source)
        if not isinstance(data, list):
            raise TraceParseError('"data" must be a list of traces', source=source, fix=_FORMATS_HINT)
        diagnostics.extend(f"{source}: the query API reported an error: {m}" for m in messages)
        return [
            a for i, t in enumerate(data) for a in _parse_jaeger_trace(t, source, i, diagnostics, keep_tags)
        ]
    if "spans" in doc:
        spans = doc["spans"]
        if isinstance(spans, list) and spans and isinstance(spans[0], dict) and "spanId" in spans[0]:
            return _parse_domain_trace(doc, source, diagnostics)
        return _parse_jaeger_trace(doc, source, 0, diagnostics, keep_tags)
    raise TraceParseError("unrecognised trace document", source=source, fix=_FORMATS_HINT)


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, in JSON's own words: ``null``, ``true``, ``false``,
    ``a number (42)``, ``a string ("abc")``, ``a list`` (an array), ``an object``."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"a number ({_json_shown(value)})"
    if isinstance(value, str):
        return f"a string ({_json_shown(value)})"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else "a JSON value"


def query_error(error: Any, with_code: bool = True) -> str:
    """One query-API error (``{"code", "msg", "traceID"}``) as text; a missing, null or empty
    ``msg`` reads "no message", a null ``code`` (or any, without ``with_code``) is left out."""
    if not isinstance(error, dict):
        return "no message" if error is None or error == "" else str(error)
    message = error.get("msg")
    text = "no message" if message is None or message == "" else str(message)
    if with_code and error.get("code") not in (None, ""):
        text += f" (code {error['code']})"
    if error.get("traceID"):
        text = f"trace {canonical_trace_id(str(error['traceID']))}: {text}"
    return text


# ---------------------------------------------------------------------------------------------
# Durations and times

_GO_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_duration_us(text: str) -> int:
    """A Go-style duration (``"5000ns"``, ``"1.5ms"``, ``"5m"``, ``"1h30m"``) in microseconds, as
    a command line gives it (``--window``).

    A bare number is taken as seconds. Rounds down to whole microseconds. ``ValueError`` on
    anything else, naming the text. (A duration read from a trace: :func:`_trace_duration_us`.)
    """
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    sign, body = _signed(s)
    if _DECIMAL.fullmatch(body):
        us = float(body) * 1_000_000
    else:
        ns = _go_duration_ns(body)
        if ns is None:
            raise ValueError(f"not a duration: {text!r} (use e.g. 300ms, 30s, 5m, 1h30m)")
        us = ns // 1_000
    if not math.isfinite(us):
        raise ValueError(f"not a duration: {text!r} is too long")
    return sign * int(us)


def _signed(s: str) -> tuple[int, str]:
    """The sign of a stripped duration text (1 or -1) and the text after it."""
    if s[:1] in ("+", "-"):
        return (-1 if s[0] == "-" else 1), s[1:]
    return 1, s


def _go_duration_ns(body: str) -> float | None:
    """Nanoseconds of an unsigned Go duration (``"1h30m"``, ``"1.5ms"``: ASCII digits, each with a
    unit), or None when ``body`` is not one."""
    pos = 0
    total_ns = 0.0
    for m in _GO_DURATION.finditer(body):
        if m.start() != pos:
            break
        total_ns += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    return total_ns if pos == len(body) and pos else None


def _trace_duration_us(text: str) -> int:
    """A span's duration in Jaeger's domain JSON (a Go duration such as ``"5000ns"`` or
    ``"1.5ms"``, as Jaeger writes it), in microseconds, rounded down. ``ValueError`` saying why
    the span cannot be believed: not a duration, a number without a unit (seconds? microseconds?
    Jaeger always writes one), a negative duration (however short) or one too long for a number."""
    s = text.strip()
    shown = _json_shown(text)
    sign, body = _signed(s)
    if _DECIMAL.fullmatch(body):
        return _refused_duration(f"{shown} is a number without a unit")
    ns = _go_duration_ns(body) if s else None
    if ns is None:
        return _refused_duration(f"{shown} is not a duration")
    if sign < 0 and ns > 0:
        raise ValueError(f"{shown} is a negative duration")
    if not math.isfinite(ns):
        raise ValueError(f"{shown} is too long to be a number")
    return int(ns // 1_000)


def _refused_duration(what: str) -> int:
    raise ValueError(f'{what}; Jaeger writes a duration with its unit, such as "1.5ms" or "5000ns"')


_RFC3339 = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?(Z|z|[+-][0-9]{2}:?[0-9]{2})$"
)


def _rfc3339_us(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 time; ``ValueError`` on an impossible date."""
    t = text.strip()
    if not _RFC3339.match(t):
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    normal = t[:10] + "T" + t[11:]
    if normal[-1] in "Zz":
        normal = normal[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(normal)
    except ValueError as err:
        raise ValueError(f"not an RFC 3339 time: {text!r} ({err})") from None
    delta = moment - datetime.fromisoformat("1970-01-01T00:00:00+00:00")
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# ---------------------------------------------------------------------------------------------
# Common assembly: raw spans -> Trace, with parent resolution and duplicate handling


_CHILD_OF = RefType.CHILD_OF
_FOLLOWS_FROM = RefType.FOLLOWS_FROM


@dataclass(slots=True)
class _Raw:
    span_id: str
    service: str
    instance: str
    operation: str
    start: int
    duration: int
    refs: list[tuple[RefType, str]]  # same-trace references, in order
    kind: str
    tags: tuple[tuple[str, TagValue], ...]
    parent_id: str | None = None
    ref_type: RefType = RefType.CHILD_OF


@dataclass
class _Assembler:
    source: str
    trace_id: str
    diagnostics: list[str]
    raws: list[_Raw] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    refused: int = 0
    zero: bool = False

    def __post_init__(self) -> None:
        self.sources.append(self.source)
        self.zero = canonical_trace_id(self.trace_id) == _ZERO_ID

    def add(self, raw: _Raw) -> None:
        """Keep ``raw`` unless one of its numbers is out of range or its trace or span ID is all
        zeros (then warn and drop it). Its ID and references are put in one spelling here, for every
        format (:func:`canonical_span_id`); a reference to the all-zero span ID is no reference (a
        root, as exporters write "no parent")."""
        raw.span_id = span_id = canonical_span_id(raw.span_id)
        if self.zero or span_id == _ZERO_ID:
            self.refuse(span_id, _ZERO_TRACE if self.zero else _ZERO_SPAN)
            return
        if raw.refs:
            raw.refs = [(t, c) for t, sid in raw.refs if (c := canonical_span_id(sid)) != _ZERO_ID]
        start, duration = raw.start, raw.duration
        if 0 <= duration <= MAX_DURATION_US and start >= 0 and start + duration < MAX_TIME_US:
            self.raws.append(raw)  # what _range_problem accepts, checked inline (once per span)
            return
        self.refuse(raw.span_id, _range_problem(start, duration) or "out of range")

    def refuse(self, span_id: str, problem: str) -> None:
        """Drop span ``span_id`` (not added) with a warning on the trace and in the diagnostics."""
        self.refused += 1
        shown = span_id if span_id.startswith("#") else canonical_span_id(span_id)
        message = f"{self.source}: trace {canonical_trace_id(self.trace_id)}, span {shown} refused: {problem}"
        self.warnings.append(message)
        self.diagnostics.append(message)

    def warn(self, span_id: str | None, problem: str) -> None:
        """A repair worth the user's eye: a warning on the trace and in the diagnostics, naming the
        source, the trace and (unless None) the span."""
        where = f"{self.source}: trace {canonical_trace_id(self.trace_id)}"
        if span_id is not None:
            where += f", span {span_id if span_id.startswith('#') else canonical_span_id(span_id)}"
        message = f"{where}: {problem}"
        self.warnings.append(message)
        self.diagnostics.append(message)

    def build(self) -> Trace:
        if not self.raws:
            raise TraceParseError("the trace has no spans", source=self.source, trace_id=self.trace_id)
        ids = {r.span_id for r in self.raws}
        if len(ids) != len(self.raws):
            self._dedupe()
            ids = {r.span_id for r in self.raws}
        for r in self.raws:
            if r.parent_id is not None:  # already set by the client/server split
                continue
            refs = r.refs
            if not refs:
                continue  # a root
            if len(refs) == 1 and refs[0][1] in ids and refs[0][1] != r.span_id:
                r.ref_type, r.parent_id = refs[0]  # the common case, as the rules below decide it
                continue
            ref_type = RefType.CHILD_OF
            parent = next((sid for t, sid in r.refs if t is RefType.CHILD_OF and sid in ids), None)
            if parent is None:
                parent = next((sid for t, sid in r.refs if t is RefType.FOLLOWS_FROM and sid in ids), None)
                if parent is not None:
                    ref_type = RefType.FOLLOWS_FROM
            if parent is None and r.refs:
                ref_type, parent = r.refs[0]
                self.warnings.append(
                    f"span {r.span_id}: parent {parent} is not in the trace; the span is a root"
                )
            if parent == r.span_id:
                self.warn(
                    r.span_id,
                    "the span names itself as its parent; read as a root (fix the exporter's parent IDs)",
                )
                continue
            r.parent_id, r.ref_type = parent, ref_type
        self._break_loops()
        spans = tuple(
            [
                Span(
                    r.span_id,
                    r.service,
                    r.instance,
                    r.operation,
                    r.start,
                    r.duration,
                    r.parent_id,
                    r.ref_type,
                    r.kind,
                    r.tags,
                )
                for r in self.raws
            ]
        )
        return Trace(self.trace_id, spans, tuple(self.warnings), tuple(self.sources))

    def _break_loops(self) -> None:
        """Parent references that loop (A's parent B, B's parent A) leave no root to start a
        critical path from: on each loop, the span that starts first (the first in the document
        among equals) is read as a root, with a warning naming the loop."""
        by_id = {r.span_id: r for r in self.raws}
        state: dict[str, int] = {}  # 1 on the chain being followed, 2 leads to a root
        for r in self.raws:
            chain: list[_Raw] = []
            at: _Raw | None = r
            while at is not None and at.span_id not in state:
                state[at.span_id] = 1
                chain.append(at)
                at = by_id.get(at.parent_id) if at.parent_id is not None else None
            if at is not None and state[at.span_id] == 1:
                loop = chain[chain.index(at) :]
                root = min(loop, key=lambda x: x.start)
                shown = " -> ".join(canonical_span_id(x.span_id) for x in loop)
                self.warn(
                    root.span_id,
                    f"parent references form a loop ({shown} -> {canonical_span_id(at.span_id)}); the span that "
                    "starts first on it is read as a root (fix the exporter's parent IDs)",
                )
                root.parent_id = None
                root.ref_type = RefType.CHILD_OF
            for x in chain:
                state[x.span_id] = 2

    def _dedupe(self) -> None:
        first: dict[str, _Raw] = {}
        kept: list[_Raw] = []
        for r in self.raws:
            prev = first.get(r.span_id)
            if prev is None:
                first[r.span_id] = r
                kept.append(r)
                continue
            if (prev.start, prev.duration, prev.operation, prev.service, prev.instance, prev.refs) == (
                r.start,
                r.duration,
                r.operation,
                r.service,
                r.instance,
                r.refs,
            ):
                self.warnings.append(f"span {r.span_id}: exact duplicate dropped")
                continue
            kinds = {prev.kind, r.kind}
            if kinds == {"client", "server"} and f"{r.span_id}~server" not in first:
                server = r if r.kind == "server" else prev
                client = prev if server is r else r
                old = r.span_id
                new = f"{old}~server"
                server.span_id = new
                server.parent_id, server.ref_type = old, RefType.CHILD_OF
                first[new] = server
                first[old] = client
                kept.append(r)
                # The other spans under the shared ID were started by the server side.
                for other in self.raws:
                    if other is not server and other is not client:
                        other.refs = [(t, new if sid == old else sid) for t, sid in other.refs]
                self.warnings.append(
                    f"span {old}: client and server spans share the ID; the server span is now {new}"
                )
                continue
            k = 2
            while f"{r.span_id}~{k}" in first:
                k += 1
            new = f"{r.span_id}~{k}"
            self.warnings.append(f"span {r.span_id}: the ID occurs again; this occurrence is now {new}")
            r.span_id = new
            first[new] = r
            kept.append(r)
        self.raws = kept


def _range_problem(start: int, duration: int) -> str | None:
    """Why a span's start or duration (microseconds) cannot be believed, or None: the start
    first (a bad start makes any duration computed from it meaningless), then the duration, then
    the end."""
    if not 0 <= start < MAX_TIME_US:
        return f"start {_number(start)} us is outside [0, {MAX_TIME_US}) microseconds since the epoch"
    if duration < 0:
        return f"negative duration {_number(duration)} us"
    if duration > MAX_DURATION_US:
        return (
            f"duration {_number(duration)} us is longer than a week (a wrapped or corrupt value; "
            f"at most {MAX_DURATION_US} us is believed)"
        )
    if start + duration >= MAX_TIME_US:
        return (
            f"end {_number(start + duration)} us (start {start} + duration {duration}) is not before "
            f"{MAX_TIME_US} microseconds since the epoch (the year 2255)"
        )
    return None


def _number(v: int) -> str:
    """An integer for a message: in full up to 20 digits, else its first digits and magnitude
    (a number of thousands of digits by its count of digits)."""
    if isinstance(v, LongNumber) or abs(v) < 10**20:
        return str(v)
    if v.bit_length() < 1000:
        return f"{v:.6e}"
    return f"{'-' if v < 0 else ''}10^{int(v.bit_length() * math.log10(2))} or so"


def _fail(asm: _Assembler, span_id: str | None, message: str) -> TraceParseError:
    return TraceParseError(message, source=asm.source, trace_id=asm.trace_id, span_id=span_id)


def _int_field(
    asm: _Assembler, span_id: str, raw: Mapping[str, Any], key: str, unit: str = "microseconds"
) -> int | None:
    """The integer ``raw[key]`` (an integral float or a string of digits is taken too). Any other
    value refuses the span (returns None, the span counted and warned about, naming the field and
    the value), as a number out of range does: one that is not finite (NaN, Infinity: what some
    exporters write for a broken clock), a fraction, null, a boolean, other text, a list or an
    object, or no value at all."""
    if key not in raw:
        asm.refuse(span_id, f'"{key}" is missing: no whole number of {unit}')
        return None
    v = raw[key]
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and (whole := whole_number(v)) is not None:
        return whole
    if isinstance(v, float | str) and _non_finite(v):
        asm.refuse(span_id, f'"{key}" is {v}, not a number of {unit}')
    else:
        asm.refuse(span_id, f'"{key}" is {_json_shown(v)}, not a whole number of {unit}')
    return None


def _json_shown(v: Any) -> str:
    """A value as JSON wrote it (``null``, ``true``, ``1.5``, ``"soon"``), at most 40 characters."""
    try:
        text = json.dumps(v, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _non_finite(v: float | str) -> bool:
    """Is ``v`` NaN or infinite (a float, or text such as ``"NaN"``, ``"-Infinity"``)?"""
    try:
        return not math.isfinite(float(v))
    except (ValueError, OverflowError):
        return False


def _tag_value(v: Any) -> TagValue:
    if isinstance(v, LongNumber):
        return str(v)
    if isinstance(v, str | int | float | bool):
        return v
    try:
        return json.dumps(v, sort_keys=True)
    except RecursionError:
        return "(a value nested too deeply to keep)"


# ---------------------------------------------------------------------------------------------
# Jaeger UI / query-API JSON


_SCALARS = frozenset({str, int, float, bool})


def _jaeger_tags(tags: Any) -> tuple[tuple[str, TagValue], ...]:
    if not isinstance(tags, list):
        return ()
    pairs: list[tuple[str, TagValue]] = [
        (t["key"], v if (v := t.get("value")).__class__ in _SCALARS else _tag_value(v))  # type: ignore[misc]
        for t in tags
        if isinstance(t, dict) and isinstance(t.get("key"), str)
    ]
    return tuple(pairs)


def _span_kind(tags: tuple[tuple[str, TagValue], ...]) -> TagValue:
    """The ``span.kind`` tag's value as given (the last one when repeated), or ``""``: read it
    with :func:`span_kind_value`."""
    kind: TagValue = ""
    for k, v in tags:
        if k == "span.kind":
            kind = v
    return kind


def span_kind_value(value: Any) -> str | None:
    """A ``span.kind`` tag's value (Jaeger JSON, Jaeger domain JSON) as one of :class:`Span`'s kinds:
    OpenTracing's and OpenTelemetry's names in any case, spacing or with OTLP's prefix (``SERVER``,
    ``" server "``, ``SPAN_KIND_SERVER``), the rule of OTLP's ``kind`` names (:func:`_otlp_kind`);
    ``""`` when missing or blank; None for anything else (a number, a boolean, another word: read
    as unspecified, with a warning, :func:`_kind_of`)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return _OTLP_KIND_NAMES.get(value.strip().upper().removeprefix("SPAN_KIND_")) if value.strip() else ""
    return None


def _kind_of(asm: _Assembler, span_id: str, value: Any) -> str:
    """:func:`span_kind_value` of a span's ``span.kind`` tag; one that is no span kind is read as
    unspecified, with a warning naming the span, the value and the kinds there are."""
    kind = span_kind_value(value)
    if kind is None:
        asm.warn(
            span_id,
            f'the "span.kind" tag is {_json_shown(value)}, no span kind (server, client, producer, consumer '
            "or internal, in any case); read as unspecified",
        )
        return ""
    return kind


def _instance_of(service: str, tags: Iterable[tuple[str, Any]]) -> str:
    """The instance a process's tags name (:data:`INSTANCE_KEYS`, the first present), else the
    service. ``tags`` are (key, value) pairs as the document holds them: the one rule of every
    format is that only text (not empty or white space only) and whole numbers name an instance;
    any other value (null, a boolean, a fraction, a list, an object) is absent."""
    found = dict(tags)
    for k in INSTANCE_KEYS:
        v = found.get(k)
        if v.__class__ is str:
            if v.strip():
                return v
        elif isinstance(v, int) and not isinstance(v, bool):
            return str(v)
    return service


def _otlp_name(v: Any) -> str | int | None:
    """An OTLP attribute value (``{"stringValue": ...}``, ``{"intValue": ...}``) as a name: its
    text or whole number; None for any other value (an array, a list of pairs, bytes, a
    boolean, a fraction), which names nothing (:func:`_instance_of`)."""
    if not isinstance(v, dict):
        return v if isinstance(v, str | int) and not isinstance(v, bool) else None
    if "stringValue" in v:
        text = v["stringValue"]
        return text if isinstance(text, str) else None
    if "intValue" in v:
        n = v["intValue"]
        if isinstance(n, str):
            return whole_number(n)
        return n if isinstance(n, int) and not isinstance(n, bool) else None
    return None


def _blank(v: Any) -> bool:
    """Is ``v`` absent as a name: not text, or empty or white space only?"""
    return not isinstance(v, str) or not v.strip()


def _jaeger_process(proc: Any) -> tuple[str, str] | str:
    """(service, instance) of a Jaeger process object; what is wrong with it (text) when it is
    not an object or its ``serviceName`` is not a name (missing, not text, empty, white space)."""
    if not isinstance(proc, dict):
        return f"is {json_kind(proc)}, not an object with a serviceName"
    service = proc.get("serviceName")
    if not isinstance(service, str) or not service.strip():
        shown = "missing" if "serviceName" not in proc else _json_shown(service)
        return f'has "serviceName" {shown}; give the name of the service'
    tags = proc.get("tags")
    pairs = (
        [(t["key"], t.get("value")) for t in tags if isinstance(t, dict) and isinstance(t.get("key"), str)]
        if isinstance(tags, list)
        else []
    )
    return service, _instance_of(service, pairs)


def _ref_type(value: Any) -> RefType | None:
    """A reference's type (``CHILD_OF``, ``FOLLOWS_FROM``, in any case, ``-`` for ``_``); None
    for anything else."""
    text = value.upper().replace("-", "_") if isinstance(value, str) else ""
    if text in ("CHILD_OF", "CHILDOF"):
        return RefType.CHILD_OF
    if text in ("FOLLOWS_FROM", "FOLLOWSFROM"):
        return RefType.FOLLOWS_FROM
    return None


def _unknown_ref_type(n: int, value: Any) -> str:
    return f'reference {n} has "refType" {_json_shown(value)}, neither CHILD_OF nor FOLLOWS_FROM'


def _ref_problem(n: int, ref: Any, key: str) -> str | None:
    """What is wrong with reference ``n`` (from 1) of a span, in words, or None: not an object,
    or its span ID (``key``) missing, empty or not text."""
    if not isinstance(ref, dict):
        return f"reference {n} is {json_kind(ref)}, not an object"
    if key not in ref:
        return f'reference {n} has no "{key}"'
    v = ref[key]
    if not isinstance(v, str):
        return f'reference {n} has "{key}" {json_kind(v)}, not a span ID'
    return f'reference {n} has an empty "{key}"' if not v.strip() else None


def _parse_jaeger_trace(
    doc: Any, source: str, position: int, diagnostics: list[str], keep_tags: bool = True
) -> list[_Assembler]:
    if not isinstance(doc, dict):
        raise TraceParseError(
            f"trace #{position} is {json_kind(doc)}, not an object",
            source=source,
            fix=_FORMATS_HINT,
        )
    spans = doc.get("spans")
    if not isinstance(spans, list):
        raise TraceParseError(
            '"spans" must be a list',
            source=source,
            trace_id=str(doc.get("traceID", f"#{position}")),
            fix=_FORMATS_HINT,
        )
    trace_id = doc.get("traceID")
    if not isinstance(trace_id, str) or not trace_id.strip():
        first = spans[0] if spans and isinstance(spans[0], dict) else {}
        trace_id = first.get("traceID")
        if not isinstance(trace_id, str) or not trace_id.strip():
            # Named after its place, which no other trace of any input shares: traces without an
            # ID are never merged with one another (trace #0 of two files is two requests).
            trace_id = f"{source}#{position}"
            diagnostics.append(
                f"{source}: trace #{position} has no traceID; it is a trace of its own, {trace_id}"
            )
    asm = _Assembler(source, trace_id, diagnostics)
    processes = doc.get("processes") or {}
    if not isinstance(processes, dict):
        raise _fail(asm, None, '"processes" must be an object')
    procs = {pid: _jaeger_process(proc) for pid, proc in processes.items()}
    add = asm.add
    key = canonical_trace_id(trace_id)
    others: dict[str, _Assembler] = {}  # spans whose own traceID names another trace
    noted: list[str] = _jaeger_warnings(doc.get("warnings"), None)
    kept = 0
    for k, s in enumerate(spans):
        if s.__class__ is dict:
            own = s.get("traceID")
            if own is not None and own != trace_id and own.__class__ is str and own.strip():
                other = canonical_trace_id(own)
                if other != key:
                    holder = others.get(other)
                    if holder is None:
                        holder = others[other] = _Assembler(source, own, diagnostics)
                    raw = _jaeger_span(holder, procs, s, k, keep_tags)
                    if raw is not None:
                        holder.warn(
                            raw.span_id,
                            f'its "traceID" names another trace than {key}; read in its own trace',
                        )
                        holder.add(raw)
                    continue
            if s.get("warnings"):
                noted += _jaeger_warnings(s["warnings"], s.get("spanID"))
        kept += 1
        raw = _jaeger_span(asm, procs, s, k, keep_tags)
        if raw is not None:
            add(raw)
    if noted:
        shown = "; ".join(noted[:_JAEGER_WARNINGS_SHOWN])
        more = len(noted) - _JAEGER_WARNINGS_SHOWN
        asm.warn(None, f"Jaeger's warnings: {shown}" + (f" (and {more} more)" if more > 0 else ""))
    return [asm, *others.values()] if kept or not others else list(others.values())


def _jaeger_warnings(warnings: Any, span_id: Any) -> list[str]:
    """Jaeger's own warnings of a trace (``span_id`` None) or of a span, each as a short text."""
    if not warnings:
        return []
    items = warnings if isinstance(warnings, list) else [warnings]
    where = f"span {canonical_span_id(span_id)}: " if isinstance(span_id, str) else ""
    return [
        where + json.dumps(w if isinstance(w, str) else _json_shown(w), ensure_ascii=False)[:200]
        for w in items
    ]


def _same_trace(ref_trace: Any, trace_id: str) -> bool:
    """Does a reference's trace ID name ``trace_id``, in any spelling (:func:`canonical_trace_id`)?"""
    return isinstance(ref_trace, str) and canonical_trace_id(ref_trace) == canonical_trace_id(trace_id)


def jaeger_kind_tag(tags: Any) -> Any:
    """``_span_kind(_jaeger_tags(tags))`` without building the tag pairs."""
    kind: Any = ""
    if isinstance(tags, list):
        for t in tags:
            if t.__class__ is dict and t.get("key") == "span.kind":
                v = t.get("value")
                kind = v if v.__class__ in _SCALARS else _tag_value(v)
    return kind


def jaeger_kind(tags: Any) -> str:
    """The span kind a Jaeger span's ``tags`` name (:func:`span_kind_value`), ``""`` for none or
    one that is no kind (the reference path warns of it: such a trace is not read in columns)."""
    return span_kind_value(jaeger_kind_tag(tags)) or ""


def _jaeger_refs(
    asm: _Assembler, span_id: str, raw_refs: Any, get: Callable[[str], Any]
) -> list[tuple[RefType, str]] | None:
    """A Jaeger span's references to spans of its own trace, in order (``parentSpanID`` when it
    has none); None when one is malformed (the span is then refused, naming the reference and
    what is wrong with it)."""
    refs: list[tuple[RefType, str]] = []
    if raw_refs:
        if raw_refs.__class__ is not list and not isinstance(raw_refs, list):
            asm.refuse(span_id, f'"references" is {json_kind(raw_refs)}, not a list')
            return None
        trace_id = asm.trace_id
        for n, ref in enumerate(raw_refs, 1):
            if (
                ref.__class__ is not dict
                or (ref_span := ref.get("spanID")).__class__ is not str
                or not ref_span
            ):
                problem = _ref_problem(n, ref, "spanID")
                if problem is not None:
                    asm.refuse(span_id, problem)
                    return None
                ref_span = ref["spanID"]
            value = ref.get("refType", "CHILD_OF")
            rtype = (
                _CHILD_OF
                if value == "CHILD_OF"
                else _FOLLOWS_FROM
                if value == "FOLLOWS_FROM"
                else _ref_type(value)
            )
            if rtype is None:
                asm.refuse(span_id, _unknown_ref_type(n, value))
                return None
            ref_trace = ref.get("traceID")
            if ref_trace not in (None, "", trace_id) and not _same_trace(ref_trace, trace_id):
                continue  # a link to another trace is no parent here
            refs.append((rtype, ref_span))
    else:
        parent = get("parentSpanID")
        if parent and parent.__class__ is str:
            refs.append((_CHILD_OF, parent))
    return refs


def _jaeger_span(
    asm: _Assembler, procs: Mapping[str, tuple[str, str] | str], s: Any, k: int, keep_tags: bool = True
) -> _Raw | None:
    """One span of a Jaeger trace, or None when it is refused (then counted and warned about).

    Written for speed (it runs once per span of every file): the common shapes are tested by
    exact class first, everything else falls through to the checks that name the problem."""
    if s.__class__ is not dict and not isinstance(s, dict):
        raise _fail(asm, f"#{k}", "a span must be a JSON object")
    get = s.get
    span_id = get("spanID")
    if span_id.__class__ is not str or not span_id.strip():
        v = get("spanID")
        what = (
            "missing" if "spanID" not in s else "empty" if isinstance(v, str) else f"{json_kind(v)}, not text"
        )
        asm.refuse(f"#{k}", f'"spanID" is {what}: the span has no ID')
        return None
    start = get("startTime")
    if start.__class__ is not int:
        start = _int_field(asm, span_id, s, "startTime")
        if start is None:
            return None
    duration = get("duration")
    if duration.__class__ is not int:
        duration = _int_field(asm, span_id, s, "duration")
        if duration is None:
            return None
    pid = get("processID")
    found = procs.get(pid) if pid.__class__ is str else None
    where = f"its process {pid}"
    if found is None or "process" in s:
        process = get("process")
        if isinstance(process, dict) and "serviceName" in process:
            found = _jaeger_process(process)
            where = "its process"
        elif found is None:
            raise _fail(asm, span_id, f"processID {pid!r} is not in the trace's processes")
    if isinstance(found, str):
        asm.refuse(span_id, f"{where} {found}")
        return None
    service, instance = found
    refs = _jaeger_refs(asm, span_id, get("references"), get)
    if refs is None:
        return None
    if keep_tags:
        tags = _jaeger_tags(get("tags"))
        kind = _kind_of(asm, span_id, _span_kind(tags))
    else:
        tags = ()
        kind = _kind_of(asm, span_id, jaeger_kind_tag(get("tags")))
    operation = get("operationName")
    return _Raw(
        span_id,
        service,
        instance,
        operation if operation.__class__ is str else str(operation) if operation is not None else "",
        start,
        duration,
        refs,
        kind,
        tags,
    )


# ---------------------------------------------------------------------------------------------
# Jaeger JSON straight into columns: the traces that need no repair
#
# The schema names only the fields the parser reads; msgspec skips every other one without
# building it. A trace that does not fit (a field of another type, a missing one, NaN, JSON
# nested too deeply, text that is not UTF-8) or that needs a repair or a refusal is read by the
# reference path above instead, which then gives the warnings and errors.


class _JRef(msgspec.Struct, gc=False):
    span_id: str = msgspec.field(name="spanID")
    ref_type: str = msgspec.field(name="refType", default="CHILD_OF")
    trace_id: str | None = msgspec.field(name="traceID", default=None)


class _JSpan(msgspec.Struct, gc=False):
    span_id: str = msgspec.field(name="spanID")
    start: int = msgspec.field(name="startTime")
    duration: int = msgspec.field(name="duration")
    process_id: str | None = msgspec.field(name="processID", default=None)
    operation: str = msgspec.field(name="operationName", default="")
    references: list[_JRef] | None = None
    parent_span_id: Any = msgspec.field(name="parentSpanID", default=None)
    tags: msgspec.Raw = msgspec.Raw()
    process: Any = None
    trace_id: str | None = msgspec.field(name="traceID", default=None)
    warnings: Any = None


class _JTrace(msgspec.Struct, gc=False):
    trace_id: str = msgspec.field(name="traceID", default="")
    warnings: Any = None
    spans: list[_JSpan] = []
    processes: dict[str, msgspec.Raw] | None = None


class _JEnvelope(msgspec.Struct, gc=False):
    data: list[msgspec.Raw] | None = None
    errors: Any = None
    resource_spans: msgspec.Raw = msgspec.field(name="resourceSpans", default=msgspec.Raw())
    result: msgspec.Raw = msgspec.Raw()


_TRACE = msgspec.json.Decoder(_JTrace)
_ENVELOPE = msgspec.json.Decoder(_JEnvelope | list[msgspec.Raw])
_PROCESSES: dict[bytes, tuple[str, str]] = {}
"""(service, instance) by a process's JSON text: a file names the same few processes in every
trace (emptied when it grows past :data:`_PROCESSES_KEPT`)."""
_PROCESSES_KEPT = 4096


def _process(raw: msgspec.Raw) -> tuple[str, str] | None:
    """The service and instance of a Jaeger process (JSON text), decoded and read as the reference
    path reads it; None for a process that path refuses."""
    text = bytes(raw)
    found = _PROCESSES.get(text)
    if found is None:
        try:
            proc = decode_json(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        read = _jaeger_process(proc)
        if isinstance(read, str):
            return None  # refused by the reference path, which names it
        found = read
        if len(_PROCESSES) >= _PROCESSES_KEPT:
            _PROCESSES.clear()
        _PROCESSES[text] = found
    return found


@dataclass(slots=True)
class _Clean:
    """A Jaeger trace read into columns; ``entry`` is its JSON text, read again in full by
    :meth:`assembler` when another part of the same trace turns up."""

    trace_id: str
    cols: SpanColumns
    entry: bytes | msgspec.Raw
    source: str
    position: int
    sources: list[str]

    def assembler(self, diagnostics: list[str], keep_tags: bool) -> _Assembler:
        raw = self.entry if isinstance(self.entry, bytes) else bytes(self.entry)
        [asm] = _parse_jaeger_trace(decode_json(raw), self.source, self.position, diagnostics, keep_tags)
        return asm  # a clean trace: every span in it, no other trace named


def _links(
    trace_id: str, spans: list[_JSpan], ids: list[str], index: dict[str, int]
) -> tuple[list[int], list[str | None], list[bool]] | None:
    """Each span's parent (index within the trace, -1 for none), the parent's ID and whether the
    reference is ``FOLLOWS_FROM``, as :meth:`_Assembler.build` decides them for a trace with at
    most one reference to a span of the same trace a span; None for any other trace."""
    n = len(spans)
    refs = [s.references for s in spans]
    counts = [len(r) if r else 0 for r in refs]
    ones = counts.count(1)
    if ones == n - counts.count(0):  # the common shape: one reference or none
        single = [r[0] for r in refs if r]
        if {r.trace_id for r in single} <= {None, "", trace_id} and {r.ref_type for r in single} == {
            "CHILD_OF"
        }:
            if any(s.parent_span_id for s, c in zip(spans, counts, strict=True) if not c):
                return _links_each(trace_id, spans, index)
            at = [k for k, c in enumerate(counts) if c]
            to = [r.span_id for r in single]
            found = list(map(index.get, to))
            if None in found or any(map(str.__eq__, to, [ids[k] for k in at])):
                return None
            parents = [-1] * n
            parent_ids: list[str | None] = [None] * n
            for k, j, pid in zip(at, found, to, strict=True):
                parents[k] = j  # type: ignore[assignment]
                parent_ids[k] = pid
            return parents, parent_ids, [False] * n
    return _links_each(trace_id, spans, index)


def _acyclic(parents: list[int]) -> bool:
    """Do the parent indexes (-1: a root) lead every span to a root (no loop)? Each span is
    followed once."""
    state = bytearray(len(parents))  # 0 not yet followed, 1 on the chain being followed, 2 leads to a root
    for i in range(len(parents)):
        if state[i]:
            continue
        chain = []
        j = i
        while j >= 0 and not state[j]:
            state[j] = 1
            chain.append(j)
            j = parents[j]
        if j >= 0 and state[j] == 1:
            return False
        for k in chain:
            state[k] = 2
    return True


def _links_each(
    trace_id: str, spans: list[_JSpan], index: dict[str, int]
) -> tuple[list[int], list[str | None], list[bool]] | None:
    """:func:`_links`, span by span (for any shape)."""
    parents: list[int] = []
    parent_ids: list[str | None] = []
    follows: list[bool] = []
    get = index.get
    for k, s in enumerate(spans):
        refs = s.references
        if refs:
            if any(r.trace_id not in (None, "", trace_id) for r in refs):
                return None  # a link to another trace, or this one spelt otherwise: the reference path
            if len(refs) > 1:
                return None
            ref = refs[0]
            rtype = ref.ref_type
            if rtype == "CHILD_OF":
                follows.append(False)
            elif rtype == "FOLLOWS_FROM":
                follows.append(True)
            else:
                return None
            pid = ref.span_id
        else:
            follows.append(False)
            pid = s.parent_span_id
            if not pid or pid.__class__ is not str:
                parents.append(-1)
                parent_ids.append(None)
                continue
        j = get(pid)
        if j is None or j == k:
            return None
        parents.append(j)
        parent_ids.append(pid)
    return parents, parent_ids, follows


def _clean_trace(entry: bytes | msgspec.Raw, source: str, position: int) -> _Clean | None:
    """The Jaeger trace ``entry`` (JSON text) in columns, or None when it is not clean: when the
    reference path would read it otherwise, repair it, refuse a span or raise. Clean: the shape
    of :class:`_JTrace` (types included), a non-empty trace ID, spans with unique non-empty IDs,
    every start and duration in range, each process ID in ``processes`` and no inline process,
    at most one reference to a span of the same trace (``CHILD_OF`` or ``FOLLOWS_FROM`` spelt so),
    to another span of the trace."""
    t = _decode_trace(entry)
    return None if t is None else _clean_decoded(t, entry, source, position)


def _decode_trace(entry: bytes | msgspec.Raw) -> _JTrace | None:
    try:
        return _TRACE.decode(entry)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


_KIND_AS_WRITTEN = re.compile(
    rb'span\.kind"\s*,\s*"type"\s*:\s*"string"\s*,\s*"value"\s*:\s*"(?:server|client|producer|consumer|internal)"'
)
"""The rest of a ``span.kind`` tag as Jaeger writes a kind (``{"key": "span.kind", "type": "string",
"value": "server"}``, the common case, told without decoding the tags)."""
_KIND_OTHERWISE = re.compile(b"span\\.kind(?!" + _KIND_AS_WRITTEN.pattern[len(rb"span\.kind") :] + b")")
"""``span.kind`` anywhere but in such a tag."""


def _kind_clean(tags: msgspec.Raw) -> bool:
    """Does a span's ``tags`` JSON text name no span kind, or one :func:`span_kind_value` reads
    (not one the reference path warns of)?"""
    raw = bytes(tags)
    if b"span.kind" not in raw and b"\\" not in raw:
        return True
    if raw.count(b"span.kind") == 1 and _KIND_AS_WRITTEN.search(raw):
        return True
    try:
        return span_kind_value(jaeger_kind_tag(decode_json(raw) if raw else None)) is not None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _kinds_clean(entry: bytes | msgspec.Raw, spans: list[_JSpan]) -> bool:
    """:func:`_kind_clean` of every span of the trace whose JSON text is ``entry``: at once when
    each ``span.kind`` in the text is a tag as Jaeger writes a kind (no escape to hide one)."""
    text = entry if isinstance(entry, bytes) else bytes(entry)
    if b"\\" not in text and not _KIND_OTHERWISE.search(text):
        return True
    return all(_kind_clean(s.tags) for s in spans)


def _processes(t: _JTrace) -> dict[str, tuple[str, str]] | None:
    """A trace's processes: (service, instance) by process ID; None for one of another shape."""
    procs = {pid: _process(raw) for pid, raw in t.processes.items()} if t.processes else {}
    return None if None in procs.values() else procs  # type: ignore[return-value]


def _clean_decoded(t: _JTrace, entry: bytes | msgspec.Raw, source: str, position: int) -> _Clean | None:
    """:func:`_clean_trace` of the decoded trace ``t``."""
    trace_id, spans = t.trace_id, t.spans
    if not trace_id.strip() or not spans:  # no ID: the reference path names the trace and warns
        return None
    if t.warnings or canonical_trace_id(trace_id) == _ZERO_ID:
        return None  # Jaeger's warnings to pass on, an invalid ID: the reference path
    if {s.trace_id for s in spans} - {None, trace_id} or any([s.warnings for s in spans]):
        return None  # a span of another trace, or with Jaeger's warnings
    procs = _processes(t)
    if procs is None or not _kinds_clean(entry, spans):
        return None
    n = len(spans)
    ids = [s.span_id for s in spans]
    if not _canonical_span_ids(ids) and ids != list(map(canonical_span_id, ids)):
        return None  # another spelling: the reference path puts it in one (canonical_span_id)
    index = dict(zip(ids, range(n), strict=True))
    if len(index) != n or _ZERO_ID in index:
        return None
    starts = [s.start for s in spans]
    durations = [s.duration for s in spans]
    if (
        min(starts) < 0
        or min(durations) < 0
        or max(durations) > MAX_DURATION_US
        or max(map(int.__add__, starts, durations)) >= MAX_TIME_US
    ):
        return None
    try:
        found = [procs[s.process_id] for s in spans]  # type: ignore[index]
    except KeyError:
        return None
    if [s.process for s in spans].count(None) != n:
        return None
    links = _links(trace_id, spans, ids, index)
    if links is None or not _acyclic(links[0]):
        return None  # a loop of parents: the reference path breaks it and warns (_Assembler.build)
    parents, parent_ids, follows = links
    services = [f[0] for f in found]
    instances = [f[1] for f in found]
    cols = SpanColumns(
        ids,
        services,
        instances,
        [s.operation for s in spans],
        starts,
        durations,
        parents,
        parent_ids,
        follows,
        [s.tags for s in spans],
    )
    return _Clean(trace_id, cols, entry, source, position, [source])


# ---------------------------------------------------------------------------------------------
# Jaeger domain JSON (base64 IDs, RFC 3339 times, Go durations)


def _b64_hex(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{json_kind(value) if value is not None else 'missing'}, not a base64 ID")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{_json_shown(value)}, not a base64 ID") from None
    h = raw.hex()
    if len(raw) == 16 and raw[:8] == bytes(8):
        h = h[16:]  # Jaeger prints 128-bit IDs with a zero high half as 64-bit
    return h


def _domain_pairs(tags: Any) -> list[tuple[str, Any]]:
    """A domain-JSON tag list as (key, value) pairs, each value as the document holds it (a
    ``vInt64`` written as text read as its number, :func:`whole_number`)."""
    if not isinstance(tags, list):
        return []
    out: list[tuple[str, Any]] = []
    for t in tags:
        if not isinstance(t, dict) or not isinstance(t.get("key"), str):
            continue
        for k in ("vStr", "vBool", "vInt64", "vFloat64", "vBinary"):
            if k in t:
                v = t[k]
                if k == "vInt64" and isinstance(v, str) and (whole := whole_number(v)) is not None:
                    v = whole
                out.append((t["key"], v))
                break
    return out


def _domain_tags(tags: Any) -> tuple[tuple[str, TagValue], ...]:
    return tuple((k, _tag_value(v)) for k, v in _domain_pairs(tags))


def _domain_refs(asm: _Assembler, span_id: str, raw_refs: Any) -> list[tuple[RefType, str]] | None:
    """A domain-JSON span's references to spans of its own trace; None when one is malformed (the
    span is then refused, naming the reference and what is wrong with it)."""
    refs: list[tuple[RefType, str]] = []
    if not raw_refs:
        return refs
    if not isinstance(raw_refs, list):
        asm.refuse(span_id, f'"references" is {json_kind(raw_refs)}, not a list')
        return None
    for n, ref in enumerate(raw_refs, 1):
        problem = _ref_problem(n, ref, "spanId")
        if problem is None:
            try:
                ref_trace = _b64_hex(ref.get("traceId")) if ref.get("traceId") else asm.trace_id
                ref_span = _b64_hex(ref["spanId"])
            except ValueError as err:
                problem = f"reference {n}: {err}"
        if problem is None:
            value = ref.get("refType", "CHILD_OF")
            rtype = _ref_type(value)
            if rtype is None:
                problem = _unknown_ref_type(n, value)
            elif _same_trace(ref_trace, asm.trace_id):
                refs.append((rtype, ref_span))
        if problem is not None:
            asm.refuse(span_id, problem)
            return None
    return refs


def _domain_time(
    asm: _Assembler, span_id: str, raw: Mapping[str, Any], key: str, parse: Callable[[str], int]
) -> int | None:
    """``raw[key]`` read by ``parse`` (an RFC 3339 time or a Go duration, as text), microseconds;
    None when it is missing, not text or not readable (the span is then refused, naming the field
    and the value, as for a number out of range)."""
    v = raw.get(key)
    if not isinstance(v, str):
        problem = "missing" if key not in raw else f"{_json_shown(v)}, not text"
        asm.refuse(span_id, f'"{key}" is {problem}')
        return None
    try:
        return parse(v)
    except (ValueError, OverflowError) as err:
        asm.refuse(span_id, f'"{key}": {err}')
        return None


def _parse_domain_trace(doc: dict[str, Any], source: str, diagnostics: list[str]) -> list[_Assembler]:
    """A trace in Jaeger's domain JSON: each span read in the trace its own ``traceId`` names (a
    document whose spans name two traces gives two, as in Jaeger JSON); a span whose ``traceId`` is
    not an ID, or which is not an object, is refused with a warning naming the file and the span."""
    spans = doc["spans"]
    holders: dict[str, _Assembler] = {}
    pmap: dict[str, Any] = {}
    for entry in doc.get("processMap") or []:
        if isinstance(entry, dict) and isinstance(entry.get("processId"), str):
            pmap[entry["processId"]] = entry.get("process")
    for k, s in enumerate(spans):
        if not isinstance(s, dict):
            diagnostics.append(
                f"{source}: span #{k} refused: a span must be a JSON object, not {json_kind(s)}"
            )
            continue
        try:
            trace_id = _b64_hex(s.get("traceId"))
        except ValueError as err:
            diagnostics.append(f'{source}: span #{k} refused: "traceId" is {err}')
            continue
        key = canonical_trace_id(trace_id)
        asm = holders.get(key)
        if asm is None:
            asm = holders[key] = _Assembler(source, trace_id, diagnostics)
            if len(holders) == 1:
                asm.warnings.extend(str(w) for w in doc.get("warnings") or [])
            else:
                asm.warn(None, "its spans are in a document of another trace; read as a trace of its own")
        try:
            span_id = _b64_hex(s.get("spanId"))
        except ValueError as err:
            asm.refuse(f"#{k}", f'"spanId" is {err}')
            continue
        start = _domain_time(asm, span_id, s, "startTime", _rfc3339_us)
        duration = (
            _domain_time(asm, span_id, s, "duration", _trace_duration_us) if start is not None else None
        )
        if start is None or duration is None:
            continue  # refused
        proc = s.get("process") or pmap.get(str(s.get("processId")))
        if not isinstance(proc, dict) or _blank(proc.get("serviceName")):
            shown = (
                "no process"
                if not isinstance(proc, dict)
                else f'"serviceName" {_json_shown(proc.get("serviceName"))}'
            )
            asm.refuse(span_id, f"its process has {shown}; give the name of the service")
            continue
        service = proc["serviceName"]
        instance = _instance_of(service, _domain_pairs(proc.get("tags")))
        refs = _domain_refs(asm, span_id, s.get("references"))
        if refs is None:
            continue  # refused
        tags = _domain_tags(s.get("tags"))
        kind = _kind_of(asm, span_id, _span_kind(tags))
        asm.add(
            _Raw(
                span_id, service, instance, str(s.get("operationName", "")), start, duration, refs, kind, tags
            )
        )
    return list(holders.values())


# ---------------------------------------------------------------------------------------------
# OTLP JSON


def _otlp_id(value: Any, nbytes: int) -> str:
    """An OTLP ID of ``nbytes`` bytes (hex, or base64 as protobuf's JSON mapping writes bytes), as
    hex; ``ValueError`` saying in words what is wrong with any other value."""
    if not isinstance(value, str):
        raise ValueError(f"{json_kind(value) if value is not None else 'missing'}, not an ID")
    v = value.strip()
    if len(v) == 2 * nbytes and all(c in "0123456789abcdefABCDEF" for c in v):
        return v.lower()
    expected = f"{2 * nbytes} hex digits or base64 of {nbytes} bytes"
    try:
        raw = base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{_json_shown(value)}, not an ID ({expected})") from None
    if len(raw) != nbytes:
        raise ValueError(f"{_json_shown(value)}, an ID of {len(raw)} bytes ({expected})")
    return raw.hex()


def _otlp_value(v: Any) -> TagValue:
    if not isinstance(v, dict):
        return _tag_value(v)
    if "stringValue" in v:
        text = v["stringValue"]
        return "" if text is None else str(text)  # null: no value, as a missing one
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "intValue" in v:
        n = v["intValue"]
        if isinstance(n, str):
            whole = whole_number(n)
            return n if whole is None else _tag_value(whole)
        return "" if n is None else _tag_value(n)
    if "doubleValue" in v:
        try:
            return float(v["doubleValue"])
        except (TypeError, ValueError):
            return str(v["doubleValue"])
    if "arrayValue" in v:
        values = (v["arrayValue"] or {}).get("values") or []
        return json.dumps([_otlp_value(x) for x in values])
    if "kvlistValue" in v:
        values = (v["kvlistValue"] or {}).get("values") or []
        return json.dumps(
            {x.get("key"): _otlp_value(x.get("value")) for x in values if isinstance(x, dict)}, sort_keys=True
        )
    if "bytesValue" in v:
        return str(v["bytesValue"])
    return ""


def _otlp_attrs(attrs: Any) -> tuple[tuple[str, TagValue], ...]:
    if not isinstance(attrs, list):
        return ()
    return tuple(
        (a["key"], _otlp_value(a.get("value")))
        for a in attrs
        if isinstance(a, dict) and isinstance(a.get("key"), str)
    )


def _otlp_kind(value: Any) -> str | None:
    """An OTLP span's ``kind``: its number (0 to 5, also written as text, a common exporter
    fault) or its enum name (``SPAN_KIND_SERVER``, also ``SERVER`` or ``server``), as one of
    :class:`Span`'s kinds; ``""`` when missing; None for anything else (read as unspecified by
    the caller, with a warning)."""
    if value is None:
        return ""
    if isinstance(value, str):
        number = whole_number(value)
        if number is None:
            return _OTLP_KIND_NAMES.get(value.strip().upper().removeprefix("SPAN_KIND_"))
        value = number
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _OTLP_KINDS.get(value)
    return None


def _otlp_ns(asm: _Assembler, span_id: str, raw: Mapping[str, Any], key: str) -> int | None:
    """``raw[key]``, nanoseconds (an integer, or its digits as text as OTLP JSON writes 64-bit
    values); None when it is anything else (the span is then refused, :func:`_int_field`)."""
    return _int_field(asm, span_id, raw, key, "nanoseconds")


def _otlp_resource(resource: Any) -> tuple[str, str]:
    """The service and instance an OTLP resource names: the one rule of instance identity
    (:func:`_instance_of`), applied to text and whole numbers only (an array or a list of pairs
    names nothing); without a usable ``service.name``, ``unknown_service`` (OpenTelemetry's name)."""
    attrs = resource.get("attributes") if isinstance(resource, dict) else None
    names = [
        (a["key"], _otlp_name(a.get("value")))
        for a in (attrs if isinstance(attrs, list) else ())
        if isinstance(a, dict) and isinstance(a.get("key"), str)
    ]
    service = _instance_of("unknown_service", [(INSTANCE_KEYS[0], dict(names).get("service.name"))])
    return service, _instance_of(service, names)


def _parse_otlp(doc: Mapping[str, Any], source: str, diagnostics: list[str]) -> list[_Assembler]:
    rs_list = doc.get("resourceSpans")
    if not isinstance(rs_list, list):
        raise TraceParseError('"resourceSpans" must be a list', source=source, fix=_FORMATS_HINT)
    traces: dict[str, _Assembler] = {}
    seen = 0  # spans, refused ones included
    for rs in rs_list:
        if not isinstance(rs, dict):
            raise TraceParseError("a resourceSpans entry must be a JSON object", source=source)
        service, instance = _otlp_resource(rs.get("resource"))
        scopes = rs.get("scopeSpans", rs.get("instrumentationLibrarySpans")) or []
        for scope in scopes:
            for k, s in enumerate((scope or {}).get("spans") or []):
                if not isinstance(s, dict):
                    raise TraceParseError("a span must be a JSON object", source=source, span_id=f"#{k}")
                seen += 1
                try:
                    trace_id = _otlp_id(s.get("traceId"), 16)
                except ValueError as err:
                    # No trace to hold the span: refused here, named by its own ID if it has one.
                    sid = s.get("spanId")
                    shown = canonical_span_id(sid) if isinstance(sid, str) and sid.strip() else f"#{k}"
                    diagnostics.append(
                        f'{source}: span {shown} refused: "traceId" is {err}; it belongs to no trace'
                    )
                    continue
                asm = traces.get(trace_id)
                if asm is None:
                    asm = traces[trace_id] = _Assembler(source, trace_id, diagnostics)
                try:
                    span_id = _otlp_id(s.get("spanId"), 8)
                except ValueError as err:
                    asm.refuse(f"#{k}", f'"spanId" is {err}')
                    continue
                start_ns = _otlp_ns(asm, span_id, s, "startTimeUnixNano")
                end_ns = _otlp_ns(asm, span_id, s, "endTimeUnixNano") if start_ns is not None else None
                if start_ns is None or end_ns is None:
                    continue  # refused
                refs: list[tuple[RefType, str]] = []
                parent = s.get("parentSpanId")
                if parent:
                    try:
                        refs.append((RefType.CHILD_OF, _otlp_id(parent, 8)))
                    except ValueError as err:
                        asm.refuse(span_id, f'"parentSpanId" is {err}')
                        continue
                kind = _otlp_kind(s.get("kind"))
                if kind is None:
                    kind = ""
                    asm.warn(
                        span_id,
                        f'"kind" is {_json_shown(s.get("kind"))}, no OTLP span kind (0 to 5, or '
                        "SPAN_KIND_INTERNAL, _SERVER, _CLIENT, _PRODUCER, _CONSUMER); read as unspecified",
                    )
                start = start_ns // 1000
                asm.add(
                    _Raw(
                        span_id,
                        service,
                        instance,
                        str(s.get("name", "")),
                        start,
                        end_ns // 1000 - start,
                        refs,
                        kind,
                        _otlp_attrs(s.get("attributes")),
                    )
                )
    if not seen:
        raise TraceParseError("the document holds no spans", source=source)
    return list(traces.values())
