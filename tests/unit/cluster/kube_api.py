"""Helpers for the Kubernetes tests: a client of the fixture server, and the recorded pods served
as an API server would serve them (the label selector applied)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as kube_client

from tests.unit.cluster.fixture_server import FixtureServer, Reply, Request, data_file

PODLIST = "kubernetes/kubelet-pods_PodList_k8s-v1.35.0_trimmed.json"


def api(server: FixtureServer) -> kube_client.ApiClient:
    configuration = kube_client.Configuration(host=server.url)
    configuration.retries = 0
    return kube_client.ApiClient(configuration)


def recorded_pods() -> dict[str, Any]:
    """The kubelet's recorded v1.35 PodList (same core/v1 schema as the API server's list)."""
    doc: dict[str, Any] = json.loads(data_file(PODLIST).read_bytes())
    return doc


def _matches(labels: dict[str, str], selector: str) -> bool:
    """Equality-based selectors (``a=b,c!=d``), as the API server applies them."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        else:
            key, value = term.split("==", 1) if "==" in term else term.split("=", 1)
            if labels.get(key) != value:
                return False
    return True


def serve_pods(server: FixtureServer) -> None:
    """``GET /api/v1/namespaces/{ns}/pods`` for every namespace of the recording: the recorded pods
    of that namespace, filtered by the request's label selector (the filtering is this helper's;
    every object served is recorded, unchanged)."""
    doc = recorded_pods()
    namespaces = {item["metadata"]["namespace"] for item in doc["items"]}
    for namespace in namespaces:

        def handler(request: Request, namespace: str = namespace) -> Reply:
            selector = request.query.get("labelSelector", [""])[0]
            items = [
                i
                for i in doc["items"]
                if i["metadata"]["namespace"] == namespace
                and _matches(i["metadata"].get("labels", {}), selector)
            ]
            return Reply(
                200,
                json.dumps(
                    {"kind": "PodList", "apiVersion": "v1", "metadata": doc["metadata"], "items": items}
                ).encode(),
            )

        server.route("GET", f"/api/v1/namespaces/{namespace}/pods", handler)


NODES = Path(__file__).resolve().parent / "data" / "nodes_k8s-v1.35.0_kubectl.yaml"


def recorded_nodes() -> list[dict[str, Any]]:
    """The recorded v1.35 Node objects (``kubectl get nodes -o yaml``, see data/README.md)."""
    items: list[dict[str, Any]] = yaml.safe_load(NODES.read_text())["items"]
    return items


def serve_nodes(server: FixtureServer) -> None:
    """``GET /api/v1/nodes``: the recorded Node objects, unchanged, in a ``NodeList`` (kubectl's
    ``List`` wrapper replaced by the API server's)."""
    body = json.dumps(
        {
            "kind": "NodeList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "825"},
            "items": recorded_nodes(),
        }
    ).encode()
    server.answer("GET", "/api/v1/nodes", 200, body)
