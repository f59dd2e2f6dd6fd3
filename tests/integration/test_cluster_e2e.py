"""Opt-in: firm on a real Kubernetes cluster (docs/cluster.md, "The end-to-end suite on a real cluster").

Runs only when ``FIRM_E2E_INVENTORY`` (the inventory ``site.yml`` provisioned the nodes with) and
``KUBECONFIG`` (a kubeconfig of that cluster, allowed to create a namespace) are set; skipped with
that reason otherwise (here: no API server can run on the development machine).

The suite makes its own namespace ``firm-e2e-<random>`` with a one-replica Deployment
``firm-e2e`` (one ``pause`` container, CPU 100m-200m, memory 32-64 Mi, resize without restart) and
deletes the namespace at the end, waiting until it is gone. Against it, for real:

- discovery: the pod, its node, QoS class, container ID and cgroup paths, the node in the list;
- telemetry: the kubelet's ``/metrics/cadvisor`` through the API server, sampled into ``Sample``s;
- ``firm preflight --cluster`` with the suite's cluster file: every node reported, the RBAC
  reviews answered;
- ``firm run --cluster --dry-run`` for 20 s (needs ``FIRM_E2E_JAEGER_URL``, Jaeger's query API as
  this machine reaches it): the loop runs, audits its steps and changes no limit;
- the Kubernetes executor: CPU and memory by in-place resize (kubelet 1.33 or later), then the
  snapshot restored;
- scale-out to two replicas and back through the Deployment's ``scale`` subresource.

Every wait polls with a deadline. Optional: ``FIRM_E2E_IMAGE`` (default
``registry.k8s.io/pause:3.10``, for clusters that pull through a mirror).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.helpers import measure

ROOT = Path(__file__).resolve().parents[2]
FIRM = ROOT / ".venv" / "bin" / "firm"
INVENTORY = os.environ.get("FIRM_E2E_INVENTORY")
KUBECONFIG = os.environ.get("KUBECONFIG")
JAEGER_URL = os.environ.get("FIRM_E2E_JAEGER_URL")
IMAGE = os.environ.get("FIRM_E2E_IMAGE", "registry.k8s.io/pause:3.10")
LABEL = "app=firm-e2e"
DEPLOYMENT = "firm-e2e"

pytestmark = [
    pytest.mark.skipif(
        not (INVENTORY and KUBECONFIG),
        reason="opt-in: set FIRM_E2E_INVENTORY (the inventory site.yml provisioned) and KUBECONFIG "
        "(that cluster's) to run firm on a real cluster (docs/cluster.md)",
    ),
    pytest.mark.timeout(900),
]

T = TypeVar("T")


def poll(what: str, probe: Callable[[], T | None], deadline_s: float = 180.0, every_s: float = 2.0) -> T:
    """``probe()`` until it returns something other than None (:func:`tests.helpers.measure.poll`),
    or fail naming ``what`` and the last error after ``deadline_s``."""
    errors: list[Exception] = []

    def read() -> T | None:
        try:
            return probe()
        except Exception as exc:  # a transient API error is retried until the deadline
            errors.append(exc)
            return None

    polled = measure.poll(read, lambda found: found is not None, deadline_s, every_s)
    if polled.value is None:
        pytest.fail(f"{what}: not within {deadline_s:.0f} s (last error: {errors[-1] if errors else None})")
    return polled.value


@dataclass(frozen=True)
class Cluster:
    api: Any
    namespace: str
    spec: Any
    """The test Deployment as a firm ServiceSpec."""
    cluster_file: Path


def deployment(namespace: str) -> Any:
    """The test Deployment's manifest (the client sends a dict body as it is)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": namespace, "labels": {"app": "firm-e2e"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "firm-e2e"}},
            "template": {
                "metadata": {"labels": {"app": "firm-e2e"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "app",
                            "image": IMAGE,
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "32Mi"},
                                "limits": {"cpu": "200m", "memory": "64Mi"},
                            },
                            "resizePolicy": [
                                {"resourceName": "cpu", "restartPolicy": "NotRequired"},
                                {"resourceName": "memory", "restartPolicy": "NotRequired"},
                            ],
                        }
                    ],
                },
            },
        },
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from kubernetes import client as kube_client  # noqa: PLC0415 (only when the suite runs)
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    from firm.cluster.config import ServiceSpec, api_client  # noqa: PLC0415
    from firm.cluster.discovery import Discovery  # noqa: PLC0415

    api = api_client(KUBECONFIG)
    core, apps = kube_client.CoreV1Api(api), kube_client.AppsV1Api(api)
    namespace = f"firm-e2e-{secrets.token_hex(3)}"
    core.create_namespace(
        kube_client.V1Namespace(
            metadata=kube_client.V1ObjectMeta(name=namespace, labels={"firm.io/e2e": "true"})
        )
    )
    try:
        apps.create_namespaced_deployment(namespace, deployment(namespace))
        spec = ServiceSpec("e2e", namespace, LABEL, DEPLOYMENT)
        poll(
            "the test pod running with its container started",
            lambda: (
                True
                if [p for p in Discovery(api, [spec]).pods() if all(c.container_id for c in p.containers)]
                else None
            ),
        )
        path = tmp_path_factory.mktemp("e2e") / "cluster.yml"
        path.write_text(
            json.dumps(  # JSON is YAML
                {
                    "services": {
                        "e2e": {"namespace": namespace, "selector": LABEL, "deployment": DEPLOYMENT}
                    },
                    "jaeger_url": JAEGER_URL or "http://127.0.0.1:16686",
                    "entry_services": ["e2e"],
                    "slo_ms": {"e2e": 100},
                    "slo_window_s": 4,
                    "max_replicas": 2,
                }
            )
        )
        yield Cluster(api, namespace, spec, path)
    finally:
        core.delete_namespace(namespace, propagation_policy="Foreground")

        def gone() -> bool | None:
            try:
                core.read_namespace(namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return True
                raise
            return None

        poll(f"namespace {namespace} deleted", gone, deadline_s=300)


def the_pod(c: Cluster) -> Any:
    from firm.cluster.discovery import Discovery  # noqa: PLC0415

    (pod,) = Discovery(c.api, [c.spec]).pods()
    return pod


def firm(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FIRM), *args], capture_output=True, text=True, timeout=timeout_s, check=False, cwd=ROOT
    )


def test_discovery_finds_the_test_pod(cluster: Cluster) -> None:
    from firm.cluster.preflight import list_nodes  # noqa: PLC0415

    pod = the_pod(cluster)
    assert pod.service == "e2e" and pod.namespace == cluster.namespace and pod.running
    assert pod.qos_class == "Burstable"  # requests below limits
    (container,) = pod.containers
    assert container.name == "app" and container.runtime in ("containerd", "cri-o", "docker")
    assert container.limits == {"cpu": "200m", "memory": "64Mi"}
    for driver in ("cgroupfs", "systemd"):
        path = pod.cgroup_path(driver, "app")
        assert pod.uid.replace("-", "_" if driver == "systemd" else "-") in path
    assert pod.node in {n.name for n in list_nodes(cluster.api)}


def test_cadvisor_telemetry_of_the_test_pod(cluster: Cluster) -> None:
    from firm.cluster.cadvisor import ClusterCollector, ClusterSampler, kubelet_fetcher, parse  # noqa: PLC0415

    pod = the_pod(cluster)
    counters = poll(
        "the pod in its node's /metrics/cadvisor",
        lambda: parse(kubelet_fetcher(cluster.api)(pod.node)).get(pod.uid),
        deadline_s=60,
    )
    assert "app" in counters.containers  # the container's own rows, by its name
    sampler = ClusterSampler(
        ClusterCollector(kubelet_fetcher(cluster.api)), lambda: [the_pod(cluster)], sinks=[], interval_s=1
    )
    # a sample is a rate between two scrapes; the kubelet refreshes its stats every 10-15 s
    sample = poll(
        "a telemetry sample of the pod",
        lambda: next(
            (s for s in sampler.sample_once() if s.instance == pod.name and s.cpu_cores is not None), None
        ),
        deadline_s=90,
        every_s=5,
    )
    assert (
        sample.service == "e2e"
        and sample.cpu_cores is not None
        and sample.cpu_cores >= 0
        and (sample.memory_bytes or 0) > 0
    )


def test_preflight_reports_the_nodes_and_rbac(cluster: Cluster) -> None:
    done = firm(
        "preflight", "--cluster", "-i", str(INVENTORY), "--kubeconfig", str(KUBECONFIG),
        "--cluster-file", str(cluster.cluster_file), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["api"] and report["nodes"]
    assert report["rbac"]["error"] is None and report["rbac"]["namespaces"] == [cluster.namespace]
    assert the_pod(cluster).node in {n["node"] for n in report["nodes"]}


def test_firm_run_dry_run_on_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    if not JAEGER_URL:
        pytest.skip(
            "set FIRM_E2E_JAEGER_URL to Jaeger's query API as this machine reaches it, e.g. "
            "kubectl -n tracing port-forward svc/jaeger 16686 and http://127.0.0.1:16686"
        )
    before = the_pod(cluster)
    audit = tmp_path / "audit.jsonl"
    done = firm(
        "run", "--cluster", str(cluster.cluster_file), "--kubeconfig", str(KUBECONFIG),
        "-i", str(INVENTORY), "--dry-run", "--decider", "aimd", "--interval", "2",
        "--duration", "20", "--quiet", "--audit-log", str(audit),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "firm run on the cluster:" in done.stdout and "over 1 pods" in done.stdout
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert records[-1]["status"] == "exit" and len(records) >= 2
    after = the_pod(cluster)
    assert after.uid == before.uid and after.containers[0].limits == before.containers[0].limits


def test_resize_in_place_and_restore(cluster: Cluster) -> None:
    from firm.actuate.executor import Action  # noqa: PLC0415
    from firm.cluster.kube import KubernetesExecutor  # noqa: PLC0415
    from firm.cluster.preflight import list_nodes  # noqa: PLC0415

    pod = the_pod(cluster)
    node = next(n for n in list_nodes(cluster.api) if n.name == pod.node)
    if not node.resize:
        pytest.skip(f"kubelet {node.kubelet_version} on {node.name} has no in-place resize (1.33 or later)")
    executor = KubernetesExecutor(cluster.api, [pod])
    baseline = executor.snapshot([pod.name])
    assert baseline.limits[pod.name]["cpu"] == pytest.approx(0.2)
    result = executor.apply(
        [Action(pod.name, "cpu", 0.3, "e2e"), Action(pod.name, "memory", 96 * 2**20, "e2e")], dry_run=False
    )
    assert result.ok and result.changed, result.as_dict()

    def resized() -> bool | None:
        fresh = executor.read_pod(pod)
        cpu, memory = executor.limit_of(fresh, "cpu"), executor.limit_of(fresh, "memory")
        return True if cpu == pytest.approx(0.3) and memory == pytest.approx(96 * 2**20) else None

    poll("the pod resized to 0.3 core and 96 MiB", resized, deadline_s=60)
    assert the_pod(cluster).uid == pod.uid  # resized in place, not replaced
    restored = executor.restore(baseline)
    assert restored.ok, restored.as_dict()
    poll(
        "the pod back at 0.2 core",
        lambda: True if executor.limit_of(executor.read_pod(pod), "cpu") == pytest.approx(0.2) else None,
        deadline_s=60,
    )


def test_scale_out_and_back_in(cluster: Cluster) -> None:
    from firm.cluster.discovery import Discovery  # noqa: PLC0415
    from firm.cluster.kube import KubernetesScaler  # noqa: PLC0415

    scaler = KubernetesScaler(cluster.api, [cluster.spec], min_replicas=1, max_replicas=2, cooldown_s=0)

    def running(count: int) -> Callable[[], bool | None]:
        return lambda: True if len(Discovery(cluster.api, [cluster.spec]).pods()) == count else None

    assert scaler.scale(cluster.spec, +1) == (1, 2)
    poll("two pods running", running(2))
    assert scaler.scale(cluster.spec, +1) == (2, 2)  # max_replicas holds
    assert scaler.scale(cluster.spec, -1) == (2, 1)
    poll("one pod running", running(1))
