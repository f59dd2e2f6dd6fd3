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


@pytest.mark.parametrize(
    ("yaml_text", "words"),
    [
        # a number documented as one is not read from text or from a boolean
        ('rate_rps: "40"', ["rate_rps is '40'; give a number", "requests per second"]),
        ("rate_rps: true", ["rate_rps is True; give a number"]),
        ("sampling: true", ["sampling is True; give a number", "above 0 and at most 1"]),
        ("sampling: '0.5'", ["sampling is '0.5'; give a number"]),
        ("telemetry_interval_s: true", ["telemetry_interval_s is True; give a number", "seconds"]),
        ("slo_window_s: '5'", ["slo_window_s is '5'; give a number"]),
        ("scale_timeout_s: false", ["scale_timeout_s is False; give a number"]),
        ("mix: {compose: '10'}", ["mix.compose-post is '10'; give a number", "weight per request type"]),
        ("slo_ms: {home: true}", ["slo_ms.read-home-timeline is True; give a number", "at most 3600000"]),
        ("services: {text: {work_ms: '1'}}", ["services.text.work_ms is '1'; give a number"]),
        ("redis: {work_ms: true}", ["redis.work_ms is True; give a number"]),
        ('rate_rps: "1e3"', ["rate_rps is '1e3'; give a number"]),  # quoted: text
        # sizes the kernel cannot hold
        (
            "services: {text: {cpu_quota_us: 100000000000000000000000}}",
            ["services.text.cpu_quota_us is 100000000000000000000000; give at most 100000000", "1000 CPUs"],
        ),
        ("services: {text: {cpu_quota_us: 100000001}}", ["give at most 100000000"]),
        (
            "services: {text: {cpu_quota_us: true}}",
            ["services.text.cpu_quota_us is True; give a whole number"],
        ),
        (
            "services: {text: {memory_max: 9999999999T}}",
            ["services.text.memory_max is '9999999999T'; give at most 4611686018427383808", "4 EiB"],
        ),
        (
            f"services: {{text: {{memory_max: {2**64 + 1}}}}}",
            [f"services.text.memory_max is {2**64 + 1}; give at most 4611686018427383808"],
        ),
        (f"redis: {{memory_max: {2**62}}}", ["redis.memory_max is 4611686018427387904; give at most"]),
        ("redis: {memory_max: 4294967296G}", ["redis.memory_max is '4294967296G'; give at most"]),
        # no CPU at all
        ("services: {text: {cpus: ','}}", ["services.text.cpus is ','", "names no CPU", "at least one CPU"]),
        ("services: {text: {cpus: ' , ,'}}", ["names no CPU"]),
        ("services: {text: {cpus: ''}}", ["names no CPU"]),
        # directories: absolute, not the root directory (`down` deletes them), no NUL
        ("state_dir: run/firm", ["state_dir is 'run/firm', a relative path", "absolute directory path"]),
        ("data_dir: ./data", ["data_dir is './data', a relative path", "e.g. /var/lib/firm/testbed"]),
        ("data_dir: /", ["data_dir is '/', the root directory"]),
        ("state_dir: //", ["state_dir is '//', the root directory"]),
        ("data_dir: /var/..", ["data_dir is '/var/..', the root directory"]),
        ('state_dir: "/run/a\\0b"', ["state_dir is '/run/a\\x00b'", "NUL"]),
        # interface names are at most 15 bytes: the prefix is ASCII, at most 12 characters
        ("veth_prefix: ftbé", ["veth_prefix is 'ftbé'", "15 bytes", "ASCII letters and digits"]),
        ("veth_prefix: ab\u0661", ["veth_prefix is 'ab\u0661'", "ASCII"]),  # an Arabic-Indic digit
        ("veth_prefix: \uff46\uff54\uff42", ["veth_prefix is '\uff46\uff54\uff42'"]),  # fullwidth: 9 bytes
        ("veth_prefix: abcdefghijklm", ["veth_prefix is 'abcdefghijklm'", "1 to 12"]),
        ("veth_prefix: ''", ["veth_prefix is ''"]),
    ],
)
def test_wrong_types_and_sizes_are_refused_naming_the_field_and_the_fix(
    tmp_path: Path, yaml_text: str, words: list[str]
) -> None:
    path = tmp_path / "testbed.yml"
    path.write_text(yaml_text + "\n", encoding="utf-8")
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    text = str(info.value)
    assert "Fix:" in text
    for word in words:
        assert word in text, text
    assert "Input should" not in text and "Traceback" not in text


def test_numbers_written_as_numbers_are_taken(tmp_path: Path) -> None:
    """Whole numbers are numbers, and so are exponents (YAML 1.2's ``1e3``, text in YAML 1.1)."""
    path = tmp_path / "testbed.yml"
    path.write_text(
        "rate_rps: 4e1\nsampling: 1\ntelemetry_interval_s: 2\nslo_ms: {home: 1.5e2}\nmix: {compose: 0}\n"
        "services: {text: {work_ms: 1, cpu_quota_us: 100000000, cpus: '0,'},"
        " user: {memory_max: 4611686018427383808}}\nredis: {memory_max: 4294967295G}\n"
        "state_dir: /run/firm/tb/../tb2\nveth_prefix: abcdefghijkl\n",
        encoding="utf-8",
    )
    loaded = config.load(path)
    assert (loaded.rate_rps, loaded.sampling, loaded.telemetry_interval_s) == (40.0, 1.0, 2.0)
    assert isinstance(loaded.rate_rps, float) and loaded.slo_ms["read-home-timeline"] == 150.0
    text = loaded.service("text")
    assert (text.work_ms, text.cpu_quota_us, text.cpus) == (1.0, 100000000, "0,")
    assert loaded.service("user").memory_max == config.MAX_MEMORY_BYTES == 2**62 - 4096
    assert loaded.redis.memory_max == 4294967295 << 30
    assert loaded.state_dir == "/run/firm/tb/../tb2" and loaded.veth_prefix == "abcdefghijkl"
    assert max(len(i.host_interface.encode()) for i in loaded.instances()) <= 15


def test_the_largest_values_fit_the_kernel() -> None:
    """The bounds: a quota of 1000 CPUs at the testbed's period, far below the kernel's 2^44 us; a
    memory limit in whole 4 KiB pages, below what cgroup v1 reads back as no limit."""
    assert config.MAX_CPU_QUOTA_US == 1000 * config.CPU_PERIOD_US < 2**44
    assert config.MAX_MEMORY_BYTES % 4096 == 0 and config.MAX_MEMORY_BYTES < 2**62 < 2**63 - 1
