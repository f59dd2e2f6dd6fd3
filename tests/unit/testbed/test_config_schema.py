"""The testbed configuration is checked against a schema (types and ranges) before anything starts:
every error names the field and the fix; sizes are read by the one size parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.testbed import config


@pytest.mark.parametrize(
    ("yaml_text", "words"),
    [
        ("rate_rps: fast", ["rate_rps is 'fast'", "requests per second"]),
        ("port: 99999", ["port is 99999", "TCP port from 1 to 65535"]),
        ("port: true", ["port is True", "TCP port"]),
        (
            "services: {compose-post: {cpu_quota_us: 5}}",
            ["services.compose-post.cpu_quota_us is 5", "at least 1000"],
        ),
        ("services: {text: {cpu_weight: 0}}", ["services.text.cpu_weight is 0", "weight from 1 to 10000"]),
        ("services: {text: {memory_max: 512Mb}}", ["services.text.memory_max is '512Mb'", "ambiguous"]),
        ("services: {text: {memory_max: 100}}", ["services.text.memory_max is 100", "at least 16M"]),
        ("services: {text: {instances: '2'}}", ["services.text.instances is '2'", "give 1 to 8"]),
        ("services: {text: {cpus: '5-2'}}", ["services.text.cpus is '5-2'", "list format"]),
        ("telemetry_interval_s: -1", ["telemetry_interval_s is -1", "seconds above 0"]),
        ("slo_window_s: .nan", ["slo_window_s"]),
        ("mix: {compose: 0, home: 0, user: 0}", ["every request type a weight of 0"]),
        ("mix: {compose: -1}", ["mix.compose-post is -1"]),
        ("slo_ms: {home: 0}", ["slo_ms.read-home-timeline is 0"]),
        ("redis: {memory_max: lots}", ["redis.memory_max is 'lots'", "cannot be parsed"]),
    ],
)
def test_bad_settings_are_refused_naming_the_field_and_the_fix(
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


def test_sizes_are_read_as_bytes(tmp_path: Path) -> None:
    path = tmp_path / "testbed.yml"
    path.write_text(
        "services: {text: {memory_max: 512M}, user: {memory_max: 1GiB}}\nredis: {memory_max: max}\n"
    )
    loaded = config.load(path)
    assert loaded.service("text").memory_max == 512 << 20
    assert loaded.service("user").memory_max == 1 << 30
    assert loaded.redis.memory_max == -1


def test_the_defaults_pass_the_schema_unchanged() -> None:
    assert config.load() == config.TestbedConfig()


def test_the_commands_refuse_a_bad_file_before_starting(tmp_path: Path) -> None:
    path = tmp_path / "testbed.yml"
    path.write_text("port: 99999\n")
    for command in (["testbed", "status"], ["testbed", "up"]):
        result = CliRunner().invoke(main, [*command, "--config", str(path)])
        assert result.exit_code == 1, result.output
        assert "port is 99999" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--duration", "-5"], "--duration"),
        (["--rate", "0"], "--rate"),
        (["--rate", "1e12"], "--rate"),
        (["--anomaly-at", "100", "--duration", "60"], "--anomaly-at"),
        (["--target", "nowhere"], "no testbed instance 'nowhere'"),
        (["--anomaly", "network_bandwidth", "--link-rate", "10Mbps"], "ambiguous"),
    ],
)
def test_testbed_run_checks_its_options_before_building_anything(args: list[str], words: str) -> None:
    # The state directory is not touched: a refused option never reaches lifecycle.up.
    result = CliRunner().invoke(main, ["testbed", "run", "--redis", "", *args])
    assert result.exit_code in (1, 2), result.output
    assert words in result.output and "Traceback" not in result.output
