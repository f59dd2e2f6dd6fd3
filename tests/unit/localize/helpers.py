"""Small hand-made traces and the shared DeathStarBench templates for the localization tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from firm.tracing import Span, Trace

DSB_DIR = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "jaeger-traces" / "deathstarbench"


def dsb_dir() -> Path:
    """The recorded DeathStarBench traces; skips the test, saying why, when they are absent."""
    if not DSB_DIR.is_dir() or not any(DSB_DIR.glob("*.json")):
        reason = f"shared reference data not found at {DSB_DIR.resolve()} (see ../shared/data/README.md)"
        print(reason)
        pytest.skip(reason)
    return DSB_DIR


def span(
    sid: str,
    svc: str,
    start: int,
    dur: int,
    parent: str | None = None,
    kind: str = "",
    op: str | None = None,
    inst: str | None = None,
) -> Span:
    return Span(sid, svc, inst or svc, op or f"{svc}-{sid}", start, dur, parent, kind=kind)


def chain_trace(
    tid: str,
    t0: int,
    *,
    own_b: int = 100,
    req_gap: int = 50,
    resp_gap: int = 50,
    offset_b: int = 0,
    db: int = 200,
) -> Trace:
    """frontend (server) -> frontend client -> backend server -> backend db client (no server).

    All times in microseconds; ``offset_b`` shifts the backend's clock.
    """
    b_start = t0 + 100 + req_gap
    b_dur = own_b + db
    c_dur = req_gap + b_dur + resp_gap
    spans = (
        span("a", "frontend", t0, 100 + c_dur + 100, kind="server", op="GET /"),
        span("c", "frontend", t0 + 100, c_dur, "a", kind="client", op="call backend"),
        span("s", "backend", b_start + offset_b, b_dur, "c", kind="server", op="Serve"),
        span("d", "backend", b_start + offset_b + own_b // 2, db, "s", kind="client", op="db.query"),
    )
    return Trace(tid, spans)


def jaeger_doc(traces: list[Trace]) -> dict[str, Any]:
    """Jaeger query-API JSON of ``traces``."""
    data = []
    for t in traces:
        procs: dict[tuple[str, str], str] = {}
        spans = []
        for s in t.spans:
            pid = procs.setdefault((s.service, s.instance), f"p{len(procs) + 1}")
            spans.append(
                {
                    "traceID": t.trace_id,
                    "spanID": s.span_id,
                    "operationName": s.operation,
                    "references": []
                    if s.parent_id is None
                    else [{"refType": "CHILD_OF", "traceID": t.trace_id, "spanID": s.parent_id}],
                    "startTime": s.start,
                    "duration": s.duration,
                    "processID": pid,
                    "tags": [{"key": "span.kind", "type": "string", "value": s.kind}] if s.kind else [],
                }
            )
        data.append(
            {
                "traceID": t.trace_id,
                "spans": spans,
                "processes": {
                    pid: {"serviceName": k[0], "tags": [{"key": "hostname", "type": "string", "value": k[1]}]}
                    for k, pid in procs.items()
                },
            }
        )
    return {"data": data}


def fanout_trace(tid: str, t0: int, *, own_b: int = 100, resp_gap: int = 50) -> Trace:
    """frontend calls auth, then backend (which calls its database); times in microseconds."""
    a_c = 20 + 80 + 20
    b_c = 50 + own_b + 200 + resp_gap
    spans = (
        span("a", "frontend", t0, 100 + a_c + 50 + b_c + 100, kind="server", op="GET /"),
        span("ca", "frontend", t0 + 100, a_c, "a", kind="client", op="call auth"),
        span("sa", "auth", t0 + 120, 80, "ca", kind="server", op="Check"),
        span("cb", "frontend", t0 + 100 + a_c + 50, b_c, "a", kind="client", op="call backend"),
        span("s", "backend", t0 + 100 + a_c + 100, own_b + 200, "cb", kind="server", op="Serve"),
        span("d", "backend", t0 + 100 + a_c + 100 + own_b // 2, 200, "s", kind="client", op="db.query"),
    )
    return Trace(tid, spans)
