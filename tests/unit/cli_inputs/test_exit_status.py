"""The exit status of every firm command: documented in one place (firm.exit_status, docs/cli.md,
each command's --help) and what the commands really return."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from firm import exit_status
from firm.cli import main

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs" / "cli.md"
TRACE = (
    ROOT.parent
    / "shared"
    / "data"
    / "jaeger-traces"
    / "deathstarbench"
    / "compose-post_R500__trace_02_median.json"
)


def leaf_commands() -> Iterator[tuple[str, click.Command]]:
    """(path below firm, command) of every command that runs (groups excluded)."""

    def walk(
        command: click.Command, path: list[str], ctx: click.Context
    ) -> Iterator[tuple[str, click.Command]]:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                yield from walk(sub, [*path, name], click.Context(sub, parent=ctx, info_name=name))
        else:
            yield " ".join(path), command

    yield from walk(main, [], click.Context(main, info_name="firm"))


LEAVES = dict(leaf_commands())


def test_every_command_has_its_exit_statuses_and_nothing_else_does() -> None:
    assert set(exit_status.STATUSES) == set(LEAVES)


def test_docs_hold_the_generated_table() -> None:
    if not DOCS.exists():
        pytest.skip("docs/cli.md is absent")
    assert exit_status.markdown() in DOCS.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", sorted(LEAVES))
def test_help_ends_with_the_exit_statuses(path: str) -> None:
    result = CliRunner().invoke(main, [*path.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Exit status:" in result.output
    statuses = exit_status.STATUSES[path]
    for code, meaning in statuses.lines():
        assert re.search(rf"^\s+{code}\s+{re.escape(meaning[:40])}", result.output, re.MULTILINE), (
            code,
            meaning,
        )


@pytest.mark.parametrize("path", sorted(LEAVES))
def test_an_unknown_option_is_a_usage_error(path: str) -> None:
    result = CliRunner().invoke(main, [*path.split(), "--no-such-option"])
    assert result.exit_code == exit_status.USAGE, result.output
    assert "No such option" in result.output


def test_groups_exit_2_for_an_unknown_subcommand() -> None:
    assert CliRunner().invoke(main, ["no-such-command"]).exit_code == exit_status.USAGE
    assert CliRunner().invoke(main, ["testbed", "no-such-command"]).exit_code == exit_status.USAGE


@pytest.fixture
def trace() -> Path:
    if not TRACE.exists():
        pytest.skip(f"{TRACE} is absent")
    return TRACE


def test_success_is_0(trace: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["critical-path", str(trace)]).exit_code == exit_status.SUCCESS
    assert runner.invoke(main, ["features", str(trace)]).exit_code == exit_status.SUCCESS
    empty_log = tmp_path / "audit.jsonl"
    empty_log.write_text("")
    result = runner.invoke(main, ["audit", "--file", str(empty_log)])
    assert result.exit_code == exit_status.SUCCESS, result.output


def test_an_error_the_message_explains_is_1(tmp_path: Path) -> None:
    not_a_trace = tmp_path / "notes.json"
    not_a_trace.write_text('{"hello": "world"}')
    runner = CliRunner()
    for args in (["critical-path", str(not_a_trace)], ["features", str(not_a_trace)]):
        result = runner.invoke(main, args)
        assert result.exit_code == exit_status.FAILURE, result.output
        assert str(not_a_trace) in result.output
    missing_log = tmp_path / "audit.jsonl"
    missing_log.mkdir()
    result = runner.invoke(main, ["audit", "--file", str(missing_log)])
    assert result.exit_code in (exit_status.FAILURE, exit_status.USAGE), result.output


def test_load_exits_1_when_no_request_succeeded() -> None:
    """A frontend that refuses every connection (port 9 on loopback; nothing listens there)."""
    result = CliRunner().invoke(
        main,
        [
            "load",
            "http://127.0.0.1:9",
            "--rate",
            "20",
            "--duration",
            "0.5",
            "--quiet",
            "--json",
            "--seed",
            "1",
        ],
    )
    assert result.exit_code == exit_status.FAILURE, result.output
    assert "no request succeeded" in result.output
