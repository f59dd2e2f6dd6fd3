"""Node inputs from the field, fifth round: numbers as YAML and Jinja hand them to a module (floats such
as ``2.5e+6`` or ``1514.0`` where the same digits in a string were taken), and the anomaly module's own
bounds (``max_duration``, ``disk_iops_at_full``, ``history_since``) checked before anything starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.firm.core.plugins.module_utils import anomaly, tc, units
from ansible_collections.firm.core.plugins.modules import anomaly as anomaly_module
from tests.helpers.modules import run_module


@pytest.mark.parametrize(
    ("parse", "as_float", "as_text"),
    [
        (units.parse_rate, 2.5e6, "2500000"),
        (units.parse_rate, 1e10, "10gbit"),
        (units.parse_size, 1514.0, "1514"),
        (units.parse_size, 1.5, "1.5"),  # rounded down, as the string is
        (tc.parse_rate, 8e6, "8mbit"),
        (tc.parse_size, 65536.0, "64k"),
        (tc.parse_time, 50000.0, "50ms"),
    ],
)
def test_a_float_is_read_as_the_same_digits_in_a_string(parse: Any, as_float: float, as_text: str) -> None:
    """``rate: 2.5e+6`` in YAML, or ``rate: "{{ link * 0.8 }}"`` with native Jinja types, is a float:
    it was refused as 'neither a number nor a string' while "2500000.0" was taken."""
    assert parse(as_float) == parse(as_text) == parse(repr(as_float))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("parse", [units.parse_rate, units.parse_size])
def test_a_float_that_is_no_number_is_refused_naming_the_field(parse: Any, value: float) -> None:
    with pytest.raises(units.UnitError, match=r"burst .* is not a finite number") as caught:
        parse(value, "burst")
    assert caught.value.fix


def test_a_tc_request_with_floats_is_the_request_with_strings() -> None:
    floats = tc.parse_request("htb", 2e7, ceil=3e7, burst=3000.0)
    assert floats == tc.parse_request("htb", "20mbit", ceil="30mbit", burst="3000")


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: tc.parse_rate(-8e6), "below the least accepted 8 bit/s"),
        (lambda: tc.parse_rate(-8_000_000), "below the least accepted 8 bit/s"),
        (lambda: tc.parse_time("2min"), "unknown unit 'min'"),
        (lambda: tc.parse_time(float("nan")), "latency nan is not a finite number"),
    ],
)
def test_tc_values_name_the_bound_or_the_unit(call: Any, words: str) -> None:
    with pytest.raises(tc.TcInputError, match=words):
        call()


# -- the anomaly module's own bounds, and the files it keeps ----------------------------------------------


def _anomaly(capsys: pytest.CaptureFixture[str], state_dir: Path, **args: Any) -> dict[str, Any]:
    return run_module(anomaly_module.main, {"state_dir": str(state_dir), **args}, capsys=capsys)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            {"max_duration": -5},
            "max_duration -5 s is outside 1..604800 s",
        ),  # was "duration 10 s is outside 1..-5 s"
        ({"max_duration": 0}, "max_duration 0 s is outside"),
        ({"max_duration": 10**9}, "max_duration 1000000000 s is outside"),
        (
            {"kind": "disk_io", "disk_iops_at_full": 0},
            "disk_iops_at_full 0 is outside 1..2147483647",
        ),  # was 1 IOPS
        ({"kind": "disk_io", "disk_iops_at_full": -40000}, "disk_iops_at_full -40000 is outside"),
        ({"kind": "disk_io", "disk_iops_at_full": 2**31}, "disk_iops_at_full 2147483648 is outside"),
    ],
)
def test_a_bound_of_the_node_is_checked_before_anything_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: dict[str, Any], words: str
) -> None:
    request = {"name": "a", "kind": "cpu", "intensity": 50, "duration": 10, **args}
    result = _anomaly(capsys, tmp_path / "state", **request)
    assert result.get("failed") is True and words in result["msg"], result
    assert "Fix:" in result["msg"]
    assert not (tmp_path / "state").exists()  # nothing started, nothing recorded


@pytest.mark.parametrize("since", ["nan", "inf", 1e400, "-inf"])
def test_a_history_since_that_is_no_time_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, since: object
) -> None:
    """NaN compared false with every end, so the history came back silently empty; inf likewise."""
    result = _anomaly(capsys, tmp_path, state="query", history_since=since)
    assert (
        result.get("failed") is True and "history_since" in result["msg"] and "is not a time" in result["msg"]
    )


def test_a_history_line_a_crash_cut_short_is_left_out_with_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history is appended line by line; a process killed mid-append leaves a torn last line,
    which made every later query a JSONDecodeError traceback (MODULE FAILURE)."""
    lines = [
        json.dumps({"name": "a", "kind": "cpu", "ended_at": 1_764_500_000.0}),
        json.dumps({"name": "b", "kind": "cpu", "ended_at": 1_764_500_100.0}),
        '{"name": "c", "kind": "cp',
    ]
    (tmp_path / "history.jsonl").write_text("\n".join(lines))
    warned: list[str] = []
    real_warn = anomaly_module.AnsibleModule.warn

    def warn(module: Any, text: str) -> None:  # where Ansible puts warnings depends on what else is loaded
        warned.append(text)
        real_warn(module, text)

    monkeypatch.setattr(anomaly_module.AnsibleModule, "warn", warn)
    result = _anomaly(capsys, tmp_path, state="query", history_since=1_764_500_050.0)
    assert not result.get("failed"), result
    assert [h["name"] for h in result["history"]] == ["b"]
    assert len(warned) == 1 and "1 line(s) of" in warned[0] and "history.jsonl could not be read" in warned[0]


def test_a_file_of_something_else_in_the_state_dir_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "settings.json").write_text('{"theme": "dark"}')
    result = _anomaly(capsys, tmp_path, state="query")
    assert result.get("failed") is True, result
    assert "settings.json is not a record of an active anomaly" in result["msg"]
    assert "state_dir" in result["msg"] and "Traceback" not in json.dumps(result)


def test_the_bounds_hold_for_the_library_too() -> None:
    with pytest.raises(anomaly.AnomalyInputError, match="max_duration"):
        anomaly.check_environment(anomaly.Environment(max_duration_s=0))
    anomaly.check_environment(anomaly.Environment(max_duration_s=anomaly.MAX_DURATION_S))
