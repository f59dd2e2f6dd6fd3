"""How a testbed run's requests are grouped into phases: warm-up and the injector's own start-up left out."""

from __future__ import annotations

import pytest
from rich.console import Console

from firm.load.config import RequestType
from firm.load.stats import RequestRecord, Summary, TypeSummary
from firm.testbed import commands, experiment
from firm.testbed import config as testbed_config

RECORD = {"requested_at": 115.0, "started_at": 118.0, "ended_at": 136.0, "expires_at": 136.0}


@pytest.mark.parametrize(
    ("moment", "phase"),
    [
        (100.5, None),  # warm-up
        (102.0, "before"),
        (114.9, "before"),
        (115.0, None),
        (117.9, None),  # the injector's module process starting the anomaly
        (118.0, None),
        (119.9, None),  # settling after the start
        (120.0, "during"),
        (135.9, "during"),
        (136.0, None),
        (137.9, None),  # settling after the end
        (138.0, "after"),
        (150.0, "after"),
    ],
)
def test_phase_of_leaves_out_warmup_and_the_injectors_start_up(moment: float, phase: str | None) -> None:
    assert experiment.phase_of(moment, RECORD, measured_from=102.0) == phase


def test_without_an_anomaly_every_measured_request_is_in_the_run_phase() -> None:
    assert experiment.phase_of(101.9, None, measured_from=102.0) is None
    assert experiment.phase_of(102.0, None, measured_from=102.0) == "run"


def test_a_record_without_a_request_time_starts_the_anomaly_at_its_start() -> None:
    record = {k: v for k, v in RECORD.items() if k != "requested_at"}
    assert experiment.phase_of(117.9, record) == "before"
    assert experiment.phase_of(118.0, record) is None


def test_phases_counts_requests_and_failures_by_phase() -> None:
    def request(at: float, latency_ms: float, error: str = "") -> RequestRecord:
        return RequestRecord(RequestType.COMPOSE_POST, "", latency_ms, 200 if not error else 0, at, error)

    records = [
        request(100.5, 400.0),
        request(103.0, 20.0),
        request(104.0, 0.0, "timeout"),
        request(116.0, 900.0),
        request(125.0, 300.0),
        request(140.0, 30.0),
    ]
    grouped = experiment.phases(records, [], RECORD, 5.0, measured_from=102.0)
    compose = RequestType.COMPOSE_POST.value
    assert grouped["before"][compose].latencies_ms == [20.0] and grouped["before"][compose].failed == 1
    assert grouped["during"][compose].latencies_ms == [300.0]
    assert grouped["after"][compose].latencies_ms == [30.0]


def test_after_starts_once_the_queue_the_anomaly_left_has_drained() -> None:
    assert experiment.phase_of(138.0, RECORD, drained_at=141.5) is None
    assert experiment.phase_of(141.4, RECORD, drained_at=141.5) is None
    assert experiment.phase_of(141.5, RECORD, drained_at=141.5) == "after"
    # a queue drained before the settling time ends changes nothing
    assert experiment.phase_of(138.0, RECORD, drained_at=136.5) == "after"


def test_drained_at_is_when_the_last_request_sent_before_the_end_completed() -> None:
    def request(at: float, latency_ms: float, error: str = "") -> RequestRecord:
        return RequestRecord(RequestType.READ_HOME_TIMELINE, "", latency_ms, 200, at, error)

    records = [
        request(130.0, 9000.0),  # completes at 139.0
        request(135.5, 5500.0),  # the last sent before the end (136.0): completes at 141.0
        request(136.5, 4000.0),  # sent after the end: its wait is what the drain measures, not part of it
        request(139.0, 800.0),  # sent into the queue: no phase
        request(141.0, 30.0),
    ]
    assert experiment.drained_at(records, RECORD) == pytest.approx(141.0)
    assert experiment.drained_at(records, None) is None
    assert experiment.drained_at([], RECORD) is None
    grouped = experiment.phases(records, [], RECORD, 5.0)
    assert grouped["after"][RequestType.READ_HOME_TIMELINE.value].latencies_ms == [30.0]
    assert grouped["during"][RequestType.READ_HOME_TIMELINE.value].latencies_ms == [9000.0, 5500.0]


def test_a_warmup_as_long_as_the_load_is_refused_before_anything_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = testbed_config.TestbedConfig(state_dir=str(tmp_path / "state"))
    with pytest.raises(experiment.ExperimentError, match="warm-up"):
        experiment.run(config, experiment.RunPlan(duration_s=2.0, warmup_s=2.0))


def test_the_report_and_its_table_say_how_long_the_queue_took_to_drain() -> None:
    overall = TypeSummary("all", 2, 2, {}, 20.0, 30.0, 30.0, None, 1, 0, None)
    summary = Summary("http://198.18.250.1:8080", 1, 40.0, 40.0, (), overall, 0.1, 0.0)
    grouped = experiment.phases(
        [
            RequestRecord(RequestType.COMPOSE_POST, "", 20.0, 200, 103.0, ""),
            RequestRecord(RequestType.COMPOSE_POST, "", 30.0, 200, 140.0, ""),
        ],
        [],
        RECORD,
        5.0,
    )
    report = experiment.RunReport(summary, [], grouped, 0.5, RECORD, {"compose-post": 250.0}, [], 3.5)
    assert report.as_dict()["drain_s"] == 3.5
    console = Console(width=160, record=True)
    console.print(commands.summary_table(report, testbed_config.TestbedConfig()))
    text = " ".join(console.export_text().split())  # the caption wraps at the table's width
    assert "drained 3.5 s after its end" in text and "'after' counts requests sent from then on" in text
    without = experiment.RunReport(summary, [], {}, 0.5, None, {}, [])
    console = Console(width=160, record=True)
    console.print(commands.summary_table(without, testbed_config.TestbedConfig()))
    assert "drained" not in console.export_text() and without.as_dict()["drain_s"] is None
