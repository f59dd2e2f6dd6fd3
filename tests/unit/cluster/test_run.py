"""``firm run --cluster FILE``: the loop's target built from the cluster file, against a local server
of recorded answers (the v1.35 pods and node, the node's kubelet metrics, DeathStarBench traces in
Jaeger's format), the hosts' answers from a recorded ansible-runner run, and ansible-runner for the
node-side knobs replaced by a recorder. What is constructed: the pod after a resize (the recorded pod
with the patch merged in, test_kube.py) and the second metrics scrape (test_cadvisor.py's ``later``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from firm.actuate.executor import Action
from firm.cli import main
from firm.cluster.discovery import calico_veth
from firm.cluster.preflight import gather_facts
from firm.cluster.run import ClusterRunConfig, ClusterRunConfigError, build, load_config
from firm.loop.config import LoopConfig
from firm.loop.deciders import Explanation
from firm.loop.observe import Observation
from firm.loop.runner import ControlLoop
from tests.unit.cluster.fixture_server import FixtureServer, Reply, Request
from tests.unit.cluster.kube_api import api, serve_nodes, serve_pods
from tests.unit.cluster.test_ansible_executor import Recorder
from tests.unit.cluster.test_cadvisor import later, recorded
from tests.unit.cluster.test_cli import kubeconfig
from tests.unit.cluster.test_kube import STS_PATH, recorded_pod, resized
from tests.unit.cluster.test_preflight import recorded_events, replay
from tests.unit.cluster.test_targets import END_S, sample
from tests.unit.cluster.test_traces import Jaeger

STS = "e2e-statefulset-1"
METRICS_PATH = "/api/v1/nodes/datagen-1-35/proxy/metrics/cadvisor"
CLUSTER_FILE = """
services:
  statefulset: {namespace: scraper, selector: app=statefulset, deployment: e2e-deployment}
  dns: {namespace: kube-system, selector: k8s-app=kube-dns}
jaeger_url: JAEGER
entry_services: [nginx-web-server]
slo_ms: {/wrk2-api/post/compose: 10}
slo_window_s: 1.1
trace_horizon_s: 1.0
jaeger_deadline_s: 10
veth: calico
disk_device: "8:0"
nodes: {datagen-1-35: localhost}
"""


def cluster_file(tmp_path: Path, url: str, text: str = CLUSTER_FILE) -> Path:
    path = tmp_path / "cluster.yml"
    path.write_text(text.replace("JAEGER", url))
    return path


class RaiseSts:
    """Asks for more CPU and a network limit for the statefulset's pod when an SLO is violated."""

    name = "test"

    def __init__(self) -> None:
        self._explanation = Explanation()

    @property
    def explanation(self) -> Explanation:
        return self._explanation

    def decide(self, observation: Observation) -> list[Action]:
        if not observation.violated:
            return []
        return [Action(STS, "cpu", 0.1, "test"), Action(STS, "network", 50e6, "test")]


def serve_metrics(server: FixtureServer) -> list[int]:
    """The node's kubelet metrics: the recording, then (constructed) the same 1 s later with 0.05 s more CPU."""
    scrapes = [0]

    def answer(_: Request) -> Reply:
        scrapes[0] += 1
        text = (
            recorded()
            if scrapes[0] == 1
            else later(recorded(), scrapes[0] - 1, {"container_cpu_usage_seconds_total": 0.05})
        )
        return Reply(200, text.encode(), "text/plain; version=0.0.4")

    server.route("GET", METRICS_PATH, answer)
    return scrapes


def test_the_cluster_file_is_validated(tmp_path: Path) -> None:
    config = load_config(cluster_file(tmp_path, "http://jaeger:16686"))
    assert [s.name for s in config.service_specs()] == ["statefulset", "dns"]
    assert config.telemetry == "kubelet" and config.cgroup_driver == "auto"
    bad = tmp_path / "bad.yml"
    bad.write_text("services: {}\njaeger_url: x\nentry_services: []\nspeed: 3\n")
    with pytest.raises(ClusterRunConfigError) as raised:
        load_config(bad)
    assert (
        "services" in str(raised.value)
        and "entry_services" in str(raised.value)
        and "speed" in str(raised.value)
    )
    wrong = tmp_path / "wrong.yml"
    wrong.write_text(
        "services: {a: {namespace: Not_A_Namespace, selector: app=a}}\njaeger_url: http://j:16686\nentry_services: [a]\n"
    )
    with pytest.raises(Exception, match="is not a namespace name"):
        load_config(wrong)


def test_a_control_step_on_the_built_target(fixture_server: FixtureServer, tmp_path: Path) -> None:
    serve_pods(fixture_server)
    serve_nodes(fixture_server)
    Jaeger(fixture_server)
    scrapes = serve_metrics(fixture_server)
    pod = recorded_pod(STS)
    fixture_server.route(
        "PATCH", STS_PATH + "/resize", lambda r: Reply(200, json.dumps(resized(r.json(), pod)).encode())
    )
    config = load_config(cluster_file(tmp_path, fixture_server.url))
    recorder = Recorder()
    built = build(
        config,
        api(fixture_server),
        "inventory/local",
        hosts=gather_facts(None, run=replay(recorded_events())),
        node_run=recorder,
    )
    assert built.host_of == {"datagen-1-35": "localhost"}
    assert built.target.node_cpu == {"datagen-1-35": 14.0}  # the node's allocatable CPU

    assert STS in built.target.refresh()[0]
    node_target = built.target.kube.node_executor.targets[STS]  # type: ignore[union-attr]
    assert node_target.host == "localhost" and node_target.pod_uid == "b74071bf-fab2-44d0-9850-55ff20eda8c3"
    assert node_target.interface == calico_veth("scraper", STS) and node_target.disk_device == "8:0"
    assert node_target.memory and node_target.resctrl is None  # this host has no RDT
    assert built.target.executor.resources(STS) == {"cpu", "memory", "disk_io", "network"}

    built.sampler.sample_once()  # primes
    samples = {s.instance: s for s in built.sampler.sample_once()}
    assert scrapes[0] == 2 and samples[STS].cpu_cores == pytest.approx(0.05)

    telemetry = built.target.telemetry
    assert telemetry is not None
    telemetry.write([sample(n, END_S - 0.5) for n in built.target.names()])  # type: ignore[attr-defined]
    loop = ControlLoop(
        LoopConfig(min_requests=1, trace_lag_s=0.0),
        built.target,
        RaiseSts(),
        slo_ms=config.slo_ms,
        window_s=config.slo_window_s,
        scaler=built.scaler,
        clock=lambda: END_S,
    )
    loop.start()
    record: dict[str, Any] = loop.step()
    built.stop()
    assert record["status"] == "acted", record
    actions = {a["resource"]: a for a in record["result"]["actions"]}
    assert actions["cpu"]["before"] == pytest.approx(0.08) and actions["cpu"]["after"] == 0.1
    rate = actions["network"]["after"]  # as the guardrails allowed it from no limit
    assert actions["network"]["before"] == "unlimited" and isinstance(rate, float)
    assert fixture_server.sent("PATCH", STS_PATH + "/resize")
    tc = [
        t["firm.core.tc"]
        for host, tasks, check in recorder.runs
        if not check
        for t in tasks
        if "firm.core.tc" in t
    ]
    assert tc == [
        {
            "interface": calico_veth("scraper", STS),
            "kind": "tbf",
            "rate": round(rate),  # the module's default burst (10 ms at the rate)
        }
    ]


def test_firm_run_on_the_cluster(fixture_server: FixtureServer, tmp_path: Path) -> None:
    serve_pods(fixture_server)
    serve_nodes(fixture_server)
    Jaeger(fixture_server)
    serve_metrics(fixture_server)
    audit = tmp_path / "audit.jsonl"
    done = CliRunner().invoke(
        main,
        [
            "run",
            "--cluster",
            str(cluster_file(tmp_path, fixture_server.url)),
            "--kubeconfig",
            kubeconfig(tmp_path, fixture_server.url),
            "--decider",
            "aimd",
            "--interval",
            "0.5",
            "--duration",
            "1.2",
            "--quiet",
            "--audit-log",
            str(audit),
        ],
    )
    assert done.exit_code == 0, done.output
    assert "firm run on the cluster:" in done.output and "over 2 pods" in done.output
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert records[-1]["status"] == "exit"
    steps = [r for r in records if r["status"] != "exit"]
    # the recorded traces are from 2026-06: nothing completes in a window of now
    assert steps and all(r["status"] == "stale" for r in steps)
    assert fixture_server.sent("GET", "/api/traces")  # Jaeger asked every step
    assert fixture_server.sent("GET", METRICS_PATH)  # the kubelet's cAdvisor metrics sampled


def test_the_run_refuses_what_it_cannot_use(fixture_server: FixtureServer, tmp_path: Path) -> None:
    config = kubeconfig(tmp_path, fixture_server.url)
    alone = CliRunner().invoke(main, ["run", "--kubeconfig", config, "--duration", "1"])
    assert alone.exit_code == 2 and "--cluster FILE" in alone.output
    no_slo = cluster_file(
        tmp_path, fixture_server.url, CLUSTER_FILE.replace("slo_ms: {/wrk2-api/post/compose: 10}\n", "")
    )
    refused = CliRunner().invoke(
        main, ["run", "--cluster", str(no_slo), "--kubeconfig", config, "--decider", "aimd"]
    )
    assert refused.exit_code == 1 and "no SLO to keep" in refused.output


def test_defaults_make_a_kubelet_sampler() -> None:
    config = ClusterRunConfig.model_validate(
        {
            "services": {"a": {"namespace": "n", "selector": "app=a"}},
            "jaeger_url": "http://j",
            "entry_services": ["a"],
        }
    )
    assert config.telemetry_interval_s == 1.0 and config.veth == "none" and config.disk_device is None
