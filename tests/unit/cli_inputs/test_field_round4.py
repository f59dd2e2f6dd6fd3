"""A fourth round of inputs from the field, to the command lines and configuration files of firm's
commands: numbers at their bounds (2^31 - 1 is the largest whole number an option takes unless it names
its own), YAML as YAML 1.2 reads it (a tab after a colon, ``0o50``, ``050``, ``1:30``), seeds every
consumer can take, output paths the kernel refuses although ``os.access`` allows them (root and
``/proc``), options a combination would ignore, and model files of another layout.

Only inputs refused before a command acts are given to commands that change the machine; the testbed's
lifecycle is replaced by a refusal, so that a check that lets a value through fails the test instead of
starting anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from firm import exit_status, schema
from firm.cli import main
from firm.cli_options import MAX_SEED, MAX_WHOLE
from firm.rl.config import AgentConfig
from firm.rl.errors import ModelError
from firm.testbed import config as testbed_config
from firm.testbed import lifecycle

PYTHON_TEXT = re.compile(
    r"Traceback|unexpected [A-Z]\w+|\b(Value|Type|Attribute|Key|Index|Unicode\w*|OS|Overflow)Error\b"
    r"|\[Errno|codec can't|object has no attribute|invalid literal"
)


@pytest.fixture(autouse=True)
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The testbed is never built or taken down here: reaching it fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command went past its checks")

    for name in ("up", "down", "read_state", "is_up"):
        monkeypatch.setattr(lifecycle, name, refuse)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert not PYTHON_TEXT.search(result.output), result.output
    return result.exit_code, result.output


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- YAML as YAML 1.2 reads it --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port:\t8080", {"port": 8080}),  # YAML 1.2 separates by a tab as by a space
        ("port: 8080\t# the frontend", {"port": 8080}),
        ("mix: {compose:\t10}", {"mix": {"compose": 10}}),
        ("port: 0o50", {"port": 40}),  # YAML 1.2's octal (YAML 1.1 reads it as the text '0o50')
        ("port: 0x28", {"port": 40}),
        ("port: 007", {"port": 7}),  # octal and decimal agree
        ("port: 08", {"port": 8}),  # no octal reading at all
        ("port: -0", {"port": 0}),
        ("port: 1_000", {"port": 1000}),
        ("port: 1:30", {"port": "1:30"}),  # YAML 1.1's base 60 (90) is gone: text, as YAML 1.2 reads it
        ("rate: 1:30.5", {"rate": "1:30.5"}),
        ("port: 0x_", {"port": "0x_"}),  # a prefix without digits is text, not a traceback
        ("rate: .5", {"rate": 0.5}),
        ("rate: 1e3", {"rate": 1000.0}),
        ("rate: -.inf", {"rate": float("-inf")}),
    ],
)
def test_yaml_numbers_and_tabs_read_as_yaml_1_2(text: str, expected: object) -> None:
    assert schema.load_yaml(text) == expected


@pytest.mark.parametrize(("text", "octal", "decimal"), [("050", "40", "50"), ("-0755", "-493", "-755")])
def test_a_number_with_a_leading_zero_that_reads_two_ways_is_refused_naming_both(
    text: str, octal: str, decimal: str
) -> None:
    with pytest.raises(yaml.YAMLError) as caught:
        schema.load_yaml(f"port: {text}")
    message = str(caught.value)
    assert f"octal ({octal})" in message and f"YAML 1.2 as {decimal}" in message
    assert f"write {decimal}" in message


def test_a_tab_after_a_colon_in_a_testbed_config_is_taken(tmp_path: Path) -> None:
    config = testbed_config.load(write(tmp_path, "port:\t8081\nservices:\n  text: {cpus:\t'1'}\n"))
    assert config.port == 8081
    assert config.service("text").cpus == "1"


def test_a_testbed_config_with_port_050_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """PyYAML alone reads 050 as 40, and the testbed would have listened on port 40."""
    code, output = invoke("testbed", "up", "--config", str(write(tmp_path, "port: 050\n")))
    assert code == exit_status.FAILURE
    assert "050" in output and "write 50, or 0o50 for octal" in output


def test_a_tab_that_indents_names_the_line_and_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "services:\n\ttext:\n\t\tcpus: '1'\n")
    code, output = invoke("testbed", "up", "--config", str(path))
    assert code == exit_status.FAILURE
    assert "line 2" in output and "replace the tab with spaces" in output
    assert "cannot start any token" not in output


def test_a_loop_config_reads_yaml_as_the_testbed_config_does(tmp_path: Path) -> None:
    code, output = invoke("run", "--config", str(write(tmp_path, "interval_s: 010\n")))
    assert code == exit_status.FAILURE
    assert "write 10, or 0o10 for octal" in output


# --- whole numbers: 2^31 - 1, not 2^31 -----------------------------------------------------------


def _commands() -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(main)
    stack: list[tuple[str, click.Group, click.Context]] = [("", main, ctx)]
    while stack:
        prefix, group, gctx = stack.pop()
        for name in group.list_commands(gctx):
            command = group.get_command(gctx, name)
            assert command is not None
            path = f"{prefix} {name}".strip()
            if isinstance(command, click.Group):
                stack.append((path, command, click.Context(command, parent=gctx)))
            else:
                yield path, command


def test_every_whole_number_option_has_a_maximum_no_consumer_overflows() -> None:
    """An option that names no maximum gets 2^31 - 1 (a C int); a seed at most 2^64 - 1."""
    for path, command in _commands():
        for param in command.params:
            if not isinstance(param, click.Option) or not isinstance(param.type, click.types.IntParamType):
                continue
            assert isinstance(param.type, click.IntRange), (path, param.opts)
            assert param.type.max is not None, (path, param.opts)
            assert param.type.max <= MAX_SEED, (path, param.opts)
            if "--seed" in param.opts:
                assert param.type.min == 0, (path, param.opts)
            else:
                assert param.type.max <= MAX_WHOLE or param.type.max < MAX_SEED, (path, param.opts)


def _counted(args: list[str]) -> str:
    """The option a case of :func:`test_2_31_is_beyond_every_count` is about."""
    context = ("--rate", "--duration", "--out", "--from", "--env")
    return next(x for x in args if x.startswith("--") and x not in context)


@pytest.mark.parametrize(
    "args",
    [
        ["load", "http://127.0.0.1:9", "--rate", "1", "--duration", "1", "--users", "2147483648"],
        ["load", "http://127.0.0.1:9", "--rate", "1", "--duration", "1", "--requests-maxlen", "2147483648"],
        ["load", "http://127.0.0.1:9", "--rate", "1", "--duration", "1", "--max-in-flight", "2147483648"],
        ["train-rl", "--out", "RUN", "--episodes", "2147483648"],
        ["train-rl", "--out", "RUN", "--env", "testbed", "--steps", "2147483648"],
        ["localize", "--top", "2147483648", "TRACE"],
        ["train-svm", "--from", "RUN", "--out", "RUN/m.json", "--batch", "2147483648"],
        ["train-svm", "--from", "RUN", "--out", "RUN/m.json", "--epochs", "2147483648"],
    ],
    ids=lambda a: f"{a[0]} {_counted(a)}",
)
def test_2_31_is_beyond_every_count(tmp_path: Path, args: list[str]) -> None:
    trace = write(tmp_path, "{}", "trace.json")
    args = [str(tmp_path) if a == "RUN" else a.replace("RUN", str(tmp_path)) for a in args]
    args = [str(trace) if a == "TRACE" else a for a in args]
    code, output = invoke(*args)
    assert code == exit_status.USAGE, output
    assert "2147483647" in output and "2147483648" in output


def test_2_31_minus_1_is_taken_where_2_31_is_not() -> None:
    ctx = click.Context(main)
    load = main.get_command(ctx, "load")
    assert load is not None
    users = next(p for p in load.params if "--users" in getattr(p, "opts", ()))
    assert users.type.convert("2147483647", users, click.Context(load)) == MAX_WHOLE
    with pytest.raises(click.BadParameter):
        users.type.convert("2147483648", users, click.Context(load))


@pytest.mark.parametrize(
    ("args", "bound"),
    [
        (["localize-dataset", "--synthetic", "1", "--seed", "-1"], "0<=x<=18446744073709551615"),
        (["train-svm", "--from", "RUN", "--seed", "4294967296"], "0<=x<=4294967295"),  # scikit-learn's
        (["localize-eval", "--cross-validate", "--dataset", "RUN", "--seed", "-1"], "0<=x<=4294967295"),
        (["train-rl", "--seed", "2147483648"], "0<=x<=2147483647"),  # the run adds the episode to it
        (["localize-testbed-dataset", "--seed", "99999999999999999999"], "0<=x<=2147483647"),
    ],
    ids=lambda a: a[0] if isinstance(a, list) else "",
)
def test_a_seed_no_consumer_takes_is_a_usage_error(tmp_path: Path, args: list[str], bound: str) -> None:
    """localize-dataset --seed -1 was 'unexpected ValueError' (NumPy refuses a negative seed)."""
    args = [str(tmp_path) if a == "RUN" else a for a in args]
    out = (
        []
        if args[0] in ("localize-eval",)
        else ["--out", str(tmp_path / ("m.json" if args[0] == "train-svm" else "o"))]
    )
    code, output = invoke(*args, *out)
    assert code == exit_status.USAGE, output
    assert "--seed" in output and bound in output


@pytest.mark.parametrize(
    "args",
    [
        ["localize-dataset", "--out", "OUT", "--synthetic", "10001"],
        ["localize-testbed-dataset", "--out", "OUT", "--window", "3601"],
        ["run", "--duration", "1e300"],
        ["train-rl", "--out", "OUT", "--env", "testbed", "--interval", "3601"],
    ],
    ids=lambda a: f"{a[0]} {a[-2]}",
)
def test_numbers_that_would_never_fit_are_refused(tmp_path: Path, args: list[str]) -> None:
    """--synthetic 99999999999999999999 ran the machine out of memory."""
    code, output = invoke(*[str(tmp_path / "o") if a == "OUT" else a for a in args])
    assert code == exit_status.USAGE, output
    assert args[-2] in output


# --- output paths the kernel refuses ---------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["testbed", "run", "--report", "/proc/firm-report.json"], "--report"),
        (["train-svm", "--from", "/tmp", "--out", "/proc/firm-model.json"], "--out"),
        (["train-rl", "--out", "/proc/firm-run"], "--out"),
        (["localize-dataset", "--synthetic", "1", "--out", "/proc/firm-ds"], "--out"),
        (["localize-testbed-dataset", "--out", "/proc/firm-ds"], "--out"),
        (["experiment", "--out", "/proc/firm-experiment/deeper"], "--out"),
    ],
    ids=lambda a: a[0] if isinstance(a, list) else a,
)
def test_an_output_the_kernel_refuses_is_a_usage_error_before_anything_starts(
    args: list[str], option: str
) -> None:
    """/proc passes os.access for root (and is no place for a file): a real write is tried, and
    undone."""
    code, output = invoke(*args)
    assert code == exit_status.USAGE, output
    assert option in output and "/proc" in output and "cannot write" in output


@pytest.mark.parametrize(
    "args",
    [
        ["train-svm", "--from", "DIR", "--out", "DIR/missing/m.json"],
        ["train-svm", "--from", "DIR", "--out", "DIR"],
        ["localize-dataset", "--synthetic", "1", "--out", "DIR/file.txt"],
        ["train-rl", "--out", "DIR/file.txt/run"],
    ],
    ids=lambda a: f"{a[0]} {a[-1].replace('DIR', '')}",
)
def test_an_output_path_that_cannot_be_made_names_the_option(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "file.txt").write_text("x")
    code, output = invoke(*[a.replace("DIR", str(tmp_path)) for a in args])
    assert code == exit_status.USAGE, output
    assert "--out" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # no probe left behind


# --- options a combination would ignore, empty values -----------------------------------------------


def test_run_refuses_an_inventory_it_would_ignore(tmp_path: Path) -> None:
    code, output = invoke("run", "--inventory", str(write(tmp_path, "all: {}\n", "hosts.yaml")))
    assert code == exit_status.USAGE
    assert "--inventory applies only with --executor ansible or --cluster FILE" in output


@pytest.mark.parametrize("command", ["audit", "explain"])
@pytest.mark.parametrize("key", ["", "  "])
def test_an_empty_audit_key_is_a_usage_error(command: str, key: str) -> None:
    code, output = invoke(command, "--key", key, "--redis", "redis://127.0.0.1:1/0")
    assert code == exit_status.USAGE
    assert "--key" in output and "an empty value means nothing" in output


def test_one_option_beside_file_is_named_in_the_singular(tmp_path: Path) -> None:
    code, output = invoke("audit", "--file", str(write(tmp_path, "", "audit.jsonl")), "--key", "x")
    assert code == exit_status.USAGE
    assert "--key names the audit in Redis" in output


# --- model files of another layout ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (5, "the model's config is int, not a mapping"),
        (["hidden"], "the model's config is list, not a mapping"),
        ({"hidden": 5}, "gives hidden 5, not a list of whole numbers"),
        ({"batch_size": "64"}, "gives batch_size '64', not a whole number"),
        ({"alpha": True}, "gives alpha True, not a number"),
        ({"noise": 1}, "gives noise 1, not text"),
    ],
)
def test_an_agent_config_of_another_layout_names_what_differs(config: object, named: str) -> None:
    data = {**AgentConfig().as_dict(), **config} if isinstance(config, dict) else config
    with pytest.raises(ModelError) as caught:
        AgentConfig.from_dict(data)
    assert named in str(caught.value)
    assert "retrain with firm train-rl" in str(caught.value)


def test_an_agent_config_written_by_this_firm_reads_back() -> None:
    config = AgentConfig(alpha=1, hidden=(8, 8))  # a whole number where a number is wanted is one
    assert AgentConfig.from_dict(config.as_dict()) == config


@pytest.mark.parametrize(
    "args",
    [
        ["cluster", "--service", "a=b:c", "--context", ""],
        ["run", "--cluster", "CLUSTER", "--context", " "],
        ["preflight", "--cluster", "--context", ""],
    ],
    ids=lambda a: a[0],
)
def test_an_empty_kubeconfig_context_is_a_usage_error(tmp_path: Path, args: list[str]) -> None:
    """'' read as "the kubeconfig's current context", silently."""
    cluster = write(tmp_path, "services: {}\n", "cluster.yaml")
    code, output = invoke(*[str(cluster) if a == "CLUSTER" else a for a in args])
    assert code == exit_status.USAGE
    assert "--context" in output and "an empty value means nothing" in output


# --- one check of service URLs, passwords never shown ------------------------------------------------


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://u:s3cretpw@[::1", "is not a URL (Invalid IPv6 URL)"),
        ("http://u:s3cretpw@h:99999", "has an invalid port (Port out of range"),
        ("http://u:s3cretpw@h:0", "names port 0"),
        ("http://u:s3cretpw@h/?x=1", "has a query or a fragment"),
        ("ftp://u:s3cretpw@h", "is not an http(s) URL with a host"),
    ],
)
def test_a_load_spec_checks_its_url_as_the_options_do_and_hides_the_password(url: str, said: str) -> None:
    from firm.load.config import ConstantRate, LoadSpec  # noqa: PLC0415
    from firm.load.errors import LoadSpecError  # noqa: PLC0415

    with pytest.raises(LoadSpecError) as caught:
        LoadSpec(url=url, rate=ConstantRate(1), duration_s=1)
    assert said in str(caught.value) and "s3cretpw" not in str(caught.value)
    code, output = invoke("load", url, "--rate", "1", "--duration", "1")
    assert code == exit_status.USAGE
    assert said in output and "s3cretpw" not in output


def test_a_malformed_redis_output_url_is_refused_without_its_password() -> None:
    from firm.load.config import RedisOutput  # noqa: PLC0415
    from firm.load.errors import LoadSpecError  # noqa: PLC0415

    with pytest.raises(LoadSpecError) as caught:
        RedisOutput(url="redis://u:s3cretpw@[::1")
    assert "is not a Redis URL" in str(caught.value) and "s3cretpw" not in str(caught.value)


# -- Follow-ups: stdin as '-', a model with no config, one URL check, empty targets ---------------


TRACE = (
    '{"data": [{"traceID": "ab", "spans": [{"traceID": "ab", "spanID": "01", "operationName": "op", '
    '"startTime": 1000, "duration": 100, "processID": "p1", "references": []}], '
    '"processes": {"p1": {"serviceName": "a"}}}]}'
)


def test_a_dash_reads_the_traces_from_a_pipe(tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    firm = [str(Path(sys.executable).with_name("firm"))]
    path = write(tmp_path, TRACE, "one.json")
    from_file = subprocess.run([*firm, "critical-path", str(path)], capture_output=True, check=True)
    piped = subprocess.run(
        [*firm, "critical-path", "-"], input=TRACE.encode(), capture_output=True, check=False
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == from_file.stdout.replace(str(path).encode(), b"/dev/stdin")
    assert b'"spanID": "0000000000000001"' in piped.stdout


def test_a_dash_on_a_terminal_is_a_usage_error() -> None:
    import pty  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [str(Path(sys.executable).with_name("firm")), "critical-path", "-"],
            stdin=follower,
            check=False,
            capture_output=True,
            timeout=60,
        )
    finally:
        os.close(leader)
        os.close(follower)
    assert done.returncode == exit_status.USAGE, done.stderr
    assert b"'-' reads stdin, which is a terminal here; pipe the data in" in done.stderr


def test_a_model_file_with_no_config_is_refused_naming_it(tmp_path: Path) -> None:
    import torch  # noqa: PLC0415

    from firm.rl.agent import MODEL_FORMAT, Agent  # noqa: PLC0415

    path = tmp_path / "model.pt"
    torch.save({"format": MODEL_FORMAT, "layout": {}}, path)
    with pytest.raises(ModelError, match=r"the model has no 'config' \(its settings\)"):
        Agent.load(path)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://jaeger:99999", "has an invalid port"),
        ("http://jaeger:16686/?x=1", "has a query or a fragment"),
        ("http://[::1", "is not a URL"),
        ("ftp://jaeger", "is not an http(s) URL with a host"),
    ],
)
def test_a_cluster_file_checks_its_jaeger_url_as_the_options_do(tmp_path: Path, url: str, said: str) -> None:
    from firm.cluster.run import ClusterRunConfigError, load_config  # noqa: PLC0415

    path = write(
        tmp_path,
        f"services: {{a: {{namespace: default, selector: app=a}}}}\njaeger_url: '{url}'\nentry_services: [a]\n",
    )
    with pytest.raises(ClusterRunConfigError, match=re.escape(said)):
        load_config(path)


def test_an_empty_anomaly_target_is_a_usage_error() -> None:
    code, output = invoke("testbed", "run", "--target", "")
    assert code == exit_status.USAGE, output
    assert "--target" in output
