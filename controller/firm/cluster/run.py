"""The control loop's target on a cluster, built from one YAML file (``firm run --cluster FILE``).

:func:`build` puts the cluster pieces together:

- **instances**: the services' running pods (:class:`firm.cluster.discovery.Discovery`);
- **traces**: Jaeger's query API, one window per step (:class:`firm.cluster.traces.JaegerWindow`);
- **telemetry**: cAdvisor, through the kubelet's ``/metrics/cadvisor`` (the API server's node
  proxy) or the cadvisor DaemonSet, sampled every ``telemetry_interval_s`` in a thread of its own
  (:class:`firm.cluster.cadvisor.ClusterSampler`) into memory, and into Redis when one is given;
- **limits**: CPU and memory by in-place pod resize (:class:`firm.cluster.kube.KubernetesExecutor`),
  LLC, memory bandwidth, disk and network through the ansible executor on the pod's node, with the
  knobs that ``firm.core.rdt_facts`` reported there (:mod:`firm.cluster.preflight`);
- **scale-out and -in**: the services' Deployments (:class:`firm.cluster.kube.KubernetesScaler`).

The loop itself (:class:`firm.loop.runner.ControlLoop`) is the one the testbed uses: this module only
makes its :class:`firm.loop.runner.Target` and :class:`firm.loop.runner.Scaler`.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kubernetes import client as kube_client
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ansible_collections.firm.core.plugins.module_utils.errors import InvalidInputError
from firm import schema
from firm.cluster.ansible import AnsibleExecutor, AnsibleTarget, PlaybookRunner
from firm.cluster.app import ClusterTarget
from firm.cluster.cadvisor import ClusterCollector, ClusterSampler, Fetcher, kubelet_fetcher, url_fetcher
from firm.cluster.config import ClusterError, ServiceSpec
from firm.cluster.discovery import Discovery, PodInfo, calico_veth
from firm.cluster.kube import KubernetesExecutor, KubernetesScaler
from firm.cluster.preflight import HostFacts, NodeInfo, gather_facts, list_nodes, match_hosts
from firm.cluster.traces import JaegerWindow
from firm.telemetry.source import MemoryTelemetry, TelemetrySink
from firm.tracing.jaeger import JaegerClient
from firm.urls import http_url_problem

log = logging.getLogger(__name__)


class ClusterRunConfigError(ClusterError, InvalidInputError):
    """The cluster file was rejected before anything was asked of the cluster."""


class ServiceEntry(BaseModel):
    """One service of the application (see :class:`firm.cluster.config.ServiceSpec`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field(description="Namespace of its pods.")
    selector: str = Field(description="Label selector of its pods, e.g. app=compose-post-service.")
    deployment: str | None = Field(
        default=None, description="Deployment scaled out and in (None: not scaled)."
    )


def _http_url(value: str, example: str, *, whole: bool = False) -> str:
    """``value`` when it is an http(s) URL firm can call (:func:`firm.urls.http_url_problem`, the one
    check; ``whole`` as there), else ValueError saying what is wrong (the message names no part of
    the URL: the field's value is shown, password redacted, by :func:`firm.schema.describe`)."""
    problem = http_url_problem(value, whole=whole)
    if problem is not None:
        raise ValueError(f"it {problem}; give one such as {example}")
    return value


class ClusterRunConfig(BaseModel):
    """The application on the cluster: what ``firm run --cluster FILE`` reads."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    services: dict[str, ServiceEntry] = Field(
        min_length=1, description="The application's services by the name their spans carry."
    )
    jaeger_url: str = Field(description="Jaeger's query API, e.g. http://jaeger-query.observability:16686.")
    entry_services: list[str] = Field(
        min_length=1, description="Services whose spans start each request (e.g. nginx-web-server)."
    )
    slo_ms: dict[str, float] = Field(
        default_factory=dict,
        description="SLO per request type, p99 ms (the loop's --config slo_ms overrides).",
    )
    slo_window_s: float = Field(default=10.0, gt=0, description="Seconds of requests each step looks at.")
    trace_horizon_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds before a window a request may have started (slowest request).",
    )
    jaeger_deadline_s: float = Field(default=1.0, gt=0, description="Seconds a step waits for Jaeger.")
    telemetry: Literal["kubelet", "cadvisor"] = Field(
        default="kubelet",
        description="kubelet: /metrics/cadvisor through the API server's node proxy; "
        "cadvisor: the cadvisor DaemonSet's /metrics at cadvisor_url.",
    )
    cadvisor_url: str = Field(
        default="http://{address}:8080/metrics",
        description="With telemetry: cadvisor, the URL of a node's metrics ({address}: its InternalIP, {node}: its name).",
    )
    telemetry_interval_s: float = Field(default=1.0, gt=0, description="Seconds between telemetry rounds.")
    cgroup_driver: Literal["auto", "cgroupfs", "systemd"] = Field(
        default="auto", description="The kubelets' cgroup driver (auto: the cgroup module tries both)."
    )
    veth: Literal["calico", "none"] = Field(
        default="none",
        description="How a pod's host-side veth is named: calico (Calico's cali<hash>), none (no network knob).",
    )
    disk_device: str | None = Field(
        default=None,
        description="MAJ:MIN (or path) of the nodes' data disk for disk_io (None: no disk knob).",
    )
    nodes: dict[str, str] = Field(
        default_factory=dict,
        description="Node name -> inventory host, where they differ and ansible_host is not the InternalIP.",
    )
    refresh_s: float = Field(default=10.0, gt=0, description="Seconds between re-listings of the pods.")
    min_replicas: int = Field(default=1, ge=1, description="Fewest replicas scale-in leaves.")
    max_replicas: int = Field(default=10, ge=1, description="Most replicas scale-out makes.")
    scale_cooldown_s: float = Field(
        default=30.0, ge=0, description="Seconds between two scalings of a service."
    )

    @field_validator("jaeger_url")
    @classmethod
    def _jaeger_url(cls, value: str) -> str:
        return _http_url(value, "http://jaeger-query.observability:16686")

    @field_validator("cadvisor_url")
    @classmethod
    def _cadvisor_url(cls, value: str) -> str:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
            unknown = sorted({"{" + f + "}" for f in fields} - {"{address}", "{node}"})
        except ValueError:
            unknown = ["an unbalanced brace"]
        if unknown:
            raise ValueError(
                f"it holds {', '.join(unknown)}; only {{address}} and {{node}} are filled in "
                "(double a brace that is meant literally)"
            )
        try:
            example = value.format(address="node", node="node")
        except (ValueError, IndexError, KeyError, AttributeError):
            raise ValueError("its {address} or {node} has a format of its own; write them plain") from None
        _http_url(example, "http://{address}:8080/metrics", whole=True)
        return value

    @field_validator("slo_ms")
    @classmethod
    def _slo_ms(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if not v > 0]
        if bad:
            raise ValueError(f"the SLO of {', '.join(bad)} is not above 0; give each a p99 in ms above 0")
        return value

    @model_validator(mode="after")
    def _replicas(self) -> ClusterRunConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}; "
                "give min_replicas at most max_replicas"
            )
        return self

    def service_specs(self) -> list[ServiceSpec]:
        return [ServiceSpec(n, s.namespace, s.selector, s.deployment) for n, s in self.services.items()]


def load_config(path: str | Path) -> ClusterRunConfig:
    """The cluster file; raises :class:`ClusterRunConfigError` naming the field and the fix."""
    loaded = schema.read_yaml_mapping(
        path, what="the cluster file", doc="docs/cluster.md", error=ClusterRunConfigError
    )
    try:
        config = ClusterRunConfig.model_validate(loaded)
        config.service_specs()
    except ValidationError as exc:
        raise ClusterRunConfigError(
            f"{path}: {schema.describe(exc, ClusterRunConfig)}",
            fix="correct the fields named; every setting is described in docs/cluster.md",
        ) from None
    except ClusterError as exc:  # a service's namespace or selector (ServiceSpec)
        raise ClusterRunConfigError(f"{path}: {exc.message}", fix=exc.fix or "see docs/cluster.md") from None
    return config


@dataclass
class ClusterRun:
    """What :func:`build` made: the loop's target and scaler, and the telemetry sampler to start
    after the first refresh (:meth:`start`) and stop at the end (:meth:`stop`)."""

    target: ClusterTarget
    scaler: KubernetesScaler | None
    sampler: ClusterSampler
    nodes: list[NodeInfo] = field(default_factory=list)
    hosts: dict[str, HostFacts] = field(default_factory=dict)
    host_of: dict[str, str | None] = field(default_factory=dict)
    """node -> its inventory host (None: not in the inventory; its node-side knobs are not set)."""

    def start(self) -> None:
        self.sampler.start()

    def stop(self) -> None:
        self.sampler.stop()
        self.target.traces.close()


def node_targets(
    config: ClusterRunConfig, host_of: Mapping[str, str | None], hosts: Mapping[str, HostFacts]
) -> Any:
    """pod -> its :class:`AnsibleTarget` on its node's inventory host, with the knobs the host's
    ``rdt_facts`` allow (None: the node has no host, or it did not answer)."""

    def make(pod: PodInfo) -> AnsibleTarget | None:
        host = host_of.get(pod.node or "")
        facts = hosts.get(host or "")
        if host is None or facts is None or facts.facts is None:
            return None

        def has(resource: str) -> bool:
            return facts.capability(resource)[0]

        resctrl = facts.resctrl if (has("llc") or has("memory_bandwidth")) else None
        return AnsibleTarget(
            name=pod.instance,
            service=pod.service,
            host=host,
            pod_uid=pod.uid,
            container_ids=tuple(c.container_id for c in pod.containers if c.container_id),
            cgroup_driver=config.cgroup_driver,
            interface=calico_veth(pod.namespace, pod.name)
            if config.veth == "calico" and has("network")
            else None,
            disk_device=config.disk_device if has("disk_io") else None,
            resctrl=resctrl,
            memory=has("memory"),
        )

    return make


def build(
    config: ClusterRunConfig,
    api: kube_client.ApiClient,
    inventory: str | None,
    *,
    dry_run: bool = False,
    sinks: list[TelemetrySink] | None = None,
    hosts: Mapping[str, HostFacts] | None = None,
    node_run: PlaybookRunner | None = None,
    fetch: Fetcher | None = None,
    audit_path: str | None = None,
) -> ClusterRun:
    """The loop's target on the cluster (see the module's docstring).

    ``inventory`` (None: no node-side knobs, and no cgroup fallback for CPU and memory) is read once
    with ``firm.core.rdt_facts`` (``hosts`` gives the answers instead). ``sinks`` also receive every
    telemetry round (e.g. :class:`firm.telemetry.redis_store.RedisTelemetrySink`). ``node_run`` and
    ``fetch`` replace ansible-runner and the metrics reads (tests). Raises :class:`ClusterError`.
    """
    services = config.service_specs()
    try:
        nodes = list_nodes(api)
    except ClusterError as exc:  # RBAC may not allow it: the nodes' CPU is then unbounded
        log.warning("cannot list the nodes (%s): their allocatable CPU is not known", exc)
        nodes = []
    found_hosts = dict(hosts) if hosts is not None else (gather_facts(inventory) if inventory else {})
    host_of: dict[str, str | None] = (
        match_hosts(nodes, found_hosts, config.nodes) if nodes else dict(config.nodes)
    )
    if not nodes:  # without the node list: a node is its inventory host of the same name
        host_of = {**{h: h for h in found_hosts}, **host_of}
    for host, answer in found_hosts.items():
        if answer.error:
            log.warning("inventory host %s: %s", host, answer.error)
    node_executor = (
        AnsibleExecutor([], inventory, run=node_run, audit_path=audit_path) if inventory or node_run else None
    )
    executor = KubernetesExecutor(api, [], node_executor=node_executor)
    traces = JaegerWindow(
        JaegerClient(config.jaeger_url),
        config.entry_services,
        horizon_s=config.trace_horizon_s,
        deadline_s=config.jaeger_deadline_s,
    )
    memory = MemoryTelemetry()
    target = ClusterTarget(
        Discovery(api, services),
        traces,
        memory,
        executor,
        node_target=node_targets(config, host_of, found_hosts) if node_executor is not None else None,
        node_cpu={n.name: n.cpu for n in nodes if n.cpu is not None},
        refresh_s=config.refresh_s,
    )
    if fetch is None:
        fetch = (
            kubelet_fetcher(api)
            if config.telemetry == "kubelet"
            else url_fetcher(config.cadvisor_url, {n.name: n.internal_ip for n in nodes if n.internal_ip})
        )
    sampler = ClusterSampler(
        ClusterCollector(fetch),
        lambda: list(target.pods.values()),
        sinks=[memory, *(sinks or [])],
        interval_s=config.telemetry_interval_s,
    )
    scaler = (
        None
        if dry_run
        else KubernetesScaler(
            api,
            services,
            min_replicas=config.min_replicas,
            max_replicas=config.max_replicas,
            cooldown_s=config.scale_cooldown_s,
        )
    )
    return ClusterRun(target, scaler, sampler, nodes, found_hosts, host_of)
