"""The loop's configuration file and its commands' error paths (no testbed needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from firm.cli import main
from firm.loop.audit import AuditLog
from firm.loop.config import LoopConfigError, load
from firm.loop.view import LiveView


def test_a_file_overrides_the_defaults_and_partial_guards_keep_the_others(tmp_path: Path) -> None:
    path = tmp_path / "loop.yml"
    path.write_text(
        "interval_s: 1.5\nguards:\n  cpu: {min: 0.2, max: 1.5, max_step: 0.25}\n"
        "services:\n  compose-post:\n    cpu: {min: 0.3, max: 2, max_step: 0.5, cooldown_s: 2}\n"
    )
    config = load(path, decider="aimd")
    assert config.interval_s == 1.5 and config.decider == "aimd"
    assert config.guard("text", "cpu").max == 1.5
    assert config.guard("compose-post", "cpu").min == 0.3
    assert config.guard("text", "network").min == 1e6  # default kept


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("interval_s: -1\n", "interval_s"),
        ("guards:\n  gpu: {min: 1, max: 2, max_step: 1}\n", "gpu"),
        ("guards:\n  cpu: {min: 2, max: 1, max_step: 1}\n", "max"),
        ("decider: magic\n", "decider"),
        ("intervall_s: 2\n", "intervall_s"),
        ("- a list\n", "mapping"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "loop.yml"
    path.write_text(text)
    with pytest.raises(LoopConfigError) as err:
        load(path)
    assert named in str(err.value) and err.value.fix


def test_firm_run_refuses_an_slo_of_a_request_type_the_testbed_does_not_send(tmp_path: Path) -> None:
    loop = tmp_path / "loop.yml"
    loop.write_text("slo_ms: {compose: 100, read-home-timeline: 80}\n")
    result = CliRunner().invoke(main, ["run", "--config", str(loop), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "slo_ms names request type 'compose', which the testbed does not send" in result.output
    assert "use the request types of the testbed: compose-post," in result.output


def test_firm_run_without_a_testbed_says_how_to_start_one(tmp_path: Path) -> None:
    testbed = tmp_path / "testbed.yml"
    testbed.write_text(f"state_dir: {tmp_path / 'nothing'}\n")
    loop = tmp_path / "loop.yml"
    loop.write_text(f"testbed_config: {testbed}\n")
    result = CliRunner().invoke(main, ["run", "--config", str(loop), "--decider", "aimd", "--quiet"])
    assert result.exit_code == 1
    assert "firm testbed up" in result.output and "Traceback" not in result.output
    # every option reaches its setting: --interval is interval_s
    result = CliRunner().invoke(main, ["run", "--config", str(loop), "--interval", "2", "--quiet"])
    assert result.exit_code == 1 and "firm testbed up" in result.output, result.output


def test_firm_audit_shows_a_json_lines_log_as_a_table_and_as_json(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(None, path=path)
    log.write(
        {
            "time": 1000.0,
            "step": 1,
            "status": "acted",
            "dry_run": False,
            "slo": [
                {"type": "compose-post", "slo_ms": 250.0, "p99_ms": 400.0, "state": "violated", "count": 9}
            ],
            "decision": {"mode": "raise", "culprits": [{"instance": "compose-post-0", "score": 0.91}]},
            "result": {
                "actions": [
                    {
                        "instance": "compose-post-0",
                        "resource": "cpu",
                        "before": 0.5,
                        "after": 1.0,
                        "changed": True,
                        "reason": "agent: culprit",
                    }
                ]
            },
        }
    )
    log.write({"time": 1002.0, "step": 2, "status": "stale", "reason": "telemetry unreachable", "slo": []})
    log.close()
    table = CliRunner().invoke(main, ["audit", "--file", str(path)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "compose-post-0 0.91" in table.output and "0.5->1" in table.output
    assert "telemetry unreachable" in table.output
    lines = (
        CliRunner().invoke(main, ["audit", "--file", str(path), "--json", "--last", "1"]).output.splitlines()
    )
    assert [json.loads(line)["step"] for line in lines] == [2]


def test_firm_audit_without_redis_says_what_to_do() -> None:
    result = CliRunner().invoke(main, ["audit", "--redis", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1 and "--file" in result.output and "Traceback" not in result.output


def test_the_live_view_shows_slos_culprits_and_the_last_actions() -> None:
    view = LiveView(decider="firm", dry_run=True, duration_s=60)
    console = Console(record=True, width=160)
    console.print(
        view.add(
            {
                "time": 1000.0,
                "step": 3,
                "status": "acted",
                "slo": [
                    {
                        "type": "compose-post",
                        "slo_ms": 250.0,
                        "p50_ms": 90.0,
                        "p99_ms": 400.0,
                        "state": "violated",
                        "count": 9,
                    }
                ],
                "decision": {"mode": "raise", "culprits": [{"instance": "compose-post-0", "score": 0.91}]},
                "result": {
                    "dry_run": True,
                    "actions": [
                        {
                            "instance": "compose-post-0",
                            "resource": "cpu",
                            "before": 0.5,
                            "after": 1.0,
                            "unit": "cores",
                            "changed": True,
                            "reason": "agent: culprit",
                        }
                    ],
                },
            }
        )
    )
    text = console.export_text()
    assert "violated" in text and "compose-post-0 (0.91)" in text
    assert "would set compose-post-0 cpu 0.5 -> 1 cores" in text and "(dry run)" in text


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--context", "prod"], "--context"),
        (["--kubeconfig", "KUBECONFIG"], "--kubeconfig"),
        (["--kubeconfig", "KUBECONFIG", "--context", "prod"], "--kubeconfig, --context"),
    ],
)
def test_cluster_only_options_without_cluster_are_refused_before_anything_runs(
    options: list[str], named: str, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    given = [str(kubeconfig) if o == "KUBECONFIG" else o for o in options]
    result = CliRunner().invoke(main, ["run", "--quiet", *given])
    assert result.exit_code == 2, result.output
    assert f"{named} appl" in result.output and "only with --cluster FILE" in result.output
    assert "Traceback" not in result.output


def test_an_audit_log_the_kernel_refuses_is_a_usage_error_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from firm.loop import cli as loop_cli  # noqa: PLC0415

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run was started")

    monkeypatch.setattr(loop_cli, "_setup", never)
    for path, words in (
        ("/proc/nope/x.jsonl", "its directory /proc/nope does not exist"),
        ("/proc/x.jsonl", "cannot append to it"),
        (str(tmp_path), "is a directory"),
    ):
        result = CliRunner().invoke(main, ["run", "--dry-run", "--audit-log", path])
        assert result.exit_code == 2, result.output
        assert "'--audit-log'" in result.output and words in result.output


@pytest.mark.parametrize("command", ["audit", "explain"])
def test_audit_and_explain_say_why_redis_failed_in_firms_words(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--redis", "redis://user:secret@127.0.0.1:1/0"])
    assert result.exit_code == 1, result.output
    assert "connection refused" in result.output
    assert "Error 111" not in result.output and "secret" not in result.output
    assert "redis://user:***@127.0.0.1:1/0" in result.output


@pytest.mark.parametrize("command", ["audit", "explain"])
def test_last_is_bounded(command: str) -> None:
    result = CliRunner().invoke(
        main, [command, "--last", "99999999999999999999", "--redis", "redis://127.0.0.1:1/0"]
    )
    assert result.exit_code == 2, result.output
    assert "'--last'" in result.output and "100000" in result.output


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # wrong types: no number from text or a boolean, no boolean from text or a number
        ("interval_s: '2'\n", ["interval_s is '2'; give a number"]),
        ("interval_s: true\n", ["interval_s is True; give a number"]),
        ("confirm: 'yes'\n", ["confirm is 'yes'; give true or false"]),
        ("confirm: 1\n", ["confirm is 1; give true or false"]),
        ("min_requests: 5.5\n", ["min_requests is 5.5; give a whole number"]),
        ("audit_retention: '10'\n", ["audit_retention is '10'; give a whole number"]),
        ("guards:\n  cpu: {min: '0.1', max: 2, max_step: 1}\n", ["guards.cpu.min is '0.1'; give a number"]),
        ("reclaim: {enabled: 'no'}\n", ["reclaim.enabled is 'no'; give true or false"]),
        ("firm: {max_culprits: true}\n", ["firm.max_culprits is True; give a whole number"]),
        ("slo_ms: {compose-post: '200'}\n", ["slo_ms.compose-post is '200'; give a number"]),
        # no upper bound was checked
        ("trace_lag_s: 1e300\n", ["trace_lag_s is 1e+300; give at most 3600"]),
        ("window_s: 1e308\n", ["window_s is 1e+308; give at most 3600"]),
        ("audit_retention: 100000000000000000000000000\n", ["give at most 100000000"]),
        ("stale_intervals: 1e9\n", ["stale_intervals is 1000000000.0; give at most 100"]),
        ("scale_in: {hold_s: 1e20}\n", ["scale_in.hold_s", "give at most 3600"]),
        ("guards:\n  cpu: {min: 1, max: 2, max_step: 1, cooldown_s: 1e12}\n", ["guards.cpu.cooldown_s"]),
        ("firm: {reference_traces: 1000000000000}\n", ["firm.reference_traces", "at most 100000000"]),
        ("aimd: {increase: 1e9}\n", ["aimd.increase", "at most 100"]),
        # SLOs: finite, above 0, bounded, named
        ("slo_ms: {bogus: 0}\n", ["slo_ms.bogus is 0; give above 0"]),
        ("slo_ms: {bogus: -.inf}\n", ["slo_ms.bogus is -inf"]),
        ("slo_ms: {bogus: .nan}\n", ["slo_ms.bogus is nan; give a finite number"]),
        ("slo_ms: {x: 1e12}\n", ["slo_ms.x is 1000000000000.0; give at most 3600000"]),
        ("slo_ms: {'': 5}\n", ["slo_ms[''] is ''; give text of at least 1 character"]),
        # AIMD's decrease: known resources, never negative (a negative decrease raises)
        ("aimd: {decrease: {gpu: 1}}\n", ["aimd.decrease", "names gpu, which is not a resource"]),
        ("aimd: {decrease: {cpu: -1}}\n", ["aimd.decrease.cpu is -1; give at least 0"]),
        # Redis URLs as every command checks them
        (
            "redis_url: 'redis://[::1'\n",
            ["redis_url is 'redis://[::1': it is not a Redis URL", "redis://127.0.0.1"],
        ),
        ("redis_url: 'http://x'\n", ["redis_url is 'http://x': it is not a Redis URL"]),
        ("redis_url: 'redis://h:99999/0'\n", ["redis_url", "Port out of range"]),
        ("redis_url: 'redis://h/3000000000'\n", ["names database 3000000000"]),
        ("redis_url: 'redis://:secret@[::1'\n", ["redis_url is 'redis://***@[::1'"]),
        ("audit_key: ''\n", ["audit_key is ''"]),
    ],
)
def test_wrong_types_and_unbounded_values_are_refused_naming_the_field(
    tmp_path: Path, text: str, words: list[str]
) -> None:
    path = tmp_path / "loop.yml"
    path.write_text(text)
    with pytest.raises(LoopConfigError) as err:
        load(path)
    message = str(err.value)
    for word in words:
        assert word in message, message
    assert "Fix:" in message and "secret" not in message and "Input should" not in message


def test_numbers_and_lists_written_as_yaml_writes_them_are_taken(tmp_path: Path) -> None:
    """A whole number is a number, ``1e3`` too (YAML 1.2); paths and lists are read from YAML."""
    path = tmp_path / "loop.yml"
    path.write_text(
        "interval_s: 2\nwindow_s: 3600\ntrace_lag_s: 1e0\nslo_ms: {compose-post: 2e2, custom-type: 50}\n"
        "confirm: false\nexclude: [redis, text]\nfirm: {agent_model: runs/agent.pt, cpu_wait_s: null}\n"
        "testbed_config: testbed.yml\nredis_url: 'redis://:pw@[::1]:6380/2'\naimd: {decrease: {cpu: 0}}\n"
    )
    config = load(path)
    assert (config.interval_s, config.window_s, config.trace_lag_s) == (2.0, 3600.0, 1.0)
    assert isinstance(config.interval_s, float) and config.confirm is False
    assert config.slo_ms == {"compose-post": 200.0, "custom-type": 50.0}  # the cluster's types are any
    assert config.exclude == ("redis", "text")
    assert config.firm.agent_model == Path("runs/agent.pt") and config.firm.cpu_wait_s is None
    assert config.testbed_config == Path("testbed.yml")
    assert config.redis_url == "redis://:pw@[::1]:6380/2"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\xff\xfe{", "is not UTF-8 text"),
        (b"a: [\n", "is not YAML (line 2"),
        (b"[" * 5000, "nests too deeply"),
        (b"0\n", "holds the number 0, not a mapping of settings"),
    ],
)
def test_unreadable_files_are_refused_without_a_traceback(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "loop.yml"
    path.write_bytes(content)
    with pytest.raises(LoopConfigError) as err:
        load(path)
    assert words in str(err.value) and err.value.fix


def test_firm_run_refuses_a_wrong_type_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "loop.yml"
    path.write_text("interval_s: '2'\n")
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 1, result.output
    assert "interval_s is '2'; give a number" in result.output and "Traceback" not in result.output
