"""Malformed testbed configurations (wrong shapes, bad numbers, unknown keys, unreadable files) are
refused with an error naming the file or the field, the value and the fix: never a traceback, never
pydantic's own words, and before anything starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.testbed import config, lifecycle

PYDANTIC_WORDS = ("Input should", "valid number", "Extra inputs", "function-after", "less than or equal")


LAUGHS = (
    "slo_ms: {compose-post: [&a [lol, lol, lol, lol, lol, lol, lol, lol, lol], "
    + ", ".join(f"&{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefghi", "bcdefghij", strict=True))
    + "]}"
)
"""A "billion laughs" of about 400 bytes: ten levels of nine aliases, 9**10 values once expanded."""


@pytest.mark.parametrize(
    ("yaml_text", "words"),
    [
        ("services: 5", ["services is the number 5, not a mapping", "service names"]),
        ("mix: 5", ["mix is the number 5, not a mapping", "weight per request type"]),
        ("slo_ms: [1]", ["slo_ms is a list, not a mapping", "p99 objective"]),
        ("redis: [1]", ["redis is a list, not a mapping"]),
        ("services: [text]", ["services is a list, not a mapping"]),
        ("services: {text: 5}", ["services.text is the number 5, not a mapping", "cpu_quota_us"]),
        ("- rate_rps\n- port", ["holds a list, not a mapping of settings"]),
        ("0", ["holds the number 0, not a mapping of settings"]),
        ("rate_rps: fast", ["rate_rps is 'fast'; give a number", "requests per second"]),
        ("port: -1", ["port is -1; give at least 1", "TCP port"]),
        ("rate_rps: .nan", ["rate_rps is nan; give a finite number"]),
        ("rate_rps: .inf", ["rate_rps is inf; give a finite number"]),
        ("slo_ms: {home: -.inf}", ["slo_ms.read-home-timeline is -inf"]),
        ("users: 99999999999999999999", ["users is 99999999999999999999; give at most 100000"]),
        ("services: {text: {work_ms: 1e9}}", ["services.text.work_ms", "give at most 1000"]),
        ("telemetry_interval_s: 1e9", ["telemetry_interval_s", "at most 3600"]),
        ("1: 2", ["unknown settings 1", "use only the settings"]),
        ("bogus: 1\n2: 3", ["unknown settings 2, bogus"]),
        ("services: {text: {bogus: 1}}", ["services.text: unknown settings bogus"]),
        ("services: {nope: {}}", ["no service named 'nope'", "name one of the services"]),
        ("mix: {1: 2}", ["mix: unknown request type 1"]),
        ("mix: {compose: 1, compose-post: 2}", ["mix names compose-post twice"]),
        ("subnet: banana", ["subnet is 'banana'", "CIDR"]),
        ("subnet: 10.0.0.1/24", ["subnet is '10.0.0.1/24'", "host bits"]),
        ("bridge: a/b", ["bridge is 'a/b', not a network interface name"]),
        ("bridge: waytoolongbridgename0", ["not a network interface name"]),
        ("cgroup_parent: ../up", ["cgroup_parent is '../up'"]),
        ("telemetry_redis: http://x", ["telemetry_redis is 'http://x'", "Redis URL"]),
        ("a: b: c", ["is not YAML (line 1"]),
        ("port: 8080\nrate_rps: 40\nport: 8081", ["(line 3: the key 'port' is given twice)"]),
        ("services: {text: {work_ms: 1, work_ms: 2}}", ["(line 1: the key 'work_ms' is given twice)"]),
        ("rate_rps: 1e400", ["line 1: the number 1e400 is out of range"]),  # not "inf", never written
        ("slo_ms: {compose-post: -1.5e999}", ["the number -1.5e999 is out of range"]),
        ("rate_rps: .inf", ["rate_rps is inf; give a finite number"]),  # written as infinity: said so
        ("graph_seed: 2017-02-30", ["graph_seed is '2017-02-30'; give a whole number"]),  # a date is text
        ("slo_ms: {compose-post: 2017-02-28}", ["slo_ms.compose-post is '2017-02-28'"]),
        ("slo_ms: &a {compose-post: *a}", ["line 1: an alias (*name) refers to a value that contains it"]),
        (LAUGHS, ["line 1: aliases (*name) expand this value to more than 100000 values"]),
        (
            "services: {text: {instances: 5, max_instances: 4}}",
            ["services.text.instances is 5, above its max_instances 4"],
        ),
    ],
)
def test_malformed_settings_name_the_field_and_the_fix(
    tmp_path: Path, yaml_text: str, words: list[str]
) -> None:
    path = tmp_path / "testbed.yml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    text = str(info.value)
    assert "Fix:" in text
    for word in words:
        assert word in text
    assert not any(w in text for w in PYDANTIC_WORDS)


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yml"
    binary.write_bytes(b"rate_rps: \xff\xfe\n")
    with pytest.raises(config.ConfigError, match="not UTF-8 text"):
        config.load(binary)
    with pytest.raises(config.ConfigError, match="is a directory"):
        config.load(tmp_path)
    with pytest.raises(config.ConfigError, match="No such file"):
        config.load(tmp_path / "missing.yml")


def test_a_device_a_pipe_and_a_large_file_are_refused_without_reading_them_whole(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="/dev/zero is a device, not a file"):
        config.load(Path("/dev/zero"))
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    with pytest.raises(config.ConfigError, match=r"fifo\.yml is a pipe, not a file"):
        config.load(fifo)  # no writer: this would wait for ever if it read
    large = tmp_path / "large.yml"
    large.write_bytes(b"#" * (2 << 20))
    with pytest.raises(config.ConfigError, match="holds more than 1048576 bytes"):
        config.load(large)


def test_an_empty_file_keeps_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yml"
    path.write_text("# nothing overridden\n")
    assert config.load(path) == config.load(None)


@pytest.mark.parametrize(
    "yaml_text", ["services: 5", "mix: 5", "slo_ms: [1]", "rate_rps: fast", "port: .inf"]
)
def test_testbed_up_refuses_them_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml_text: str
) -> None:
    started: list[object] = []
    monkeypatch.setattr(lifecycle, "up", lambda *a, **k: started.append(a))
    path = tmp_path / "testbed.yml"
    path.write_text(yaml_text + "\n")
    result = CliRunner().invoke(main, ["testbed", "up", "--config", str(path)])
    assert result.exit_code == 1, result.output
    assert "Error:" in result.output and "Fix:" in result.output
    assert "Traceback" not in result.output and "bug in firm" not in result.output
    assert not isinstance(result.exception, (AttributeError, TypeError))
    assert started == []
