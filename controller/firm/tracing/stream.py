"""Trace files read in bounded batches: files larger than memory, memory proportional to the batch.

:func:`trace_batches` reads FILES as :func:`firm.tracing.source.read_files` does, but hands the
traces over in batches of about ``batch_bytes`` of JSON each, so that a command holds one batch's
objects at a time (a parsed trace takes about ten times its JSON text in memory):

- a file of at most ``batch_bytes`` is read whole, exactly as :class:`TraceReader` reads it;
- a larger Jaeger query-API file (``{"data": [trace, ...], ...}``) or list of Jaeger traces
  (``[trace, ...]``) is split into its traces by :class:`JsonArraySplitter` (a structural scan
  of the bytes, block by block, that tells the entries of the streamed array apart without
  decoding them), and each trace is decoded and parsed as the whole-file reader would;
- a larger JSON Lines file is read line by line (:meth:`TraceReader.read_line`: a bad line is
  skipped with a warning naming it, as in a whole file);
- a larger file of another shape (OTLP, whose traces are spread over the whole document;
  Jaeger's domain JSON; one Jaeger trace) is read whole.

The spans of one trace that come in several parts (several documents or files) are merged into
one trace when the parts fall into the same batch; a part that comes after its trace was handed
over in an earlier batch is handed over as a trace of its own, with a warning on it and in the
diagnostics that says so (a larger batch merges them). Within the batch size the result is the
same as :func:`firm.tracing.source.read_files`'s, batch after batch.

:func:`write_critical_paths` and :func:`stream_features` are ``firm critical-path`` and
``firm features`` over such batches: the first writes its JSON document as batches complete (the
same bytes as building it whole), the second keeps only each request's per-instance times.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from firm.tracing.critical_path import critical_paths
from firm.tracing.errors import TraceParseError
from firm.tracing.export import write_critical_path_document
from firm.tracing.features import DEFAULT_MIN_SAMPLES, PathSummary, WindowFeatures, window_features
from firm.tracing.gcpause import paused_gc
from firm.tracing.model import Trace
from firm.tracing.parse import (
    TraceReader,
    canonical_trace_id,
    decode_json,
    json_problem,
    looks_like_json_lines,
)
from firm.tracing.source import TraceInput

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "JsonArraySplitter",
    "StreamOptions",
    "stream_features",
    "trace_batches",
    "write_critical_paths",
]

DEFAULT_BATCH_BYTES = 32 * 2**20
"""JSON text per batch, bytes (32 MiB: a peak of roughly 0.3-0.4 GB for the traces of a batch
and their critical paths)."""

_BLOCK_BYTES = 4 * 2**20
"""Bytes read and scanned at a time by :class:`JsonArraySplitter` (at most the batch)."""

_LUT = np.zeros(256, dtype=np.int8)  # 1 opens, -1 closes, 2 a quote, 0 anything else
_LUT[ord("{")] = _LUT[ord("[")] = 1
_LUT[ord("}")] = _LUT[ord("]")] = -1
_LUT[ord('"')] = 2
_MASK = bytes(1 if chr(b) in '{[]}"' else 0 for b in range(256))  # bytes.translate: 1 where _LUT is not 0
_WS = b" \t\r\n"
_BACKSLASH = 0x5C


@dataclass(frozen=True)
class StreamOptions:
    """How :func:`trace_batches` reads."""

    batch_bytes: int = DEFAULT_BATCH_BYTES
    """JSON text per batch, bytes (> 0). Files up to this size are read whole."""
    keep_tags: bool = False
    """Keep span tags (:attr:`firm.tracing.model.Span.tags`); critical paths and features need none."""
    columns: bool = True
    """Read Jaeger traces that need no repair straight into columns (see :class:`TraceReader`);
    False: every trace through the reference parser (the same result, slower)."""

    def __post_init__(self) -> None:
        if self.batch_bytes <= 0:
            raise ValueError(f"batch_bytes must be > 0, not {self.batch_bytes}")


# ---------------------------------------------------------------------------------------------
# Splitting a JSON array into its entries


class _Scan:
    """Brackets outside strings of a JSON byte stream and the depth after each, block by block."""

    def __init__(self) -> None:
        self.in_string = False
        self.escaped = False  # the next block's first byte is escaped by a backslash
        self.depth = 0

    def block(self, data: bytes) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int8], npt.NDArray[np.int64]]:
        """Positions of ``{[]}`` outside strings in ``data``, +1/-1 for each, the depth after each."""
        # One pass over the bytes finds every quote and bracket; the rest works on those only.
        # (bytes.translate to a 0/1 mask, read as booleans, is several times faster than a
        # table lookup over every byte.)
        where = np.flatnonzero(np.frombuffer(data.translate(_MASK), dtype=np.bool_))
        code = _LUT[np.frombuffer(data, dtype=np.uint8)[where]]
        quote = code == 2
        if self.escaped or b"\\" in data:
            at = np.flatnonzero(quote)
            quote[at[self._escaped_quotes(data, where[at])]] = False
            code[~quote & (code == 2)] = 0
        # A bracket is inside a string when an odd number of quotes precede it (in this block, and
        # one more when the block starts inside a string).
        parity = np.cumsum(quote, dtype=np.int64)
        outside = (code != 2) & (code != 0) & (((parity & 1) == 1) == self.in_string)
        brackets = where[outside]
        delta = code[outside]
        depth = self.depth + np.cumsum(delta, dtype=np.int64)
        if depth.size:
            self.depth = int(depth[-1])
        if parity.size:
            self.in_string ^= bool(parity[-1] & 1)
        run = len(data) - len(data.rstrip(b"\\"))
        if run == len(data) and self.escaped:
            run -= 1  # the first backslash is itself escaped
        self.escaped = bool(run & 1)
        return brackets, delta, depth

    def _escaped_quotes(self, data: bytes, quotes: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Per quote: is it escaped (an odd run of backslashes before it)?"""
        out = np.zeros(quotes.size, dtype=np.bool_)
        a = np.frombuffer(data, dtype=np.uint8)
        prev = quotes - 1
        cand = np.flatnonzero((prev >= 0) & (a[np.maximum(prev, 0)] == _BACKSLASH))
        for k in cand.tolist():
            j = int(quotes[k]) - 1
            run = 0
            while j >= 0 and data[j] == _BACKSLASH:
                run += 1
                j -= 1
            if j < 0 and self.escaped:
                run -= 1  # the block's first backslash is itself escaped
            out[k] = bool(run & 1)
        if self.escaped and quotes.size and quotes[0] == 0:
            out[0] = True
        return out


class JsonArraySplitter:
    """The entries of one JSON array inside a JSON text, as bytes, read block by block.

    The array is the text itself when it is an array (``[trace, ...]``), or the value of the
    top-level key ``key`` (``{"data": [trace, ...], ...}``). :meth:`feed` takes the text in
    pieces and returns the entries that are complete; :meth:`close` checks the end. Everything
    around the array is kept as :attr:`envelope` (the text with the array emptied: ``{"data":
    [], "errors": ...}``). Entries are not decoded: each is the exact text of one value (an
    object or an array; a scalar entry is refused). Nothing but the bytes between entries is
    validated here; decoding an entry validates it.

    ``streamable`` becomes False when the text turns out to be neither shape (a top-level
    object without ``key``, an array as ``key``'s value, or ``key`` later than the first
    ``limit`` bytes): the caller then reads it another way. Raises :class:`ValueError` for
    malformed structure around the entries, naming the byte offset.
    """

    def __init__(self, key: str = "data", limit: int = _BLOCK_BYTES) -> None:
        self._key = json.dumps(key).encode()
        self._limit = limit
        self._scan = _Scan()
        self._offset = 0  # of the next byte fed
        self._level = -1  # depth inside the array; -1 before it is found
        self._done = False  # the array has ended
        self._head: list[bytes] = []  # the text before the array's entries (up to its "[")
        self._tail: list[bytes] = []  # the text from the array's "]"
        self._cur: list[bytes] | None = None  # the entry being read
        self._gap: list[bytes] = []  # the text since the last entry
        self._count = 0
        self.streamable: bool | None = None
        """True once the array is found, False when the text has another shape, None before."""
        self.top_level_array = False
        """The text itself is the array."""

    @property
    def envelope(self) -> bytes:
        """The text without the array's entries (valid once :meth:`close` returned)."""
        return b"".join(self._head) + b"".join(self._tail)

    def feed(self, data: bytes) -> list[bytes]:
        """The entries completed by ``data``, the next piece of the text."""
        off = self._offset
        self._offset += len(data)
        pos, delta, depth = self._scan.block(data)
        if self._done:
            self._tail.append(data)
            if sum(map(len, self._tail)) > self._limit:
                raise ValueError(
                    f"at byte {off}: more text after the array than expected; several JSON documents "
                    "are read as JSON Lines, one document a line"
                )
            return []
        start = 0
        if self._level < 0:
            start = self._find_array(data, off, pos, delta, depth)
            if start < 0:
                return []
        lv = self._level
        keep = pos >= start
        pos, delta, depth = pos[keep], delta[keep], depth[keep]
        opens = (delta == 1) & (depth == lv + 1)
        closes = (delta == -1) & (depth == lv)
        ends = (delta == -1) & (depth == lv - 1)
        sel = np.flatnonzero(opens | closes | ends)
        out: list[bytes] = []
        cursor = start
        for p, kind in zip(pos[sel].tolist(), (opens[sel].astype(np.int8) - ends[sel]).tolist(), strict=True):
            if kind == 1:  # an entry opens
                self._gap.append(data[cursor:p])
                self._check_gap(off + p)
                self._cur = []
                cursor = p
            elif kind == 0:  # an entry closes
                assert self._cur is not None
                self._cur.append(data[cursor : p + 1])
                out.append(b"".join(self._cur))
                self._count += 1
                self._cur = None
                self._gap = []
                cursor = p + 1
            else:  # the array ends
                self._gap.append(data[cursor:p])
                if b"".join(self._gap).strip(_WS):
                    raise ValueError(f"at byte {off + p}: a value that is not an object or a trailing comma")
                self._done = True
                self._tail.append(data[p:])
                return out
        rest = data[cursor:]
        if self._cur is not None:
            self._cur.append(rest)
        else:
            self._gap.append(rest)
        return out

    def close(self) -> None:
        """Check that the text ended after the array, nothing left open."""
        if self.streamable and not self._done:
            raise ValueError(f"the text ends inside the array, at byte {self._offset}")
        if self._scan.depth != 0 or self._scan.in_string:
            raise ValueError(f"the text ends inside a value, at byte {self._offset}")
        if self.top_level_array and b"".join(self._tail).strip(_WS) != b"]":
            raise ValueError("more text after the array")

    def _check_gap(self, at: int) -> None:
        gap = b"".join(self._gap).strip(_WS)
        if gap != (b"," if self._count else b""):
            raise ValueError(
                f"at byte {at}: expected {'a comma' if self._count else 'nothing'} before entry #{self._count}, "
                f"found {gap[:40]!r}"
            )
        self._gap = []

    def _find_array(
        self,
        data: bytes,
        off: int,
        pos: npt.NDArray[np.int64],
        delta: npt.NDArray[np.int8],
        depth: npt.NDArray[np.int64],
    ) -> int:
        """Find the array's "[" in ``data``: the position after it, or -1 (not yet, or not
        streamable, ``streamable`` says which)."""
        if self.streamable is False:
            return -1
        head = b"".join(self._head)
        if not head.strip(_WS):
            first = (head + data).lstrip(_WS)[:1]
            if first == b"[":
                self.top_level_array = True
                self._level = 1
                p = int(pos[0])
                self._head.append(data[: p + 1])
                self.streamable = True
                return p + 1
            if first and first != b"{":
                self.streamable = False
                return -1
        for p in pos[(delta == 1) & (depth == 2)].tolist():
            before = (head + data[:p]).rstrip(_WS)
            if before.endswith(b":"):
                before = before[:-1].rstrip(_WS)
                if before.endswith(self._key) and before[: -len(self._key)].rstrip(_WS)[-1:] in (b"{", b","):
                    if data[p] != ord("["):
                        self.streamable = False
                        return -1
                    self._level = 2
                    self._head.append(data[: p + 1])
                    self.streamable = True
                    return int(p) + 1
        self._head.append(data)
        if self._offset > self._limit or (depth.size and int(depth.min()) == 0):
            self.streamable = False
        return -1


# ---------------------------------------------------------------------------------------------
# Batches of traces


class _Batcher:
    """Collects traces into one :class:`TraceReader` at a time; hands over a batch when
    ``batch_bytes`` of JSON have been read into it."""

    def __init__(self, options: StreamOptions) -> None:
        self.options = options
        self.reader = TraceReader(keep_tags=options.keep_tags, columns=options.columns)
        self.size = 0
        self.holds = False
        """Whether a file was read into the reader since the last batch (a pipe's size is 0)."""
        self.seen: set[str] = set()

    def full(self) -> bool:
        return self.size >= self.options.batch_bytes

    def take(self) -> TraceInput:
        reader = self.reader
        self.reader = TraceReader(keep_tags=self.options.keep_tags, columns=self.options.columns)
        self.size = 0
        self.holds = False
        traces = reader.traces()
        diagnostics = list(reader.diagnostics)
        seen = self.seen
        for k, t in enumerate(traces):
            if t.trace_id in seen:
                message = (
                    f"trace {canonical_trace_id(t.trace_id)}: a part of it came after the batch that held its other parts "
                    f"({self.options.batch_bytes} bytes of JSON a batch); it is reported as a trace of its "
                    "own (a larger batch merges them)"
                )
                traces[k] = Trace(t.trace_id, t.spans, (*t.warnings, message), t.sources)
                diagnostics.append(message)
            else:
                seen.add(t.trace_id)
        return TraceInput(traces, diagnostics, {t.trace_id: reader.sources(t.trace_id) for t in traces})


def trace_batches(files: Sequence[Path | str], options: StreamOptions | None = None) -> Iterator[TraceInput]:
    """The traces of ``files`` in batches of about ``options.batch_bytes`` of JSON (see the module
    documentation), each with its diagnostics and each trace's sources.

    Raises :class:`TraceParseError` naming the file for a file that cannot be read or parsed (after
    the batches before it were handed over).
    """
    options = options or StreamOptions()
    batcher = _Batcher(options)
    for path in files:
        p = Path(path)
        try:
            size = p.stat().st_size
        except OSError as err:
            raise TraceParseError(f"cannot read the file: {err.strerror or err}", source=str(p)) from err
        if size <= options.batch_bytes:
            with paused_gc():
                batcher.reader.read_file(p)
            batcher.size += size
            batcher.holds = True
            if batcher.full():
                yield batcher.take()
            continue
        yield from _stream_file(p, batcher)
    if batcher.holds or batcher.size or batcher.reader.diagnostics:
        yield batcher.take()


def _stream_file(p: Path, batcher: _Batcher) -> Iterator[TraceInput]:
    source = str(p)
    try:
        f = p.open("rb")
    except OSError as err:
        raise TraceParseError(f"cannot read the file: {err.strerror or err}", source=source) from err
    with f:
        first = f.read(min(_BLOCK_BYTES, batcher.options.batch_bytes))
        if looks_like_json_lines(first) or _long_first_line_then_more(f, first):
            f.seek(0)
            for number, line in enumerate(f, 1):
                with paused_gc():
                    batcher.reader.read_line(line, source, number)
                batcher.size += len(line)
                if batcher.full():
                    yield batcher.take()
            return
        splitter = JsonArraySplitter("data", limit=batcher.options.batch_bytes)
        yield from _stream_entries(f, first, splitter, source, batcher)
        if splitter.streamable is False:
            with paused_gc():
                batcher.reader.read_file(p)  # another shape: read whole
            batcher.size += p.stat().st_size
            if batcher.full():
                yield batcher.take()


def _long_first_line_then_more(f: BinaryIO, head: bytes) -> bool:
    """Is the file ``f``, whose first bytes are ``head``, JSON Lines whose first line is longer than
    ``head`` (so :func:`looks_like_json_lines` could not judge it)? Yes when that line is one whole
    JSON value (every bracket it opens closed by its end, outside strings: JSON text holds no raw
    newline inside a string, and a pretty-printed document's first line is never whole) and another
    non-blank line follows: the rule of :func:`looks_like_json_lines`, scanned block by block in
    memory of one block. ``f`` is left where it was when the answer is no."""
    text = head.lstrip(_WS)
    if not text[:1] or b"\n" in text:
        return False  # an empty file, or the first line is whole in ``head``: judged already
    at = f.tell()
    try:
        return _first_line_whole_then_more(f, text)
    finally:
        f.seek(at)


def _first_line_whole_then_more(f: BinaryIO, text: bytes) -> bool:
    """:func:`_long_first_line_then_more` from the first line's first bytes ``text`` on (``f`` just
    after them): the line's end and what follows are found first (a fast search: one JSON
    document on one line, the common large file, is not scanned), then the line is scanned."""
    start = f.tell() - len(text)
    length = 0
    block = text
    while (end := block.find(b"\n")) < 0:
        length += len(block)
        block = f.read(_BLOCK_BYTES)
        if not block:
            return False  # one line: a JSON document
    length += end
    rest = block[end + 1 :]
    while not rest.strip(_WS):
        rest = f.read(_BLOCK_BYTES)
        if not rest:
            return False  # one line and blank ones: a JSON document
    f.seek(start)
    scan = _Scan()
    while length > 0:
        block = f.read(min(_BLOCK_BYTES, length))
        if not block:
            return False
        scan.block(block)
        length -= len(block)
    return scan.depth == 0 and not scan.in_string


def _stream_entries(
    f: BinaryIO, first: bytes, splitter: JsonArraySplitter, source: str, batcher: _Batcher
) -> Iterator[TraceInput]:
    block = first
    position = 0
    while block:
        try:
            entries = splitter.feed(block)
        except ValueError as err:
            raise TraceParseError(f"not valid JSON: {err}", source=source) from None
        if splitter.streamable is False:
            return
        done = 0
        while done < len(entries):
            # The entries up to the one that fills the batch, read together.
            room = batcher.options.batch_bytes - batcher.size
            end, size = done, 0
            while end < len(entries) and (size < room or end == done):
                size += len(entries[end])
                end += 1
            with paused_gc():
                batcher.reader.read_jaeger_entries(entries[done:end], source, position)
            position += end - done
            batcher.size += size
            done = end
            if batcher.full():
                yield batcher.take()
        block = f.read(min(_BLOCK_BYTES, batcher.options.batch_bytes))
    try:
        splitter.close()
    except ValueError as err:
        raise TraceParseError(f"not valid JSON: {err}", source=source) from None
    if splitter.streamable is None:
        splitter.streamable = False
        return
    if not splitter.top_level_array:
        try:
            envelope = decode_json(splitter.envelope)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise TraceParseError(
                f"around the traces: {json_problem(err)}",
                source=source,
                fix="give one JSON document, or JSON Lines (one document a line)",
            ) from None
        batcher.reader.read_query_envelope(envelope, source)


# ---------------------------------------------------------------------------------------------
# The two commands over batches


def write_critical_paths(
    files: Sequence[Path | str],
    write: Callable[[bytes], object],
    *,
    overlap_tolerance_us: int = 0,
    indent: bool = True,
    options: StreamOptions | None = None,
    warn: Callable[[str], object] = lambda _: None,
) -> int:
    """Write ``{"traces": [...]}``, the critical path of every trace of ``files`` (the form of
    ``firm critical-path``: per trace its source, :meth:`CriticalPath.as_dict` and warnings), batch
    by batch through ``write``; the bytes are those of :func:`json_bytes` on the whole document
    (``indent``: two spaces a level, else one line). ``warn`` gets each diagnostic before the
    batch it concerns is written. Returns the number of traces.

    Raises :class:`TraceParseError` (a file cannot be read or parsed, a parent cycle), possibly
    after earlier batches were written.
    """
    with paused_gc():  # the batches die by reference counting; no collection need walk them
        return _write_critical_paths(files, write, overlap_tolerance_us, indent, options, warn)


def _write_critical_paths(
    files: Sequence[Path | str],
    write: Callable[[bytes], object],
    overlap_tolerance_us: int,
    indent: bool,
    options: StreamOptions | None,
    warn: Callable[[str], object],
) -> int:
    def warned() -> Iterator[TraceInput]:
        for batch in trace_batches(files, options):
            for message in batch.diagnostics:
                warn(message)
            yield batch

    return write_critical_path_document(
        warned(), write, overlap_tolerance_us=overlap_tolerance_us, indent=indent
    )


def stream_features(
    files: Sequence[Path | str],
    *,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    overlap_tolerance_us: int = 0,
    options: StreamOptions | None = None,
    warn: Callable[[str], object] = lambda _: None,
) -> WindowFeatures:
    """``firm features`` of ``files`` read in batches: the same result as
    :func:`firm.tracing.features.trace_features` on all their traces, keeping per request only its
    main path's per-instance times (:class:`PathSummary`), not its spans. ``warn`` gets each
    diagnostic. Raises as :func:`write_critical_paths` and ``ValueError`` for ``min_samples < 2``."""
    if min_samples < 2:
        raise ValueError(
            f"min_samples must be at least 2 (a correlation needs two points), not {min_samples}"
        )
    kept: list[PathSummary] = []
    with paused_gc():  # as in write_critical_paths
        for batch in trace_batches(files, options):
            for message in batch.diagnostics:
                warn(message)
            paths = critical_paths(batch.traces, overlap_tolerance_us=overlap_tolerance_us)
            kept.extend(PathSummary.of(cp.main) for cp in paths)
        return window_features(kept, min_samples=min_samples)
