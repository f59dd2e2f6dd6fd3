"""`firm testbed traces` with bad input or an unreachable trace store: one clear line, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.testbed.state import TestbedState


@pytest.mark.parametrize("last", ["garbage", "-5s", "0s", ""])
def test_a_bad_window_is_refused_before_anything_is_read(last: str) -> None:
    result = CliRunner().invoke(main, ["testbed", "traces", "--last", last])
    assert result.exit_code == 2
    assert "--last" in result.output and "Traceback" not in result.output


def test_a_trace_store_that_does_not_answer_is_named(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    # Nothing listens on 127.0.0.2:6379 (firm's Redis binds 127.0.0.1 only), so the connection is refused.
    state = TestbedState(
        bridge="firmtb0", port=8080, redis_address="127.0.0.2", frontend="http://127.0.0.3:8080", instances=()
    )
    (state_dir / "testbed.json").write_text(json.dumps(state.to_json()))
    config = tmp_path / "testbed.yml"
    config.write_text(f"state_dir: {state_dir}\n")
    result = CliRunner().invoke(main, ["testbed", "traces", "--config", str(config), "--last", "30s"])
    assert result.exit_code == 1, result.output
    assert "cannot read the trace store at 127.0.0.2" in result.output
    assert "firm testbed status" in result.output
    assert isinstance(result.exception, SystemExit)
