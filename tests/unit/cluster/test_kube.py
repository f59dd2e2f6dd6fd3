"""The Kubernetes executor and scaler through the real client against a local HTTP server.

Which answers are recorded and which constructed:
- recorded as they are: the pod (kubelet PodList, v1.35), Status bodies 403 (API server golden), 409 (Helm's
  fake server, exact API shape), 422 (kubectl recording), the 404 for a route the server does not have;
- constructed from a recording: the pod after an accepted resize (the recorded pod with the new limits), the pod
  whose resize is infeasible (the recorded pod plus a PodResizePending condition, laid out as in the API's golden
  Pod), the Scale (the API's golden Scale with this Deployment's name, namespace and replicas).
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from firm.actuate.executor import Action, Executor
from firm.cluster.ansible import AnsibleExecutor, AnsibleTarget
from firm.cluster.config import ServiceSpec
from firm.cluster.discovery import ContainerInfo, Discovery, PodInfo
from firm.cluster.kube import KubernetesExecutor, KubernetesScaler
from tests.unit.cluster.fixture_server import FixtureServer, Reply, Request, data_file
from tests.unit.cluster.kube_api import api, recorded_pods, serve_pods
from tests.unit.cluster.test_ansible_executor import Recorder

STS_PATH = "/api/v1/namespaces/scraper/pods/e2e-statefulset-1"
SERVICES = [
    ServiceSpec("statefulset", "scraper", "app=statefulset", deployment="e2e-deployment"),
    ServiceSpec("scraper", "scraper", "app=scraper"),
]


def recorded_pod(name: str) -> dict[str, Any]:
    return copy.deepcopy(next(p for p in recorded_pods()["items"] if p["metadata"]["name"] == name))


def resized(patch: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    """The pod with the patch's container resources merged in (what the server returns)."""
    out = copy.deepcopy(pod)
    wanted = {c["name"]: c["resources"] for c in patch["spec"]["containers"]}
    for container in out["spec"]["containers"]:
        for kind, values in wanted.get(container["name"], {}).items():
            container["resources"].setdefault(kind, {}).update(values)
    return out


def status(name: str) -> bytes:
    return data_file(f"kubernetes/{name}").read_bytes()


def pods(server: FixtureServer) -> dict[str, PodInfo]:
    serve_pods(server)
    return {p.name: p for p in Discovery(api(server), SERVICES).pods()}


def test_cpu_through_in_place_resize(fixture_server: FixtureServer) -> None:
    found = pods(fixture_server)
    pod = recorded_pod("e2e-statefulset-1")
    fixture_server.route(
        "PATCH", STS_PATH + "/resize", lambda r: Reply(200, json.dumps(resized(r.json(), pod)).encode())
    )
    fixture_server.answer("GET", STS_PATH, 200, json.dumps(pod).encode())
    executor = KubernetesExecutor(api(fixture_server), list(found.values()))
    assert isinstance(executor, Executor)
    assert executor.resources("e2e-statefulset-1") == {"cpu", "memory"}
    assert executor.resources("e2e-scraper-5f97dc94d8-vkcjl") == frozenset()  # BestEffort: no limit to resize
    assert executor.snapshot(["e2e-statefulset-1"]).limits == {
        "e2e-statefulset-1": {"cpu": pytest.approx(0.08), "memory": 30 * 2**20}
    }

    result = executor.apply([Action("e2e-statefulset-1", "cpu", 0.03)], dry_run=False)
    assert result.ok and result.changed, result.error
    (sent,) = fixture_server.sent("PATCH")
    assert sent.headers["content-type"] == "application/strategic-merge-patch+json"
    assert sent.json() == {
        "spec": {
            "containers": [
                {
                    "name": "compute-pi-digits",
                    "resources": {"limits": {"cpu": "30m"}, "requests": {"cpu": "30m"}},
                }
            ]
        }
    }  # the 40m request lowered with the limit
    assert sent.query["fieldManager"] == ["firm"]
    assert executor.outcomes[-1].state == "accepted"
    assert result.applied[0].before == pytest.approx(0.08)

    dry = executor.apply([Action("e2e-statefulset-1", "cpu", 0.5)], dry_run=True)
    assert dry.ok and fixture_server.sent("PATCH")[-1].query["dryRun"] == ["All"]


def test_an_infeasible_resize_fails_the_step(fixture_server: FixtureServer) -> None:
    found = pods(fixture_server)
    pod = recorded_pod("e2e-statefulset-1")
    pending = resized(
        {"spec": {"containers": [{"name": "compute-pi-digits", "resources": {"limits": {"cpu": "64"}}}]}}, pod
    )
    pending["status"]["conditions"].append(
        {
            "type": "PodResizePending",
            "status": "True",
            "reason": "Infeasible",
            "message": "Node didn't have enough capacity: cpu, requested: 64000, capacity: 2000",
            "lastTransitionTime": None,
        }
    )
    fixture_server.answer("PATCH", STS_PATH + "/resize", 200, json.dumps(pending).encode())
    result = KubernetesExecutor(api(fixture_server), list(found.values())).apply(
        [Action("e2e-statefulset-1", "cpu", 64.0)], dry_run=False
    )
    assert not result.ok and "enough capacity" in (result.error or "")


@pytest.mark.parametrize(
    ("code", "body", "words"),
    [
        (403, "status-403-forbidden_apiserver-golden.json", "RBAC"),
        (422, "status-422-invalid.json", "rejected the value"),
    ],
)
def test_refusals_name_the_fix(fixture_server: FixtureServer, code: int, body: str, words: str) -> None:
    found = pods(fixture_server)
    fixture_server.answer("PATCH", STS_PATH + "/resize", code, status(body))
    result = KubernetesExecutor(api(fixture_server), list(found.values())).apply(
        [Action("e2e-statefulset-1", "cpu", 0.2)], dry_run=False
    )
    assert not result.ok and f"HTTP {code}" in (result.error or "") and words in (result.error or "")


def test_older_clusters_fall_back_to_the_cgroup_write(fixture_server: FixtureServer) -> None:
    found = pods(fixture_server)
    sts = found["e2e-statefulset-1"]
    recorder = Recorder()
    node = AnsibleExecutor(
        [
            AnsibleTarget(
                sts.name,
                sts.service,
                "datagen-1-35",
                pod_uid=sts.uid,
                container_ids=tuple(c.container_id or "" for c in sts.containers),
                cgroup_driver="cgroupfs",
                interface="veth0",
            )
        ],
        run=recorder,
    )
    executor = KubernetesExecutor(api(fixture_server), list(found.values()), node_executor=node)
    assert executor.resources(sts.name) == {"cpu", "memory", "network"}
    # no route for /resize: the server's 404 for a resource it does not know
    result = executor.apply([Action(sts.name, "cpu", 0.5), Action(sts.name, "network", 1e7)], dry_run=False)
    assert result.ok, result.error
    assert executor.resize_supported is False and executor.outcomes[-1].state == "fallback"
    modules = [list(t)[1] for _, tasks, _ in recorder.runs for t in tasks]
    assert modules == ["firm.core.tc", "firm.core.cgroup", "firm.core.cgroup"]
    cgroup_args = [
        t["firm.core.cgroup"] for _, tasks, _ in recorder.runs for t in tasks if "firm.core.cgroup" in t
    ]
    assert {a["pod_uid"] for a in cgroup_args} == {sts.uid} and cgroup_args[0]["cpu_quota_us"] == 50000
    assert len(fixture_server.sent("PATCH")) == 1  # not asked again once known to be missing
    executor.apply([Action(sts.name, "cpu", 0.6)], dry_run=False)
    assert len(fixture_server.sent("PATCH")) == 1


def test_a_failed_resize_undoes_the_node_part(fixture_server: FixtureServer) -> None:
    found = pods(fixture_server)
    sts = found["e2e-statefulset-1"]
    recorder = Recorder()
    node = AnsibleExecutor(
        [AnsibleTarget(sts.name, sts.service, "n1", pod_uid=sts.uid, interface="veth0")], run=recorder
    )
    fixture_server.answer(
        "PATCH", STS_PATH + "/resize", 403, status("status-403-forbidden_apiserver-golden.json")
    )
    result = KubernetesExecutor(api(fixture_server), list(found.values()), node_executor=node).apply(
        [Action(sts.name, "network", 1e7), Action(sts.name, "cpu", 0.5)], dry_run=False
    )
    assert not result.ok and result.rolled_back
    undo = recorder.runs[-1][1][0]["firm.core.tc"]
    assert undo == {"interface": "veth0", "state": "absent"}  # back to no shaping (the recorder's before)


def scale_answer(replicas: int, version: str) -> bytes:
    scale = json.loads(data_file("kubernetes/golden/autoscaling.v1.Scale.json").read_text())
    scale["metadata"].update(name="e2e-deployment", namespace="scraper", resourceVersion=version)
    scale["spec"]["replicas"] = scale["status"]["replicas"] = replicas
    return json.dumps(scale).encode()


def test_scale_out_and_in_through_the_scale_subresource(fixture_server: FixtureServer) -> None:
    path = "/apis/apps/v1/namespaces/scraper/deployments/e2e-deployment/scale"
    state = {"replicas": 2, "version": 1, "conflicts": 1}

    def read(_: Request) -> Reply:
        return Reply(200, scale_answer(state["replicas"], str(state["version"])))

    def replace(request: Request) -> Reply:
        if state["conflicts"]:
            state["conflicts"] -= 1
            state["version"] += 1  # someone else wrote it: the recorded 409
            return Reply(409, status("status-409-conflict.json"))
        assert request.json()["metadata"]["resourceVersion"] == str(state["version"])
        state["replicas"] = request.json()["spec"]["replicas"]
        state["version"] += 1
        return Reply(200, scale_answer(state["replicas"], str(state["version"])))

    fixture_server.route("GET", path, read)
    fixture_server.route("PUT", path, replace)
    clock = [0.0]
    scaler = KubernetesScaler(
        api(fixture_server), SERVICES, max_replicas=3, cooldown_s=30, clock=lambda: clock[0]
    )
    assert scaler.request("statefulset", "out")
    assert state["replicas"] == 3 and len(fixture_server.sent("PUT")) == 2  # one 409, then the retry
    assert not scaler.request("statefulset", "out")  # cool-down
    clock[0] = 31.0
    assert not scaler.request("statefulset", "out")  # at max_replicas
    clock[0] = 62.0
    assert scaler.request("statefulset", "in") and state["replicas"] == 2
    assert not scaler.request("scraper", "out")  # no Deployment configured
    events = scaler.events()
    assert [e["outcome"] for e in events] == ["done", "at_bound", "done"]


def test_scale_refused_is_an_event_not_a_crash(fixture_server: FixtureServer) -> None:
    fixture_server.answer(
        "GET",
        "/apis/apps/v1/namespaces/scraper/deployments/e2e-deployment/scale",
        403,
        status("status-403-forbidden_gke.json"),
    )
    scaler = KubernetesScaler(api(fixture_server), SERVICES)
    assert not scaler.request("statefulset", "out")
    (event,) = scaler.events()
    assert event["outcome"] == "failed" and "HTTP 403" in event["error"]


def test_inf_and_unchanged_values() -> None:
    pod = PodInfo(
        "s", "ns", "p", "b74071bf-fab2-44d0-9850-55ff20eda8c3", "n", None, None, "Running", "Burstable", ()
    )
    assert KubernetesExecutor.cpu_of(pod) == 0.0
    assert math.isinf(KubernetesExecutor.cpu_of(pods_with_unlimited()))


def pods_with_unlimited() -> PodInfo:
    return PodInfo(
        "s",
        "ns",
        "p",
        "b74071bf-fab2-44d0-9850-55ff20eda8c3",
        "n",
        None,
        None,
        "Running",
        "Burstable",
        (ContainerInfo("c", None, {"cpu": "1"}, {}),),
    )
