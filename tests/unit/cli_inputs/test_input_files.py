"""Trace FILES that can never be read to the end (a device, a socket) are usage errors naming the
argument; an input larger than memory is reported as such, not as a bug in firm."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from firm import cli
from firm.cli import main


@pytest.mark.parametrize("command", ["features", "critical-path", "localize"])
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_device_is_refused_before_reading(command: str, device: str) -> None:
    result = CliRunner().invoke(main, [command, device])
    assert result.exit_code == 2
    assert f"{device} is a device; give a file (or a pipe) that holds the data" in result.output


def test_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        result = CliRunner().invoke(main, ["features", str(path)])
    assert result.exit_code == 2 and "is not a regular file" in result.output


def test_running_out_of_memory_is_said_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(cli, "features_of_files", exhausted)
    path = tmp_path / "t.json"
    path.write_text('{"data": []}')
    result = CliRunner().invoke(main, ["features", str(path)])
    assert result.exit_code == 1
    assert "out of memory: an input is larger than this machine can hold" in result.output
    assert "bug in firm" not in result.output
