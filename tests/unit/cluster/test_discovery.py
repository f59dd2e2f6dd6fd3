"""Discovery through the real kubernetes client against recorded API objects served over HTTP."""

from __future__ import annotations

import pytest
from kubernetes import client as kube_client

from firm.cluster.config import ClusterConfigError, ClusterError, ServiceSpec, services_from
from firm.cluster.discovery import Discovery, calico_veth, cpu_cores, host_veth, memory_bytes
from tests.unit.cluster.fixture_server import FixtureServer, data_file
from tests.unit.cluster.kube_api import api, serve_pods

SERVICES = [
    ServiceSpec("statefulset", "scraper", "app=statefulset"),
    ServiceSpec("coredns", "kube-system", "k8s-app=kube-dns"),
    ServiceSpec("kindnet", "kube-system", "app=kindnet"),
    ServiceSpec("scraper", "scraper", "app=scraper"),
    ServiceSpec("failjob", "scraper", "app=failjob"),
]


def test_discovers_pods_nodes_qos_and_containers(fixture_server: FixtureServer) -> None:
    serve_pods(fixture_server)
    pods = {p.name: p for p in Discovery(api(fixture_server), SERVICES).pods()}
    assert sorted(pods) == [
        "coredns-7d764666f9-qdcxt",
        "e2e-scraper-5f97dc94d8-vkcjl",
        "e2e-statefulset-1",
        "kindnet-zkpn8",
    ]  # the failed job's pod is not running
    sts = pods["e2e-statefulset-1"]
    assert (sts.service, sts.namespace, sts.node, sts.qos_class) == (
        "statefulset",
        "scraper",
        "datagen-1-35",
        "Burstable",
    )
    assert sts.uid == "b74071bf-fab2-44d0-9850-55ff20eda8c3"
    (container,) = sts.containers
    assert container.name == "compute-pi-digits" and container.runtime == "containerd"
    assert container.container_id == (
        "containerd://f178027c6d8689af7d274bb9018b4e3a84135a753543436bed5a52c4797760de"
    )
    assert container.cpu_limit == pytest.approx(0.08)
    assert pods["kindnet-zkpn8"].qos_class == "Guaranteed"
    assert pods["e2e-scraper-5f97dc94d8-vkcjl"].qos_class == "BestEffort"
    selectors = [r.query["labelSelector"][0] for r in fixture_server.sent("GET")]
    assert selectors == [s.selector for s in SERVICES]
    everything = Discovery(api(fixture_server), SERVICES).pods(running_only=False)
    assert "e2e-failjob-64h4g" in {p.name for p in everything}


def test_cgroup_paths_for_each_qos_class_and_driver(fixture_server: FixtureServer) -> None:
    serve_pods(fixture_server)
    pods = {p.name: p for p in Discovery(api(fixture_server), SERVICES).pods()}
    sts, kindnet, scraper = (
        pods["e2e-statefulset-1"],
        pods["kindnet-zkpn8"],
        pods["e2e-scraper-5f97dc94d8-vkcjl"],
    )
    assert sts.cgroup_path() == "kubepods/burstable/podb74071bf-fab2-44d0-9850-55ff20eda8c3"
    assert kindnet.cgroup_path() == "kubepods/podebb73de1-03ec-4c34-bda3-bb8a44f01c2b"
    assert scraper.cgroup_path("systemd") == (
        "kubepods.slice/kubepods-besteffort.slice/"
        "kubepods-besteffort-pod559f50c7_6133_4901_a283_262ff4358722.slice"
    )
    assert sts.cgroup_path("systemd", "compute-pi-digits") == (
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podb74071bf_fab2_44d0_9850_55ff20eda8c3.slice/"
        "cri-containerd-f178027c6d8689af7d274bb9018b4e3a84135a753543436bed5a52c4797760de.scope"
    )
    assert sts.cgroup_candidates()[0] == "kubepods/podb74071bf-fab2-44d0-9850-55ff20eda8c3"
    with pytest.raises(ClusterError, match="no started container"):
        sts.cgroup_path(container="sidecar")


def test_cgroup_paths_agree_with_the_recorded_cadvisor_ids(fixture_server: FixtureServer) -> None:
    """The kubelet's own cgroup ids in the same node's /metrics/cadvisor are the paths discovery derives."""
    serve_pods(fixture_server)
    text = data_file("cadvisor/kubelet-metrics-cadvisor_k8s-v1.35.0_containerd_trimmed.txt").read_text()
    for pod in Discovery(api(fixture_server), SERVICES).pods():
        assert f'id="/{pod.cgroup_path()}"' in text
        for container in pod.containers:
            assert f'id="/{pod.cgroup_path(container=container.name)}"' in text


def test_api_errors_name_the_status_and_fix(fixture_server: FixtureServer) -> None:
    fixture_server.answer(
        "GET",
        "/api/v1/namespaces/scraper/pods",
        403,
        data_file("kubernetes/status-403-forbidden_apiserver-golden.json"),
    )
    with pytest.raises(ClusterError, match="HTTP 403 Forbidden") as caught:
        Discovery(api(fixture_server), SERVICES[:1]).pods()
    assert "RBAC" in caught.value.fix
    with pytest.raises(ClusterError, match="cannot reach the API server"):
        configuration = kube_client.Configuration(host="http://127.0.0.1:9")
        configuration.retries = 0
        Discovery(kube_client.ApiClient(configuration), SERVICES[:1], timeout_s=2).pods()


def test_configuration_is_checked() -> None:
    with pytest.raises(ClusterConfigError, match="namespace"):
        ServiceSpec("a", "Not_A_Label", "app=a")
    with pytest.raises(ClusterConfigError, match="selector"):
        ServiceSpec("a", "default", " ")
    with pytest.raises(ClusterConfigError, match="lacks selector"):
        services_from({"a": {"namespace": "default"}})
    assert (
        services_from({"a": {"namespace": "d", "selector": "app=a", "deployment": "a"}})[0].deployment == "a"
    )
    with pytest.raises(ClusterError, match="twice"):
        Discovery(object(), [SERVICES[0], SERVICES[0]])  # type: ignore[arg-type]


def test_quantities() -> None:
    assert cpu_cores("100m") == pytest.approx(0.1) and cpu_cores("2") == 2.0 and cpu_cores(None) is None
    assert memory_bytes("50Mi") == 50 << 20 and memory_bytes("1G") == 10**9
    with pytest.raises(ClusterError):
        cpu_cores("lots")


def test_veth_names() -> None:
    assert calico_veth("default", "web-0").startswith("cali") and len(calico_veth("default", "web-0")) == 15

    def run(argv: object) -> str:
        return "2: eth0@if1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 65536 qdisc noqueue\n"

    # ifindex 1 is the loopback device on every host
    assert host_veth(1, run=run) == "lo"
    with pytest.raises(ClusterError, match="not a veth"):
        host_veth(1, run=lambda argv: "1: lo: <LOOPBACK,UP> mtu 65536\n")


@pytest.mark.parametrize(
    ("services", "named"),
    [
        (5, r"the services are a number \(5\)"),
        ("web", r"the services are text \('web'\)"),
        ([1, 2], "service entry 1 is not a mapping"),
        ({"web": 3}, "service 'web' is not a mapping"),
        ({"web": ["default"]}, "service 'web' is not a mapping"),
    ],
)
def test_services_of_the_wrong_shape_are_refused_naming_the_entry(services: object, named: str) -> None:
    with pytest.raises(ClusterConfigError, match=named) as raised:
        services_from(services)
    assert "give {NAME: {namespace, selector, deployment}}" in raised.value.fix


@pytest.mark.parametrize(
    ("services", "named"),
    [
        ({"web": {"namespace": "d", "selector": "app=w", "bogus": 1}}, "service 'web': bogus is not a field"),
        ({"web": {"namespace": 5, "selector": "app=w"}}, "service 'web': namespace is a number (5)"),
        ({"web": {"namespace": "d", "selector": ["a"]}}, "service 'web': selector is a list (['a'])"),
        ({"web": {"namespace": "d", "selector": "a", "deployment": True}}, "deployment is true or false"),
        ([{"name": 7, "namespace": "d", "selector": "a"}], "service 7: name is a number (7)"),
    ],
)
def test_service_fields_that_are_unknown_or_not_text_are_refused(services: object, named: str) -> None:
    with pytest.raises(ClusterConfigError) as raised:
        services_from(services)
    assert named in str(raised.value)
