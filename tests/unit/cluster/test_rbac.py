"""RBAC checks of ``firm preflight --cluster``: one SelfSubjectAccessReview per permission that
``firm run --cluster`` uses, posted by the real ``kubernetes`` client to a local server.

What the server answers (see data/README.md): the review's answer for an allowed and for a refused
permission is **constructed** (no licensed recording exists), laid out as the API server's code
builds it, with each request's ``spec`` echoed as the server does; the 403 for a review the server
refuses is the recorded API-server body; an API server without the route answers the fixture
server's 404 Status.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.cluster.config import ServiceSpec
from firm.cluster.preflight import cluster_preflight
from firm.cluster.rbac import Permission, needed, rbac_report, review
from firm.cluster.run import load_config
from tests.unit.cluster.fixture_server import FixtureServer, Reply, Request, data_file
from tests.unit.cluster.kube_api import api, serve_nodes
from tests.unit.cluster.test_cli import kubeconfig
from tests.unit.cluster.test_preflight import recorded_events, replay, replay_the_hosts
from tests.unit.cluster.test_run import CLUSTER_FILE, cluster_file

DATA = Path(__file__).resolve().parent / "data"
REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"

Attributes = dict[str, str]


def answer(allowed: bool) -> dict[str, Any]:
    name = "allowed" if allowed else "denied"
    doc: dict[str, Any] = json.loads((DATA / f"selfsubjectaccessreview_{name}_constructed.json").read_text())
    return doc


def serve_reviews(server: FixtureServer, allows: Callable[[Attributes], bool]) -> None:
    """``POST .../selfsubjectaccessreviews``: 201 with the allowed or the refused answer, the
    request's spec echoed in it (as the API server returns the object it was given)."""

    def handle(request: Request) -> Reply:
        sent = request.json()
        attributes: Attributes = sent["spec"]["resourceAttributes"]
        body = answer(allows(attributes))
        body["spec"] = sent["spec"]
        return Reply(201, json.dumps(body).encode())

    server.route("POST", REVIEWS, handle)


def role_in(namespace: str) -> Callable[[Attributes], bool]:
    """What a Role in ``namespace`` granting only ``list`` and ``get`` on ``pods`` allows."""

    def allows(a: Attributes) -> bool:
        return (
            a.get("namespace") == namespace
            and a.get("resource") == "pods"
            and not a.get("subresource")
            and a.get("verb") in ("list", "get")
        )

    return allows


def sent_attributes(server: FixtureServer) -> list[Attributes]:
    found: list[Attributes] = [r.json()["spec"]["resourceAttributes"] for r in server.sent("POST", REVIEWS)]
    return found


SERVICES = [
    ServiceSpec("statefulset", "scraper", "app=statefulset", "e2e-deployment"),
    ServiceSpec("dns", "kube-system", "k8s-app=kube-dns"),
]


def test_what_firm_needs_follows_the_cluster_file() -> None:
    kinds = {(p.verb, p.name, p.namespace) for p in needed(SERVICES)}
    for namespace in ("scraper", "kube-system"):
        assert {
            ("list", "pods", namespace),
            ("get", "pods", namespace),
            ("patch", "pods/resize", namespace),
        } <= kinds
    # only the namespace with a Deployment needs its scale; firm reads it and PUTs it back (update)
    assert ("get", "deployments/scale", "scraper") in kinds and (
        "update",
        "deployments/scale",
        "scraper",
    ) in kinds
    assert not any(name == "deployments/scale" and ns == "kube-system" for _, name, ns in kinds)
    assert ("list", "nodes", None) in kinds and ("get", "nodes/proxy", None) in kinds
    assert ("get", "nodes/proxy", None) not in {
        (p.verb, p.name, p.namespace) for p in needed(SERVICES, telemetry="cadvisor")
    }
    unknown = needed(None)
    assert {p.namespace for p in unknown if p.resource in ("pods", "deployments")} == {""}  # every namespace
    optional = {p.name for p in needed(SERVICES) if not p.required}
    assert optional == {"deployments/scale", "nodes"}  # without them the run goes on, one feature less


def test_everything_allowed(fixture_server: FixtureServer) -> None:
    serve_reviews(fixture_server, lambda a: True)
    report = rbac_report(api(fixture_server), needed(SERVICES))
    assert report["ready"] and report["error"] is None and report["missing"] == []
    assert len(report["checked"]) == len(needed(SERVICES))
    assert report["checked"][0]["reason"].startswith("RBAC: allowed by RoleBinding")
    # what the real client posted: one review per permission, with the subresource and the group
    sent = sent_attributes(fixture_server)
    assert {
        "namespace": "scraper",
        "verb": "patch",
        "resource": "pods",
        "subresource": "resize",
        "group": "",
    } in sent
    assert {
        "namespace": "scraper",
        "verb": "update",
        "group": "apps",
        "resource": "deployments",
        "subresource": "scale",
    } in sent
    assert {"verb": "list", "resource": "nodes", "group": ""} in sent  # cluster-scoped: no namespace


def test_each_missing_permission_comes_with_its_rule(fixture_server: FixtureServer) -> None:
    serve_reviews(fixture_server, role_in("scraper"))
    report = rbac_report(api(fixture_server), needed(SERVICES[:1]))
    assert not report["ready"]  # the resize is required
    missing = {(m["verb"], m["resource"]): m for m in report["missing"]}
    assert set(missing) == {
        ("patch", "pods/resize"),
        ("get", "deployments/scale"),
        ("update", "deployments/scale"),
        ("list", "nodes"),
        ("get", "nodes/proxy"),
    }
    resize = missing[("patch", "pods/resize")]
    assert resize["required"] and resize["namespace"] == "scraper"
    assert 'resources: ["pods/resize"], verbs: ["patch"]' in resize["fix"]
    assert "Role in namespace scraper" in resize["fix"] and "RoleBinding" in resize["fix"]
    scale = missing[("update", "deployments/scale")]
    assert not scale["required"] and 'apiGroups: ["apps"]' in scale["fix"]
    nodes = missing[("list", "nodes")]
    assert "ClusterRole" in nodes["fix"] and "ClusterRoleBinding" in nodes["fix"]
    assert "reason" not in nodes  # RBAC gives no reason when no rule matches


def test_a_denial_and_an_evaluation_error_are_kept(fixture_server: FixtureServer) -> None:
    def handle(request: Request) -> Reply:
        body = answer(False)
        body["spec"] = request.json()["spec"]
        body["status"].update(denied=True, reason="webhook: firm is not on call", evaluationError="cel: x")
        return Reply(201, json.dumps(body).encode())

    fixture_server.route("POST", REVIEWS, handle)
    access = review(api(fixture_server), Permission("list", "nodes"))
    assert not access.allowed and access.denied and access.reason == "webhook: firm is not on call"
    assert access.as_dict()["evaluation_error"] == "cel: x"


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (403, "status-403-forbidden_apiserver-golden.json", "RBAC"),  # the review itself refused
        (404, None, "404"),  # no authorization.k8s.io/v1 on this server
    ],
)
def test_a_review_that_cannot_be_made_is_reported_not_raised(
    fixture_server: FixtureServer, status: int, body: str | None, words: str
) -> None:
    if body is not None:
        fixture_server.answer("POST", REVIEWS, status, data_file(f"kubernetes/{body}").read_bytes())
    report = rbac_report(api(fixture_server), needed(SERVICES))
    assert not report["ready"] and report["checked"] == [] and words in report["error"]
    assert "asking whether firm may list pods in namespace kube-system" in report["error"]


def test_preflight_is_not_ready_without_a_required_permission(fixture_server: FixtureServer) -> None:
    serve_nodes(fixture_server)
    serve_reviews(fixture_server, lambda a: a.get("subresource") != "resize")
    report = cluster_preflight(
        None, api=api(fixture_server), run=replay(recorded_events()), services=SERVICES
    )
    assert report["nodes"][0]["node"] == "datagen-1-35"
    assert report["rbac"]["namespaces"] == ["kube-system", "scraper"]
    assert [m["resource"] for m in report["rbac"]["missing"]] == ["pods/resize", "pods/resize"]
    assert not report["ready"]  # the node's CPU can be set, but firm may not resize
    without_api = cluster_preflight(None, run=replay(recorded_events()))
    assert without_api["rbac"] is None


def test_the_command_with_the_cluster_file(
    fixture_server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_nodes(fixture_server)
    serve_reviews(fixture_server, role_in("scraper"))
    replay_the_hosts(monkeypatch)
    config = kubeconfig(tmp_path, fixture_server.url)
    path = cluster_file(tmp_path, fixture_server.url)
    assert load_config(path).telemetry == "kubelet"
    base = ["preflight", "--cluster", "--kubeconfig", config, "--cluster-file", str(path)]
    done = CliRunner().invoke(main, [*base, "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["rbac"]["namespaces"] == ["kube-system", "scraper"] and not report["ready"]
    missing = {(m["verb"], m["resource"], m["namespace"]) for m in report["rbac"]["missing"]}
    assert ("list", "pods", "kube-system") in missing and ("list", "pods", "scraper") not in missing
    assert report["nodes"][0]["host"] == "localhost"  # the cluster file's nodes: mapping is used
    table = CliRunner().invoke(main, base)
    assert table.exit_code == 0, table.output
    assert "What firm may do through the API" in table.output and "not ready" in table.output
    assert "Role in namespace" in table.output
    cadvisor = tmp_path / "cadvisor.yml"
    cadvisor.write_text(CLUSTER_FILE.replace("JAEGER", fixture_server.url) + "telemetry: cadvisor\n")
    done = CliRunner().invoke(main, [*base[:-1], str(cadvisor), "--json"])
    assert done.exit_code == 0, done.output
    assert "nodes/proxy" not in {m["resource"] for m in json.loads(done.output)["rbac"]["checked"]}
