"""`firm critical-path` and `firm features` on the shared trace files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from firm.cli import main
from tests.unit.tracing.shared_data import data_dir, deathstarbench_files


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_critical_path_json_for_every_trace_of_every_file() -> None:
    files = [str(f) for f in deathstarbench_files()]
    code, out, _ = run("critical-path", *files)
    assert code == 0
    doc = json.loads(out)
    assert len(doc["traces"]) == 12
    first = doc["traces"][0]
    assert set(first) == {
        "source",
        "traceID",
        "rootSpanID",
        "duration",
        "path",
        "sections",
        "excludedSpans",
        "trimmedSpans",
        "otherRoots",
        "warnings",
    }
    assert first["source"] == files[0]
    assert set(first["path"][0]) == {
        "spanID",
        "service",
        "instance",
        "operation",
        "start",
        "end",
        "selfTime",
        "depth",
    }
    assert set(first["sections"][0]) == {"spanID", "sectionStart", "sectionEnd"}
    for t in doc["traces"]:
        assert sum(s["selfTime"] for s in t["path"]) == t["duration"]
        assert t["path"][0]["spanID"] == t["rootSpanID"]
    compose = next(t for t in doc["traces"] if "compose-post" in t["source"])
    assert compose["path"][-1]["operation"] == "write_home_timeline_redis_update_client"


def _with_trace_id(trace: dict[str, Any], new: str) -> dict[str, Any]:
    """A copy of a Jaeger trace under another trace ID (in the trace, its spans and their references)."""
    old = trace["traceID"]
    spans = [
        {
            **s,
            "traceID": new,
            "references": [
                {**r, "traceID": new} if r.get("traceID") == old else r for r in s.get("references", [])
            ],
        }
        for s in trace["spans"]
    ]
    return {**trace, "traceID": new, "spans": spans}


def test_critical_path_matches_jaeger_ui_on_the_cases(tmp_path: Path) -> None:
    cases = json.loads(data_dir("critical-path", "jaeger-ui-cases.json").read_text())
    case_file = tmp_path / "cases.json"
    # Several cases reuse one trace ID; in one input that would be one trace, so each gets its own.
    traces = [_with_trace_id(c["trace"], f"case-{i}") for i, c in enumerate(cases)]
    case_file.write_text(json.dumps(traces))
    code, out, _ = run("critical-path", "--compact", str(case_file))
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    got = [t["sections"] for t in json.loads(out)["traces"]]
    assert got == [c["expectedCriticalPathSections"] for c in cases]


def test_critical_path_reads_otlp_and_domain_json() -> None:
    code, out, _ = run(
        "critical-path",
        str(data_dir("jaeger-fixtures", "example_trace.json")),
        str(data_dir("jaeger-fixtures", "domain_01.json")),
    )
    assert code == 0
    otlp, domain = json.loads(out)["traces"]
    assert len(otlp["otherRoots"]) == 4  # five spans without parents
    assert domain["warnings"][-1].startswith("span 0000000000000002: the ID occurs again")


def test_critical_path_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"data": [{"traceID": "t9", "spans": [{"spanID": "s1", "startTime": 1}], "processes": {}}]}'
    )
    code, _, err = run("critical-path", str(bad))
    assert code == 1  # its only span refused, so no trace: the file is named
    assert f'warning: {bad}: trace t9, span s1 refused: "duration" is missing' in err
    assert f"{bad}: no trace in the file" in err
    code, _, err = run("critical-path", str(tmp_path / "absent.json"))
    assert code == 2 and "does not exist" in err
    code, _, err = run("critical-path")
    assert code == 2 and "Missing argument" in err


def test_features_json_and_table() -> None:
    files = [str(f) for f in deathstarbench_files()]
    code, out, _ = run("features", "--min-samples", "3", *files)
    assert code == 0
    doc = json.loads(out)
    assert doc["window"]["requests"] == 12
    assert set(doc["instances"][0]) == {
        "service",
        "instance",
        "samples",
        "onPathRatio",
        "ri",
        "ci",
        "p50",
        "p99",
        "mean",
        "cpShare",
        "flags",
    }
    rare = [i for i in doc["instances"] if i["samples"] < 3]
    assert rare and all(i["ri"] is None and i["flags"] == ["too_few_samples"] for i in rare)
    code, out, _ = run("features", "--format", "table", "--min-samples", "3", *files)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("12 requests; end-to-end critical-path latency p50")
    assert lines[1].split() == [
        "service",
        "instance",
        "samples",
        "RI",
        "CI",
        "p50",
        "ms",
        "p99",
        "ms",
        "share",
        "flags",
    ]


def test_features_argument_errors() -> None:
    f = str(deathstarbench_files()[0])
    code, _, err = run("features")
    assert code == 2 and "give trace FILES, or --jaeger-url with --service" in err
    code, _, err = run("features", "--jaeger-url", "http://localhost:1", f)
    assert code == 2 and "not both" in err
    code, _, err = run("features", "--jaeger-url", "http://localhost:1")
    assert code == 2 and "--jaeger-url needs --service" in err
    code, _, err = run("features", "--window", "5m", f)
    assert code == 2 and "apply to --jaeger-url only" in err
    code, _, err = run("features", "--jaeger-url", "http://localhost:1", "--service", "s", "--window", "soon")
    assert code == 2 and "--window" in err


def test_features_from_an_unreachable_jaeger_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    code, _, err = run("features", "--jaeger-url", "http://127.0.0.1:9", "--service", "s", "--retries", "0")
    assert code == 1
    assert "cannot reach Jaeger at http://127.0.0.1:9/api/traces?service=s" in err
