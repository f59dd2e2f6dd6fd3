"""Discovery on a Kubernetes cluster: each service's pods, where they run, and their cgroups.

For every :class:`firm.cluster.config.ServiceSpec`, the pods matching its namespace and label
selector (``GET /api/v1/namespaces/{ns}/pods?labelSelector=...`` through the official client),
with their node, QoS class, containers, container IDs and resources. A pod's cgroup on its node
follows from its UID, QoS class and (for a container) its ID; the paths come from the actuation
library's resolver (``cgroup.kubernetes_candidates``), for the cgroupfs and systemd drivers and the
containerd, CRI-O and Docker runtimes. The host-side veth cannot be read from the API: see
:func:`host_veth` (the node's own view, through the pod's network namespace) and
:func:`calico_veth` (Calico's deterministic name).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.cluster.config import ClusterError, ServiceSpec, api_error, unreachable

log = logging.getLogger(__name__)

QOS_INDEX = {"Guaranteed": 0, "Burstable": 1, "BestEffort": 2}
"""Position of each QoS class in the resolver's candidates (``kubepods``, ``.../burstable``, ``.../besteffort``)."""

_QUANTITY = re.compile(
    r"^(?P<number>\+?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[KMGTPE]i|[eE][+-]?[0-9]+|[numkMGTPE]?)$"
)
_QUANTITY_SCALE = {
    **{f"{p}i": Decimal(1024) ** n for n, p in enumerate("KMGTPE", 1)},
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    **{p: Decimal(1000) ** n for n, p in enumerate("kMGTPE", 1)},
}
_QUANTITY_MAX = Decimal(2**63 - 1)
"""The largest value a Kubernetes quantity holds (apimachinery keeps them in an int64)."""


def quantity(text: str, what: str) -> Decimal:
    """A Kubernetes resource quantity as the API server reads it: a plain, fixed-point or exponent
    number (``128974848``, ``0.5``, ``129e6``) with an optional decimal (``n``, ``u``, ``m``, ``k``,
    ``M``, ``G``, ``T``, ``P``, ``E``) or binary (``Ki`` ... ``Ei``) suffix; ``128974848000m`` is
    128974848. Raises :class:`ClusterError` naming ``what`` for anything else, a negative quantity
    or one beyond the API's int64."""
    match = _QUANTITY.match(str(text).strip())
    if match is None:
        raise ClusterError(
            f"{what} {text!r} is not a Kubernetes quantity",
            fix="give a number with an optional suffix, as in the pod spec: 1.5, 1500m, 129e6, 129M, 123Mi",
        )
    suffix = match.group("suffix")
    if suffix not in _QUANTITY_SCALE:  # a decimal exponent, e.g. e6 or E-3
        exponent = int(suffix[1:])
        if abs(exponent) > 30:  # beyond the API's int64 (or below its nano-units) either way
            raise ClusterError(f"{what} {text!r} is out of range", fix="give a quantity the API server takes")
        scale = Decimal(10) ** exponent
    else:
        scale = _QUANTITY_SCALE[suffix]
    value = Decimal(match.group("number")) * scale
    if value > _QUANTITY_MAX:
        raise ClusterError(
            f"{what} {text!r} is larger than a Kubernetes quantity holds (2^63 - 1)",
            fix="give the quantity the API server shows for the pod",
        )
    return value


def cpu_cores(quantity_text: str | None) -> float | None:
    """A CPU quantity (``100m``, ``1.5``, ``2``, ``1e3m``) in cores; None for None."""
    if quantity_text is None:
        return None
    return float(quantity(quantity_text, "CPU quantity"))


def memory_bytes(quantity_text: str | None) -> int | None:
    """A memory quantity (``50Mi``, ``1G``, ``129e6``, ``1048576``) in bytes, a fraction of a byte
    rounded up as the API server does (``400m`` is 1 byte); None for None."""
    if quantity_text is None:
        return None
    return math.ceil(quantity(quantity_text, "memory quantity"))


@dataclass(frozen=True)
class ContainerInfo:
    """One application container of a pod."""

    name: str
    container_id: str | None
    """As the API reports it, with the runtime's scheme (``containerd://<64 hex>``); None before it started."""
    requests: Mapping[str, str] = field(default_factory=dict)
    """Resource requests as the API gives them (``{"cpu": "40m", "memory": "15Mi"}``)."""
    limits: Mapping[str, str] = field(default_factory=dict)
    """Resource limits as the API gives them."""

    @property
    def runtime(self) -> str | None:
        """``containerd``, ``cri-o`` or ``docker`` from the ID's scheme (None: not started)."""
        if not self.container_id or "://" not in self.container_id:
            return None
        scheme = self.container_id.split("://", 1)[0]
        return {"crio": "cri-o"}.get(scheme, scheme)

    @property
    def cpu_limit(self) -> float | None:
        """The CPU limit in cores (None: none)."""
        return cpu_cores(self.limits.get("cpu"))


@dataclass(frozen=True)
class PodInfo:
    """One pod of a service: an instance of it, for firm."""

    service: str
    namespace: str
    name: str
    """The pod's name, which is also the instance's name in firm."""
    uid: str
    node: str | None
    """``spec.nodeName`` (None while unscheduled)."""
    host_ip: str | None
    pod_ip: str | None
    phase: str
    qos_class: str
    """``Guaranteed``, ``Burstable`` or ``BestEffort``."""
    containers: tuple[ContainerInfo, ...]
    resize_policy: Mapping[str, str] = field(default_factory=dict)
    """Per resource, ``NotRequired`` or ``RestartContainer`` (empty: the default, NotRequired)."""

    @property
    def instance(self) -> str:
        return self.name

    @property
    def running(self) -> bool:
        return self.phase == "Running" and self.node is not None

    def cgroup_path(self, driver: str = "cgroupfs", container: str | None = None) -> str:
        """The pod's (or ``container``'s) cgroup path below each hierarchy's root on its node.

        ``driver`` is the kubelet's cgroup driver (``cgroupfs`` or ``systemd``). Raises
        :class:`ClusterError` for an unknown QoS class, container, or a container not started.
        """
        if driver not in ("cgroupfs", "systemd"):
            raise ClusterError(f"cgroup driver {driver!r} is not known", fix="use cgroupfs or systemd")
        if self.qos_class not in QOS_INDEX:
            raise ClusterError(
                f"pod {self.namespace}/{self.name} has QoS class {self.qos_class!r}",
                fix="wait until the API server has set status.qosClass",
            )
        container_id: str | None = None
        runtime = "containerd"
        if container is not None:
            found = [c for c in self.containers if c.name == container]
            if not found or found[0].container_id is None:
                raise ClusterError(
                    f"pod {self.namespace}/{self.name} has no started container {container!r}",
                    fix=f"use one of {', '.join(c.name for c in self.containers)}",
                )
            container_id = found[0].container_id
            runtime = found[0].runtime or runtime
        candidates = cgroup.kubernetes_candidates(self.uid, container_id, driver=driver, runtime=runtime)
        return candidates[QOS_INDEX[self.qos_class]]

    def cgroup_candidates(self, container: str | None = None) -> list[str]:
        """Every path the pod (or container) may have, both drivers (for a node whose driver is unknown)."""
        cid = (
            next((c.container_id for c in self.containers if c.name == container), None)
            if container
            else None
        )
        return cgroup.kubernetes_candidates(self.uid, cid)

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "node": self.node,
            "host_ip": self.host_ip,
            "pod_ip": self.pod_ip,
            "phase": self.phase,
            "qos_class": self.qos_class,
            "containers": [
                {
                    "name": c.name,
                    "container_id": c.container_id,
                    "requests": dict(c.requests),
                    "limits": dict(c.limits),
                }
                for c in self.containers
            ],
        }


def pod_info(service: str, pod: kube_client.V1Pod) -> PodInfo:
    """A :class:`PodInfo` from the client's ``V1Pod``."""
    meta, spec, status = pod.metadata, pod.spec, pod.status
    if meta is None or spec is None or meta.uid is None or meta.name is None:
        raise ClusterError(
            "the API returned a pod without metadata or spec", fix="check the API server version"
        )
    statuses = {s.name: s for s in (status.container_statuses or [])} if status is not None else {}
    containers = []
    policy: dict[str, str] = {}
    for container in spec.containers:
        resources = container.resources
        state = statuses.get(container.name)
        containers.append(
            ContainerInfo(
                container.name,
                state.container_id if state is not None else None,
                dict(resources.requests or {}) if resources is not None else {},
                dict(resources.limits or {}) if resources is not None else {},
            )
        )
        for rule in container.resize_policy or []:
            policy.setdefault(rule.resource_name, rule.restart_policy)
    return PodInfo(
        service,
        meta.namespace or "",
        meta.name,
        meta.uid,
        spec.node_name,
        status.host_ip if status else None,
        status.pod_ip if status else None,
        (status.phase if status else None) or "Unknown",
        (status.qos_class if status else None) or "",
        tuple(containers),
        policy,
    )


class Discovery:
    """Finds the pods of the application's services through the API server.

    ``api`` is a ``kubernetes.client.ApiClient`` (see :func:`firm.cluster.config.api_client`);
    ``timeout_s`` bounds each request.
    """

    def __init__(
        self, api: kube_client.ApiClient, services: Sequence[ServiceSpec], *, timeout_s: float = 10.0
    ) -> None:
        names = [s.name for s in services]
        if len(set(names)) != len(names):
            raise ClusterError(
                f"services named twice: {sorted({n for n in names if names.count(n) > 1})}",
                fix="give each service once",
            )
        self.core = kube_client.CoreV1Api(api)
        self.services = list(services)
        self.timeout_s = timeout_s

    def pods(self, *, running_only: bool = True) -> list[PodInfo]:
        """Every service's pods (running ones only, by default), sorted by service and name.

        Raises :class:`ClusterError` when the API refuses (403: RBAC) or cannot be reached.
        """
        found: list[PodInfo] = []
        for service in self.services:
            try:
                listed = self.core.list_namespaced_pod(
                    service.namespace, label_selector=service.selector, _request_timeout=self.timeout_s
                )
            except ApiException as exc:
                raise api_error(
                    exc, f"listing the pods of {service.name} ({service.namespace}, {service.selector})"
                ) from exc
            except (HTTPError, OSError) as exc:
                raise unreachable(exc, f"listing the pods of {service.name}", self.core) from exc
            for pod in listed.items:
                info = pod_info(service.name, pod)
                if info.running or not running_only:
                    found.append(info)
        duplicates = _duplicates(p.name for p in found)
        if duplicates:
            raise ClusterError(
                f"pods matched by more than one service: {', '.join(duplicates)}",
                fix="make the services' label selectors disjoint",
            )
        return sorted(found, key=lambda p: (p.service, p.name))


def _duplicates(names: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    twice: set[str] = set()
    for name in names:
        (twice if name in seen else seen).add(name)
    return sorted(twice)


def calico_veth(namespace: str, pod: str, prefix: str = "cali") -> str:
    """The host-side veth Calico gives a pod: ``prefix`` + the first 11 hex digits of
    sha1(``namespace.pod``) (Calico's ``VethNameForWorkload``)."""
    return prefix + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


_PEER = re.compile(r"^\d+:\s+([^:@\s]+)@if(\d+):")

Runner = Callable[[Sequence[str]], str]


def _run(argv: Sequence[str]) -> str:
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=10, check=False, env={**os.environ, "LC_ALL": "C"}
    )
    if done.returncode != 0:
        raise ClusterError(
            f"{' '.join(argv)} failed: {done.stderr.strip()}",
            fix="run as root on the pod's node, with iproute2 and nsenter",
        )
    return done.stdout


def host_veth(pid: int, interface: str = "eth0", *, sysfs_root: str = "/sys", run: Runner = _run) -> str:
    """On the pod's node: the host-side end of the veth whose other end is ``interface`` in the
    network namespace of process ``pid`` (any process of the pod).

    Inside the namespace ``ip -o link`` shows ``eth0@ifN``, N the peer's ifindex on the host;
    the host interface with that ifindex is the answer. Raises :class:`ClusterError` when the
    interface is not a veth or no host interface has that index.
    """
    output = run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "link", "show", "dev", interface])
    match = _PEER.match(output.strip())
    if match is None:
        raise ClusterError(
            f"{interface} of process {pid} has no peer (not a veth): {output.strip()[:120]!r}",
            fix="give the pod's veth interface (eth0 for most CNIs)",
        )
    index = match.group(2)
    net = os.path.join(sysfs_root, "class", "net")
    for name in sorted(os.listdir(net)):
        try:
            with open(os.path.join(net, name, "ifindex")) as handle:
                if handle.read().strip() == index:
                    return name
        except OSError:
            continue
    raise ClusterError(
        f"no interface with ifindex {index} on this host (peer of {interface} of process {pid})",
        fix="run on the pod's node, in the host's network namespace",
    )


def read_pids(group_dir: str) -> list[int]:
    """Processes of a cgroup directory (``cgroup.procs``), and of its sub-groups (a pod's containers)."""
    pids: list[int] = []
    for directory, _, files in os.walk(group_dir):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(directory, "cgroup.procs")) as handle:
                    pids += [int(p) for p in handle.read().split()]
            except (OSError, ValueError):
                continue
    return pids


def pod_host_veth(
    layout: cgroup.Layout,
    pod: PodInfo,
    interface: str = "eth0",
    *,
    driver: str = "auto",
    sysfs_root: str = "/sys",
    run: Runner = _run,
) -> str:
    """On the pod's node: its host-side veth, through any of its processes (see :func:`host_veth`)."""
    try:
        group = cgroup.group_of_pod(layout, pod.uid, driver=driver)
    except FirmError as exc:
        raise ClusterError(
            f"pod {pod.namespace}/{pod.name} has no cgroup here: {exc.message}", fix="run on the pod's node"
        ) from exc
    probe = "cpu" if "cpu" in layout.hierarchies else next(iter(layout.hierarchies))
    pids = read_pids(group.dir(probe))
    if not pids:
        raise ClusterError(f"pod {pod.namespace}/{pod.name} has no process", fix="check that the pod runs")
    return host_veth(pids[0], interface, sysfs_root=sysfs_root, run=run)
