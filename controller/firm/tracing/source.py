"""Where a command's traces come from: trace files, a Jaeger query service, or a running trace store.

:func:`read_traces` turns a command line's inputs (FILES, ``--jaeger-url`` with ``--service``, or a
store such as the embedded testbed's) into one window of traces. It checks that exactly one source
is named and that the options given belong to it before anything is read; a wrong combination raises
:class:`TraceSourceError` naming the option, which a CLI reports as a usage error.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ansible_collections.firm.core.plugins.module_utils.errors import InvalidInputError
from firm.tracing.errors import TraceError
from firm.tracing.jaeger import JaegerClient, TraceSource
from firm.tracing.model import Trace
from firm.tracing.parse import load_trace_files, parse_duration_us

MAX_WINDOW_US = 366 * 86400 * 1_000_000
"""The longest window of traces read from a query service, microseconds (a year: beyond any trace
store's retention; a longer one would start before the epoch)."""


class TraceSourceError(TraceError, InvalidInputError):
    """The inputs name no trace source, more than one, or options of another source.

    ``option`` is the command-line option at fault (e.g. ``--window``), or None when the
    combination as a whole is wrong.
    """

    def __init__(self, message: str, *, option: str | None = None, fix: str = "") -> None:
        super().__init__(message, fix, option=option)
        self.option = option


def check_window_us(us: int, option: str) -> int:
    """``us`` when it is a window in (0, :data:`MAX_WINDOW_US`]; else :class:`TraceSourceError` naming
    ``option``."""
    if us <= 0:
        raise TraceSourceError("the window must be longer than zero", option=option)
    if us > MAX_WINDOW_US:
        raise TraceSourceError(
            f"the window of {us / 86400e6:.0f} days is longer than a year; give at most 8784h", option=option
        )
    return us


@dataclass(frozen=True)
class TraceQuery:
    """What to read from a query service or store: the traces of ``service`` (and ``operation``)
    that started within the last ``window`` (a duration such as ``5m``), at most ``limit`` of them."""

    service: str | None = None
    operation: str | None = None
    window: str | None = None
    """Duration text (``30s``, ``5m``, ``1h``); None for ``default_window``."""
    limit: int | None = None
    """At most this many traces; None for ``default_limit``."""
    default_window: str = "5m"
    default_limit: int = 1000

    def given(self) -> bool:
        return bool(self.service or self.operation or self.window or self.limit)

    def window_us(self) -> int:
        """The window in microseconds; raises :class:`TraceSourceError` (``--window``) when it is not a
        positive duration."""
        try:
            us = parse_duration_us(self.window or self.default_window)
        except ValueError as err:
            raise TraceSourceError(str(err), option="--window") from err
        return check_window_us(us, "--window")


@dataclass
class TraceInput:
    """The traces read, with the reader's diagnostics (refused spans, dropped traces, ...) and, for
    files, the file(s) each trace came from (trace id -> names)."""

    traces: list[Trace]
    diagnostics: list[str] = field(default_factory=list)
    sources: dict[str, list[str]] = field(default_factory=dict)


def read_files(files: Sequence[Path]) -> TraceInput:
    """Every trace of every file as one input (a trace split over files is one trace); raises
    :class:`TraceError` naming a bad file."""
    reader = load_trace_files(files)
    traces = reader.traces()
    return TraceInput(
        traces, list(reader.diagnostics), {t.trace_id: list(reader.sources(t.trace_id)) for t in traces}
    )


def read_traces(
    files: Sequence[Path],
    *,
    jaeger_url: str | None = None,
    query: TraceQuery | None = None,
    store: TraceSource | None = None,
    timeout_s: float = 10.0,
    retries: int = 3,
    now_us: int | None = None,
) -> TraceInput:
    """The traces the command line names: FILES, or the last ``query.window`` of ``query.service`` from
    the Jaeger query service at ``jaeger_url``, or from ``store`` (any :class:`TraceSource`, e.g. the
    embedded testbed's trace store). ``timeout_s`` (seconds per request) and ``retries`` apply to Jaeger.

    Raises :class:`TraceSourceError` (before anything is read) when no source or more than one is named,
    when a query source lacks ``--service``, or when query options come with FILES; :class:`TraceError`
    when a file or the service cannot be read.
    """
    query = query or TraceQuery()
    remote = jaeger_url is not None or store is not None
    if jaeger_url and store is not None:
        raise TraceSourceError("give --jaeger-url or the testbed's trace store, not both")
    if remote:
        if files:
            raise TraceSourceError("give FILES or --jaeger-url, not both")
        if not query.service:
            raise TraceSourceError("--jaeger-url needs --service", option="--service")
        window_us = query.window_us()
        end = now_us if now_us is not None else time.time_ns() // 1000
        diagnostics: list[str] = []
        source: TraceSource = (
            store
            if store is not None
            else JaegerClient(str(jaeger_url), timeout=timeout_s, retries=retries, warn=diagnostics.append)
        )
        traces = source.fetch(
            query.service,
            end - window_us,
            end,
            limit=query.limit or query.default_limit,
            operation=query.operation,
        )
        return TraceInput(traces, diagnostics)
    if not files:
        raise TraceSourceError("give trace FILES, or --jaeger-url with --service")
    if query.given():
        raise TraceSourceError("--service, --operation, --window and --limit apply to --jaeger-url only")
    return read_files(files)
