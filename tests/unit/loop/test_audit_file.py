"""Audit logs that are not audit logs: a clean error naming the line, from the library and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from firm.cli import main
from firm.loop.audit import read_recent


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"step": 1}\n[1, 2]\n', "line 2 is a JSON list, not a record"),
        (b'{"step": 1}\n{"x":\n', "line 2 is not JSON (Expecting value)"),
        (b"\xff\xfe{}\n", "not UTF-8 text (byte 0)"),
    ],
)
def test_a_file_that_is_not_an_audit_log_is_refused_naming_the_line(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="one JSON object per line") as raised:
        read_recent(path=path)
    assert expected in str(raised.value)
    for command in ("audit", "explain"):
        result = CliRunner().invoke(main, [command, "--file", str(path)])
        assert result.exit_code == 1, result.output
        assert expected in result.output and "Traceback" not in result.output


def test_blank_lines_are_skipped_and_the_last_records_kept(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3}\n')
    assert read_recent(path=path, last=2) == [{"step": 2}, {"step": 3}]


GOOD = {
    "run": "20260101T000000",
    "step": 3,
    "time": 1767225600.0,
    "status": "acted",
    "decider": "firm",
    "slo": [{"type": "compose-post", "p99_ms": "unlimited", "slo_ms": 250, "state": "violated", "count": 9}],
    "decision": {
        "mode": "raise",
        "culprits": [{"instance": "text-0", "score": 0.9, "features": {"ri": 0.8}}],
    },
    "proposed": [{"instance": "text-0", "resource": "cpu", "value": 1.5, "unit": "cores", "reason": "agent"}],
    "result": {
        "actions": [{"instance": "text-0", "resource": "cpu", "before": 1, "after": 1.5, "changed": True}]
    },
}

WRONG_TYPES = [
    ({"slo": {"type": "x"}}, "slo"),
    ({"slo": ["compose-post"]}, "slo[0]"),
    ({"slo": [{"type": "c", "p99_ms": "fast", "slo_ms": 250}]}, "slo[0].p99_ms"),
    ({"slo": [{"type": "c", "p99_ms": 300, "slo_ms": "250ms"}]}, "slo[0].slo_ms"),
    ({"time": "yesterday"}, "time"),
    ({"time": 1e300}, "time"),
    ({"status": 5}, "status"),
    ({"decision": "raise"}, "decision"),
    ({"decision": {"culprits": [{"instance": "a", "score": "high"}]}}, "decision.culprits[0].score"),
    ({"decision": {"culprits": {"instance": "a"}}}, "decision.culprits"),
    ({"result": {"actions": ["text-0 cpu"]}}, "result.actions[0]"),
    ({"result": []}, "result"),
    ({"proposed": "none"}, "proposed"),
    ({"scale_requests": [1]}, "scale_requests[0]"),
    ({"errors": "boom"}, "errors"),
]


@pytest.mark.parametrize(("change", "field"), WRONG_TYPES, ids=[f for _, f in WRONG_TYPES])
def test_records_with_fields_of_the_wrong_type_are_refused_naming_line_and_field(
    tmp_path: Path, change: dict[str, object], field: str
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "step": 4, **change}) + "\n")
    for command in (["audit"], ["explain"], ["explain", "4"], ["audit", "--json"]):
        result = CliRunner().invoke(main, [*command, "--file", str(path)])
        assert result.exit_code == 1, (command, result.output)
        assert f"line 2: {field} is" in result.output, (command, result.output)
        assert "unexpected" not in result.output and "Input should" not in result.output


def test_a_record_as_firm_writes_it_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    for command in (["audit"], ["explain"], ["explain", "3"]):
        result = CliRunner(env={"COLUMNS": "200"}).invoke(main, [*command, "--file", str(path)])
        assert result.exit_code == 0, (command, result.output)
        assert "text-0" in result.output


class FakeStream:
    """What read_recent asks of a Redis client: the newest entries of the stream, newest first."""

    def __init__(self, *records: bytes) -> None:
        self.entries = [(f"{i}-0".encode(), {b"r": raw}) for i, raw in enumerate(records, 1)]

    def xrevrange(self, key: str, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return list(reversed(self.entries))[:count]


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b'{"slo": "all good"}', "entry 2-0 of firm:audit: slo is 'all good'; give a list"),
        (b"{", "entry 2-0"),
    ],
)
def test_a_bad_record_in_redis_is_named_by_its_entry(raw: bytes, said: str) -> None:
    client = FakeStream(json.dumps(GOOD).encode(), raw)
    with pytest.raises(redis.exceptions.DataError, match=re.escape(said)):
        read_recent(client=client, key="firm:audit")  # type: ignore[arg-type]
    assert read_recent(client=FakeStream(json.dumps(GOOD).encode()), key="firm:audit") == [GOOD]  # type: ignore[arg-type]
