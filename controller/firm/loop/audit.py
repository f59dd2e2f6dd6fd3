"""The audit: one record per control step, in Redis and (optionally) a JSON-lines file.

A record says when the step ran, what it saw (window, request rate and mix, SLO status of every
request type, telemetry age), what the decider made of it (mode, culprits with their scores and
features, the ranking's top), what it proposed, what the guardrails refused and why, what the
executor did (before and after of each action, rollback, error), the scale-out and scale-in
requests it made (``scale_requests``: service, direction, started, reason) and the scale operations
that finished during it (``scale_events``: service, direction, outcome, instance or error), and how
long each stage took.

Redis: the stream ``audit_key`` (default ``firm:audit``), field ``r`` holding the record's JSON,
trimmed to about ``retention`` records. When Redis does not answer, records wait in memory (at
most ``backlog`` of them, the oldest dropped and counted beyond that: ``PendingWrites``) and are
written when it answers again; the file gets every record at once. Nothing here raises on a Redis
outage: the loop must go on.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Annotated, Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, StrictInt, ValidationError
from rich.markup import escape as markup_escape

from ansible_collections.firm.core.plugins.module_utils.redis_buffer import PendingWrites
from firm import schema

log = logging.getLogger(__name__)

Record = dict[str, Any]


def _clean(value: Any) -> Any:
    """JSON without NaN or infinity (``"unlimited"`` for inf, None for NaN)."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "unlimited" if value > 0 else "-unlimited"
        return value
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def dumps(record: Record) -> str:
    return json.dumps(_clean(record), separators=(",", ":"), sort_keys=True)


# -- the shape of a record read back ---------------------------------------------------------------

_Number = FiniteFloat | None
_Measured = FiniteFloat | Literal["unlimited", "-unlimited"] | None
"""A number as :func:`dumps` writes it: finite, ``"unlimited"`` for infinity, None for NaN."""
_Entries = list[dict[str, Any]] | None


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Slo(_Shape):
    type: str
    state: str | None = None
    count: int | None = None
    p50_ms: _Measured = None
    p99_ms: _Measured = None
    slo_ms: _Number = None


class _Culprit(_Shape):
    instance: str | None = None
    service: str | None = None
    score: _Measured = None
    features: dict[str, Any] | None = None


class _Ranked(_Shape):
    instance: str | None = None
    score: _Measured = None


class _Decision(_Shape):
    mode: str | None = None
    agent: str | None = None
    culprits: list[_Culprit] | None = None
    ranking: list[_Ranked] | None = None
    notes: list[Any] | None = None


class _Action(_Shape):
    """A proposed, refused or applied action."""

    instance: str | None = None
    resource: str | None = None
    unit: str | None = None
    value: _Measured | str = None
    before: _Measured | str = None
    after: _Measured | str = None
    """Numbers as :func:`dumps` writes them; text for a resource whose value is text (a cpuset)."""
    changed: bool | None = None
    reason: str | None = None
    rejected: str | None = None


class _Scale(_Shape):
    """A scale request or a finished scale operation."""

    service: str | None = None
    direction: str | None = None
    instance: str | None = None
    outcome: str | None = None
    reason: str | None = None
    error: str | None = None


class _Result(_Shape):
    actions: list[_Action] | None = None
    error: str | None = None


class RecordShape(_Shape):
    """What ``firm audit``, ``firm explain`` and the live view read of a record: the containers they
    walk and the numbers they compute with, typed; everything else as written (more may be there)."""

    run: str | None = None
    step: StrictInt | str | None = None
    time: Annotated[FiniteFloat, Field(ge=0, le=253402300799)] | None = None
    """Seconds since the epoch (at most the end of year 9999)."""
    status: str | None = None
    reason: str | None = None
    decider: str | None = None
    slo: list[_Slo] | None = None
    decision: _Decision | None = None
    result: _Result | None = None
    proposed: list[_Action] | None = None
    rejected: list[_Action] | None = None
    scale_requests: list[_Scale] | None = None
    scale_events: list[_Scale] | None = None
    errors: _Entries = None


def check_record(record: Any, where: str, hint: str) -> Record:
    """``record`` when it has :class:`RecordShape`; else ValueError naming ``where`` and the field."""
    if not isinstance(record, dict):
        raise ValueError(f"{where} is a JSON {type(record).__name__}, not a record; {hint}")
    try:
        RecordShape.model_validate(record)
    except ValidationError as exc:
        raise ValueError(f"{where}: {schema.describe(exc)}; {hint}") from None
    return record


class AuditLog:
    """Writes records to Redis (``client``; None for none) and to ``path`` (None for none)."""

    def __init__(
        self,
        client: redis.Redis | None,
        *,
        key: str = "firm:audit",
        retention: int = 10000,
        path: Path | None = None,
        backlog: int = 1000,
    ) -> None:
        self.client, self.key, self.retention = client, key, retention
        self.pending: PendingWrites[str] = PendingWrites(backlog)
        self.path = path
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")
        self.written = 0
        self.redis_errors = 0

    def write(self, record: Record) -> bool:
        """Write one record; returns whether Redis has it (and everything before it)."""
        text = dumps(record)
        if self._file is not None:
            self._file.write(text + "\n")
            self._file.flush()
        self.written += 1
        if self.client is None:
            return False
        self.pending.add([text])
        if not self.pending.flush(self._write, retry_on=(redis.RedisError,)):
            self.redis_errors += 1
            log.warning(
                "audit: Redis does not answer; %d records wait (%d dropped)",
                len(self.pending),
                self.pending.dropped,
            )
            return False
        return True

    def _write(self, texts: list[str]) -> None:
        assert self.client is not None
        pipe = self.client.pipeline(transaction=False)
        for text in texts:
            pipe.xadd(self.key, {"r": text}, maxlen=self.retention, approximate=True)
        pipe.execute()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_recent(
    *, client: redis.Redis | None = None, key: str = "firm:audit", path: Path | None = None, last: int = 20
) -> list[Record]:
    """The last ``last`` records, oldest first, from a JSON-lines file or else from Redis.

    Raises ``OSError`` for a file that cannot be read, ``ValueError`` (its message naming the line
    and what an audit log holds) for one that is not an audit log, ``redis.RedisError`` for Redis."""
    if path is not None:
        lines: deque[tuple[int, str]] = deque(maxlen=last)
        hint = "an audit log holds one JSON object per line, as `firm run --audit-log FILE` writes it"
        try:
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if line.strip():
                        lines.append((number, line))
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (byte {exc.start}); {hint}") from None
        records = []
        for number, line in lines:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                raise ValueError(f"line {number} is not JSON ({reason}); {hint}") from None
            records.append(check_record(record, f"line {number}", hint))
        return records
    if client is None:
        return []
    entries = client.xrevrange(key, count=last)
    records = []
    hint = f"the stream {key} holds the records of `firm run`; give the stream of an audit (--key)"
    for entry_id, fields in reversed(list(entries)):  # type: ignore[arg-type]
        raw = (fields or {}).get(b"r") or (fields or {}).get("r")
        if raw is None:
            continue
        where = f"entry {entry_id.decode() if isinstance(entry_id, bytes) else entry_id} of {key}"
        try:
            records.append(check_record(json.loads(raw), where, hint))
        except (ValueError, RecursionError) as exc:  # json.JSONDecodeError, UnicodeDecodeError, a bad shape
            message = str(exc) if type(exc) is ValueError else f"{where} is not JSON; {hint}"
            raise redis.exceptions.DataError(message) from None
    return records


def summary_row(record: Record) -> dict[str, str]:
    """One record as the columns of ``firm audit``'s table: plain text, but ``actions`` is rich markup
    (its text from the record escaped, a failure in red)."""
    slo = record.get("slo") or []
    rated = [s for s in slo if _is_number(s.get("p99_ms")) and _is_number(s.get("slo_ms")) and s["slo_ms"]]
    worst = max(rated, key=lambda s: s["p99_ms"] / s["slo_ms"], default=None)
    slo_text = (
        f"{worst.get('type')} {worst['p99_ms']:.0f}/{worst['slo_ms']:.0f} ms {worst.get('state')}"
        if worst
        else "-"
    )
    culprits = (
        ", ".join(
            f"{c.get('instance')} {c['score']:.2f}" if _is_number(c.get("score")) else str(c.get("instance"))
            for c in ((record.get("decision") or {}).get("culprits") or [])[:2]
        )
        or "-"
    )
    result = record.get("result") or {}
    scaling = scale_lines(record)
    changed = [_action_text(a) for a in result.get("actions") or [] if a.get("changed")]
    actions = markup_escape(
        "; ".join(changed + [what for what, _ in scaling]) or "-"
    )  # the log's text: no markup
    if result.get("error"):
        actions += (
            f" [red]failed: {markup_escape(str(result['error']))}"
            f"{' (rolled back)' if result.get('rolled_back') else ''}[/red]"
        )
    why = record.get("reason") or ""
    if not why:
        reasons = sorted({a.get("reason", "") for a in result.get("actions") or [] if a.get("changed")})
        reasons += [r for _, r in scaling if r and r not in reasons]
        why = "; ".join(r for r in reasons if r)[:160] or (record.get("decision") or {}).get("mode", "")
    return {
        "time": _clock(record.get("time")),
        "step": str(record.get("step", "")),
        "status": str(record.get("status") or ""),
        "slo": slo_text,
        "culprits": culprits,
        "actions": actions,
        "why": str(why),
    }


def scale_lines(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The step's scale requests and the scale operations that finished in it, as (what, why).

    A request: ``scale-out post-storage requested`` (or ``not started``, why in the second part:
    the decider's reason, then why the scaler did not start); a finished operation:
    ``scale-out post-storage done: post-storage-1`` or ``... failed`` with the error as the why.
    """
    lines: list[tuple[str, str]] = []
    for request in record.get("scale_requests") or []:
        what = f"scale-{request.get('direction')} {request.get('service')}"
        reasons = [str(request[k]) for k in ("reason", "why") if request.get(k)]
        state = "requested" if request.get("started") else "not started"
        lines.append((f"{what} {state}", "; ".join(reasons)))
    for event in record.get("scale_events") or []:
        what = f"scale-{event.get('direction')} {event.get('service')}"
        if event.get("outcome") == "done":
            lines.append((f"{what} done: {event.get('instance')}", ""))
        else:
            lines.append((f"{what} {event.get('outcome') or 'ended'}", str(event.get("error") or "")))
    return lines


def _action_text(action: Mapping[str, Any]) -> str:
    return f"{action.get('instance')} {action.get('resource')} {_num(action.get('before'))}->{_num(action.get('after'))}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _num(value: Any) -> str:
    if isinstance(value, float | int):
        return f"{value:.3g}"
    return str(value)


def _clock(moment: Any) -> str:
    if not isinstance(moment, float | int):
        return "-"
    return datetime.datetime.fromtimestamp(moment).strftime("%H:%M:%S")


def recent_rows(records: Sequence[Record]) -> list[dict[str, str]]:
    return [summary_row(r) for r in records]
