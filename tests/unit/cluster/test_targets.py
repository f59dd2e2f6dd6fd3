"""The loop over a cluster (pods, Jaeger, telemetry, resize all served locally from recordings), and the
testbed's target driven through the ansible executor."""

from __future__ import annotations

import json
from typing import Any

from firm.actuate.executor import Action
from firm.actuate.local import LocalTarget
from firm.cluster.ansible import AnsibleExecutor, AnsibleTarget
from firm.cluster.app import ClusterTarget
from firm.cluster.discovery import Discovery, PodInfo
from firm.cluster.kube import KubernetesExecutor
from firm.cluster.target import AnsibleOverride
from firm.cluster.traces import JaegerWindow
from firm.loop.config import LoopConfig
from firm.loop.deciders import Explanation
from firm.loop.observe import Observation
from firm.loop.runner import ControlLoop
from firm.telemetry.model import Sample
from firm.telemetry.source import MemoryTelemetry
from firm.tracing.jaeger import JaegerClient
from tests.unit.cluster.fixture_server import FixtureServer, Reply
from tests.unit.cluster.kube_api import api, serve_pods
from tests.unit.cluster.test_ansible_executor import Recorder
from tests.unit.cluster.test_discovery import SERVICES
from tests.unit.cluster.test_kube import STS_PATH, recorded_pod, resized
from tests.unit.cluster.test_traces import Jaeger

END_S = 1782331694.2  # just after the recorded R1000 compose-post traces


class RaiseStatefulset:
    """Asks for more CPU for the statefulset's pod whenever any SLO is violated."""

    name = "test"

    def __init__(self) -> None:
        self._explanation = Explanation()

    @property
    def explanation(self) -> Explanation:
        return self._explanation

    def decide(self, observation: Observation) -> list[Action]:
        view = observation.instances["e2e-statefulset-1"]
        return [Action(view.name, "cpu", 0.1, "test", view.service)] if observation.violated else []


def sample(name: str, at: float) -> Sample:
    return Sample(name, "x", at, 1.0, 0.05, 0.5, 0.01, 1 << 20, 0.0, 0.0, 100.0, 100.0)


def test_a_control_step_on_the_cluster(fixture_server: FixtureServer) -> None:
    serve_pods(fixture_server)
    Jaeger(fixture_server)
    pod = recorded_pod("e2e-statefulset-1")
    fixture_server.answer("GET", STS_PATH, 200, json.dumps(pod).encode())
    fixture_server.route(
        "PATCH", STS_PATH + "/resize", lambda r: Reply(200, json.dumps(resized(r.json(), pod)).encode())
    )
    client = api(fixture_server)
    discovery = Discovery(client, SERVICES)
    telemetry = MemoryTelemetry()
    target = ClusterTarget(
        discovery,
        JaegerWindow(JaegerClient(fixture_server.url), ["nginx-web-server"], horizon_s=1.0, deadline_s=10.0),
        telemetry,
        KubernetesExecutor(client, []),
        node_cpu={"datagen-1-35": 2.0},
    )
    assert target.refresh()[0] == [
        "coredns-7d764666f9-qdcxt",
        "e2e-scraper-5f97dc94d8-vkcjl",
        "e2e-statefulset-1",
        "kindnet-zkpn8",
    ]
    telemetry.write([sample(n, END_S - 0.5) for n in target.names()])
    config = LoopConfig(min_requests=1, trace_lag_s=0.0)
    loop = ControlLoop(
        config,
        target,
        RaiseStatefulset(),
        slo_ms={"/wrk2-api/post/compose": 10.0},
        window_s=1.1,
        clock=lambda: END_S,
    )
    loop.start()
    record: dict[str, Any] = loop.step()
    assert record["window"]["traces"] == 3
    assert record["slo"][0]["state"] == "violated", record
    assert record["status"] == "acted", record
    assert record["result"]["actions"][0]["before"] == 0.08 and record["result"]["actions"][0]["after"] == 0.1
    assert fixture_server.sent("PATCH", STS_PATH + "/resize")
    assert target.cpu_capacity("e2e-statefulset-1") == 2.0


def test_the_testbed_driven_through_ansible() -> None:
    class Inner:
        def __init__(self) -> None:
            self.executor = type("Local", (), {"targets": {"a-0": LocalTarget("a-0", "a", "firm/a-0")}})()
            self.added: list[str] = []

        def refresh(self) -> tuple[list[str], list[str]]:
            self.executor.targets["a-1"] = LocalTarget("a-1", "a", "firm/a-1", interface="v1")
            return ["a-1"], ["a-0"]

        def names(self) -> list[str]:
            return sorted(self.executor.targets)

        def service_of(self, name: str) -> str:
            return "a"

        def cpu_capacity(self, name: str) -> float:
            return 2.0

        def read_traces(self, start_us: int, end_us: int) -> list[Any]:
            return []

        def latest_telemetry(self, names: Any) -> dict[str, Any]:
            return dict.fromkeys(names)

        def cpu_load(self) -> None:
            return None

    override = AnsibleOverride(Inner(), "inventory/local")
    assert isinstance(override.executor, AnsibleExecutor)
    assert set(override.ansible.targets) == {"a-0"}
    assert override.refresh() == (["a-1"], ["a-0"])
    assert override.ansible.targets == {
        "a-1": AnsibleTarget("a-1", "a", "localhost", cgroup="firm/a-1", interface="v1")
    }
    assert override.cpu_capacity("a-1") == 2.0 and override.read_traces(0, 1) == []
    # the testbed's trace reads are incremental: the loop may prefetch through the override too
    assert override.prefetch is False
    inner = Inner()
    inner.prefetch = True  # type: ignore[attr-defined]
    assert AnsibleOverride(inner, "inventory/local").prefetch is True


def test_new_pods_get_node_targets(fixture_server: FixtureServer) -> None:
    serve_pods(fixture_server)
    client = api(fixture_server)
    node = AnsibleExecutor([], run=Recorder())

    def node_target(pod: PodInfo) -> AnsibleTarget:
        return AnsibleTarget(pod.name, pod.service, pod.node or "", pod_uid=pod.uid, interface="veth-x")

    target = ClusterTarget(
        Discovery(client, SERVICES),
        None,  # type: ignore[arg-type]
        None,
        KubernetesExecutor(client, [], node_executor=node),
        node_target=node_target,
    )
    target.refresh()
    assert set(node.targets) == set(target.names())
    assert target.executor.resources("e2e-statefulset-1") == {"cpu", "memory", "network"}
    assert target.latest_telemetry(["kindnet-zkpn8"]) == {"kindnet-zkpn8": None}
