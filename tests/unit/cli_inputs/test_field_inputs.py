"""Inputs from the field (issue 14): option values of every kind that reached users as tracebacks,
"unexpected" errors, the wrong exit status or a password on the screen, through the real CLI."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from firm import exit_status
from firm.cli import main
from firm.cli_options import FiniteFloatRange, check_http_url, describe, envvar_name
from firm.loop import config as loop_config
from firm.urls import redact_url
from tests.unit.cli_inputs.test_bad_inputs import PYTHON_TEXT, TRACE, assert_clean
from tests.unit.cli_inputs.test_exit_status import LEAVES

OPTIONS = [
    (path, option)
    for path, command in sorted(LEAVES.items())
    for option in command.params
    if isinstance(option, click.Option)
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]  # nothing listens here once the socket is closed
        return port


# -- options from the environment ----------------------------------------------------------------


@pytest.mark.parametrize(("path", "option"), OPTIONS, ids=[f"{p} {o.opts[-1]}" for p, o in OPTIONS])
def test_every_option_reads_firm_command_option_from_the_environment(path: str, option: click.Option) -> None:
    name = envvar_name(path, option)
    assert name is not None and name.startswith("FIRM_")
    long = next(o for o in option.opts if o.startswith("--"))
    assert name == "FIRM_" + f"{path} {long[2:]}".upper().replace(" ", "_").replace("-", "_")
    envvars = [option.envvar] if isinstance(option.envvar, str) else list(option.envvar or [])
    assert envvars[0] == name


@pytest.fixture
def trace() -> Path:
    if not TRACE.exists():
        pytest.skip(f"{TRACE} is absent")
    return TRACE


def test_features_format_from_the_environment(trace: Path) -> None:
    runner = CliRunner(env={"FIRM_FEATURES_FORMAT": "table"})
    result = runner.invoke(main, ["features", str(trace)])
    assert result.exit_code == 0, result.output
    assert "share" in result.output and not result.output.lstrip().startswith("{")
    result = CliRunner(env={"FIRM_FEATURES_FORMAT": "table"}).invoke(
        main, ["features", str(trace), "--format", "json"]
    )
    assert json.loads(result.stdout)["instances"]  # the command line wins


def test_a_malformed_value_from_the_environment_is_a_usage_error_naming_the_variable(trace: Path) -> None:
    for variable, value, option in (
        ("FIRM_FEATURES_FORMAT", "yaml", "--format"),
        ("FIRM_FEATURES_OVERLAP_TOLERANCE", "nan", "--overlap-tolerance"),
        ("FIRM_FEATURES_JAEGER_URL", "http://[::1", "--jaeger-url"),
    ):
        result = CliRunner(env={variable: value}).invoke(main, ["features", str(trace)])
        assert_clean(result.output, result.exit_code, exit_status.USAGE)
        assert f"'{option}' (from the environment variable {variable})" in result.output


@pytest.mark.parametrize(
    ("variable", "value", "args", "option"),
    [  # values the command itself refuses by the option's name, after click has read them
        (
            "FIRM_LOAD_MIX",
            "compose=-1",
            ["load", "http://127.0.0.1:9", "--rate", "9", "--duration", "1"],
            "--mix",
        ),
        (
            "FIRM_LOAD_SLO",
            "tweet=5",
            ["load", "http://127.0.0.1:9", "--rate", "9", "--duration", "1"],
            "--slo",
        ),
        (
            "FIRM_FEATURES_WINDOW",
            "garbage",
            ["features", "--jaeger-url", "http://127.0.0.1:1", "--service", "x"],
            "--window",
        ),
    ],
)
def test_a_value_the_command_refuses_names_its_variable_too(
    variable: str, value: str, args: list[str], option: str
) -> None:
    result = CliRunner(env={variable: value}).invoke(main, args)
    assert_clean(result.output, result.exit_code, exit_status.USAGE)
    assert f"{option} (from the environment variable {variable})" in result.output, result.output
    typed = CliRunner().invoke(main, [*args, option, value])
    assert "environment" not in typed.output and option in typed.output


def test_an_option_s_own_variable_is_named_when_it_gave_the_bad_value() -> None:
    result = CliRunner(env={"FIRM_REDIS_URL": "foo"}).invoke(main, ["explain"])
    assert_clean(result.output, result.exit_code, exit_status.USAGE)
    assert "'--redis' (from the environment variable FIRM_REDIS_URL)" in result.output


def test_a_bad_value_typed_on_the_command_line_names_no_variable(trace: Path) -> None:
    result = CliRunner(env={"FIRM_FEATURES_FORMAT": "table"}).invoke(
        main, ["features", str(trace), "--format", "yaml"]
    )
    assert_clean(result.output, result.exit_code, exit_status.USAGE)
    assert "Invalid value for '--format'" in result.output and "environment" not in result.output


# -- numbers ------------------------------------------------------------------------------------

FLOATS = [(p, o) for p, o in OPTIONS if isinstance(o.type, click.types.FloatParamType)]


@pytest.mark.parametrize(("path", "option"), FLOATS, ids=[f"{p} {o.opts[-1]}" for p, o in FLOATS])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
def test_no_option_takes_nan_or_infinity(path: str, option: click.Option, value: str) -> None:
    """Checked while parsing, so nothing runs (the commands that change the machine included)."""
    assert isinstance(option.type, FiniteFloatRange)
    with pytest.raises(click.BadParameter, match="not a finite number"):
        option.type.convert(value, option, None)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--window", "0s"], "--window"),
        (["--window", "nan"], "--window"),
        (["--window", "99999999h"], "--window"),
        (["--limit", "0"], "--limit"),
        (["--limit", "-3"], "--limit"),
        (["--limit", "99999999999999999999"], "--limit"),
        (["--retries", "-1"], "--retries"),
        (["--retries", "nan"], "--retries"),
        (["--retries", "1000000"], "--retries"),
        (["--timeout", "nan"], "--timeout"),
        (["--timeout", "inf"], "--timeout"),
        (["--timeout", "0"], "--timeout"),
        (["--timeout", "1e9"], "--timeout"),
    ],
)
def test_features_refuses_jaeger_numbers_as_usage_errors(args: list[str], option: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["features", "--jaeger-url", url, "--service", "s", *args])
    assert_clean(result.output, result.exit_code, exit_status.USAGE, option)


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (
            ["load", "http://127.0.0.1:9", "--trace", "TRACE", "--peak", "10", "--speedup", "1e-300"],
            "--speedup",
        ),
        (["load", "http://127.0.0.1:9", "--rate", "1", "--duration", "1e308"], "--duration"),
        (["load", "http://127.0.0.1:9", "--rate", "1", "--duration", "1", "--window", "1e-300"], "--window"),
        (["load", "http://127.0.0.1:9", "--rate", "1", "--duration", "1", "--mix", "compose=x"], "--mix"),
        (["load", "http://127.0.0.1:9", "--rate", "1", "--duration", "1", "--slo", "home=-5"], "--slo"),
        (["load", "http://a b:1", "--rate", "1", "--duration", "1"], "URL"),
        (["run", "--duration", "nan"], "--duration"),
        (["run", "--interval", "nan"], "--interval"),
        (["testbed", "run", "--anomaly-at", "inf"], "--anomaly-at"),
        (["experiment", "--rate", "nan"], "--rate"),
        (["train-rl", "--interval", "nan"], "--interval"),
    ],
)
def test_unchecked_numbers_are_usage_errors_before_anything_starts(
    command: list[str], option: str, tmp_path: Path
) -> None:
    rates = tmp_path / "rates.txt"
    rates.write_text("10\n20\n")
    args = [str(rates) if a == "TRACE" else a for a in command]
    result = CliRunner().invoke(main, args)
    assert_clean(result.output, result.exit_code, exit_status.USAGE, option)


def test_a_negative_slo_in_the_loop_configuration_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("slo_ms:\n  compose-post: -5\nreclaim:\n  fractoin: 0.2\ninterval_s: .nan\n")
    with pytest.raises(loop_config.LoopConfigError) as raised:
        loop_config.load(path)
    message = str(raised.value)
    assert "slo_ms.compose-post is -5; give above 0" in message
    assert "reclaim.fractoin is not a known field (the fields are enabled, floor, fraction" in message
    assert "interval_s is nan; give a finite number" in message
    assert "Extra inputs" not in message and "Input should" not in message


# -- URLs and passwords ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://a b:16686",
        "http://jaeger:16686/\x00",
        "http://jaeger:16686\n",
        "jaeger:16686",
        "http://:16686",
    ],
)
@pytest.mark.parametrize("command", ["features", "localize"])
def test_a_malformed_jaeger_url_is_a_usage_error(command: str, url: str) -> None:
    result = CliRunner().invoke(main, [command, "--jaeger-url", url, "--service", "s"])
    assert_clean(result.output, result.exit_code, exit_status.USAGE, "--jaeger-url")


def test_a_password_in_the_jaeger_url_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    refused = CliRunner().invoke(
        main, ["features", "--jaeger-url", "http://ann:s3cret@a b:1", "--service", "s"]
    )
    assert refused.exit_code == exit_status.USAGE and "ann:***@" in refused.output
    caplog.set_level(logging.DEBUG)
    url = f"http://ann:s3cret@127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        main, ["-vv", "features", "--jaeger-url", url, "--service", "s", "--retries", "1", "--timeout", "1"]
    )
    assert_clean(result.output, result.exit_code, exit_status.FAILURE, "connection refused")
    for text in (refused.output, result.output, caplog.text):
        assert "s3cret" not in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://ann:s3cret@jaeger:16686/x", "http://ann:***@jaeger:16686/x"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("http://ann@jaeger", "http://ann@jaeger"),
        ("http://jaeger/a@b", "http://jaeger/a@b"),
        ("http://ann:s3cret@[::1", "http://***@[::1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    ctx = click.Context(click.Command("x"))
    with pytest.raises(click.BadParameter) as raised:
        check_http_url(ctx, click.Option(["--jaeger-url"]), url + " ")
    assert "s3cret" not in raised.value.format_message()


def test_a_redis_url_refused_hides_its_password() -> None:
    result = CliRunner().invoke(main, ["audit", "--redis", "redis://:s3cret@127.0.0.1:99999/0"])
    assert_clean(result.output, result.exit_code, exit_status.USAGE, "--redis")
    assert "s3cret" not in result.output


@pytest.mark.parametrize("url", ["http://127.0.0.1:9?x=1", "http://127.0.0.1:9/#f", "http://127.0.0.1:9/?"])
def test_a_base_url_with_a_query_or_a_fragment_is_refused(url: str) -> None:
    for args in (
        ["features", "--jaeger-url", url, "--service", "x"],
        ["load", url, "--rate", "9", "--duration", "1"],
    ):
        result = CliRunner().invoke(main, args)
        assert_clean(result.output, result.exit_code, exit_status.USAGE)
        assert "has a query or a fragment" in result.output


def test_a_model_that_is_a_pipe_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)  # no writer: opening it would wait forever
    for command in (["localize", "--model", str(fifo), str(TRACE)], ["localize-eval", "--model", str(fifo)]):
        result = CliRunner().invoke(main, command)
        assert_clean(result.output, result.exit_code, exit_status.USAGE, "--model")
        assert "is a pipe, not a model file" in result.output


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis://127.0.0.1:1/abc", "its path /abc is not a database number"),  # redis-py reads it as 0
        ("redis://:s3cret@127.0.0.1:1/-1", "its path /-1 is not a database number"),
        ("redis://127.0.0.1:1/\u0661", "is not a database number"),
        ("redis://127.0.0.1:1/2147483648", "names database 2147483648"),
    ],
)
def test_a_redis_database_that_is_no_number_is_refused(url: str, words: str) -> None:
    for command in (["audit"], ["load", "http://127.0.0.1:9", "--rate", "10", "--duration", "1"]):
        result = CliRunner().invoke(main, [*command, "--redis", url])
        assert_clean(result.output, result.exit_code, exit_status.USAGE, "--redis")
        assert words in result.output and "s3cret" not in result.output


@pytest.mark.parametrize("command", ["audit", "explain"])
def test_an_empty_redis_url_is_refused_where_a_redis_is_needed(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--redis", ""])
    assert_clean(result.output, result.exit_code, exit_status.USAGE, "--redis")
    assert "an empty URL names no Redis" in result.output


# -- combinations, empty inputs, library wording --------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["--context", "prod"], ["--kubeconfig", "KUBECONFIG"], ["--in-cluster"], ["-i", "KUBECONFIG"]],
)
def test_preflight_refuses_cluster_options_without_cluster(args: list[str], tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    result = CliRunner().invoke(
        main, ["preflight", *[str(kubeconfig) if a == "KUBECONFIG" else a for a in args]]
    )
    assert_clean(result.output, result.exit_code, exit_status.USAGE, "only with --cluster", "add --cluster")


@pytest.mark.parametrize("content", ['{"data": []}', "[]", '{"data": null}'])
@pytest.mark.parametrize("command", ["critical-path", "features"])
def test_a_file_without_traces_is_status_1_naming_it(command: str, content: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text(content)
    result = CliRunner().invoke(main, [command, str(empty)])
    assert_clean(result.output, result.exit_code, exit_status.FAILURE, str(empty), "no trace")
    assert result.stdout == ""


def test_library_wording_of_a_refused_connection_is_translated() -> None:
    urllib3 = pytest.importorskip("urllib3")
    manager = urllib3.PoolManager(retries=urllib3.Retry(1))
    port = free_port()
    with pytest.raises(urllib3.exceptions.HTTPError) as raised:
        manager.request("GET", f"http://127.0.0.1:{port}/api/v1/nodes")
    text = describe(raised.value)
    assert text == f"127.0.0.1:{port}: connection refused, after retrying"
    assert not PYTHON_TEXT.search(text) and "Max retries" not in text
