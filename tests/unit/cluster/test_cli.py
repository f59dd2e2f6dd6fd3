"""``firm cluster`` with a real kubeconfig pointing at the local server of recorded answers."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from firm.cli import main
from tests.unit.cluster.fixture_server import FixtureServer, data_file
from tests.unit.cluster.kube_api import serve_pods


def kubeconfig(tmp_path: Path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: local, cluster: {{server: "{server}"}}}}]
users: [{{name: firm, user: {{token: test-token}}}}]
contexts: [{{name: local, context: {{cluster: local, user: firm}}}}]
current-context: local
""")
    return str(path)


def test_lists_the_pods_with_cgroups_and_counters(fixture_server: FixtureServer, tmp_path: Path) -> None:
    serve_pods(fixture_server)
    fixture_server.answer(
        "GET",
        "/api/v1/nodes/datagen-1-35/proxy/metrics/cadvisor",
        200,
        data_file("cadvisor/kubelet-metrics-cadvisor_k8s-v1.35.0_containerd_trimmed.txt"),
        "text/plain; version=0.0.4",
    )
    result = CliRunner().invoke(
        main,
        [
            "cluster",
            "--kubeconfig",
            kubeconfig(tmp_path, fixture_server.url),
            "--service",
            "sts=scraper:app=statefulset",
            "--service",
            "dns=kube-system:k8s-app=kube-dns",
            "--metrics",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["name"] for r in rows] == ["coredns-7d764666f9-qdcxt", "e2e-statefulset-1"]
    assert rows[1]["cgroup"] == "kubepods/burstable/podb74071bf-fab2-44d0-9850-55ff20eda8c3"
    assert rows[1]["counters"]["throttled_periods"] == 271
    assert fixture_server.sent("GET")[0].headers["authorization"] == "Bearer test-token"
    table = CliRunner().invoke(
        main,
        [
            "cluster",
            "--kubeconfig",
            kubeconfig(tmp_path, fixture_server.url),
            "--service",
            "sts=scraper:app=statefulset",
        ],
    )
    assert table.exit_code == 0 and "1 pods of 1 services" in table.output  # folded to the terminal width


def test_errors_are_messages_not_tracebacks(fixture_server: FixtureServer, tmp_path: Path) -> None:
    fixture_server.answer(
        "GET", "/api/v1/namespaces/scraper/pods", 403, data_file("kubernetes/status-403-forbidden_gke.json")
    )
    config = kubeconfig(tmp_path, fixture_server.url)
    refused = CliRunner().invoke(main, ["cluster", "--kubeconfig", config, "--service", "s=scraper:app=x"])
    assert refused.exit_code == 1 and "HTTP 403" in refused.output and "RBAC" in refused.output
    bad = CliRunner().invoke(main, ["cluster", "--kubeconfig", config, "--service", "nonsense"])
    assert bad.exit_code == 2 and "NAME=NAMESPACE:SELECTOR" in bad.output
    none = CliRunner().invoke(main, ["cluster", "--kubeconfig", config])
    assert none.exit_code == 2 and "--service" in none.output
    broken = tmp_path / "broken"
    broken.write_text("clusters: [")
    unreadable = CliRunner().invoke(main, ["cluster", "--kubeconfig", str(broken), "--service", "s=ns:app=x"])
    assert (
        unreadable.exit_code == 1
        and "credentials" in unreadable.output
        and "Traceback" not in unreadable.output
    )
    services = tmp_path / "services.yml"
    services.write_text("services:\n  s:\n    namespace: Bad_NS\n    selector: app=x\n")
    invalid = CliRunner().invoke(main, ["cluster", "--kubeconfig", config, "--services", str(services)])
    assert invalid.exit_code == 1 and "namespace" in invalid.output
