"""firm.core.campaign_record refuses bad ground truth and bad Redis URLs before writing anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ansible_collections.firm.core.plugins.modules import campaign_record
from tests.helpers.modules import run_module

GOOD = {"name": "c1-r0-node1-0", "host": "node1", "kind": "cpu", "started_at": 1_764_500_000.0}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"entries": [{**GOOD, "started_at": "yesterday"}]}, "not a number of seconds"),
        ({"entries": [{k: v for k, v in GOOD.items() if k != "kind"}]}, "kind is missing"),
        ({"redis_url": "http://[::1"}, "is not a Redis URL"),
        ({"redis_url": "nonsense"}, "is not a Redis URL"),
        ({"redis_url": "redis://[::1"}, "is not a Redis URL"),
        ({"campaign": "bad id!"}, "campaign"),
    ],
)
def test_bad_input_fails_with_a_message_and_records_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: dict[str, Any], words: str
) -> None:
    path = tmp_path / "c1.jsonl"
    full = {"campaign": "c1", "event": "started", "entries": [GOOD], "jsonl": str(path), **args}
    result = run_module(campaign_record.main, full, capsys=capsys)
    assert result["failed"] is True
    assert words in result["msg"]
    assert not path.exists()


def test_good_input_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c1.jsonl"
    result = run_module(
        campaign_record.main,
        {"campaign": "c1", "event": "started", "entries": [GOOD], "jsonl": str(path)},
        capsys=capsys,
    )
    assert result["recorded"] == 1 and path.exists()
