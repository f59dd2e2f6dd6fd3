"""Scale-out and scale-in in what people read: the audit table, firm explain, the live view."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from rich.console import Console

from firm.cli import main
from firm.loop.audit import AuditLog, read_recent, recent_rows, scale_lines
from firm.loop.config import Guard, LoopConfig, Reclaim, default_guards
from firm.loop.deciders import FirmDecider
from firm.loop.explain import explain, render
from firm.loop.runner import ControlLoop
from firm.loop.view import LiveView
from tests.unit.loop.fakes import FakeAgent, FakeLocalizer, MemoryTarget, bounds, build_state, sample, window

SLO = {"compose-post": 250.0}
LIMITS = {"frontend-0": {"cpu": 1.0}, "post-storage-0": {"cpu": 0.5}}
PATHS = {"compose-post": ["post-storage-0"]}

SCALE_IN: dict[str, Any] = {
    "time": 2000.0,
    "run": "20261201T000000",
    "step": 9,
    "status": "no_action",
    "slo": [{"type": "compose-post", "slo_ms": 250.0, "p50_ms": 20.0, "p99_ms": 40.0, "state": "slack"}],
    "decision": {"mode": "hold", "culprits": []},
    "result": {"actions": [], "dry_run": False},
    "scale_requests": [
        {
            "service": "post-storage",
            "direction": "in",
            "instances": 2,
            "baseline": 1,
            "reason": "every SLO with slack for 30 s; post-storage runs 2 instances, 1 at the start",
            "started": True,
        }
    ],
    "scale_events": [
        {"service": "post-storage", "direction": "out", "outcome": "done", "instance": "post-storage-1"},
        {"service": "text", "direction": "out", "outcome": "failed", "error": "no free address"},
    ],
}


class Scaler:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.done: list[dict[str, Any]] = []

    def request(self, service: str, direction: str) -> bool:
        self.requests.append((service, direction))
        self.done.append(
            {"service": service, "direction": direction, "outcome": "done", "instance": f"{service}-1"}
        )
        return True

    def events(self) -> list[dict[str, Any]]:
        done, self.done = self.done, []
        return done


def _scaled_out_audit(tmp_path: Path) -> Path:
    """One step of the firm decider under a violation whose agent asks for another instance."""
    config = LoopConfig(
        guards={**default_guards(cpus=2), "cpu": Guard(min=0.1, max=2.0, max_step=0.5, cooldown_s=0)},
        reclaim=Reclaim(enabled=False),
    )
    target = MemoryTarget(LIMITS)
    decider = FirmDecider(
        config,
        FakeLocalizer({"post-storage-0": 0.9}),
        FakeAgent(1.0, scale_out=True),
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
        audit=AuditLog(None, path=path),
        scaler=Scaler(),
        clock=lambda: 1000.0,
    )
    loop.start()
    target.traces = window({"compose-post": [400.0] * 10}, PATHS)
    target.samples = {n: sample(n, 999.5) for n in LIMITS}
    loop.step()
    return path


def test_scale_lines_name_requests_and_finished_operations_with_their_reasons() -> None:
    assert scale_lines(SCALE_IN) == [
        ("scale-in post-storage requested", SCALE_IN["scale_requests"][0]["reason"]),
        ("scale-out post-storage done: post-storage-1", ""),
        ("scale-out text failed", "no free address"),
    ]
    refused = {
        "scale_requests": [{"service": "text", "direction": "out", "started": False, "why": "dry run"}]
    }
    assert scale_lines(refused) == [("scale-out text not started", "dry run")]
    assert scale_lines({"status": "stale"}) == []


def test_the_audit_table_shows_scale_requests_and_their_reasons() -> None:
    row = recent_rows([SCALE_IN])[0]
    assert "scale-in post-storage requested" in row["actions"]
    assert "scale-out post-storage done: post-storage-1" in row["actions"]
    assert "every SLO with slack for 30 s" in row["why"] and "no free address" in row["why"]
    quiet = recent_rows([{**SCALE_IN, "scale_requests": [], "scale_events": []}])[0]
    assert quiet["actions"] == "-" and quiet["why"] == "hold"


def test_the_loop_audits_a_scale_out_with_the_culprit_and_every_view_shows_it(tmp_path: Path) -> None:
    path = _scaled_out_audit(tmp_path)
    (record,) = read_recent(path=path)
    assert record["scale_requests"] == [
        {
            "service": "post-storage",
            "direction": "out",
            "started": True,
            "reason": "the agent asked for another instance of post-storage (culprit post-storage-0)",
        }
    ]
    assert record["scale_events"][0]["instance"] == "post-storage-1"
    e = explain(record)
    assert "scale-out post-storage requested (the agent asked for another instance" in e["summary"]
    assert "scale-out post-storage done: post-storage-1" in e["summary"]
    assert "scale-out post-storage: started (the agent asked" in render([e])

    runner = CliRunner()
    table = runner.invoke(main, ["audit", "--file", str(path)], env={"COLUMNS": "400"})
    assert table.exit_code == 0, table.output
    assert "scale-out post-storage requested" in table.output
    acted = runner.invoke(main, ["explain", "--file", str(path), "--acted", "--json"])
    assert acted.exit_code == 0 and json.loads(acted.output)["scale"][0]["direction"] == "out"


def test_the_live_view_lists_scale_requests_among_the_last_actions() -> None:
    view = LiveView(decider="firm", dry_run=False, duration_s=None)
    console = Console(record=True, width=200)
    console.print(view.add({**SCALE_IN, "scale_in": None}))
    console.print(
        view.add(
            {
                **SCALE_IN,
                "step": 10,
                "scale_requests": [],
                "scale_events": [],
                "scale_in": ("post-storage scaled less than 60 s ago"),
            }
        )
    )
    text = console.export_text()
    assert "scale-in post-storage requested" in text
    assert "scale-out post-storage done: post-storage-1" in text
    assert "scale-out text failed" in text and "no free address" in text
    assert "scale-in: post-storage scaled less than 60 s ago" in text
