"""A reader that goes away early (``firm critical-path big.json | head``) ends the command quietly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TRACES = (
    Path(__file__).resolve().parents[3]
    / "../shared/data/jaeger-traces/deathstarbench/read-home-timeline_R600__trace_03_longest.json"
)


@pytest.mark.skipif(not TRACES.is_file(), reason=f"the shared traces are not here: {TRACES}")
def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    document = json.loads(TRACES.read_text())
    document["data"] = document["data"] * 200  # far more output than a pipe buffer holds
    big = tmp_path / "big.json"
    big.write_text(json.dumps(document))
    firm = subprocess.Popen(
        [sys.executable, "-c", "from firm.cli import main; main()", "critical-path", str(big)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert firm.stdout is not None and firm.stderr is not None
    assert firm.stdout.read(10)  # the reader takes a little of it, then goes away
    firm.stdout.close()
    errors = firm.stderr.read().decode()
    assert firm.wait(timeout=120) == 0, errors
    assert errors == ""
