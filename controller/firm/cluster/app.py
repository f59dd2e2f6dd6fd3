"""The application on a Kubernetes cluster as the control loop's target: pods from discovery, traces
from Jaeger, telemetry from cAdvisor (through Redis), limits through the Kubernetes executor."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

from firm.actuate.executor import Executor
from firm.cluster.ansible import AnsibleTarget
from firm.cluster.discovery import Discovery, PodInfo
from firm.cluster.kube import KubernetesExecutor
from firm.cluster.traces import JaegerWindow
from firm.telemetry.cpus import CpuLoad
from firm.telemetry.model import Sample
from firm.telemetry.source import TelemetrySource
from firm.tracing.model import Trace

NodeTarget = Callable[[PodInfo], AnsibleTarget | None]
"""pod -> where its node-side knobs are (None: none), for the ansible executor of the nodes."""


class ClusterTarget:
    """The application on a cluster as the control loop sees it (:class:`firm.loop.runner.Target`).

    Instances are the services' running pods (re-discovered at most every ``refresh_s``), traces come
    from :class:`firm.cluster.traces.JaegerWindow`, telemetry from any
    :class:`firm.telemetry.TelemetrySource` (the Redis one :class:`firm.cluster.cadvisor.ClusterSampler`
    writes to), limits go through :class:`firm.cluster.kube.KubernetesExecutor`. ``node_target``
    makes each new pod's node-side target (resctrl, disk, tc) for the executor's ansible part.
    ``node_cpu`` gives each node's allocatable cores (absent: unbounded).
    """

    def __init__(
        self,
        discovery: Discovery,
        traces: JaegerWindow,
        telemetry: TelemetrySource | None,
        executor: KubernetesExecutor,
        *,
        node_target: NodeTarget | None = None,
        node_cpu: Mapping[str, float] | None = None,
        refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.discovery, self.traces, self.telemetry, self.kube = discovery, traces, telemetry, executor
        self.node_target = node_target
        self.node_cpu = dict(node_cpu or {})
        self.refresh_s = refresh_s
        self.clock = clock
        self.pods: dict[str, PodInfo] = {}
        self._refreshed = -math.inf

    @property
    def executor(self) -> Executor:
        return self.kube

    def refresh(self) -> tuple[list[str], list[str]]:
        """Re-discover the pods (at most every ``refresh_s``); returns the instances added and removed.
        Raises :class:`firm.cluster.config.ClusterError` when the API cannot be read."""
        if self.clock() - self._refreshed < self.refresh_s:
            return [], []
        pods = {p.instance: p for p in self.discovery.pods()}
        self._refreshed = self.clock()
        added = sorted(set(pods) - set(self.pods))
        removed = sorted(set(self.pods) - set(pods))
        self.pods = pods
        self.kube.set_pods(list(pods.values()))
        node = self.kube.node_executor
        if node is not None:
            for name in removed:
                node.remove_target(name)
            for name in added:
                made = self.node_target(pods[name]) if self.node_target is not None else None
                if made is not None:
                    node.add_target(made)
        return added, removed

    def names(self) -> list[str]:
        return sorted(self.pods)

    def service_of(self, name: str) -> str:
        return self.pods[name].service

    def cpu_capacity(self, name: str) -> float:
        node = self.pods[name].node
        return self.node_cpu.get(node or "", math.inf)

    def read_traces(self, start_us: int, end_us: int) -> list[Trace]:
        return self.traces.read(start_us, end_us)

    def latest_telemetry(self, names: Sequence[str]) -> dict[str, Sample | None]:
        if self.telemetry is None:
            return dict.fromkeys(names)
        return {name: self.telemetry.latest(name) for name in names}

    def cpu_load(self) -> Mapping[int, CpuLoad] | None:
        """Not known on a cluster (cAdvisor's per-CPU usage is off by default): no placement."""
        return None
