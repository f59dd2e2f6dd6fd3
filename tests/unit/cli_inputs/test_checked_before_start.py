"""Options that would only fail after a long run (a report path in a missing directory, a seed the load
refuses) or that contradict each other are refused before anything starts, naming the option; and
the services that do not answer are described in firm's words, passwords hidden."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.testbed import lifecycle


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The testbed is never built or taken down by these tests: reaching it fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command went past its checks")

    monkeypatch.setattr(lifecycle, "up", refuse)
    monkeypatch.setattr(lifecycle, "down", refuse)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


@pytest.mark.usefixtures("nothing_starts")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--report", "{tmp}/missing/r.json"], "its directory {tmp}/missing does not exist"),
        (["--report", "{tmp}/file/r.json"], "its directory {tmp}/file is not a directory"),
        (["--report", "{tmp}"], "is a directory"),
        (["--seed", "-1"], "Invalid value for '--seed': -1 is not in the range 0<="),
        (["--seed", str(1 << 64)], "Invalid value for '--seed'"),
    ],
)
def test_testbed_run_checks_its_options_first(tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "file").write_text("")
    code, output = invoke(
        "testbed", "run", "--anomaly", "none", *[a.replace("{tmp}", str(tmp_path)) for a in args]
    )
    assert code == 2 and expected.replace("{tmp}", str(tmp_path)) in output, output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--last", "99999999999999999999h"], "longer than a year; give at most 8784h"),
        (["--last", "9000h"], "longer than a year"),
        (["-o", "/nonexistent-firm-dir/x.json"], "its directory /nonexistent-firm-dir does not exist"),
    ],
)
def test_testbed_traces_checks_its_options_first(args: list[str], expected: str) -> None:
    code, output = invoke("testbed", "traces", *args)
    assert code == 2 and expected in output, output


def test_a_writable_report_path_passes_the_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reached: list[bool] = []

    def up(*args: object, **kwargs: object) -> None:
        reached.append(True)
        raise SystemExit(1)

    monkeypatch.setattr(lifecycle, "up", up)
    monkeypatch.setattr(lifecycle, "is_up", lambda config: True)  # nothing to take down after
    invoke("testbed", "run", "--anomaly", "none", "--redis", "", "--report", str(tmp_path / "r.json"))
    assert reached == [True]


def test_in_cluster_and_a_kubeconfig_contradict(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("{}")
    for extra in (["--kubeconfig", str(kubeconfig)], ["--context", "x"]):
        code, output = invoke("preflight", "--cluster", "--in-cluster", *extra)
        assert code == 2 and "give one or the other" in output, output


def test_firm_load_names_the_option_not_the_field() -> None:
    code, output = invoke("load", "http://127.0.0.1:9", "--rate", "5")
    assert code == 2 and "Invalid value for --duration: a constant rate needs a duration" in output
    assert "duration_s" not in output


def test_firm_load_names_the_trace_option_when_the_file_is_read(tmp_path: Path) -> None:
    trace = tmp_path / "rates.txt"
    trace.write_text("garbage\n")
    code, output = invoke("load", "http://127.0.0.1:9", "--trace", str(trace), "--peak", "10", "--quiet")
    assert code == 1 and f"--trace: {trace} line 1: 'garbage' is not an integer" in output, output
    assert "rate.path" not in output


def test_firm_load_describes_a_redis_that_does_not_answer() -> None:
    port = closed_port()
    code, output = invoke(
        "load",
        "http://127.0.0.1:9",
        "--rate",
        "10",
        "--duration",
        "0.2",
        "--quiet",
        "--redis",
        f"redis://:s3cret@127.0.0.1:{port}/0",
    )
    assert code == 1
    assert f"Redis at redis://:***@127.0.0.1:{port}/0 does not answer (connection refused)" in output, output
    assert "s3cret" not in output and "Errno" not in output and "Error 111" not in output


def test_a_redis_that_does_not_answer_is_described_in_words() -> None:
    import redis  # noqa: PLC0415

    from firm.cli_options import redis_reason  # noqa: PLC0415

    client = redis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=2)
    with pytest.raises(redis.ConnectionError) as raised:
        client.ping()
    assert redis_reason(raised.value) == "connection refused"


def test_a_testbed_trace_store_that_does_not_answer_is_described_in_words(tmp_path: Path) -> None:
    import json  # noqa: PLC0415

    from firm.testbed.state import TestbedState  # noqa: PLC0415

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    # nothing listens on 127.0.0.2:6379 (firm's Redis binds 127.0.0.1 only): the connection is refused
    state = TestbedState(
        bridge="firmtb0", port=8080, redis_address="127.0.0.2", frontend="http://127.0.0.3:8080", instances=()
    )
    (state_dir / "testbed.json").write_text(json.dumps(state.to_json()))
    config = tmp_path / "testbed.yml"
    config.write_text(f"state_dir: {state_dir}\n")
    code, output = invoke("testbed", "traces", "--config", str(config), "--last", "30s")
    assert code == 1
    assert "cannot read the trace store at 127.0.0.2 (connection refused)" in output, output
    assert "Error 111" not in output and "Errno" not in output
