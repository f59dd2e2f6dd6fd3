"""``firm preflight --cluster``: what firm can control on each node of a cluster, and what it cannot and why.

Two sources, both read-only:

- **The nodes themselves**, through ansible-runner over the inventory ``site.yml`` used: one run of
  ``firm.core.rdt_facts`` (cgroup controllers, tc, RDT flags, resctrl) and, where resctrl is mounted,
  ``firm.core.resctrl`` in check mode for its limits (cache ways, bandwidth unit), all hosts in
  parallel. An unreachable host or a failed module is that host's answer, not an error.
- **The API server** (with a kubeconfig or in-cluster credentials): the nodes, their allocatable
  CPU and memory and their kubelet's version. A kubelet of 1.33 or later resizes pods in place
  (CPU and memory through the ``resize`` subresource); before, firm writes the pod's cgroups on the
  node and the kubelet may rewrite them. And whether firm's user or service account may make
  every call ``firm run --cluster`` makes (:mod:`firm.cluster.rbac`, one SelfSubjectAccessReview
  each), each missing permission with the rule that grants it.

A Kubernetes node is matched to an inventory host by name (the node's name is the inventory
hostname), by an explicit ``{node: host}`` mapping, or by its InternalIP being the host's
``ansible_host``.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ansible_runner
from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from firm.cluster.ansible import LOCAL_INVENTORY, absolute_inventory, runner_env
from firm.cluster.config import ClusterError, ServiceSpec, api_error, unreachable
from firm.cluster.discovery import cpu_cores, memory_bytes
from firm.cluster.rbac import needed, rbac_report

log = logging.getLogger(__name__)

CLUSTER_RESOURCES = ("cpu", "memory", "llc", "memory_bandwidth", "disk_io", "network")
"""What firm sets on a cluster: CPU and memory per pod, the rest on the pod's node."""
NODE_SIDE = ("llc", "memory_bandwidth", "disk_io", "network")
RESIZE_SINCE = (1, 33)
"""The first Kubernetes minor with in-place pod resize on by default (beta; stable in 1.35)."""

FACTS_TASK = "Read what firm can control here"
RESCTRL_TASK = "Read the resctrl limits"


@dataclass(frozen=True)
class NodeInfo:
    """One Kubernetes node as the API reports it."""

    name: str
    internal_ip: str | None
    cpu: float | None
    """Allocatable CPU, cores."""
    memory: int | None
    """Allocatable memory, bytes."""
    kubelet_version: str
    """``status.nodeInfo.kubeletVersion``, e.g. ``v1.35.0``."""
    runtime: str
    """``status.nodeInfo.containerRuntimeVersion``, e.g. ``containerd://2.2.1``."""
    kernel: str
    ready: bool

    @property
    def resize(self) -> bool:
        """Whether its kubelet resizes pods in place (1.33 or later)."""
        found = re.match(r"v?(\d+)\.(\d+)", self.kubelet_version)
        return found is not None and (int(found.group(1)), int(found.group(2))) >= RESIZE_SINCE

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "internal_ip": self.internal_ip,
            "cpu": self.cpu,
            "memory": self.memory,
            "kubelet_version": self.kubelet_version,
            "runtime": self.runtime,
            "kernel": self.kernel,
            "ready": self.ready,
            "resize": self.resize,
        }


def node_info(node: kube_client.V1Node) -> NodeInfo:
    """A :class:`NodeInfo` from the client's ``V1Node``."""
    meta, status = node.metadata, node.status
    if meta is None or meta.name is None:
        raise ClusterError("the API returned a node without a name", fix="check the API server version")
    addresses = (status.addresses or []) if status is not None else []
    allocatable = (status.allocatable or {}) if status is not None else {}
    info = status.node_info if status is not None else None
    conditions = (status.conditions or []) if status is not None else []
    return NodeInfo(
        meta.name,
        next((a.address for a in addresses if a.type == "InternalIP"), None),
        cpu_cores(allocatable.get("cpu")),
        memory_bytes(allocatable.get("memory")),
        info.kubelet_version if info is not None else "",
        info.container_runtime_version if info is not None else "",
        info.kernel_version if info is not None else "",
        any(c.type == "Ready" and c.status == "True" for c in conditions),
    )


def list_nodes(api: kube_client.ApiClient, *, timeout_s: float = 10.0) -> list[NodeInfo]:
    """The cluster's nodes, sorted by name. Raises :class:`ClusterError` when the API refuses
    (403: RBAC ``list`` on ``nodes``) or cannot be reached."""
    try:
        listed = kube_client.CoreV1Api(api).list_node(_request_timeout=timeout_s)
    except ApiException as exc:
        raise api_error(exc, "listing the nodes") from exc
    except (HTTPError, OSError) as exc:
        raise unreachable(exc, "listing the nodes", api) from exc
    return sorted((node_info(n) for n in listed.items), key=lambda n: n.name)


@dataclass(frozen=True)
class HostFacts:
    """What one inventory host answered."""

    host: str
    """Its inventory hostname."""
    address: str | None = None
    """The address ansible reached it at (``ansible_host``)."""
    facts: Mapping[str, Any] | None = None
    """``firm_rdt`` as ``firm.core.rdt_facts`` returns it (None: no answer)."""
    resctrl: Mapping[str, Any] | None = None
    """resctrl's ``info`` as ``firm.core.resctrl`` returns it (None: resctrl not mounted or unreadable)."""
    error: str | None = None
    """Why there are no facts: unreachable, or the module failed."""

    def capability(self, resource: str) -> tuple[bool, str]:
        """(available, how or why) of ``resource`` on this host."""
        if self.facts is None:
            return False, f"{self.host} did not answer: {self.error or 'no facts'}"
        found = dict(self.facts.get("capabilities") or {}).get(resource)
        if not isinstance(found, Mapping):
            return False, f"{self.host}'s rdt_facts do not report {resource}"
        return bool(found.get("available")), str(found.get("how", ""))

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "address": self.address,
            "error": self.error,
            "facts": dict(self.facts) if self.facts is not None else None,
            "resctrl": dict(self.resctrl) if self.resctrl is not None else None,
        }


FactsRunner = Callable[[str | Mapping[str, Any], list[dict[str, Any]]], list[dict[str, Any]]]
"""(inventory, play) -> the run's ``runner_on_*`` events."""


def facts_play(pattern: str = "all", *, probe_pqos: bool = False) -> list[dict[str, Any]]:
    """The read-only play: ``rdt_facts``, then the resctrl limits where resctrl is mounted."""
    return [
        {
            "name": "What firm can control",
            "hosts": pattern,
            "gather_facts": False,
            "tasks": [
                {"name": FACTS_TASK, "firm.core.rdt_facts": {"probe_pqos": probe_pqos}},
                {
                    "name": RESCTRL_TASK,
                    "firm.core.resctrl": {"name": "firm-preflight", "state": "absent"},
                    "check_mode": True,
                    "ignore_errors": True,
                    "when": "ansible_facts.firm_rdt.resctrl_mount is not none",
                },
            ],
        }
    ]


def _run_play(
    inventory: str | Mapping[str, Any], play: list[dict[str, Any]], timeout_s: int
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="firm-preflight-") as private:
        run = ansible_runner.run(
            private_data_dir=private,
            playbook=play,
            inventory=inventory,
            envvars=runner_env(),
            quiet=True,
            timeout=timeout_s,
            suppress_env_files=True,
        )
        events = [e for e in run.events if str(e.get("event", "")).startswith("runner_on_")]
        if not events:
            raise ClusterError(
                f"ansible-runner ran nothing (status {run.status}, rc {run.rc})",
                fix="check that the inventory has hosts matching the pattern and that ansible runs",
            )
        return events


def gather_facts(
    inventory: str | None,
    pattern: str = "all",
    *,
    probe_pqos: bool = False,
    timeout_s: int = 300,
    run: FactsRunner | None = None,
) -> dict[str, HostFacts]:
    """Every matched host's facts, in one ansible-runner run over ``inventory`` (None: this machine,
    connection local). Raises :class:`ClusterError` only when nothing ran at all."""
    play = facts_play(pattern, probe_pqos=probe_pqos)
    found = absolute_inventory(inventory)
    source: str | Mapping[str, Any] = found if found is not None else LOCAL_INVENTORY
    events = run(source, play) if run is not None else _run_play(source, play, timeout_s)
    answers: dict[str, dict[str, Any]] = {}
    for event in events:
        data = event.get("event_data", {})
        host = str(data.get("host", ""))
        if not host:
            continue
        entry = answers.setdefault(host, {"host": host})
        entry["address"] = entry.get("address") or data.get("remote_addr")
        res = dict(data.get("res") or {})
        kind, task = event["event"], data.get("task")
        if kind == "runner_on_unreachable":
            entry["error"] = f"unreachable: {_message(res)}"
        elif kind == "runner_on_failed" and task == FACTS_TASK:
            entry["error"] = f"firm.core.rdt_facts failed: {_message(res)}"
        elif kind == "runner_on_ok" and task == FACTS_TASK:
            entry["facts"] = dict(res.get("ansible_facts") or {}).get("firm_rdt")
        elif kind == "runner_on_ok" and task == RESCTRL_TASK and isinstance(res.get("info"), dict):
            entry["resctrl"] = res["info"]
    return {host: HostFacts(**answers[host]) for host in sorted(answers)}


def _message(result: Mapping[str, Any]) -> str:
    return str(result.get("msg") or result.get("stderr") or "no message")[:300]


def match_hosts(
    nodes: Sequence[NodeInfo], hosts: Mapping[str, HostFacts], mapping: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    """node -> its inventory host (None: none): ``mapping`` first, then the same name, then the
    host whose ``ansible_host`` is the node's InternalIP."""
    by_address = {h.address: h.host for h in hosts.values() if h.address}
    found: dict[str, str | None] = {}
    for node in nodes:
        if mapping and node.name in mapping:
            found[node.name] = mapping[node.name]
        elif node.name in hosts:
            found[node.name] = node.name
        else:
            found[node.name] = by_address.get(node.internal_ip) if node.internal_ip else None
    return found


def _cpu_or_memory(resource: str, node: NodeInfo | None, host: HostFacts | None) -> tuple[bool, str]:
    if node is not None and node.resize:
        return True, f"in-place pod resize (kubelet {node.kubelet_version})"
    if host is None:
        why = (
            f"kubelet {node.kubelet_version} has no in-place resize (before 1.33) and the node is not in "
            "the inventory: add it to -i so firm can write the pod's cgroups"
            if node is not None
            else "no API server and no host"
        )
        return False, why
    available, how = host.capability(resource)
    if not available:
        return False, how
    caveat = (
        f"kubelet {node.kubelet_version} has no in-place resize; it may rewrite them"
        if node is not None
        else "no --kubeconfig: no in-place resize"
    )
    return True, f"{how} on {host.host}, written to the pods' cgroups ({caveat})"


def _node_side(resource: str, node: NodeInfo | None, host: HostFacts | None) -> tuple[bool, str]:
    if host is None:
        assert node is not None
        where = f" (or with ansible_host {node.internal_ip})" if node.internal_ip else ""
        return False, f"node {node.name} is not in the inventory: add it to -i as {node.name}{where}"
    available, how = host.capability(resource)
    if available and resource in ("llc", "memory_bandwidth") and host.resctrl is None:
        return False, f"resctrl's limits could not be read on {host.host} (firm.core.resctrl failed)"
    if available and resource == "memory_bandwidth" and dict(host.resctrl or {}).get("mba_mbps"):
        return False, "resctrl is mounted with mba_MBps: remount it without, firm sets percent"
    return available, how


def node_report(node: NodeInfo | None, host: HostFacts | None) -> dict[str, Any]:
    """One node: what firm can control there (resource -> how) and what not (resource -> why)."""
    can: dict[str, str] = {}
    cannot: dict[str, str] = {}
    for resource in CLUSTER_RESOURCES:
        if resource in ("cpu", "memory"):
            available, text = _cpu_or_memory(resource, node, host)
        else:
            available, text = _node_side(resource, node, host)
        (can if available else cannot)[resource] = text
    return {
        "node": node.name if node is not None else None,
        "host": host.host if host is not None else None,
        "address": host.address if host is not None else None,
        "kubelet_version": node.kubelet_version if node is not None else None,
        "resize": node.resize if node is not None else False,
        "cpu": node.cpu if node is not None else None,
        "memory": node.memory if node is not None else None,
        "ready": node.ready if node is not None else None,
        "controllable": can,
        "not_controllable": cannot,
        "error": host.error if host is not None else None,
    }


def cluster_report(
    hosts: Mapping[str, HostFacts],
    nodes: Sequence[NodeInfo] | None = None,
    mapping: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Every node's :func:`node_report` (without ``nodes``: every host's), and the inventory hosts
    that are no node. ``ready`` when every node can have its CPU set."""
    if nodes is None:
        entries = [node_report(None, h) for h in hosts.values()]
        extra: list[str] = []
    else:
        matched = match_hosts(nodes, hosts, mapping)
        entries = [node_report(n, hosts.get(matched[n.name] or "")) for n in nodes]
        used = {h for h in matched.values() if h}
        extra = sorted(set(hosts) - used)
    return {
        "api": nodes is not None,
        "nodes": entries,
        "hosts_without_node": extra,
        "ready": bool(entries) and all("cpu" in e["controllable"] for e in entries),
    }


def cluster_preflight(
    inventory: str | None,
    *,
    api: kube_client.ApiClient | None = None,
    pattern: str = "all",
    mapping: Mapping[str, str] | None = None,
    probe_pqos: bool = False,
    run: FactsRunner | None = None,
    services: Sequence[ServiceSpec] | None = None,
    telemetry: str = "kubelet",
) -> dict[str, Any]:
    """:func:`gather_facts` over the inventory, the nodes from ``api`` (None: none), as one
    :func:`cluster_report`; with ``api`` also ``rbac``, the permissions ``firm run --cluster``
    needs for ``services`` (None: checked in every namespace) and ``telemetry``
    (:func:`firm.cluster.rbac.rbac_report`), and ``ready`` only when none required is missing.
    Raises :class:`ClusterError` when the API refuses the nodes or nothing ran."""
    nodes = list_nodes(api) if api is not None else None
    hosts = gather_facts(inventory, pattern, probe_pqos=probe_pqos, run=run)
    report = cluster_report(hosts, nodes, mapping)
    report["rbac"] = None
    if api is not None:
        report["rbac"] = rbac_report(api, needed(services, telemetry=telemetry))
        report["rbac"]["namespaces"] = (
            sorted({s.namespace for s in services}) if services is not None else None
        )
        report["ready"] = report["ready"] and report["rbac"]["ready"]
    return report
