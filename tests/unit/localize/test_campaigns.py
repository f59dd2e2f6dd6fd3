"""Dataset rows from a recorded campaign: windows, quiet references and labels line up in time."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from firm.cli import main
from firm.localize.campaigns import campaign_rows
from firm.localize.labels import injections
from firm.tracing import Trace
from tests.unit.localize.helpers import fanout_trace, jaeger_doc

T0_S = 1_764_500_000
MIN = 60_000_000


def traces_with_fault() -> list[Trace]:
    out = []
    for m in range(5):  # five one-minute windows, 40 requests each; backend answers late in minute 3
        for i in range(40):
            t0 = T0_S * 1_000_000 + m * MIN + i * 1_000_000
            out.append(
                fanout_trace(
                    f"m{m}r{i}", t0, own_b=100 + (i * 7) % 13, resp_gap=(4000 if m == 3 else 50) + (i * 3) % 7
                )
            )
    return out


RECORD = [
    {
        "event": "started",
        "campaign": "c",
        "name": "d1",
        "kind": "network_delay",
        "intensity": 50,
        "duration_s": 60,
        "labels": {"campaign": "c", "service": "backend"},
        "started_at": T0_S + 180.0,
        "expires_at": T0_S + 240.0,
    }
]


def test_windows_are_labelled_against_a_quiet_reference() -> None:
    rows = campaign_rows(traces_with_fault(), injections(RECORD), MIN, campaign="c")
    windows = sorted({r["window"] for r in rows})
    assert len(windows) == 4  # the first window has no reference before it
    positives = [r for r in rows if r["label"]]
    assert [(r["service"], r["kind"]) for r in positives] == [("backend", "network_delay")]
    fault = [r for r in rows if r["window"] == positives[0]["window"]]
    assert max(fault, key=lambda r: r["rules_score"])["service"] == "backend"


def test_the_dataset_command_reads_a_campaign(tmp_path: Path) -> None:
    rec = tmp_path / "c.jsonl"
    rec.write_text("\n".join(json.dumps(e) for e in RECORD) + "\n")
    tr = tmp_path / "traces.json"
    tr.write_text(json.dumps(jaeger_doc(traces_with_fault())))
    result = CliRunner().invoke(
        main,
        [
            "localize-dataset",
            "--out",
            str(tmp_path / "ds"),
            "--campaign",
            str(rec),
            "--traces",
            str(tr),
            "--window",
            "1m",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["positives"] == 1 and doc["windows"] == 4
