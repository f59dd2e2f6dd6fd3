"""``firm experiment`` refuses a bad --workload (naming --workload), a seed beyond 64 bits and an --out
it cannot write, as usage errors before any run starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import firm.experiment.cli as experiment_cli
from firm.cli import main


class _NeverStarts:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the experiment was started")


def _invoke(monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.setattr(experiment_cli, "Experiment", _NeverStarts)
    return CliRunner().invoke(main, ["experiment", *args])


def test_an_empty_workload_names_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = _invoke(monkeypatch, "--workload", str(empty), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert "'--workload'" in result.output and "no second with a rate above 0" in result.output
    assert "rate.path" not in result.output


@pytest.mark.parametrize(("path", "words"), [("/dev/zero", "is a device"), ("/", "is a directory")])
def test_a_device_or_directory_workload_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, words: str
) -> None:
    result = _invoke(monkeypatch, "--workload", path, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert "'--workload'" in result.output and words in result.output


def test_a_seed_beyond_64_bits_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _invoke(monkeypatch, "--seed", "99999999999999999999999999", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert "'--seed'" in result.output and "18446744073709551615" in result.output


@pytest.mark.parametrize(
    ("out", "words"),
    [
        ("/proc", "cannot write there"),
        ("/proc/nope/x", "cannot write there"),
        ("FILE", "is a file"),
        ("FILE/below", "is a file, so the directory cannot be made"),
    ],
)
def test_an_unwritable_out_is_refused_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str, words: str
) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    result = _invoke(monkeypatch, "--out", out.replace("FILE", str(file)), "--anomalies", "none")
    assert result.exit_code == 2, result.output
    assert "'--out'" in result.output and words in result.output
    assert "Traceback" not in result.output


def test_an_slo_of_a_request_type_the_testbed_does_not_send_is_refused(tmp_path: Path) -> None:
    """``compose`` is not a request type of the testbed (``compose-post`` is): an SLO for it would be
    kept for no request while compose-post kept the testbed's SLO."""
    loop = tmp_path / "loop.yml"
    loop.write_text("slo_ms: {compose: 100}\n")
    result = CliRunner().invoke(
        main, ["experiment", "--config", str(loop), "--out", str(tmp_path / "out"), "--anomalies", "none"]
    )
    assert result.exit_code == 1, result.output
    assert "slo_ms names request type 'compose', which the testbed does not send" in result.output
    assert "compose-post, read-home-timeline, read-user-timeline" in result.output
    assert not (tmp_path / "out" / "report.json").exists()
