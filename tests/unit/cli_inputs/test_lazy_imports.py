"""``firm --help`` and ``import firm.cli`` import no heavy library: the subcommands that need torch,
scikit-learn, matplotlib or the kubernetes client are imported when run, and ``--help`` lists them
from their short help kept in :data:`firm.cli.LAZY_COMMANDS`."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from firm import cli

HEAVY = ("torch", "sklearn", "matplotlib", "kubernetes", "numpy", "pandas", "pyarrow", "firm.tracing")

_PROBE = """
import json, sys
sys.argv = ["firm", *json.loads(sys.argv[1])]
from firm.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy} if m in sys.modules)), file=sys.stderr)
"""


def _imported(args: list[str]) -> list[str]:
    """The heavy modules a fresh interpreter has imported after ``firm ARGS`` (none: just the import)."""
    code = (
        _PROBE.format(heavy=repr(HEAVY))
        if args
        else f"import sys, json, firm.cli; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return list(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("args", [[], ["--help"], ["features", "--help"], ["preflight", "--help"]])
def test_the_command_line_imports_no_heavy_library(args: list[str]) -> None:
    assert _imported(args) == []


@pytest.mark.parametrize("name", sorted(cli.LAZY_COMMANDS))
def test_the_short_help_kept_for_help_is_the_commands_own(name: str) -> None:
    module, attribute, short = cli.LAZY_COMMANDS[name]
    command = getattr(importlib.import_module(module), attribute)
    assert isinstance(command, click.Command) and command.name == name
    assert command.get_short_help_str(limit=10_000) == short


def test_help_lists_every_command_as_click_would() -> None:
    lazy = CliRunner().invoke(cli.main, ["--help"], terminal_width=100)
    assert lazy.exit_code == 0, lazy.output
    context = click.Context(cli.main)
    commands = [cli.main.get_command(context, n) for n in cli.main.list_commands(context)]
    loaded = click.Group("firm", commands=[c for c in commands if c is not None])
    ctx = click.Context(loaded, info_name="firm", terminal_width=100)
    formatter = ctx.make_formatter()
    click.Group.format_commands(loaded, ctx, formatter)
    assert formatter.getvalue() in lazy.output


def test_the_batch_default_is_the_stream_modules() -> None:
    from firm.tracing.stream import DEFAULT_BATCH_BYTES  # noqa: PLC0415

    assert cli.DEFAULT_BATCH_MB * 2**20 == DEFAULT_BATCH_BYTES
