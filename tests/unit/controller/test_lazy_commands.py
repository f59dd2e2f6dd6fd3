"""The firm command imports its heavy subcommands (torch, scikit-learn) only when they are used."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from firm.cli import LAZY_COMMANDS, main


def test_every_lazy_command_loads_under_its_name_and_help_lists_it() -> None:
    ctx = click.Context(main)
    for name in LAZY_COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name
    listed = CliRunner().invoke(main, ["--help"]).output
    assert all(name in listed for name in [*LAZY_COMMANDS, "critical-path", "features", "preflight"])


def test_the_trace_commands_do_not_import_torch_or_scikit_learn() -> None:
    code = "import sys; import firm.cli; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.split() == ["False", "False"]
