"""Node inputs from the field, fifth round: numbers as YAML and Jinja hand them to a module (floats such
as ``2.5e+6`` or ``1514.0`` where the same digits in a string were taken), the anomaly module's own
bounds (``max_duration``, ``disk_iops_at_full``, ``history_since``) checked before anything starts, and
campaign definitions and ``anomaly_targets`` as an inventory may hold them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from ansible.module_utils.basic import AnsibleModule

from ansible_collections.firm.core.plugins.filter.campaign_schedule import campaign_schedule
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
    real_warn = AnsibleModule.warn

    def warn(module: Any, text: str) -> None:  # where Ansible puts warnings depends on what else is loaded
        warned.append(text)
        real_warn(module, text)

    monkeypatch.setattr(AnsibleModule, "warn", warn)
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


# -- campaign definitions and anomaly targets, as an inventory and a playbook give them ---------------------

WEB = {"service": "web", "cgroup": "firm/web", "namespace": "web-ns", "interface": "veth-web"}
HOSTVARS: dict[str, dict[str, Any]] = {"node1": {"anomaly_targets": [WEB]}, "node2": {}}


def _plan(**random: Any) -> list[dict[str, Any]]:
    return campaign_schedule(
        {"id": "c1", "random": {"seed": 7, "rounds": 3, **random}}, list(HOSTVARS), HOSTVARS
    )


@pytest.mark.parametrize(
    ("random", "words"),
    [
        (
            {"intensity": 50.5},
            "intensity 50.5 is not a whole number",
        ),  # was TypeError: 'float' object is not iterable
        ({"duration": None}, "duration None is not a whole number"),  # was TypeError
        ({"kinds": 5}, "kinds 5 is not a list of anomaly kinds"),  # was TypeError
        ({"seed": True}, "no integer seed"),  # was seed 1
        ({"rounds": True}, "rounds True is not a count"),  # was 1 round
        ({"gap": [True, 5]}, "gap's low end True is not a whole number"),  # was a gap of True seconds
        ({"intensity": [40, "ninety"]}, "intensity's high end 'ninety' is not a whole number"),
    ],
)
def test_a_random_campaign_names_the_setting_it_cannot_use(random: dict[str, Any], words: str) -> None:
    with pytest.raises(AnsibleFilterError, match=re.escape(words)):
        _plan(**random)


def test_one_kind_written_as_a_word_is_that_kind_not_its_letters() -> None:
    """``kinds: cpu`` was read as the kinds 'c', 'p' and 'u' and refused as such."""
    rounds = _plan(kinds="cpu")
    assert {i["args"]["kind"] for r in rounds for i in r["injections"]} == {"cpu"}
    assert _plan(kinds="cpu", intensity=[40.0, "90"]) == _plan(kinds=["cpu"], intensity=[40, 90])


@pytest.mark.parametrize(
    ("targets", "words"),
    [
        ([{"service": "web", "kinds": ["gpu"]}], "anomaly target web's kinds ['gpu'] are not anomaly kinds"),
        ([{"service": "web", "link_rate": "10Mbps"}], "anomaly target web's link_rate '10Mbps' is ambiguous"),
        ([{"service": "web", "link_rate": "fast"}], "anomaly target web's link_rate 'fast' cannot be parsed"),
        ([{"service": None}], "service None is not a name"),
        ([{"service": "web", "cgroup": ["firm/web"]}], "cgroup ['firm/web'] is not text"),
        (["web"], "anomaly target 'web' is not a mapping"),  # was ValueError: dictionary update sequence
        ({"service": "web"}, "is not a list of targets"),  # was TypeError: string indices
    ],
)
def test_an_anomaly_target_is_checked_before_any_round_runs(targets: object, words: str) -> None:
    """A kind no anomaly has made the target silently never chosen; a link_rate tc cannot read failed
    only when its round ran, with part of the campaign done."""
    hostvars = {"node1": {"anomaly_targets": targets}}
    with pytest.raises(AnsibleFilterError, match=re.escape(words)):
        campaign_schedule({"id": "c1", "random": {"seed": 7}}, ["node1"], hostvars)


@pytest.mark.parametrize(
    ("definition", "words"),
    [
        (
            {"anomalies": [{"host": "node1", "kind": "cpu", "intensity": "high", "duration": 5}]},
            "anomaly 0 of the campaign: intensity 'high' is not a whole number",
        ),  # was ValueError
        (
            {"anomalies": [{"host": "node1", "kind": "cpu", "intensity": 50, "duration": 5, "round": "x"}]},
            "round 'x' is not a whole number",
        ),
        (
            {"anomalies": [{"host": "node1", "kind": "cpu", "intensity": 50, "duration": 5, "round": -1}]},
            "round -1 is negative",
        ),
        (
            {"anomalies": [{"host": "node1", "kind": "cpu", "intensity": 50.7, "duration": 5}]},
            "intensity 50.7 is not a whole number",
        ),  # was silently 50
        ({"anomalies": ["node1"]}, "anomaly 0 of the campaign, 'node1', is not a mapping"),
        ({"anomalies": "node1"}, "anomalies 'node1' are not a list"),
        ({"anomalies": [], "gap": "soon"}, "gap 'soon' is not a whole number"),
        ({"anomalies": [], "gap": -5}, "gap -5 s is outside 0..86400"),
    ],
)
def test_an_explicit_campaign_names_the_entry_and_field(definition: dict[str, Any], words: str) -> None:
    with pytest.raises(AnsibleFilterError, match=re.escape(words)):
        campaign_schedule({"id": "c1", **definition}, list(HOSTVARS), HOSTVARS)


def test_a_campaign_that_is_no_mapping_is_named() -> None:
    with pytest.raises(AnsibleFilterError, match="is not a mapping"):
        campaign_schedule("c1", list(HOSTVARS), HOSTVARS)  # type: ignore[arg-type]


def test_numbers_a_jinja_expression_gives_as_text_are_taken() -> None:
    entry = {"host": "node1", "kind": "cpu", "intensity": "50", "duration": 20.0, "round": "1", **WEB}
    (round_,) = campaign_schedule({"id": "c1", "anomalies": [entry], "gap": "5"}, list(HOSTVARS), HOSTVARS)
    (injection,) = round_["injections"]
    assert (round_["index"], round_["length_s"]) == (1, 25)
    assert (injection["args"]["intensity"], injection["args"]["duration"]) == (50, 20)
    assert injection["args"]["target_cgroup"] == "firm/web"
