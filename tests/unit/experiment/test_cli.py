"""``firm experiment`` without the testbed: option errors before anything starts, the report again
from recorded runs (report.json, the plots, the table), and the recorded-run JSON round trip."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.experiment import ExperimentInputError
from firm.experiment.report import AnomalyWindow, CpuSample, RecordedRun, Request
from firm.experiment.runner import Experiment, ExperimentPlan, allotted, recorded_from_json, recorded_to_json
from firm.testbed import config as testbed_config

DIURNAL = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "workloads" / "diurnal.txt"


def _run(policy: str, slow_at: float) -> RecordedRun:
    requests = [Request("compose-post", t + 0.5, 400.0 if t == slow_at else 20.0) for t in range(0, 20)]
    requests += [Request("read-home-timeline", t + 0.5, 10.0) for t in range(0, 20)]
    cpu = [CpuSample(float(t), 6.0 if policy == "static" else 4.0, 2.0, 12) for t in range(0, 20, 2)]
    return RecordedRun(policy, 20.0, requests, cpu, [AnomalyWindow("cpu", "text", 4.0, 12.0, 80)], actions=2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policies", "firm,kube"], "unknown 'kube'"),
        (["--duration", "5"], "--duration"),
        (["--duration", "nan"], "--duration"),
        (["--duration", "1e308"], "--duration"),
        (["--rate", "inf"], "--rate"),
        (["--interval", "1e-300"], "--interval"),
        (["--warmup", "-1"], "--warmup"),
        (["--anomalies", "gpu"], "unknown kinds 'gpu'"),
        (["--workload", "/nonexistent/trace.txt"], "does not exist"),
        (["--interval", "0"], "--interval"),
    ],
)
def test_bad_options_are_refused_before_anything_starts(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(main, ["experiment", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output  # a malformed option value is a usage error
    assert message in result.output
    assert "unexpected" not in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_report_again_from_recorded_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    for run in (_run("firm", 5.0), _run("static", 6.0)):
        (runs / f"{run.policy}.json").write_text(json.dumps(recorded_to_json(run)))
    (runs / "static.json").write_text(json.dumps(recorded_to_json(_run("static", 6.0))))
    result = CliRunner(env={"COLUMNS": "80"}).invoke(
        main, ["experiment", "--report-only", "--out", str(tmp_path), "--interval", "5"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["interval_s"] == 5.0 and report["duration_s"] == 20.0
    # compose-post 400 ms > 250 ms SLO in [5, 10) for both: 5 s each
    assert report["policies"]["firm"]["slo_violation_s"] == 5.0
    assert report["policies"]["static"]["slo_violation_s"] == 5.0
    assert report["policies"]["firm"]["mitigation_s"] == [6.0]  # back at 10 s, started at 4 s
    assert report["ratios_to_firm"]["static"]["cpu_cores_avg"] == 1.5
    assert (tmp_path / "p99.png").stat().st_size > 0 and (tmp_path / "cpu.png").stat().st_size > 0
    assert "ratio to firm" in result.output and "(1.50x)" in result.output
    assert "…" not in result.output  # not a terminal (a pipe, a file): the table is not cut to 80 columns


def test_report_only_without_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["experiment", "--report-only", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "no recorded runs" in result.output


def test_recorded_run_round_trip() -> None:
    run = _run("hpa", 3.0)
    run.cpu.append(CpuSample(19.0, 1.0, None, 3))
    run.errors = {"timeout": 2, "http_503": 1}
    again = recorded_from_json(json.loads(json.dumps(recorded_to_json(run))))
    assert again == run


def test_allotted_cores() -> None:
    assert allotted(0.5, "1", 2.0) == 0.5
    assert allotted(1.5, "1", 2.0) == 1.0  # a quota above the cpuset cannot be used
    assert allotted(math.inf, "0-1", 2.0) == 2.0
    assert allotted(math.inf, "", 2.0) == 2.0  # an inherited cpuset: the node's
    assert allotted(None, None, 2.0) == 2.0


def test_plan_validation() -> None:
    ExperimentPlan(("firm",), 20.0, 0.0, 1, ())
    with pytest.raises(ExperimentInputError, match="--seed"):
        ExperimentPlan(("firm",), 20.0, 0.0, -1, ())
    with pytest.raises(ExperimentInputError, match="--rate"):
        ExperimentPlan(("firm",), 20.0, 0.0, 1, (), rate_rps=math.nan)
    with pytest.raises(ExperimentInputError, match="no policy"):
        ExperimentPlan((), 20.0, 0.0, 1, ())
    if not DIURNAL.is_file():
        pytest.skip(f"the shared workload traces are absent ({DIURNAL})")
    ExperimentPlan(("firm",), 20.0, 0.0, 1, (), workload=str(DIURNAL))


@pytest.mark.skipif(os.geteuid() != 0, reason="Experiment.check refuses to go further without root")
def test_a_load_that_plans_no_request_is_refused_before_the_testbed_is_touched() -> None:
    plan = ExperimentPlan(("static",), 20.0, 0.0, 1, (), rate_rps=0.01)
    with pytest.raises(
        ExperimentInputError, match=r"0.01 requests/s for 20 s plans 0.2 requests, less than one"
    ):
        Experiment(plan, testbed_config.TestbedConfig()).check()
