"""Every Kubernetes manifest the roles render is valid for the pinned Kubernetes release.

The roles' own tasks render the manifests (render_manifests.yml, through ansible-playbook on this
machine) twice: with the roles' defaults only, and with the sample inventory's group_vars. Each
document is then validated offline, strictly (no unknown fields), against the OpenAPI schemas of
the Kubernetes release the kubernetes role pins, as bundled by kubernetes-validate. On top of the
schemas: every container has CPU and memory requests and limits, every image is pinned, the
benchmark traces every request and its nginx resolves through the cluster's DNS server.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLES = ROOT / "roles"
PLAYBOOK = Path(__file__).with_name("render_manifests.yml")
MANIFEST_ROLES = ("kubernetes", "jaeger", "cadvisor", "benchmarks")
RESOLVER = "10.96.0.10"
FAKE_DIGEST = "sha256:" + "ab" * 32
VARIANTS = ("defaults", "sample")


def _defaults(role: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
    return loaded


KUBERNETES_VERSION: str = _defaults("kubernetes")["kubernetes_version"]
KUBERNETES_MINOR = KUBERNETES_VERSION.rsplit(".", 1)[0]


def manifest_templates() -> list[tuple[str, str]]:
    """(role, rendered file name) of every template under roles/*/templates/manifests/."""
    return sorted(
        (path.parts[-4], path.name.removesuffix(".j2")) for path in ROLES.glob("*/templates/manifests/*.j2")
    )


def _fake_checkout(root: Path) -> Path:
    """The files of a DeathStarBench checkout the benchmarks role reads, laid out as upstream's."""
    social = root / "socialNetwork"
    for directory in (
        "nginx-web-server/lua-scripts",
        "nginx-web-server/pages",
        "gen-lua",
        "docker/openresty-thrift/lua-thrift",
        "keys",
        "media-frontend/lua-scripts",
        "scripts",
        "wrk2/scripts/social-network",
        "config",
        "nginx-web-server/conf",
        "media-frontend/conf",
    ):
        (social / directory).mkdir(parents=True, exist_ok=True)
    (root / "wrk2").mkdir(exist_ok=True)
    (social / "scripts" / "init_social_graph.py").write_text("# loader\n")
    (social / "config" / "service-config.json").write_text(
        json.dumps(
            {"secret": "secret", "compose-post-service": {"addr": "compose-post-service", "port": 9090}},
            indent=2,
        )
    )
    (social / "config" / "jaeger-config.yml").write_text(
        'disabled: false\nreporter:\n  logSpans: false\n  localAgentHostPort: "jaeger-agent:6831"\n'
        "  queueSize: 1000000\n  bufferFlushInterval: 10\nsampler:\n  type: probabilistic\n  param: 0.01\n"
    )
    (social / "nginx-web-server" / "jaeger-config.json").write_text(
        json.dumps(
            {
                "service_name": "nginx-web-server",
                "disabled": False,
                "reporter": {"logSpans": False, "localAgentHostPort": "jaeger-agent:6831"},
                "sampler": {"type": "probabilistic", "param": 0.01},
            },
            indent=2,
        )
    )
    (social / "nginx-web-server" / "conf" / "nginx-k8s.conf").write_text(
        "load_module modules/ngx_http_opentracing_module.so;\nworker_processes  16;\n"
        "events {\n  worker_connections  1024;\n}\nhttp {\n"
        "  resolver kube-dns.kube-system.svc.cluster.local ipv6=off;\n"
        "  server {\n    listen 8080 reuseport;\n  }\n}\n"
    )
    (social / "media-frontend" / "conf" / "nginx.conf").write_text(
        "worker_processes auto;\nevents {}\nhttp {\n  resolver 127.0.0.11 ipv6=off;\n"
        "  server {\n    listen 8080;\n  }\n}\n"
    )
    return root


def _render(out: Path, variant: str) -> None:
    manifest_dirs = {role: out / role for role in MANIFEST_ROLES}
    extra = {
        **{f"{role}_manifest_dir": str(path) for role, path in manifest_dirs.items()},
        "benchmarks_dsb_fetch": False,
        "benchmarks_dsb_checkout": str(_fake_checkout(out / "DeathStarBench")),
        "benchmarks_dns_resolver": RESOLVER,
        "benchmarks_image_digests": {
            name: FAKE_DIGEST for name in ("microservices", "openresty", "media_frontend")
        },
        "benchmarks_image_lock_file": str(out / "benchmarks-images.lock.yml"),
    }
    extra_file = out / "extra.json"
    extra_file.write_text(json.dumps(extra))
    # The local inventory sets nothing the manifest roles read: they render with their defaults.
    inventory = ["-i", str(ROOT / "inventory" / ("sample" if variant == "sample" else "local/hosts.yml"))]
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), *inventory, "-e", f"@{extra_file}", str(PLAYBOOK)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", LC_ALL="C.UTF-8"),
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Render once per variant; maps the variant to the directory holding <role>/<file>.

    The variants render at the same time, each an ansible-playbook process of its own in its own
    directory (each is about half a minute of one core's time)."""
    outputs = {variant: tmp_path_factory.mktemp(f"manifests-{variant}") for variant in VARIANTS}
    with ThreadPoolExecutor(max_workers=len(VARIANTS)) as pool:
        for done in [pool.submit(_render, out, variant) for variant, out in outputs.items()]:
            done.result()  # re-raises a render's failure with its output
    return outputs


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc.get("spec", {})
    template = spec.get("jobTemplate", {}).get("spec", spec).get("template")
    if template:
        yield template["spec"]


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for pod in pod_specs(doc):
        yield from pod.get("initContainers", [])
        yield from pod["containers"]


def test_every_manifest_template_is_rendered(rendered: dict[str, Path]) -> None:
    for variant, out in rendered.items():
        found = sorted(
            (path.parent.name, path.name)
            for role in MANIFEST_ROLES
            for path in (out / role).glob("*.yaml")
            if path.name != "kubeadm-config.yaml"
        )
        assert found == manifest_templates(), variant


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("role", "name"), manifest_templates())
def test_manifest_is_valid_for_the_pinned_release(
    rendered: dict[str, Path], variant: str, role: str, name: str
) -> None:
    docs = documents(rendered[variant] / role / name)
    assert docs, f"{role}/{name} renders no document"
    for doc in docs:
        try:
            used = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(part) for part in err.path)
            pytest.fail(f"{role}/{name}: {doc['kind']}/{doc['metadata']['name']} at {where}: {err.message}")
        # kubernetes-validate falls back to an older release it has: it must have the pinned one.
        assert used == KUBERNETES_MINOR


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("role", "name"), manifest_templates())
def test_every_container_has_requests_limits_and_a_pinned_image(
    rendered: dict[str, Path], variant: str, role: str, name: str
) -> None:
    for doc in documents(rendered[variant] / role / name):
        for container in containers(doc):
            where = f"{role}/{name} {doc['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where} lacks {kind}"
            image = container["image"]
            assert "@sha256:" in image or ":" in image.rsplit("/", 1)[-1], f"{where}: {image} is not pinned"
            assert not image.endswith(":latest"), f"{where}: {image}"


def test_sample_inventory_pins_the_same_release() -> None:
    sample = yaml.safe_load((ROOT / "inventory/sample/group_vars/all/kubernetes.yml").read_text())
    assert sample["kubernetes_version"] == KUBERNETES_VERSION


def test_invalid_manifest_is_rejected() -> None:
    """The validator is strict: a misspelt field of a real manifest fails."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "x", "image": "x:1", "resource": {}}]},
            },
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_benchmark_traces_every_request_and_resolves_through_cluster_dns(
    rendered: dict[str, Path], variant: str
) -> None:
    [namespace, config] = documents(rendered[variant] / "benchmarks" / "config.yaml")
    assert namespace["kind"] == "Namespace"
    data = config["data"]
    for client in (yaml.safe_load(data["jaeger-config.yml"]), json.loads(data["jaeger-config.json"])):
        assert client["sampler"] == {"type": "const", "param": 1}
        assert client["reporter"]["localAgentHostPort"] == "jaeger.tracing.svc.cluster.local:6831"
        assert client["disabled"] is False
    assert f"resolver {RESOLVER} valid=10s ipv6=off;" in data["nginx.conf"]
    assert "kube-dns.kube-system" not in data["nginx.conf"]
    assert data["nginx.conf"].splitlines()[:3] == [
        "env fqdn_suffix;",
        "load_module modules/ngx_http_opentracing_module.so;",
        "worker_processes 4;",
    ]
    assert f"resolver {RESOLVER} valid=10s ipv6=off;" in data["media-frontend-nginx.conf"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_benchmark_deploys_dsb_images_by_digest(rendered: dict[str, Path], variant: str) -> None:
    docs = documents(rendered[variant] / "benchmarks" / "social-network.yaml")
    deployments = [doc for doc in docs if doc["kind"] == "Deployment"]
    assert (
        len(deployments) == 26
    )  # 11 Thrift services, 6 MongoDB, 3 Redis, 4 memcached, nginx, media-frontend
    services = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "Service"}
    assert services == {doc["metadata"]["name"] for doc in deployments}
    images = {c["image"] for doc in deployments for c in doc["spec"]["template"]["spec"]["containers"]}
    dsb = {image for image in images if "deathstarbench" in image or "yg397" in image}
    assert dsb and all(image.endswith("@" + FAKE_DIGEST) for image in dsb)
    config_hashes = {
        doc["spec"]["template"]["metadata"]["annotations"]["firm.io/config-hash"] for doc in deployments
    }
    assert len(config_hashes) == 1
    config_keys = set(documents(rendered[variant] / "benchmarks" / "config.yaml")[1]["data"])
    checkout = rendered[variant] / "DeathStarBench"
    for doc in deployments:
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"] == "config":
                    assert mount["subPath"] in config_keys
                elif mount["name"] == "source":
                    assert (checkout / mount["subPath"]).is_dir(), mount


@pytest.mark.parametrize("variant", VARIANTS)
def test_jaeger_receives_otlp_and_keeps_spans_for_the_retention(
    rendered: dict[str, Path], variant: str
) -> None:
    docs = {doc["kind"]: doc for doc in documents(rendered[variant] / "jaeger" / "jaeger.yaml")}
    config = yaml.safe_load(docs["ConfigMap"]["data"]["config.yaml"])
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert "thrift_compact" in config["receivers"]["jaeger"]["protocols"]
    backend = config["extensions"]["jaeger_storage"]["backends"]["firm_store"]
    assert backend["badger"]["ttl"]["spans"] == "72h"
    ports = {(port["port"], port["protocol"]) for port in docs["Service"]["spec"]["ports"]}
    assert {(4317, "TCP"), (4318, "TCP"), (6831, "UDP"), (16686, "TCP")} <= ports
    image = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == _defaults("jaeger")["jaeger_image"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_cadvisor_enables_resctrl_only_on_labelled_nodes(rendered: dict[str, Path], variant: str) -> None:
    daemonsets = {
        doc["metadata"]["name"]: doc
        for doc in documents(rendered[variant] / "cadvisor" / "cadvisor.yaml")
        if doc["kind"] == "DaemonSet"
    }
    assert set(daemonsets) == {"cadvisor", "cadvisor-resctrl"}
    for name, resctrl in (("cadvisor-resctrl", True), ("cadvisor", False)):
        pod = daemonsets[name]["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        metrics = next(arg for arg in args if arg.startswith("--enable_metrics=")).split("=", 1)[1].split(",")
        assert ("resctrl" in metrics) is resctrl
        assert "sched" in metrics  # run-queue time: a neighbour contending for the pod's CPUs
        assert (
            any(volume.get("hostPath", {}).get("path") == "/sys/fs/resctrl" for volume in pod["volumes"])
            is resctrl
        )
        assert "--housekeeping_interval=1s" in args
        [term] = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        assert term["matchExpressions"][0]["operator"] == ("In" if resctrl else "NotIn")


@pytest.mark.parametrize("variant", VARIANTS)
def test_kubeadm_configuration_uses_the_systemd_cgroup_driver(
    rendered: dict[str, Path], variant: str
) -> None:
    docs = {doc["kind"]: doc for doc in documents(rendered[variant] / "kubernetes" / "kubeadm-config.yaml")}
    assert set(docs) == {
        "InitConfiguration",
        "ClusterConfiguration",
        "KubeletConfiguration",
        "KubeProxyConfiguration",
    }
    assert docs["ClusterConfiguration"]["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert docs["ClusterConfiguration"]["kubernetesVersion"] == f"v{KUBERNETES_VERSION}"
    assert docs["ClusterConfiguration"]["networking"]["podSubnet"] == "10.244.0.0/16"
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "systemd"
    assert isinstance(docs["KubeletConfiguration"]["failCgroupV1"], bool)
    net_conf = json.loads(
        next(
            doc
            for doc in documents(rendered[variant] / "kubernetes" / "flannel.yaml")
            if doc["kind"] == "ConfigMap"
        )["data"]["net-conf.json"]
    )
    assert net_conf["Network"] == docs["ClusterConfiguration"]["networking"]["podSubnet"]
