"""``firm preflight`` on this machine: a table for people, JSON for programs."""

from __future__ import annotations

import json

from click.testing import CliRunner

from firm.cli import main


def test_preflight_prints_a_table_of_resources() -> None:
    result = CliRunner().invoke(main, ["preflight", "--no-pqos"])
    assert result.exit_code == 0, result.output
    for resource in (
        "CPU quota (CFS bandwidth)",
        "CPU weight",
        "Disk I/O throttling",
        "Network shaping",
        "Last-level cache (CAT)",
    ):
        assert resource in result.output
    assert "cgroups:" in result.output


def test_preflight_json_says_what_is_controllable() -> None:
    result = CliRunner().invoke(main, ["preflight", "--json", "--no-pqos"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["controllable"]) <= set(report["capabilities"])
    assert report["ready"] is ("cpu" in report["controllable"] and report["kernel_supported"])
    assert report["pqos"] == {"available": False, "error": "not probed"}
