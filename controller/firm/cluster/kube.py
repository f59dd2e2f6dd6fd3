"""The Kubernetes executor and scaler.

**CPU and memory** go through the API: an in-place resize of the pod (``PATCH
/api/v1/namespaces/{ns}/pods/{name}/resize``, beta from 1.33, stable in 1.35), so the kubelet
itself sets the cgroups and keeps them. The instance's CPU (cores) and memory (bytes) are shared
among the pod's containers in proportion to their current limits (one container: all of it); a
request above the new limit is lowered with it, a Guaranteed pod keeps requests equal to limits
(the QoS class cannot change in a resize). BestEffort pods have no limit to resize. The kubelet
refuses to lower a memory limit below what the container uses (the resize stays pending).

**Older clusters** answer 404 for the ``resize`` subresource; firm then writes the pod's cgroups
on its node through the ansible executor (``firm.core.cgroup`` with ``pod_uid`` and the container
IDs). Caveat: the kubelet owns those cgroups and rewrites them to the pod spec whenever it syncs
the pod (a restart, a spec or status change, a kubelet restart), so such a limit is not durable;
firm re-asserts it each step it decides, and the audit marks the step ``fallback: cgroup``.

**LLC, memory bandwidth, disk and network** go through the ansible executor on the pod's node
(resctrl group, blkio throttle, tc on the host-side veth). A step is one unit: the ansible part
runs first (atomic per its own rollback), then the resizes; a failed resize undoes the resizes
already made and the ansible part.

**Scale-out and scale-in** (:class:`KubernetesScaler`) change ``spec.replicas`` through the
Deployment's ``scale`` subresource, read-modify-replace with the resourceVersion, retried on 409.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from firm.actuate.executor import Action, Applied, ExecutorError, Snapshot, StepResult, Value
from firm.cluster.ansible import AnsibleExecutor
from firm.cluster.config import ClusterError, ServiceSpec, api_error, unreachable
from firm.cluster.discovery import PodInfo, cpu_cores, memory_bytes, pod_info

log = logging.getLogger(__name__)

NODE_RESOURCES = frozenset({"llc", "memory_bandwidth", "disk_io", "network"})
"""Resources set on the pod's node through the ansible executor."""


def _millicores(cores: float) -> str:
    return f"{max(1, round(cores * 1000))}m"


API_RESOURCES = frozenset({"cpu", "memory"})
"""Resources set by the pod's in-place resize (or, without it, its cgroups on the node)."""


def _quantity(resource: str, value: float) -> str:
    """A resource quantity for the API: millicores for ``cpu``, whole bytes for ``memory``."""
    return _millicores(value) if resource == "cpu" else str(max(4096, round(value)))


@dataclass(frozen=True)
class ResizeOutcome:
    """What the API server answered to one resize."""

    pod: str
    state: str
    """``accepted``, ``pending`` (Deferred: waits for room on the node), ``infeasible`` or ``fallback``."""
    message: str = ""


class KubernetesExecutor:
    """The :class:`firm.actuate.executor.Executor` of a cluster (see the module's docstring).

    ``pods`` are the instances (from :class:`firm.cluster.discovery.Discovery`); ``node_executor``
    the ansible executor whose targets are the same instances on their nodes (None: CPU only).
    """

    def __init__(
        self,
        api: kube_client.ApiClient,
        pods: Sequence[PodInfo],
        *,
        node_executor: AnsibleExecutor | None = None,
        timeout_s: float = 10.0,
        field_manager: str = "firm",
    ) -> None:
        self.core = kube_client.CoreV1Api(api)
        self.pods = {p.instance: p for p in pods}
        self.node_executor = node_executor
        self.timeout_s = timeout_s
        self.field_manager = field_manager
        self.resize_supported: bool | None = None
        """None until the first resize; False on a cluster without the ``resize`` subresource."""
        self.outcomes: list[ResizeOutcome] = []
        """Every resize's outcome, oldest first (for the audit)."""
        self._written: dict[tuple[str, str], float] = {}
        """(instance, resource) -> the value the fallback wrote to the pod's cgroups (its spec still
        says the old limit)."""

    def set_pods(self, pods: Sequence[PodInfo]) -> None:
        """The pods as discovery listed them (their specs are the limits in force after a resize)."""
        self.pods = {p.instance: p for p in pods}

    def resources(self, instance: str) -> frozenset[str]:
        pod = self.pods.get(instance)
        if pod is None:
            return frozenset()
        found = set()
        for resource in API_RESOURCES:
            if pod.qos_class != "BestEffort" and all(c.limits.get(resource) for c in pod.containers):
                found.add(resource)
        if self.node_executor is not None:
            found |= self.node_executor.resources(instance) & NODE_RESOURCES
        return frozenset(found)

    # -- reading ------------------------------------------------------------------------------------

    def read_pod(self, pod: PodInfo) -> PodInfo:
        try:
            fresh = self.core.read_namespaced_pod(pod.name, pod.namespace, _request_timeout=self.timeout_s)
        except ApiException as exc:
            raise api_error(exc, f"reading pod {pod.namespace}/{pod.name}") from exc
        except (HTTPError, OSError) as exc:
            raise unreachable(exc, f"reading {pod.namespace}/{pod.name}", self.core) from exc
        return pod_info(pod.service, fresh)

    @staticmethod
    def cpu_of(pod: PodInfo) -> float:
        """The pod's CPU limit, cores (``inf`` when a container has none)."""
        limits = [cpu_cores(c.limits.get("cpu")) for c in pod.containers]
        return math.inf if any(v is None for v in limits) else float(sum(v for v in limits if v is not None))

    @staticmethod
    def memory_of(pod: PodInfo) -> float:
        """The pod's memory limit, bytes (``inf`` when a container has none)."""
        limits = [memory_bytes(c.limits.get("memory")) for c in pod.containers]
        return math.inf if any(v is None for v in limits) else float(sum(v for v in limits if v is not None))

    def limit_of(self, pod: PodInfo, resource: str) -> float:
        """``resource``'s limit in force: what the fallback wrote, else the pod's spec."""
        written = self._written.get((pod.instance, resource))
        if written is not None:
            return written
        return self.cpu_of(pod) if resource == "cpu" else self.memory_of(pod)

    # -- resizing ----------------------------------------------------------------------------------------

    def resize_body(
        self, pod: PodInfo, cores: float | None = None, memory: str | float | None = None
    ) -> dict[str, Any]:
        """The strategic-merge patch of the ``resize`` subresource for ``cores`` and ``memory``.

        ``memory`` in bytes (a number) is shared among the containers like the cores; a quantity
        (``256Mi``) is given to every container as it is (one-container pods)."""
        cpu_now = [cpu_cores(c.limits.get("cpu")) or 0.0 for c in pod.containers]
        cpu_total = sum(cpu_now) or float(len(cpu_now))
        memory_now = [float(memory_bytes(c.limits.get("memory")) or 0) for c in pod.containers]
        memory_total = sum(memory_now) or float(len(memory_now))
        containers = []
        for index, container in enumerate(pod.containers):
            resources: dict[str, dict[str, str]] = {"limits": {}, "requests": {}}
            if cores is not None:
                share = cores * ((cpu_now[index] or 1.0) / cpu_total)
                resources["limits"]["cpu"] = _millicores(share)
                request = cpu_cores(container.requests.get("cpu"))
                if pod.qos_class == "Guaranteed" or (request is not None and request > share):
                    resources["requests"]["cpu"] = _millicores(share)
            if memory is not None:
                if isinstance(memory, str):
                    quantity, wanted = memory, memory_bytes(memory) or 0
                else:
                    wanted = round(memory * ((memory_now[index] or 1.0) / memory_total))
                    quantity = _quantity("memory", wanted)
                resources["limits"]["memory"] = quantity
                asked = memory_bytes(container.requests.get("memory"))
                if pod.qos_class == "Guaranteed" or (asked is not None and asked > wanted):
                    resources["requests"]["memory"] = quantity
            containers.append(
                {"name": container.name, "resources": {k: v for k, v in resources.items() if v}}
            )
        return {"spec": {"containers": containers}}

    def resize(
        self,
        pod: PodInfo,
        cores: float | None = None,
        memory: str | float | None = None,
        *,
        dry_run: bool = False,
    ) -> ResizeOutcome:
        """Resize ``pod`` in place; raises :class:`ClusterError` for a refusal (403, 422, ...), and
        :class:`ResizeUnsupportedError` on a cluster without the subresource (404)."""
        body = self.resize_body(pod, cores, memory)
        for attempt in (1, 2):
            try:
                answer = self.core.patch_namespaced_pod_resize(
                    pod.name,
                    pod.namespace,
                    body,
                    dry_run="All" if dry_run else None,
                    field_manager=self.field_manager,
                    _request_timeout=self.timeout_s,
                )
                break
            except ApiException as exc:
                if exc.status == 404 and _no_subresource(exc):
                    self.resize_supported = False
                    raise ResizeUnsupportedError(
                        f"the API server has no resize subresource for pods ({pod.namespace}/{pod.name})",
                        fix="upgrade to Kubernetes 1.33 or later (in-place resize); until "
                        "then firm writes the cgroups on the node",
                    ) from exc
                if exc.status == 409 and attempt == 1:
                    continue
                raise api_error(exc, f"resizing pod {pod.namespace}/{pod.name}") from exc
            except (HTTPError, OSError) as exc:
                raise unreachable(exc, f"resizing {pod.namespace}/{pod.name}", self.core) from exc
        self.resize_supported = True
        if not dry_run:
            self.pods[pod.instance] = pod_info(pod.service, answer)
            if cores is not None:
                self._written.pop((pod.instance, "cpu"), None)
            if memory is not None:
                self._written.pop((pod.instance, "memory"), None)
        outcome = _resize_state(pod.name, answer)
        self.outcomes.append(outcome)
        if outcome.state == "infeasible":
            raise ClusterError(
                f"the kubelet cannot resize {pod.namespace}/{pod.name}: {outcome.message}",
                fix="ask for less than the node's allocatable CPU or memory, or scale out instead",
            )
        return outcome

    # -- the contract ------------------------------------------------------------------------------------------

    def apply(self, actions: Sequence[Action], *, dry_run: bool) -> StepResult:
        started = time.perf_counter()
        api_actions: list[Action] = []
        node_actions: list[Action] = []
        for action in actions:
            if action.resource not in self.resources(action.instance):
                return StepResult(
                    (),
                    dry_run,
                    error=f"{action.resource} of {action.instance} cannot be set on this cluster",
                    duration_s=time.perf_counter() - started,
                )
            (api_actions if action.resource in API_RESOURCES else node_actions).append(action)
        node_result = StepResult((), dry_run)
        if node_actions:
            assert self.node_executor is not None
            node_result = self.node_executor.apply(node_actions, dry_run=dry_run)
            if not node_result.ok:
                return StepResult(
                    node_result.applied,
                    dry_run,
                    node_result.rolled_back,
                    node_result.error,
                    node_result.rollback_failures,
                    time.perf_counter() - started,
                )
        done: list[Applied] = []
        for action in api_actions:
            pod = self.pods[action.instance]
            before = self.limit_of(pod, action.resource)
            value = float(action.value)
            if math.isclose(before, value, rel_tol=1e-3):
                done.append(Applied(action, before, before, False))
                continue
            try:
                self._set(pod, action.resource, value, dry_run)
            except (ClusterError, ExecutorError) as exc:
                failures = [] if dry_run else self._undo(done, node_result)
                return StepResult(
                    tuple(Applied(a.action, a.before, a.before, a.changed) for a in done)
                    + tuple(Applied(a.action, a.before, a.before, a.changed) for a in node_result.applied),
                    dry_run,
                    rolled_back=not dry_run,
                    error=f"{action.resource} of {action.instance}: {exc}",
                    rollback_failures=tuple(failures),
                    duration_s=time.perf_counter() - started,
                )
            done.append(Applied(action, before, value, True))
        return StepResult(
            tuple(done) + node_result.applied, dry_run, duration_s=time.perf_counter() - started
        )

    def _set(self, pod: PodInfo, resource: str, value: float, dry_run: bool) -> None:
        """``resource`` (cpu: cores, memory: bytes) of ``pod`` by resize, else on its node's cgroups."""
        if self.resize_supported is not False:
            try:
                if resource == "cpu":
                    self.resize(pod, value, dry_run=dry_run)
                else:
                    self.resize(pod, memory=value, dry_run=dry_run)
                return
            except ResizeUnsupportedError:
                log.warning(
                    "no in-place resize on this cluster: writing the cgroups of %s on %s (the kubelet may "
                    "rewrite them)",
                    pod.name,
                    pod.node,
                )
        if self.node_executor is None or pod.instance not in self.node_executor.targets:
            raise ClusterError(
                f"no in-place resize on this cluster and no node executor for {pod.name}",
                fix="give an inventory of the nodes (-i) so firm can write the pod's cgroups",
            )
        if resource not in self.node_executor.resources(pod.instance):
            raise ClusterError(
                f"no in-place resize on this cluster and {resource} of {pod.name} is not managed on its node",
                fix="upgrade to Kubernetes 1.33 or later, or give the pod's node target the memory controller",
            )
        result = self.node_executor.apply(
            [Action(pod.instance, resource, value, reason="resize fallback")], dry_run=dry_run
        )
        self.outcomes.append(ResizeOutcome(pod.name, "fallback", result.error or "cgroup written"))
        if result.ok and not dry_run:
            self._written[(pod.instance, resource)] = value
        if not result.ok:
            raise ClusterError(
                f"writing the cgroups of {pod.name} failed: {result.error}",
                fix="check the node and the inventory",
            )

    def _undo(self, done: Sequence[Applied], node_result: StepResult) -> list[str]:
        failures = []
        for applied in reversed(done):
            if not applied.changed or not isinstance(applied.before, float):
                continue
            try:
                self._set(self.pods[applied.action.instance], applied.action.resource, applied.before, False)
            except (ClusterError, ExecutorError) as exc:
                failures.append(f"{applied.action.resource} of {applied.action.instance}: {exc}")
        restore = [
            Action(a.action.instance, a.action.resource, a.before, reason="rollback")
            for a in node_result.applied
            if a.changed and a.before is not None
        ]
        if restore and self.node_executor is not None:
            result = self.node_executor.apply(restore, dry_run=False)
            if not result.ok:
                failures.append(f"node limits: {result.error}")
        return failures

    def snapshot(self, instances: Sequence[str]) -> Snapshot:
        """The CPU limits as the API last reported them (discovery's list, or a resize's answer: no
        request per step), or as written on the node after a fallback; node-side limits read by the
        ansible executor."""
        limits: dict[str, dict[str, Value | None]] = {}
        for instance in instances:
            pod = self.pods.get(instance)
            if pod is None:
                raise ExecutorError(
                    f"no instance {instance!r} is managed here",
                    fix=f"use one of {', '.join(sorted(self.pods))}",
                )
            held = self.resources(instance) & API_RESOURCES
            limits[instance] = {r: self.limit_of(pod, r) for r in sorted(held)}
        raw: dict[str, Any] = {}
        node = [i for i in instances if self.node_executor is not None and self.resources(i) & NODE_RESOURCES]
        if node:
            assert self.node_executor is not None
            taken = self.node_executor.snapshot(node)
            for instance in node:
                wanted = self.resources(instance) & NODE_RESOURCES
                limits[instance].update({r: v for r, v in taken.limits[instance].items() if r in wanted})
            raw = dict(taken.raw)
        return Snapshot(time.time(), limits, raw)

    def restore(self, snapshot: Snapshot) -> StepResult:
        actions = [
            Action(i, r, v, reason="restore")
            for i, res in snapshot.limits.items()
            for r, v in res.items()
            if v is not None and r in self.resources(i) and not (isinstance(v, float) and math.isinf(v))
        ]
        return self.apply(actions, dry_run=False)


class ResizeUnsupportedError(ClusterError):
    """The cluster has no ``resize`` subresource for pods (Kubernetes before 1.33)."""


def _no_subresource(exc: ApiException) -> bool:
    """A 404 for the subresource itself (the route), not for a missing pod."""
    body = str(exc.body or "")
    return "pods" not in body or "could not find the requested resource" in body


def _resize_state(name: str, pod: kube_client.V1Pod) -> ResizeOutcome:
    status = pod.status
    for condition in (status.conditions or []) if status is not None else []:
        if condition.type == "PodResizePending" and condition.status == "True":
            state = "infeasible" if condition.reason == "Infeasible" else "pending"
            return ResizeOutcome(name, state, condition.message or condition.reason or "")
    legacy = status.resize if status is not None else None  # before 1.33: status.resize
    if legacy in ("Infeasible", "Deferred"):
        return ResizeOutcome(
            name, "infeasible" if legacy == "Infeasible" else "pending", f"status.resize={legacy}"
        )
    return ResizeOutcome(name, "accepted")


class KubernetesScaler:
    """Scale-out and scale-in of services through their Deployment's ``scale`` subresource
    (the loop's :class:`firm.loop.runner.Scaler`).

    Replicas stay within ``[min_replicas, max_replicas]``; a service is scaled again no sooner
    than ``cooldown_s`` after its last change.
    """

    def __init__(
        self,
        api: kube_client.ApiClient,
        services: Sequence[ServiceSpec],
        *,
        min_replicas: int = 1,
        max_replicas: int = 10,
        cooldown_s: float = 30.0,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.apps = kube_client.AppsV1Api(api)
        self.services = {s.name: s for s in services}
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.cooldown_s, self.timeout_s, self.clock = cooldown_s, timeout_s, clock
        self._last: dict[str, float] = {}
        self._done: list[dict[str, Any]] = []

    def request(self, service: str, direction: str) -> bool:
        spec = self.services.get(service)
        if spec is None or spec.deployment is None or direction not in ("out", "in"):
            return False
        if self.clock() - self._last.get(service, -math.inf) < self.cooldown_s:
            return False
        event: dict[str, Any] = {"service": service, "direction": direction, "deployment": spec.deployment}
        try:
            before, after = self.scale(spec, +1 if direction == "out" else -1)
            event.update(
                outcome="done" if after != before else "at_bound", replicas_before=before, replicas=after
            )
        except ClusterError as exc:
            event.update(outcome="failed", error=str(exc))
        self._last[service] = self.clock()
        self._done.append(event)
        return bool(event["outcome"] == "done")

    def scale(self, spec: ServiceSpec, delta: int) -> tuple[int, int]:
        """Change ``spec``'s replicas by ``delta`` (within the bounds); returns (before, after)."""
        assert spec.deployment is not None
        for attempt in (1, 2, 3):
            try:
                current = self.apps.read_namespaced_deployment_scale(
                    spec.deployment, spec.namespace, _request_timeout=self.timeout_s
                )
                assert current.spec is not None and current.metadata is not None
                before = int(current.spec.replicas or 0)
                after = max(self.min_replicas, min(self.max_replicas, before + delta))
                if after == before:
                    return before, after
                body = kube_client.V1Scale(
                    metadata=kube_client.V1ObjectMeta(
                        name=spec.deployment,
                        namespace=spec.namespace,
                        resource_version=current.metadata.resource_version,
                    ),
                    spec=kube_client.V1ScaleSpec(replicas=after),
                )
                self.apps.replace_namespaced_deployment_scale(
                    spec.deployment, spec.namespace, body, _request_timeout=self.timeout_s
                )
                return before, after
            except ApiException as exc:
                if exc.status == 409 and attempt < 3:
                    log.info("scale of %s changed under firm (409); reading it again", spec.deployment)
                    continue
                raise api_error(exc, f"scaling deployment {spec.namespace}/{spec.deployment}") from exc
            except (HTTPError, OSError) as exc:
                raise unreachable(exc, f"scaling {spec.deployment}", self.apps) from exc
        raise AssertionError("unreachable")

    def events(self) -> list[dict[str, Any]]:
        done, self._done = self._done, []
        return done
