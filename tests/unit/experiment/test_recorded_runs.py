"""``firm experiment --report-only`` reads recorded runs back: every file is checked against its
schema (finite, in-range numbers, the fields it must have, at least one request), and a bad one is
refused naming the file and the field, in firm's words; the results go to stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.experiment import ExperimentInputError
from firm.experiment.recorded import parse_run

PYDANTIC = ("Input should be", "Extra inputs", "Field required", "validation error", "pydantic")


def good() -> dict[str, Any]:
    return {
        "policy": "firm",
        "duration_s": 20.0,
        "actions": 1,
        "scale_events": 0,
        "notes": [],
        "errors": {},
        "requests": [["compose-post", t + 0.5, 20.0, 0] for t in range(20)],
        "cpu": [[float(t), 2.0, 1.0, 3] for t in range(0, 20, 2)],
        "anomalies": [{"kind": "cpu", "service": "text", "start_s": 4.0, "end_s": 12.0, "intensity": 80}],
    }


def with_(change: dict[str, Any]) -> dict[str, Any]:
    run = good()
    run.update(change)
    return run


BAD = [
    ('"duration_s": 1e308', {"duration_s": 1e308}, "duration_s"),
    ("duration NaN", {"duration_s": float("nan")}, "duration_s"),
    ("duration 0", {"duration_s": 0}, "duration_s"),
    ("no request", {"requests": []}, "requests"),
    ("latency inf", {"requests": [["compose-post", 1.0, float("inf"), 0]]}, "requests[0][2]"),
    ("negative latency", {"requests": [["compose-post", 1.0, -5, 0]]}, "requests[0][2]"),
    ("request after the run", {"requests": [["compose-post", 99.0, 5, 0]]}, "requests[0]"),
    ("request of 3 fields", {"requests": [["compose-post", 1.0, 5]]}, "requests[0]"),
    ("actions as text", {"actions": "many"}, "actions"),
    ("negative cpu", {"cpu": [[1.0, -2.0, None, 1]]}, "cpu[0][1]"),
    (
        "anomaly backwards",
        {"anomalies": [{"kind": "cpu", "service": "x", "start_s": 5, "end_s": 1}]},
        "anomalies[0]",
    ),
    ("negative other work", {"other_work": [[1.0, -0.1]]}, "other_work[0][1]"),
    ("other work after the run", {"other_work": [[21.0, 0.1]]}, "other_work[0]"),
    ("unknown field", {"durration_s": 5}, "durration_s"),
    ("empty policy", {"policy": ""}, "policy"),
]


@pytest.mark.parametrize(("change", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_recorded_run_is_refused_naming_the_file_and_field(
    change: dict[str, Any], field: str, tmp_path: Path
) -> None:
    (tmp_path / "runs").mkdir()
    bad = tmp_path / "runs" / "firm.json"
    bad.write_text(json.dumps(with_(change)))  # NaN and Infinity as Python's json writes them
    result = CliRunner().invoke(main, ["experiment", "--report-only", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert str(bad) in result.output and field in result.output, result.output
    assert "unexpected" not in result.output and "Traceback" not in result.output
    assert not any(p in result.output for p in PYDANTIC), result.output
    assert not (tmp_path / "report.json").exists()


def test_a_missing_field_is_named() -> None:
    run = good()
    del run["duration_s"]
    with pytest.raises(ExperimentInputError, match="duration_s is missing"):
        parse_run(run, "runs/firm.json")


def test_two_files_of_one_policy_are_refused(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a.json").write_text(json.dumps(good()))
    (tmp_path / "runs" / "b.json").write_text(json.dumps(good()))
    result = CliRunner().invoke(main, ["experiment", "--report-only", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "both record policy 'firm'" in result.output, result.output


@pytest.mark.parametrize(
    ("report", "field"),
    [
        ({"interval_s": 1e-300}, "interval_s"),
        ({"slo_ms": {"compose-post": -250}}, "slo_ms.compose-post"),
        ({"seed": "one"}, "seed"),
    ],
)
def test_a_bad_previous_report_is_refused_naming_the_field(
    report: dict[str, Any], field: str, tmp_path: Path
) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "firm.json").write_text(json.dumps(good()))
    (tmp_path / "report.json").write_text(json.dumps(report))
    result = CliRunner().invoke(main, ["experiment", "--report-only", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "report.json" in result.output and field in result.output, result.output
    assert "unexpected" not in result.output


def test_the_table_goes_to_stdout_and_the_json_too(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "firm.json").write_text(json.dumps(good()))
    runner = CliRunner(env={"COLUMNS": "220"})
    result = runner.invoke(main, ["experiment", "--report-only", "--out", str(tmp_path), "--interval", "5"])
    assert result.exit_code == 0, result.output
    assert "firm experiment: 20 s per policy" in result.stdout
    assert "report:" in result.stdout
    assert "firm experiment" not in result.stderr
    result = runner.invoke(main, ["experiment", "--report-only", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["policies"]["firm"]["requests"] == 20


def test_other_work_is_read_back_and_a_run_recorded_before_it_existed_has_none() -> None:
    run = parse_run(with_({"other_work": [[0.5, 0.02], [1.0, 0.3]]}))
    assert run.other_work == [(0.5, 0.02), (1.0, 0.3)]
    assert parse_run(good()).other_work == []
