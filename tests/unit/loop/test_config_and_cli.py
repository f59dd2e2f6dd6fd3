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
