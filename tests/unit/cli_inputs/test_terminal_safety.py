"""Text from inputs never reaches a terminal raw: escape sequences, bells, carriage returns, line
feeds and direction overrides in service names, query-API errors, audit records and file names are
printed escaped (firm.terminal.safe), in tables, warnings, explanations and errors alike."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.terminal import safe, safe_tree

NASTY = "\x1b[31mred\x1b[0m\x07\r\nwarning: forged\u202eevil\x9b2J"
"""ESC colour codes, a bell, CR LF and a forged warning line, a right-to-left override, a C1 CSI."""
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""What must never be printed (a line feed only between lines firm writes itself)."""
RAW_C0 = re.compile("[\x00-\x09\x0b-\x1f\x7f]")
"""What JSON output never holds raw (JSON escapes C0 control characters; other characters it keeps
as UTF-8 for the program that reads it)."""


def test_safe_escapes_what_a_terminal_would_act_on() -> None:
    assert safe(NASTY) == "\\x1b[31mred\\x1b[0m\\x07\\x0d\\x0awarning: forged\\u202eevil\\x9b2J"
    assert safe("compose-post-0 日本 é") == "compose-post-0 日本 é"  # printable text unchanged
    assert safe("two\nlines\r", keep_newlines=True) == "two\nlines\\x0d"
    assert safe_tree({"a\x07": ["x\x1b", 1, None]}) == {"a\\x07": ["x\\x1b", 1, None]}


def trace_file(tmp_path: Path) -> Path:
    span = {"traceID": "00000000000000ab", "operationName": "op", "duration": 100, "startTime": 1000}
    doc = {
        "data": [
            {
                "traceID": "00000000000000ab",
                "spans": [
                    {**span, "spanID": "0000000000000001", "references": [], "processID": "p1"},
                    {
                        **span,
                        "spanID": "0000000000000002",
                        "startTime": 1010,
                        "duration": 50,
                        "processID": "p2",
                        "references": [
                            {
                                "refType": "CHILD_OF",
                                "traceID": "00000000000000ab",
                                "spanID": "0000000000000001",
                            }
                        ],
                    },
                ],
                "processes": {
                    "p1": {
                        "serviceName": NASTY,
                        "tags": [{"key": "hostname", "type": "string", "value": NASTY}],
                    },
                    "p2": {"serviceName": "b", "tags": []},
                },
            }
        ],
        "errors": [{"code": 1, "msg": NASTY}],
    }
    path = tmp_path / "nasty.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["features", "--format", "table", "--min-samples", "2"],
        ["localize", "--format", "table"],
        ["critical-path"],
    ],
)
def test_names_and_query_errors_from_traces_are_printed_escaped(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(main, [*args, str(trace_file(tmp_path))])
    assert result.exit_code == 0, result.output
    if args == ["critical-path"]:  # JSON: control characters escaped as JSON escapes them (\u001b)
        assert not RAW_C0.search(result.stdout) and "\\u001b[31mred" in result.stdout
        assert not RAW.search(result.stderr)
    else:
        assert not RAW.search(result.output), repr(result.output)
    assert "the query API reported an error: \\x1b[31mred" in result.stderr
    assert not any(line.startswith("warning: forged") for line in result.output.splitlines())


def test_audit_records_are_printed_escaped(tmp_path: Path) -> None:
    record = {
        "run": "r",
        "step": 3,
        "status": "acted",
        "reason": NASTY,
        "slo": [{"type": NASTY, "p99_ms": 300, "slo_ms": 200, "state": "violated"}],
        "decision": {"mode": "raise", "culprits": [{"instance": NASTY, "score": 0.5}]},
        "result": {
            "actions": [{"instance": "[bold]x", "resource": "cpu", "before": 1, "after": 2, "changed": True}],
            "error": "[/red][blink]" + NASTY,
        },
    }
    log = tmp_path / "audit.jsonl"
    log.write_text(json.dumps(record) + "\n")
    for args in (
        ["audit", "--file", str(log)],
        ["explain", "--file", str(log)],
        ["explain", "--file", str(log), "3"],
    ):
        result = CliRunner().invoke(main, args, terminal_width=400)
        assert result.exit_code == 0, result.output
        assert not RAW.search(result.output), (args, repr(result.output))
    table = CliRunner().invoke(main, ["audit", "--file", str(log)], terminal_width=400).output
    flat = re.sub(r"[\s│]", "", table)  # the table folds long cells over lines
    assert "[bold]x" in flat and "[/red][blin" in flat  # markup in the log is shown, not applied


def test_a_file_name_in_an_error_is_escaped(tmp_path: Path) -> None:
    path = tmp_path / "n\x1b]0;title\x07.json"
    path.write_text("[]")
    result = CliRunner().invoke(main, ["critical-path", str(path)])
    assert result.exit_code == 1
    assert "n\\x1b]0;title\\x07.json: no trace in the file" in result.stderr and not RAW.search(result.output)
