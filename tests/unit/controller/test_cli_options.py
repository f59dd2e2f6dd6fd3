"""Options shared by the commands, and environment variables named after them: FIRM_<COMMAND>_<PARAMETER>,
the parameter being the command function's argument (``--format`` of `firm features` is ``fmt``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from firm.cli import main

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "jaeger-traces" / "deathstarbench"


def test_an_option_is_read_from_its_environment_variable() -> None:
    files = sorted(DATA.glob("*.json"))[:1]
    if not files:
        pytest.skip(f"the recorded traces are not in {DATA}")
    runner = CliRunner()
    as_json = runner.invoke(main, ["features", str(files[0])], env={"FIRM_FEATURES_FMT": None})
    assert as_json.exit_code == 0, as_json.output
    json.loads(as_json.stdout)
    as_table = runner.invoke(main, ["features", str(files[0])], env={"FIRM_FEATURES_FMT": "table"})
    assert as_table.exit_code == 0 and as_table.stdout.splitlines()[1].split()[:2] == ["service", "instance"]


def test_no_firm_variable_in_the_environment_sets_an_option_by_accident() -> None:
    """The variables firm and its tests use for other things name no command's option."""
    ctx = click.Context(main)
    commands = {name: main.get_command(ctx, name) for name in main.list_commands(ctx)}
    for name in (
        "FIRM_REDIS_URL",
        "FIRM_REDIS_PASSWORD",
        "FIRM_REDIS_PASSWORD_FILE",
        "FIRM_REDIS_PORT",
        "FIRM_JAEGER_URL",
        "FIRM_JAEGER_SERVICE",
        "FIRM_AUDIT_STRICT",
        "FIRM_REAL_RESCTRL",
        "FIRM_TEST_SESSION",
        "FIRM_E2E_INVENTORY",
        *(k for k in os.environ if k.startswith("FIRM_")),
    ):
        parts = name.lower().split("_")[1:]
        for split in range(1, len(parts)):
            command, option = "-".join(parts[:split]), "_".join(parts[split:])
            found = commands.get(command)
            if found is not None:
                params = {p.name for p in found.params}
                assert option not in params, f"{name} would set `firm {command}`'s {option}"
