"""A fifth round of inputs from the field, to firm's commands and the files they read: campaign records
that are not what firm's campaigns write (a line that is no object, labels that are no mapping, an
intensity in words, an endless duration, bytes that are not UTF-8)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from firm.cli import main
from tests.unit.tracing.shared_data import data_dir

PYTHON_TEXT = re.compile(
    r"Traceback|unexpected [A-Z]\w+|\b(Value|Type|Attribute|Key|Index|Unicode\w*|OS|Overflow|Recursion)Error\b"
    r"|\[Errno|codec can't|object has no attribute|invalid literal"
)
T0_S = 1_764_500_000.0


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert not PYTHON_TEXT.search(result.output), result.output
    return result.exit_code, result.output


# -- campaign records -------------------------------------------------------------------------------------


def _started(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "event": "started",
        "campaign": "c1",
        "name": "a",
        "kind": "cpu",
        "intensity": 80,
        "duration_s": 60,
        "labels": {"campaign": "c1", "service": "geo"},
        "started_at": T0_S,
        "expires_at": T0_S + 60,
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not ...}


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"[1, 2]\n", "c1.jsonl:2 is a JSON list, not an entry"),
        (b'"started"\n', "c1.jsonl:2 is a JSON text, not an entry"),
        (json.dumps(_started(labels=["geo"])).encode() + b"\n", "labels is a JSON list"),
        (json.dumps(_started(labels={"service": {"name": "geo"}})).encode() + b"\n", "service {'name'"),
        (json.dumps(_started(intensity="high")).encode() + b"\n", "intensity 'high' is not a number from 0"),
        (json.dumps(_started(intensity=250)).encode() + b"\n", "intensity 250 is not a number from 0"),
        (
            b'{"event": "started", "name": "a", "labels": {"service": "geo"}, "started_at": 1764500000, '
            b'"duration_s": 1e400}\n',
            "neither expires_at nor duration_s is usable",
        ),
        (b"\xff\xfe{}\n", "c1.jsonl:2: not UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000 + b"\n", "c1.jsonl:2: JSON nested too deeply"),
    ],
    ids=[
        "list",
        "text",
        "labels-list",
        "service-mapping",
        "intensity-word",
        "intensity-250",
        "endless",
        "not-utf8",
        "deep",
    ],
)
def test_a_campaign_record_firm_did_not_write_is_refused_naming_the_line(
    tmp_path: Path, line: bytes, words: str
) -> None:
    """Each of these was an 'unexpected ...Error: this is a bug in firm' (or, for a service that is a
    mapping, a service silently named "{'name': 'geo'}"); now the file and line and the field are named."""
    record = tmp_path / "c1.jsonl"
    record.write_bytes(json.dumps(_started(name="ok")).encode() + b"\n" + line)
    code, output = invoke(
        "localize-dataset",
        "--out",
        str(tmp_path / "ds"),
        "--campaign",
        str(record),
        "--traces",
        str(data_dir("field-traces", "same-trace-twice.json")),
    )
    assert code == 1, output
    assert words in " ".join(output.split()), output
    assert "c1.jsonl" in output and "Fix:" in output
    assert not (tmp_path / "ds").exists()


def test_a_campaign_record_as_firm_writes_it_still_labels(tmp_path: Path) -> None:
    from firm.localize.labels import read_campaign_file  # noqa: PLC0415

    record = tmp_path / "c1.jsonl"
    entries = [
        {"event": "planned", "campaign": "c1", "schedule": []},
        _started(
            labels=json.dumps({"service": "geo", "instance": "geo-1"}), intensity=None
        ),  # as Redis keeps it
        _started(name="b", intensity=55.0, labels={"service": "user"}),
        _started(name="c", intensity="30", labels={"service": "user"}),
    ]
    record.write_text("\n".join(json.dumps(e) for e in entries) + "\n\n")
    got = {i.name: (i.target, i.intensity) for i in read_campaign_file(record)}
    assert got == {"a": (("geo", "geo-1"), 0), "b": (("user", "user"), 55), "c": (("user", "user"), 30)}


# -- Kubernetes names in a service spec ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("a=default:app=a:Compose_Post", "deployment 'Compose_Post' is not a Deployment name"),
        ("a=default:app=a:compose-post-", "deployment 'compose-post-' is not a Deployment name"),
        (f"a=default:app=a:{'d' * 254}", "is not a Deployment name"),
        (f"a={'n' * 64}:app=a", "is not a namespace name"),
    ],
)
def test_a_kubernetes_name_no_cluster_takes_is_refused_before_connecting(
    tmp_path: Path, spec: str, words: str
) -> None:
    """A Deployment's name was first used when the loop scaled out, in the middle of a run (a 404 or
    422 then); a 64-character namespace passed the namespace check."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nclusters: []\n")  # no context: reading it would fail
    code, output = invoke("cluster", "--kubeconfig", str(kubeconfig), "--service", spec)
    assert code == 1 and words in " ".join(output.split()), output
    assert "credentials" not in output  # refused before the kubeconfig is read


def test_a_cluster_file_checks_its_deployment_names(tmp_path: Path) -> None:
    from firm.cluster.run import ClusterRunConfigError, load_config  # noqa: PLC0415

    path = tmp_path / "cluster.yml"
    text = (
        "services: {{a: {{namespace: default, selector: app=a, deployment: {}}}}}\n"
        "jaeger_url: http://jaeger:16686\nentry_services: [a]\n"
    )
    path.write_text(text.format("'web.v2'"))
    assert load_config(path).service_specs()[0].deployment == "web.v2"
    path.write_text(text.format("Web"))
    with pytest.raises(ClusterRunConfigError, match="deployment 'Web' is not a Deployment name"):
        load_config(path)
