"""Bad inputs of every kind, to every firm command that takes them: a clean error naming the input,
the documented exit status, and no Python traceback or exception text.

Only inputs refused before a command acts are given to commands that change the machine (testbed,
run, experiment): the refusal happens while click parses the options, so nothing runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from firm import exit_status
from firm.cli import input_error_message, main

ROOT = Path(__file__).resolve().parents[3]
TRACE = (
    ROOT.parent
    / "shared"
    / "data"
    / "jaeger-traces"
    / "deathstarbench"
    / "compose-post_R500__trace_02_median.json"
)

PYTHON_TEXT = re.compile(
    r"Traceback|unexpected [A-Z]\w+|\b(Value|Type|Attribute|Key|Index|Unicode\w*|OS|Overflow)Error\b"
    r"|\[Errno|codec can't|object has no attribute|invalid literal"
)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {
        "binary": b"\x00\x01\xff\xfe\x89PNG\r\n\x1a\n\x00",
        "latin1": "caf\xe9: 1\n".encode("latin-1"),
        "huge": b"a: 1\n" + b"#" * (1 << 20) + b"\n",
    }
    paths = {}
    for name, data in made.items():
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_bytes(data)
    paths["directory"] = tmp_path / "adir"
    paths["directory"].mkdir()
    paths["missing"] = tmp_path / "missing.yaml"
    paths["under_a_file"] = paths["binary"] / "x.yaml"
    paths["device"] = Path("/dev/zero")  # never ends: refused before a byte is read
    paths["fifo"] = tmp_path / "fifo.yaml"  # no writer: opening it to read would wait for ever
    os.mkfifo(paths["fifo"])
    return paths


CONFIG_COMMANDS = [
    ["testbed", "up"],
    ["testbed", "down"],
    ["testbed", "status"],
    ["testbed", "traces"],
    ["testbed", "run"],
    ["testbed", "scale", "frontend"],
    ["run"],
    ["experiment"],
    ["localize-testbed-dataset"],
]
BAD_FILES = ["binary", "latin1", "huge", "directory", "missing", "under_a_file", "device", "fifo"]


def assert_clean(output: str, exit_code: int, expected: int, *names: str) -> None:
    assert exit_code == expected, output
    assert not PYTHON_TEXT.search(output), output
    for name in names:
        assert name in output, (name, output)


@pytest.mark.parametrize("kind", BAD_FILES)
@pytest.mark.parametrize("command", CONFIG_COMMANDS, ids=" ".join)
def test_a_bad_config_file_is_a_usage_error_naming_it(
    command: list[str], kind: str, files: dict[str, Path]
) -> None:
    result = CliRunner().invoke(main, [*command, "--config", str(files[kind])])
    assert_clean(result.output, result.exit_code, exit_status.USAGE, "--config", files[kind].name)


@pytest.mark.parametrize("kind", ["device", "fifo", "huge"])
def test_a_bad_testbed_config_of_an_experiment_is_a_usage_error_naming_it(
    kind: str, files: dict[str, Path]
) -> None:
    result = CliRunner().invoke(main, ["experiment", "--testbed-config", str(files[kind])])
    assert_clean(result.output, result.exit_code, exit_status.USAGE, "--testbed-config", files[kind].name)


BAD_REDIS_URLS = [
    "http://[::1",
    "redis://[::1",
    "redis://127.0.0.1:99999/0",
    "redis://127.0.0.1:port/0",
    "redis://127.0.0.1/99999999999999999999",
    "redis://127.0.0.1?db=x",
    "ftp://127.0.0.1",
    "ü😀",
    "garbage",
]
REDIS_COMMANDS = [
    ["load", "http://127.0.0.1:9", "--rate", "1", "--duration", "1"],
    ["run"],
    ["audit"],
    ["explain"],
    ["testbed", "up"],
    ["testbed", "run"],
]


@pytest.mark.parametrize("url", BAD_REDIS_URLS)
@pytest.mark.parametrize("command", REDIS_COMMANDS, ids=lambda c: c[0] if c[0] != "testbed" else " ".join(c))
def test_a_malformed_redis_url_is_a_usage_error_naming_the_option(command: list[str], url: str) -> None:
    result = CliRunner().invoke(main, [*command, "--redis", url])
    assert_clean(result.output, result.exit_code, exit_status.USAGE, "--redis")


def test_a_redis_that_does_not_answer_is_1_with_the_url() -> None:
    """Port 1 on loopback: nothing listens there (the shared Redis on 6379 is left alone)."""
    url = "redis://127.0.0.1:1/0"
    for command in (["audit"], ["explain"]):
        result = CliRunner().invoke(main, [*command, "--redis", url])
        assert_clean(result.output, result.exit_code, exit_status.FAILURE, "127.0.0.1:1")


@pytest.fixture
def trace() -> Path:
    if not TRACE.exists():
        pytest.skip(f"{TRACE} is absent")
    return TRACE


NUMBERS = ["99999999999999999999", "-1", "nan", "inf", "-inf", "1e400", "abc", "", "1_0x"]


@pytest.mark.parametrize("value", NUMBERS)
@pytest.mark.parametrize("command", ["critical-path", "features"])
def test_a_bad_overlap_tolerance_is_a_usage_error(command: str, value: str, trace: Path) -> None:
    result = CliRunner().invoke(main, [command, str(trace), "--overlap-tolerance", value])
    assert_clean(result.output, result.exit_code, exit_status.USAGE, "--overlap-tolerance")


@pytest.mark.parametrize("url", ["http://[::1", "http://[::1]:99999", "ftp://x", "not a url", "http://"])
def test_a_malformed_jaeger_url_is_an_error_naming_it(url: str) -> None:
    result = CliRunner().invoke(main, ["features", "--jaeger-url", url, "--service", "x", "--retries", "0"])
    assert result.exit_code in (exit_status.FAILURE, exit_status.USAGE), result.output
    assert_clean(result.output, result.exit_code, result.exit_code, repr(url))


@pytest.mark.parametrize("value", ["garbage", "-5m", "0s", "nan", "ü😀", "1e400s"])
def test_testbed_traces_refuses_a_bad_last_before_reading_anything(value: str) -> None:
    result = CliRunner().invoke(main, ["testbed", "traces", "--last", value])
    assert_clean(result.output, result.exit_code, exit_status.USAGE, "--last")


@pytest.mark.parametrize("kind", ["binary", "latin1", "directory", "under_a_file"])
@pytest.mark.parametrize("command", ["critical-path", "features"])
def test_bad_trace_files_are_an_error_naming_the_file(
    command: str, kind: str, files: dict[str, Path]
) -> None:
    result = CliRunner().invoke(main, [command, str(files[kind])])
    assert result.exit_code in (exit_status.FAILURE, exit_status.USAGE), result.output
    assert "Traceback" not in result.output
    assert files[kind].name in result.output


def test_system_and_decoding_errors_read_without_python_spelling(tmp_path: Path) -> None:
    try:
        (tmp_path / "missing" / "x").read_text()
    except OSError as err:
        message = input_error_message(err)
    assert message.startswith(f"{tmp_path / 'missing' / 'x'}: No such file or directory")
    try:
        b"ok \xff".decode()
    except UnicodeDecodeError as err:
        message = input_error_message(err)
    assert message.startswith("an input is not UTF-8 text (byte 0xff at offset 3)")
    assert not PYTHON_TEXT.search(message)


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["experiment", "--out", ""], "--out"),
        (["experiment", "--out", "  "], "--out"),
        (["testbed", "run", "--report", ""], "--report"),
        (["testbed", "traces", "--output", ""], "--output"),
    ],
)
def test_an_empty_output_path_is_a_usage_error_naming_the_option(command: list[str], option: str) -> None:
    result = CliRunner().invoke(main, command)
    assert_clean(result.output, result.exit_code, exit_status.USAGE, option, "an empty path")


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["features", "--jaeger-url", "http://127.0.0.1:9", "--service", "s", "--window", ""], "--window"),
        (["features", "--jaeger-url", "http://127.0.0.1:9", "--service", " "], "--service"),
        (
            ["features", "--jaeger-url", "http://127.0.0.1:9", "--service", "s", "--operation", ""],
            "--operation",
        ),
        (["load", "http://127.0.0.1:9", "--slo", ""], "--slo"),
    ],
)
def test_an_empty_value_that_would_read_as_the_default_is_a_usage_error(
    command: list[str], option: str
) -> None:
    result = CliRunner().invoke(main, command)
    assert_clean(result.output, result.exit_code, exit_status.USAGE, option, "an empty value means nothing")


def test_a_malformed_url_gets_an_example_of_the_service_it_names() -> None:
    load = CliRunner().invoke(main, ["load", "http://[::1"])
    assert_clean(load.output, load.exit_code, exit_status.USAGE, "http://localhost:8080")
    assert "16686" not in load.output  # Jaeger's port is no example of a frontend
    jaeger = CliRunner().invoke(main, ["features", "--jaeger-url", "http://[::1", "--service", "s"])
    assert_clean(jaeger.output, jaeger.exit_code, exit_status.USAGE, "http://localhost:16686")


@pytest.mark.parametrize("value", ["nan", "2.5", "", "ten"])
def test_a_whole_number_option_says_so_in_words(value: str, trace: Path) -> None:
    result = CliRunner().invoke(main, ["features", "--overlap-tolerance", value, str(trace)])
    assert_clean(result.output, result.exit_code, exit_status.USAGE, "--overlap-tolerance")
    assert f"{value!r} is not a whole number; give 0<=x<=" in result.output
    assert "integer range" not in result.output
