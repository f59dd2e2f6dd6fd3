"""``firm run`` checks its configuration and options before it looks at the testbed (no testbed,
Redis or root needed: the testbed's discovery is replaced by one that fails the test)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from firm.cli import main
from firm.loop import cli as loop_cli
from firm.loop import session
from firm.loop import testbed as loop_testbed
from firm.loop.config import RESOURCES, LoopConfig, LoopConfigError, load
from firm.loop.metrics import Metrics, address_problem
from firm.loop.testbed import DiscoveryError

NO_REDIS = "redis://127.0.0.1:1/0"
"""A Redis URL nothing listens on: nothing may connect to it before the checks."""


@pytest.fixture
def never_discovered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The testbed is never looked at: discovering it fails the test."""

    def discover(*args: object, **kwargs: object) -> loop_testbed.TestbedTarget:
        raise AssertionError("the testbed was looked at before the configuration was checked")

    monkeypatch.setattr(loop_testbed.TestbedTarget, "discover", discover)


@pytest.fixture
def not_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """The testbed is not up: discovery says so (as it does without a state file)."""

    def discover(*args: object, **kwargs: object) -> loop_testbed.TestbedTarget:
        raise DiscoveryError("the testbed is not up (no state)", fix="start it with `firm testbed up`")

    monkeypatch.setattr(loop_testbed.TestbedTarget, "discover", discover)


@pytest.fixture
def never_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing after the options' checks runs: reaching the setup fails the test."""

    def setup(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run was started")

    monkeypatch.setattr(loop_cli, "_setup", setup)


def _loop_file(tmp_path: Path, text: str) -> Path:
    """A loop configuration of ``text`` whose testbed keeps its state under ``tmp_path`` (never up)."""
    testbed = tmp_path / "testbed.yml"
    testbed.write_text(f"state_dir: {tmp_path / 'state'}\n")
    path = tmp_path / "loop.yml"
    path.write_text(f"testbed_config: {testbed}\n{text}")
    return path


def _run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(main, ["run", "--dry-run", "--quiet", "--redis", NO_REDIS, *args])


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("redis_url: 'http://[::1'\n", ["redis_url is 'http://[::1'", "redis://127.0.0.1:6379/0"]),
        ("redis_url: ''\n", ["redis_url is ''", "an empty URL names no Redis"]),
        (
            "services: {nosuch: {cpu: {min: 1, max: 2, max_step: 1}}}\n",
            ["services names service 'nosuch', which the testbed does not run", "compose-post"],
        ),
        ("exclude: [nosuch]\n", ["exclude names service 'nosuch', which the testbed does not run", "redis"]),
        (
            "exclude: [redis, nosuch, other]\n",
            ["exclude names services 'nosuch', 'other'", "name the services of the testbed"],
        ),
        (
            "firm: {agent_model: /nonexistent/model.pt}\n",
            ["firm.agent_model is '/nonexistent/model.pt', which is not there", "firm train-rl"],
        ),
        (
            "firm: {localizer_model: /}\n",
            ["firm.localizer_model is '/', which is a directory", "firm train-svm"],
        ),
    ],
)
def test_firm_run_refuses_a_wrong_configuration_before_it_looks_at_the_testbed(
    tmp_path: Path, never_discovered: None, text: str, words: list[str]
) -> None:
    result = _run("--config", str(_loop_file(tmp_path, text)))
    assert result.exit_code == 1, result.output
    for word in words:
        assert word in result.output, result.output
    assert "Fix:" in result.output
    assert "testbed is not up" not in result.output and "Traceback" not in result.output


def test_services_and_exclusions_the_testbed_runs_pass_on_to_the_testbed(
    tmp_path: Path, not_up: None
) -> None:
    text = (
        "services: {text: {cpu: {min: 0.2, max: 1, max_step: 0.2}}, redis: {cpu: {min: 1, max: 2, max_step: 1}}}\n"
        "exclude: [redis, post-storage]\n"
    )
    result = _run("--config", str(_loop_file(tmp_path, text)), "--decider", "aimd")
    assert result.exit_code == 1, result.output
    assert "the testbed is not up" in result.output and "firm testbed up" in result.output


def test_model_files_are_checked_only_for_the_decider_that_loads_them(tmp_path: Path, not_up: None) -> None:
    path = _loop_file(tmp_path, "firm: {agent_model: /nonexistent/model.pt}\n")
    result = _run("--config", str(path), "--decider", "aimd")
    assert result.exit_code == 1 and "the testbed is not up" in result.output, result.output


def test_a_services_name_of_the_testbeds_own_file_is_known(tmp_path: Path, never_discovered: None) -> None:
    """The known services are the testbed configuration's (its file, not a running testbed)."""
    path = _loop_file(tmp_path, "exclude: [redis, compose]\n")
    result = _run("--config", str(path), "--decider", "aimd")
    assert result.exit_code == 1, result.output
    assert "exclude names service 'compose'" in result.output and "compose-post" in result.output


def test_a_redis_url_of_the_file_is_refused_even_when_redis_overrides_it(tmp_path: Path) -> None:
    path = tmp_path / "loop.yml"
    path.write_text("redis_url: 'http://[::1'\n")
    with pytest.raises(LoopConfigError) as err:
        load(path, redis_url=NO_REDIS)
    assert str(err.value).startswith(f"{path}: redis_url is 'http://[::1'")
    assert load(None, redis_url=NO_REDIS).redis_url == NO_REDIS


@pytest.mark.parametrize(
    ("text", "where", "named"),
    [
        ("guards: {gpu: {min: 1}}\n", "guards", "gpu, which is not a resource"),
        ("guards: {gpu: {min: 1, max: 2, max_step: 1}}\n", "guards", "gpu, which is not a resource"),
        ("services: {text: {gpu: {min: 1}}}\n", "services.text", "gpu, which is not a resource"),
        (
            "services: {text: {gpu: {min: 1, max: 2, max_step: 1}}}\n",
            "services.text",
            "gpu, which is not a resource",
        ),
        ("guards: {gpu: {}, tpu: {min: 1}}\n", "guards", "gpu, tpu, which are not resources"),
        ("aimd: {decrease: {gpu: 1}}\n", "aimd.decrease", "gpu, which is not a resource"),
    ],
)
def test_an_unknown_resource_is_named_with_the_known_ones_and_nothing_internal(
    tmp_path: Path, text: str, where: str, named: str
) -> None:
    path = tmp_path / "loop.yml"
    path.write_text(text)
    with pytest.raises(LoopConfigError) as err:
        load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {where} names {named} (the resources are {', '.join(RESOURCES)})")
    assert "is missing" not in message  # nothing about the fields of a resource that is not one
    assert "Guard(" not in message and "the document is" not in message and "['" not in message
    assert err.value.fix and "cpu, memory_bandwidth, llc, disk_io, network" in err.value.fix


def test_an_unknown_resource_comes_first_and_the_other_faults_follow(tmp_path: Path) -> None:
    path = tmp_path / "loop.yml"
    path.write_text("interval_s: -1\nguards: {gpu: {min: 1}, cpu: {min: 3, max: 1, max_step: 1}}\n")
    with pytest.raises(LoopConfigError) as err:
        load(path)
    message = str(err.value)
    assert message.index("guards names gpu") < message.index("interval_s") < message.index("guards.cpu")
    assert "Guard(" not in message and "the document is" not in message


def test_the_model_refuses_an_unknown_resource_by_its_field() -> None:
    """Built directly (not from a file), the model names the field too, never the whole document."""
    documents: list[dict[str, Any]] = [
        {"guards": {"gpu": {"min": 1, "max": 2, "max_step": 1}}},
        {"services": {"text": {"gpu": {}}}},
    ]
    for data in documents:
        with pytest.raises(ValidationError, match="which is not a resource") as err:
            LoopConfig.model_validate(data)
        assert all(e["loc"] for e in err.value.errors())


def test_firm_run_shows_an_unknown_resource_without_a_traceback(
    tmp_path: Path, never_discovered: None
) -> None:
    result = _run("--config", str(_loop_file(tmp_path, "services: {text: {gpu: {min: 1}}}\n")))
    assert result.exit_code == 1, result.output
    assert "services.text names gpu, which is not a resource" in result.output
    assert "Guard(" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("http://[::1", "neither an IP address nor a host name"),
        ("999.1.1.1", "is not an IP address"),
        ("", "an empty address"),
        ("[::1]", "without them"),
        ("a host", "neither an IP address nor a host name"),
    ],
)
def test_a_bad_metrics_address_is_a_usage_error_naming_it(
    never_set_up: None, address: str, words: str
) -> None:
    for port in ([], ["--metrics-port", "0"]):
        result = _run("--metrics-address", address, *port)
        assert result.exit_code == 2, result.output
        assert "'--metrics-address'" in result.output and words in result.output
        assert "0.0.0.0 (every IPv4 address)" in result.output  # the fix
        assert "--metrics-port 0" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("address", ["0.0.0.0", "127.0.0.1", "::", "::1", "fe80::1%1"])
def test_ip_addresses_are_metrics_addresses(address: str) -> None:
    assert address_problem(address) is None


def test_a_metrics_port_taken_is_refused_before_the_run_naming_address_and_port(never_set_up: None) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run("--metrics-address", "127.0.0.1", "--metrics-port", str(port))
    assert result.exit_code == 1, result.output
    assert f"cannot listen on address 127.0.0.1 port {port} (" in result.output
    assert "pick a free --metrics-port" in result.output and "Traceback" not in result.output


def test_a_failure_to_listen_at_run_time_names_address_and_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        metrics = Metrics()
        with pytest.raises(OSError) as err:
            metrics.serve(port, "127.0.0.1")
        assert str(err.value.strerror).startswith(f"cannot listen on address 127.0.0.1 port {port} (")
        options = session.RunOptions(metrics_port=port, metrics_address="127.0.0.1")
        with (
            pytest.raises(click.ClickException) as refused,
            session.recording(None, LoopConfig(), options),
        ):
            pass
    assert f"cannot listen on address 127.0.0.1 port {port}" in refused.value.message


def test_metrics_serve_on_a_free_port(never_set_up: None) -> None:
    metrics = Metrics()
    try:
        metrics.serve(0, "127.0.0.1")
        assert metrics.port
    finally:
        metrics.close()


def test_an_empty_audit_log_is_a_usage_error_naming_it(never_set_up: None, tmp_path: Path) -> None:
    result = _run("--audit-log", "")
    assert result.exit_code == 2, result.output
    assert "'--audit-log'" in result.output and "an empty path names no file" in result.output
    assert "Is a directory" not in result.output
    assert not list(tmp_path.iterdir())


def test_an_empty_redis_url_is_a_usage_error_naming_it(never_set_up: None) -> None:
    result = CliRunner().invoke(main, ["run", "--dry-run", "--quiet", "--redis", ""])
    assert result.exit_code == 2, result.output
    assert "'--redis'" in result.output and "an empty URL names no Redis" in result.output
