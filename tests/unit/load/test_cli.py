"""`firm load` through click's CliRunner against the local test frontend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from firm.cli import main
from tests.helpers.redis_db import REDIS_URL, connect
from tests.unit.load.frontend import running_frontend


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["load", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_summary_and_progress_per_window() -> None:
    with running_frontend() as frontend:
        code, out, err = run(
            f"http://127.0.0.1:{frontend.port}",
            "--rate",
            "100",
            "--duration",
            "1.2",
            "--window",
            "0.5",
            "--slo",
            "compose=500,home=200,user=200",
            "--seed",
            "3",
            "--json",
        )
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary) == {
        "url",
        "seed",
        "duration_s",
        "scheduled_rps",
        "sent_rps",
        "types",
        "overall",
        "client_cpu_s",
        "cpu_ms_per_request",
        "max_dispatch_lag_ms",
        "records_written",
        "records_dropped",
    }
    assert summary["seed"] == 3
    assert summary["scheduled_rps"] == 100
    assert [t["type"] for t in summary["types"]] == [
        "compose-post",
        "read-home-timeline",
        "read-user-timeline",
    ]
    overall = summary["overall"]
    assert overall["sent"] == overall["succeeded"] == len(frontend.received)
    assert overall["success_ratio"] == 1.0
    assert summary["types"][0]["slo_ms"] == 500
    assert overall["slo_violation_ratio"] == 0.0
    assert summary["cpu_ms_per_request"] > 0
    lines = [line for line in err.splitlines() if line.startswith("[")]
    assert len(lines) >= 2
    assert "home n=" in lines[0] and "p99=" in lines[0] and "/200 ms ok" in lines[0]


def test_table_summary() -> None:
    with running_frontend() as frontend:
        code, out, _ = run(
            f"http://127.0.0.1:{frontend.port}",
            "--rate",
            "50",
            "--duration",
            "0.6",
            "--mix",
            "home=1",
            "--quiet",
        )
    assert code == 0
    heading, *table = [line for line in out.splitlines() if line.strip()]
    assert heading.startswith(f"http://127.0.0.1:{frontend.port}: ")  # one line, never wrapped to the table
    assert "requests/s 50.0 scheduled and " in heading and heading.endswith(" sent; latency in ms")
    rows = [line.split()[0] for line in table]
    assert "home" in rows and "all" in rows and "compose" not in rows
    assert "ms per request" in out


def test_table_lists_errors_below_and_a_run_where_nothing_succeeded_fails() -> None:
    code, out, err = run(
        "http://127.0.0.1:9", "--rate", "20", "--duration", "0.3", "--quiet", "--mix", "user=1"
    )
    assert code == 1
    assert "errors of read-user-timeline: connection " in out
    assert "no request succeeded" in err


def test_a_json_summary_of_a_failed_run_is_printed_then_the_exit_status_says_so() -> None:
    code, out, err = run("http://127.0.0.1:9", "--rate", "20", "--duration", "0.3", "--quiet", "--json")
    assert code == 1
    summary = json.loads(out)
    assert summary["scheduled_rps"] == 20 and summary["duration_s"] >= 0
    assert summary["overall"]["succeeded"] == 0
    assert "no request succeeded" in err


def test_trace_with_peak_and_speedup(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    trace.write_text("\n".join(["10", "20", "40", "20"] * 10))  # 40 lines
    with running_frontend() as frontend:
        code, out, err = run(
            f"http://127.0.0.1:{frontend.port}",
            "--trace",
            str(trace),
            "--peak",
            "100",
            "--speedup",
            "20",
            "--json",
            "--quiet",
        )
    assert code == 0, err
    summary = json.loads(out)
    # 40 lines at speedup 20 last 2 s; mean rate 22.5/40 of the peak: 112 requests on average.
    assert summary["overall"]["sent"] == pytest.approx(112, rel=0.35)
    assert summary["duration_s"] < 4


def test_stores_in_redis() -> None:
    client = connect()
    client.delete("firm:requests", "firm:latency")
    try:
        with running_frontend() as frontend:
            code, out, err = run(
                f"http://127.0.0.1:{frontend.port}",
                "--rate",
                "80",
                "--duration",
                "1",
                "--redis",
                REDIS_URL,
                "--quiet",
            )
        assert code == 0, err
        assert client.xlen("firm:requests") == len(frontend.received)
        assert client.xlen("firm:latency") >= 3
        assert f"{len(frontend.received)} request records in firm:requests" in out
    finally:
        client.delete("firm:requests", "firm:latency")
        client.close()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--duration", "1"], 2, "give either --rate or --trace"),
        (["--rate", "5", "--trace", "{trace}", "--duration", "1"], 2, "give either --rate or --trace"),
        (["--trace", "{trace}"], 2, "--trace needs --peak"),
        (["--rate", "5", "--duration", "1", "--speedup", "2"], 2, "apply to --trace only"),
        (["--rate", "-5", "--duration", "1"], 2, "-5"),
        (
            ["--rate", "5"],
            2,
            "--duration: a constant rate needs a duration. Fix: give the run's length in seconds, e.g. --duration 60",
        ),
        (
            ["--rate", "5", "--duration", "1", "--mix", "compose=-1,home=1"],
            2,
            "mix.compose: -1.0 is negative",
        ),
        (["--rate", "5", "--duration", "1", "--mix", "compose=0"], 2, "mix: every weight is zero"),
        (["--rate", "5", "--duration", "1", "--slo", "tweet=5"], 2, "'tweet' is not a request type"),
        (
            ["--rate", "5", "--duration", "1", "--connections", "50", "--max-in-flight", "10"],
            2,
            "--max-in-flight: 10 is below connections (50)",
        ),
        (
            ["--trace", "{trace}", "--peak", "10", "--duration", "5"],
            1,
            "--duration: 5 s is longer than the trace",
        ),
        (  # nothing would be sent: refused before the run, not "check that the frontend answers"
            ["--rate", "1", "--duration", "0.5"],
            2,
            "--rate: 1 requests/s for 0.5 s plans 0.5 requests, less than one",
        ),
        (
            ["--trace", "{trace}", "--peak", "0.5"],
            1,
            "--peak: 0.5 requests/s at the trace's peak over 1 s plans 0.5 requests, less than one",
        ),
    ],
)
def test_usage_errors_say_what_is_wrong(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    trace = tmp_path / "trace.txt"
    trace.write_text("1\n")
    exit_code, _, err = run("http://127.0.0.1:9", *[a.replace("{trace}", str(trace)) for a in args])
    assert (exit_code, message in err) == (code, True), err


def test_no_answer_is_reported() -> None:
    code, _, err = run("http://127.0.0.1:9", "--rate", "20", "--duration", "0.3", "--quiet", "--timeout", "1")
    assert code == 1
    assert "no request succeeded" in err and "connection" in err


def test_a_password_in_the_url_is_never_shown() -> None:
    code, out, err = run(
        "http://user:s3cret@127.0.0.1:9", "--rate", "20", "--duration", "0.3", "--quiet", "--json"
    )
    assert code == 1
    assert json.loads(out)["url"] == "http://user:***@127.0.0.1:9"
    assert "s3cret" not in out + err and "answers at http://user:***@127.0.0.1:9" in err


def test_a_run_lasts_its_length_and_reports_the_rate_it_sent() -> None:
    """One request due early in a 1 s run: the run is 1 s long and sent 1 request/s (not the
    1 / 0.2 s of the span of its requests)."""
    code, out, _ = run(
        "http://127.0.0.1:9", "--rate", "1", "--duration", "1", "--seed", "3", "--quiet", "--json"
    )
    summary = json.loads(out)
    assert code == 1 and summary["overall"]["sent"] == 1
    assert summary["duration_s"] >= 1.0
    assert summary["sent_rps"] == pytest.approx(1.0, rel=0.05)
