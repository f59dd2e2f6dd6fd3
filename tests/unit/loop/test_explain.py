"""firm explain: why each action was taken, from the audit of real loop steps (in memory)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from firm.cli import main
from firm.loop.audit import AuditLog, read_recent
from firm.loop.config import FirmDecider as FirmSettings
from firm.loop.config import Guard, LoopConfig, Reclaim, default_guards
from firm.loop.deciders import FirmDecider
from firm.loop.explain import decision_id, explain, find, render
from firm.loop.runner import ControlLoop
from tests.unit.loop.fakes import FakeAgent, FakeLocalizer, MemoryTarget, bounds, build_state, sample, window

SLO = {"compose-post": 250.0}
LIMITS = {"frontend-0": {"cpu": 1.0}, "compose-post-0": {"cpu": 0.5}, "text-0": {"cpu": 0.4}}
PATHS = {"compose-post": ["compose-post-0", "text-0"]}


def _audit(tmp_path: Path, *, dry_run: bool = False) -> Path:
    """Two steps under a violation: the first acts (one proposal clipped by max_step), the second's
    proposals are refused (the first's effect not yet in telemetry)."""
    config = LoopConfig(
        guards={**default_guards(cpus=2), "cpu": Guard(min=0.1, max=2.0, max_step=0.5, cooldown_s=0)},
        reclaim=Reclaim(hold_s=0),
        firm=FirmSettings(unused_cpu=0),  # the agent's values as they are
    )
    target = MemoryTarget(LIMITS)
    now = [1000.0]
    decider = FirmDecider(
        config,
        FakeLocalizer({"compose-post-0": 0.9, "text-0": 0.8}),
        FakeAgent(3.0),
        build_state=build_state,
        bounds=bounds,
        request_types=["compose-post"],
    )
    path = tmp_path / "audit.jsonl"
    loop = ControlLoop(
        config,
        target,
        decider,
        slo_ms=SLO,
        window_s=5.0,
        dry_run=dry_run,
        audit=AuditLog(None, path=path),
        clock=lambda: now[0],
    )
    loop.start()
    target.traces = window({"compose-post": [400.0] * 10}, PATHS)
    for _ in range(2):
        target.samples = {
            n: sample(n, now[0] - 0.5, interval=2.0) for n in LIMITS
        }  # began before the last step
        loop.step()
        now[0] += 2
    loop.finish()
    return path


def test_each_action_with_its_proposal_guardrail_and_outcome(tmp_path: Path) -> None:
    records = read_recent(path=_audit(tmp_path), last=10)
    first, second = (explain(r) for r in records[:2])
    assert first["id"] == decision_id(records[0]) and first["id"].endswith("/1") and first["mode"] == "raise"
    assert [c["instance"] for c in first["culprits"]] == ["compose-post-0", "text-0"]
    by = {a["instance"]: a for a in first["actions"]}
    assert by["compose-post-0"]["proposed"] == 1.5 and by["compose-post-0"]["value"] == 1.0
    assert by["compose-post-0"]["guardrail"] == "clipped by max_step 0.5"
    assert by["compose-post-0"]["outcome"] == "applied"
    assert (by["compose-post-0"]["before"], by["compose-post-0"]["after"]) == (0.5, 1.0)
    assert by["text-0"]["guardrail"] == "clipped by max_step 0.5" and by["text-0"]["after"] == 0.9
    assert "blamed compose-post-0 (0.9), text-0 (0.8)" in first["summary"]
    assert "compose-post p99 400 ms against 250 ms (violated)" in first["summary"]
    assert all(
        a["guardrail"] == "refused: its previous action is not yet visible in telemetry"
        and a["outcome"] == "not applied"
        for a in second["actions"]
    )
    assert "2 proposal(s) refused by the guardrails" in second["summary"]
    text = render([first, second])
    assert "guardrail: clipped by max_step 0.5; applied; 0.5 -> 1 cores" in text
    assert find(records, first["id"]) is records[0] and find(records, "2") is records[1]


def test_firm_explain_reads_the_audit_log(tmp_path: Path) -> None:
    path = _audit(tmp_path, dry_run=True)
    runner = CliRunner()
    shown = runner.invoke(main, ["explain", "--file", str(path)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("decision ") == 2 and "would be applied (dry run)" in shown.output
    one = runner.invoke(main, ["explain", "--file", str(path), "1", "--json"])
    assert one.exit_code == 0
    item = json.loads(one.output)
    assert item["id"].endswith("/1") and item["dry_run"] is True and item["actions"]
    acted = runner.invoke(main, ["explain", "--file", str(path), "--acted", "--json"])
    assert [json.loads(line)["id"][-2:] for line in acted.output.splitlines()] == ["/1"]
    missing = runner.invoke(main, ["explain", "--file", str(path), "run/99"])
    assert (
        missing.exit_code == 1
        and "no decision run/99" in missing.output
        and "Traceback" not in missing.output
    )
    absent = runner.invoke(main, ["explain", "--file", str(tmp_path / "none.jsonl")])
    assert absent.exit_code == 2 and "does not exist" in absent.output


def test_a_stale_step_and_an_old_record_without_a_run(tmp_path: Path) -> None:
    record = {
        "time": 1.0,
        "step": 3,
        "status": "stale",
        "reason": "no requests completed in the window",
        "slo": [],
        "errors": [{"kind": "trace_store", "error": "down"}],
    }
    e = explain(record)
    assert e["id"] == "3" and e["summary"] == "decided nothing: no requests completed in the window"
    assert "error (trace_store): down" in render([e])
