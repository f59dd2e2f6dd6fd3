"""`firm localize`, `firm localize-dataset`, `firm train-svm` and `firm localize-eval` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.localize.synthetic import graphs, make_case
from tests.unit.localize.helpers import dsb_dir


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def case_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("case")
    case = make_case(graphs(["hotel"])["hotel"], "network_delay", 11)
    after, before = tmp / "after.json", tmp / "before.json"
    after.write_text(json.dumps(case.window))
    before.write_text(json.dumps(case.reference))
    assert case.culprit is not None
    return after, before, case.culprit


def test_localize_json_ranks_the_culprit_first(case_files: tuple[Path, Path, tuple[str, str]]) -> None:
    after, before, culprit = case_files
    code, out, _ = run("localize", str(after), "--reference", str(before), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    first = doc["instances"][0]
    assert set(first) == {"service", "instance", "score", "culprit", "features"}
    assert (first["service"], first["instance"]) == culprit
    assert first["culprit"] is True
    scores = [i["score"] for i in doc["instances"]]
    assert scores == sorted(scores, reverse=True)
    assert doc["referenceUsed"] is True


def test_localize_table_shows_what_drove_the_score(case_files: tuple[Path, Path, tuple[str, str]]) -> None:
    after, before, culprit = case_files
    code, out, _ = run(
        "localize", str(after), "--reference", str(before), "--format", "table", "--top", "3", "--rules"
    )
    assert code == 0
    lines = out.splitlines()
    assert "reference:" in lines[0] and "method: rules" in lines[0]
    assert culprit[0] in lines[2] and "calls in +" in lines[2]
    assert "more instances" in lines[-1]


def test_localize_without_reference_says_so(case_files: tuple[Path, Path, tuple[str, str]]) -> None:
    after, _, _ = case_files
    code, out, _ = run("localize", str(after))
    assert code == 0
    doc = json.loads(out)
    assert doc["referenceUsed"] is False and "no_reference" in doc["flags"]
    code, out, _ = run("localize", str(after), "--format", "table")
    assert "no reference window" in out


def test_localize_on_recorded_deathstarbench_traces() -> None:
    files = sorted(dsb_dir().glob("compose-post_R1000*.json"))
    ref = sorted(dsb_dir().glob("compose-post_R500*.json"))
    code, out, _ = run("localize", *map(str, files), *[a for f in ref for a in ("--reference", str(f))])
    assert code == 0
    doc = json.loads(out)
    assert {i["service"] for i in doc["instances"]} >= {"compose-post-service", "text-service"}
    assert "few_requests" in doc["flags"]


def test_reference_takes_every_file_up_to_the_next_option() -> None:
    files = [str(f) for f in sorted(dsb_dir().glob("compose-post_R1000*.json"))]
    ref = [str(f) for f in sorted(dsb_dir().glob("compose-post_R500*.json"))]
    code, out, _ = run("localize", *files, "--reference", *ref, "--format", "json")
    assert code == 0
    window = json.loads(out)["window"]
    assert (window["requests"], window["referenceRequests"]) == (3, 3)


def _field(name: str) -> str:
    from tests.unit.tracing.shared_data import data_dir  # noqa: PLC0415

    return str(data_dir("field-traces", name))


@pytest.mark.parametrize("order", ["lines first", "lines last"])
def test_a_json_lines_file_among_several_is_not_warned_of(order: str) -> None:
    """A JSON Lines (OTLP) file's traces come from ``FILE:LINE``: they are FILE's, so FILE gave traces."""
    files = [_field("otlp-file-exporter.jsonl"), _field("split-trace-part1.json")]
    if order == "lines last":
        files.reverse()
    code, out, err = run("localize", "--rules", *files)
    assert code == 0, err
    assert "no trace in this file" not in err
    assert json.loads(out)["instances"]
    # the same in the reference window
    code, _, err = run("localize", "--rules", _field("split-trace-part2.json"), "--reference", *files)
    assert code == 0 and "no trace in this file" not in err


def test_the_file_without_traces_beside_a_json_lines_file_is_named_once(tmp_path: Path) -> None:
    lines = _field("otlp-file-exporter.jsonl")
    empty = tmp_path / "empty.json"
    empty.write_text('{"data": []}')
    code, _, err = run("localize", "--rules", lines, str(empty), lines)
    assert code == 0, err
    assert err.count("no trace in this file") == 1
    assert (
        f"warning: window: {empty}: no trace in this file (an empty answer or export, or every span "
        "refused); the window is that of the other files"
    ) in err
    code, _, err = run("localize", "--rules", lines, "--reference", lines, str(empty))
    assert code == 0, err
    assert f"warning: reference: {empty}: no trace in this file" in err
    assert "the reference is that of the other files" in err and err.count("no trace in this file") == 1


def test_files_that_all_hold_no_trace_are_an_error_without_other_files_warning(tmp_path: Path) -> None:
    """No window at all: an error, not a warning that the window is that of the other files."""
    empty, other = tmp_path / "empty.json", tmp_path / "empty-list.json"
    empty.write_text('{"data": []}')
    other.write_text("[]")
    code, _, err = run("localize", "--rules", str(empty), str(other))
    assert code == 1 and "no traces" in err
    assert "the other files" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"data": []}', "no traces"),
        ("not json at all", "window"),
    ],
)
def test_bad_windows_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "w.json"
    f.write_text(content)
    code, _, err = run("localize", str(f))
    assert code == 1
    assert message in err and "Error:" in err


def test_a_reference_from_another_app_is_a_clear_error(
    tmp_path: Path, case_files: tuple[Path, Path, tuple[str, str]]
) -> None:
    after, _, _ = case_files
    other = make_case(graphs(["boutique"])["boutique"], "none", 3)
    f = tmp_path / "other.json"
    f.write_text(json.dumps(other.reference))
    code, _, err = run("localize", str(after), "--reference", str(f))
    assert code == 1 and "share no service instance" in err


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("garbage", "not JSON"),
        ('{"format": "firm-culprit-svm", "version": 7, "features": []}', "newer than this firm reads"),
        (
            '{"format": "firm-culprit-svm", "version": 1, "features": ["x"], "scaler": {"mean": [0], "scale": [1]},'
            ' "coef": [1], "intercept": 0}',
            "does not compute: x",
        ),
    ],
)
def test_bad_models_are_clear_errors(
    tmp_path: Path, case_files: tuple[Path, Path, tuple[str, str]], model: str, message: str
) -> None:
    after, before, _ = case_files
    m = tmp_path / "m.json"
    m.write_text(model)
    code, _, err = run("localize", str(after), "--reference", str(before), "--model", str(m))
    assert code == 1 and message in err


def test_usage_errors(case_files: tuple[Path, Path, tuple[str, str]]) -> None:
    after, _, _ = case_files
    assert run("localize")[0] == 2
    assert run("localize", str(after), "--rules", "--baseline")[0] == 2
    assert run("localize", "--jaeger-url", "http://127.0.0.1:9")[0] == 2  # no --service
    assert run("localize", str(after), "--service", "frontend")[0] == 2  # --service without --jaeger-url
    assert run("localize", str(after), "--jaeger-url", "http://127.0.0.1:9", "--service", "x")[0] == 2
    code, _, err = run("localize", "--jaeger-url", "http://127.0.0.1:9", "--service", "x", "--window", "0s")
    assert code == 2 and "longer than zero" in err


def test_dataset_train_and_eval(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    code, out, _ = run(
        "localize-dataset", "--out", str(ds), "--synthetic", "3", "--graphs", "boutique,hotel", "--seed", "5"
    )
    assert code == 0, out
    summary = json.loads(out)
    assert summary["positives"] == 18 and (ds / "manifest.json").is_file()
    manifest = json.loads((ds / "manifest.json").read_text())
    assert manifest["source"] == "synthetic" and manifest["rows"] == summary["rows"]
    model = tmp_path / "m.json"
    code, out, _ = run(
        "train-svm", "--from", str(ds), "--out", str(model), "--holdout-graph", "hotel", "--epochs", "5"
    )
    assert code == 0, out
    doc = json.loads(model.read_text())
    assert doc["format"] == "firm-culprit-svm" and doc["data"]["source"] == "synthetic"
    assert set(doc["metrics"]["heldOut"]) == {"svm", "rules", "cp_share_growth", "firm_ri"}
    code, out, _ = run("localize-eval", "--dataset", str(ds), "--model", str(model), "--format", "json")
    assert code == 0
    res = json.loads(out)["results"]
    for method in ("svm", "rules", "cp_share_growth"):
        assert 0.0 <= res[method]["top1"] <= res[method]["top3"] <= 1.0
    code, out, _ = run("localize-eval", "--dataset", str(ds), "--model", str(model))
    assert code == 0 and "SVM top-1 minus cp_share-growth baseline" in out


def test_train_on_one_class_is_a_clear_error(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    assert run("localize-dataset", "--out", str(ds), "--synthetic", "1", "--graphs", "hotel")[0] == 0
    table = pq.read_table(ds / "windows.parquet")
    table = table.set_column(table.column_names.index("label"), "label", pa.array([0] * table.num_rows))
    pq.write_table(table, ds / "windows.parquet")
    code, _, err = run("train-svm", "--from", str(ds), "--out", str(tmp_path / "m.json"))
    assert code == 1 and "only innocent instances" in err


def test_dataset_needs_one_source(tmp_path: Path) -> None:
    assert run("localize-dataset", "--out", str(tmp_path / "x"))[0] == 2
    code, _, err = run(
        "localize-dataset", "--out", str(tmp_path / "x"), "--synthetic", "1", "--graphs", "nope"
    )
    assert code == 2 and "unknown graph" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kinds", "earthquake"], "unknown or unsupported kinds"),
        (["--targets", "nowhere"], "unknown services"),
        (["--intensity", "150"], "0-100"),
        (["--plan", "cpu/text"], "KIND/SERVICE/INTENSITY"),
        (["--plan", "cpu/nowhere/50"], "unknown services"),
        (["--plan", "earthquake/text/50"], "unknown or unsupported kinds"),
        (["--plan", "cpu/text/150"], "0-100"),
    ],
)
def test_testbed_dataset_checks_its_arguments_before_touching_anything(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, _, err = run("localize-testbed-dataset", "--out", str(tmp_path / "ds"), *args)
    assert code == 2 and message in err
    assert not (tmp_path / "ds").exists()
