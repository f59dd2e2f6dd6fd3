"""Why the control loop did what it did: one audit record read back as an explanation.

For a decision (an audit record of ``firm run``, :mod:`firm.loop.audit`), :func:`explain` gathers
what made each action: the SLO state of every request type (worst first), the decider's mode and
notes, the culprits with their scores and strongest features, and for every action the decider
proposed: the value it asked for and why, the guardrail that clipped it (``bounded from X by
max_step 0.5``) or refused it (``cool-down``, ``not yet visible in telemetry``, ...), and what the
executor did (before and after, rolled back). Scale requests and their reasons, a stale window's
reason and the step's errors come with it. :func:`render` turns it into text for a terminal.

A decision's id is ``RUN/STEP``: the run (the loop's start time, UTC, ``YYYYmmddTHHMMSS``) and the
step number in it; records written before runs were named have the step alone.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from firm.loop.audit import Record, scale_lines

__all__ = ["decision_id", "explain", "find", "render"]

_BOUNDED = re.compile(r" \(bounded from (?P<value>[^ ]+) by (?P<by>[^)]*)\)$")


def decision_id(record: Mapping[str, Any]) -> str:
    """``RUN/STEP`` (or ``STEP`` for a record without a run)."""
    run = record.get("run")
    return f"{run}/{record.get('step')}" if run else str(record.get("step"))


def find(records: Sequence[Record], wanted: str) -> Record | None:
    """The newest record whose id is ``wanted`` (``RUN/STEP``, or ``STEP``: the newest run's); a
    step's decision before the exit record that shares its number."""
    matches = [
        r for r in records if decision_id(r) == wanted or ("/" not in wanted and str(r.get("step")) == wanted)
    ]
    steps = [r for r in matches if r.get("status") != "exit"]
    found = steps or matches
    return found[-1] if found else None


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.4g}"


def _slo(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = [dict(s) for s in record.get("slo") or []]

    def badness(s: Mapping[str, Any]) -> float:
        p99, slo = s.get("p99_ms"), s.get("slo_ms")
        return -(p99 / slo) if isinstance(p99, int | float) and isinstance(slo, int | float) and slo else 0.0

    return sorted(rows, key=lambda s: (badness(s), str(s.get("type"))))


def _actions(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each proposal with what the guardrails and the executor made of it."""
    result = record.get("result") or {}
    done = {(a.get("instance"), a.get("resource")): a for a in result.get("actions") or []}
    refused = [dict(r) for r in record.get("rejected") or []]
    out = []
    for proposal in record.get("proposed") or []:
        key = (proposal.get("instance"), proposal.get("resource"))
        item: dict[str, Any] = {
            "instance": key[0],
            "resource": key[1],
            "unit": proposal.get("unit"),
            "proposed": proposal.get("value"),
            "why": proposal.get("reason", ""),
        }
        applied = done.get(key)
        rejection = next(
            (
                r
                for r in refused
                if (r.get("instance"), r.get("resource")) == key and r.get("value") == proposal.get("value")
            ),
            None,
        )
        if applied is not None:
            match = _BOUNDED.search(str(applied.get("reason", "")))
            item.update(
                value=applied.get("value"),
                before=applied.get("before"),
                after=applied.get("after"),
                guardrail=f"clipped by {match['by']}" if match else "within every guardrail",
            )
            if result.get("rolled_back"):
                item["outcome"] = "rolled back"
            elif not applied.get("changed"):
                item["outcome"] = "already in place"
            else:
                item["outcome"] = "would be applied (dry run)" if result.get("dry_run") else "applied"
        elif rejection is not None:
            refused.remove(rejection)
            item.update(guardrail=f"refused: {rejection.get('rejected')}", outcome="not applied")
        else:
            item.update(guardrail="-", outcome="not applied")
        out.append(item)
    return out


def explain(record: Mapping[str, Any]) -> dict[str, Any]:
    """The explanation of one decision (stable JSON; see the module's docstring)."""
    decision = record.get("decision") or {}
    status = record.get("status", "")
    moment = record.get("time")
    when = (
        datetime.datetime.fromtimestamp(moment, tz=datetime.UTC).isoformat(timespec="seconds")
        if isinstance(moment, int | float)
        else None
    )
    actions = _actions(record)
    out: dict[str, Any] = {
        "id": decision_id(record),
        "time": when,
        "status": status,
        "dry_run": bool(record.get("dry_run")),
        "decider": record.get("decider"),
        "mode": decision.get("mode"),
        "estimator": decision.get("agent") or None,
        "slo": _slo(record),
        "culprits": [
            {
                "instance": c.get("instance"),
                "service": c.get("service"),
                "score": c.get("score"),
                "features": c.get("features") or {},
            }
            for c in decision.get("culprits") or []
        ],
        "ranking": list(decision.get("ranking") or []),
        "notes": list(decision.get("notes") or []),
        "actions": actions,
        "scale": [dict(s) for s in record.get("scale_requests") or []]
        + [dict(e) for e in record.get("scale_events") or []],
        "waiting": record.get("scale_in"),
        "reason": record.get("reason") or "",
        "errors": list(record.get("errors") or []),
    }
    out["summary"] = _summary(out)
    return out


def _summary(e: Mapping[str, Any]) -> str:
    """One sentence: why this step did what it did."""
    status = e["status"]
    if status == "stale":
        return f"decided nothing: {e['reason']}"
    if status == "exit":
        return e["reason"] or "stopped"
    worst = e["slo"][0] if e["slo"] else None
    slo = (
        f"{worst['type']} p99 {_num(worst.get('p99_ms'))} ms against {_num(worst.get('slo_ms'))} ms "
        f"({worst.get('state')})"
        if worst
        else "no SLO measured"
    )
    mode = e.get("mode")
    done = [a for a in e["actions"] if a["outcome"] in ("applied", "would be applied (dry run)")]
    refused = [a for a in e["actions"] if a["outcome"] == "not applied"]
    if mode == "raise":
        who = ", ".join(f"{c['instance']} ({_num(c['score'])})" for c in e["culprits"]) or "no culprit"
        head = f"{slo}: blamed {who}"
    elif mode == "reclaim":
        head = f"{slo}: every SLO with slack long enough, so resources are given back"
    elif mode == "hold":
        head = f"{slo}: slack, waiting before reclaiming"
    else:
        head = slo
    tail = f"; {len(done)} change(s)" if done else "; nothing changed"
    if refused:
        tail += f", {len(refused)} proposal(s) refused by the guardrails"
    if status == "failed":
        tail += f"; FAILED: {e['reason']}"
    scaling = scale_lines(
        {
            "scale_requests": [s for s in e["scale"] if "outcome" not in s],
            "scale_events": [s for s in e["scale"] if "outcome" in s],
        }
    )
    for what, why in scaling:
        tail += f"; {what}" + (f" ({why})" if why else "")
    return head + tail


def render(explanations: Iterable[Mapping[str, Any]]) -> str:
    """The explanations as text, one block per decision."""
    blocks = []
    for e in explanations:
        lines = [
            f"decision {e['id']}  {e['time'] or '-'}  {e['status']}{' (dry run)' if e['dry_run'] else ''}"
            f"  decider {e['decider']}",
            f"  why: {e['summary']}",
        ]
        if e["slo"]:
            lines.append(
                "  SLOs: "
                + "; ".join(
                    f"{s.get('type')} p99 {_num(s.get('p99_ms'))}/{_num(s.get('slo_ms'))} ms {s.get('state')} "
                    f"({s.get('count')} requests)"
                    for s in e["slo"]
                )
            )
        if e["mode"]:
            lines.append(
                f"  mode: {e['mode']}" + (f"; limits from: {e['estimator']}" if e["estimator"] else "")
            )
        for c in e["culprits"]:
            ranked = sorted(
                c["features"].items(), key=lambda kv: -abs(kv[1]) if isinstance(kv[1], int | float) else 0.0
            )
            strongest = ", ".join(f"{k} {_num(v)}" for k, v in ranked[:4])
            lines.append(
                f"  culprit {c['instance']}: score {_num(c['score'])}"
                + (f" ({strongest})" if strongest else "")
            )
        if e["ranking"] and not e["culprits"]:
            lines.append(
                "  ranking: " + ", ".join(f"{r.get('instance')} {_num(r.get('score'))}" for r in e["ranking"])
            )
        for a in e["actions"]:
            unit = f" {a['unit']}" if a.get("unit") else ""
            change = f"; {_num(a.get('before'))} -> {_num(a.get('after'))}{unit}" if "before" in a else ""
            lines.append(
                f"  {a['instance']} {a['resource']}: proposed {_num(a['proposed'])}{unit} ({a['why']}); "
                f"guardrail: {a['guardrail']}; {a['outcome']}{change}"
            )
        for s in e["scale"]:
            what = f"scale-{s.get('direction')} {s.get('service')}"
            if "outcome" in s:
                lines.append(
                    f"  {what}: {s.get('outcome')} {s.get('instance') or s.get('error') or ''}".rstrip()
                )
            else:
                lines.append(
                    f"  {what}: {'started' if s.get('started') else 'not started'}"
                    + (f" ({s['reason']})" if s.get("reason") else "")
                    + (f"; {s['why']}" if s.get("why") else "")
                )
        if e["waiting"]:
            lines.append(f"  scale-in: {e['waiting']}")
        lines.extend(f"  note: {n}" for n in e["notes"])
        lines.extend(f"  error ({err.get('kind')}): {err.get('error')}" for err in e["errors"])
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
