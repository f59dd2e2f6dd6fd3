"""Command lines a new user types: every bad one ends in a clear error naming the option, never a traceback."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from ansible_collections.firm.core.plugins.module_utils.errors import InvalidInputError
from firm.cli import FirmGroup, main
from tests.unit.tracing.shared_data import deathstarbench_files


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(main, list(args))


def assert_clean_error(result: click.testing.Result, *words: str) -> None:
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output


@pytest.mark.parametrize("command", ["critical-path", "features"])
def test_an_overlap_tolerance_of_twenty_digits_is_refused(command: str) -> None:
    trace = str(deathstarbench_files()[0])
    assert_clean_error(run(command, "--overlap-tolerance", "9" * 20, trace), "--overlap-tolerance")


@pytest.mark.parametrize("url", ["http://[::1", "http://host:99999", "ftp://host", "localhost:16686"])
def test_a_malformed_jaeger_url_is_refused(url: str) -> None:
    assert_clean_error(run("features", "--jaeger-url", url, "--service", "x"), "--jaeger-url", url)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["http://[::1", "--rate", "5", "--duration", "1"], ["URL", "not a URL"]),
        (["http://127.0.0.1:9", "--rate", "1e12", "--duration", "1"], ["--rate", "100000"]),
        (["http://127.0.0.1:9", "--rate", "nan", "--duration", "1"], ["rate"]),
    ],
)
def test_firm_load_refuses_bad_options_before_sending(args: list[str], words: list[str]) -> None:
    result = run("load", *args)
    assert_clean_error(result, *words)
    assert result.exit_code == 2, result.output  # a malformed option value is a usage error


def test_an_unexpected_error_is_one_line_that_says_how_to_see_more() -> None:
    @click.group(cls=FirmGroup)
    def cli() -> None:
        pass

    @cli.command()
    def boom() -> None:
        raise RuntimeError("something inside broke")

    @cli.command()
    def refuse() -> None:
        raise InvalidInputError("rate is negative", "give a rate above 0")

    result = CliRunner().invoke(cli, ["boom"])
    assert_clean_error(result, "unexpected RuntimeError: something inside broke", "-vv")
    result = CliRunner().invoke(cli, ["refuse"])
    assert_clean_error(result, "rate is negative", "give a rate above 0")
