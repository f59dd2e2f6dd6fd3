"""Telemetry of a cluster: per-container counters from cAdvisor or the kubelet's ``/metrics/cadvisor``.

The Prometheus text is parsed with ``prometheus_client``'s parser. Rows are keyed by cAdvisor's
``id`` label, the cgroup path; a pod's rows are those whose path holds ``pod<uid>`` (cgroupfs:
``/kubepods/burstable/pod<uid>``, systemd: ``.../kubepods-burstable-pod<uid_>.slice``):

- the pod's own cgroup (the path ends at the pod): CPU, throttling, memory, disk and tasks of
  the whole pod, which is firm's instance;
- each container's cgroup below it (``container`` label set on the kubelet's endpoint), kept
  per container in :attr:`PodCounters.containers`;
- the sandbox (pause) container, the only row that carries the ``container_network_*`` families
  (one series per interface of the pod's namespace, idle tunnel devices included: summed).

Two scrapes of a pod give a :class:`firm.telemetry.Sample` of rates over the time between the
cgroup's two housekeeping timestamps (cAdvisor stamps each row); a row whose timestamp did not
move gives no sample (cAdvisor had not re-read it). Samples go to any
:class:`firm.telemetry.TelemetrySink` (``RedisTelemetrySink``: the testbed sampler's layout).

Units as :class:`firm.telemetry.Sample`: cores, bytes, bytes/s. The kubelet refreshes its cAdvisor
stats every 10 s by default; for 1 s samples run the cAdvisor DaemonSet (role ``cadvisor``) with
``--housekeeping_interval=1s`` and point :func:`url_fetcher` at it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families
from urllib3.exceptions import HTTPError

from ansible_collections.firm.core.plugins.module_utils import cgroup
from firm.cluster.config import ClusterError, api_error, unreachable
from firm.cluster.discovery import PodInfo
from firm.telemetry.model import Sample
from firm.telemetry.source import TelemetrySink
from firm.urls import describe_transport, redact_url

log = logging.getLogger(__name__)

# A pod's cgroup in either driver's spelling: dashed or underscored UIDs, and a static pod's 32 hex
# digits (its kubernetes.io/config.hash, which the mirror pod carries as its UID).
_POD = re.compile(
    r"pod([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{32})(?:\.slice)?(?=/|$)"
)

COUNTERS = {
    "container_cpu_usage_seconds_total": "cpu_s",
    "container_cpu_cfs_periods_total": "periods",
    "container_cpu_cfs_throttled_periods_total": "throttled_periods",
    "container_cpu_cfs_throttled_seconds_total": "throttled_s",
    "container_memory_usage_bytes": "memory_bytes",
    "container_memory_working_set_bytes": "working_set_bytes",
    "container_threads": "tasks",
    "container_cpu_schedstat_runqueue_seconds_total": "runqueue_s",
    "container_network_receive_bytes_total": "rx_bytes",
    "container_network_transmit_bytes_total": "tx_bytes",
}
"""Family -> field of :class:`Counters` (values summed over the family's series of one cgroup)."""


@dataclass
class Counters:
    """Cumulative counters of one cgroup at cAdvisor's timestamp ``at`` (None: not reported)."""

    at: float | None = None
    """Seconds since the epoch of the CPU row (cAdvisor's housekeeping time), else of any row."""
    cpu_s: float | None = None
    periods: float | None = None
    throttled_periods: float | None = None
    throttled_s: float | None = None
    memory_bytes: float | None = None
    working_set_bytes: float | None = None
    read_bytes: float | None = None
    write_bytes: float | None = None
    tasks: float | None = None
    runqueue_s: float | None = None
    """Seconds the cgroup's tasks waited for a CPU (cAdvisor's ``sched`` metrics, off by default)."""
    rx_bytes: float | None = None
    tx_bytes: float | None = None
    container: str = ""
    """The ``container`` label (empty for the pod's cgroup and the sandbox)."""

    def add(self, name: str, value: float) -> None:
        current = getattr(self, name)
        setattr(self, name, value if current is None else current + value)


@dataclass
class PodCounters:
    """One pod in one scrape: its own cgroup, its containers, and its network (from the sandbox)."""

    uid: str
    """The pod's UID with dashes."""
    namespace: str = ""
    name: str = ""
    pod: Counters = field(default_factory=Counters)
    containers: dict[str, Counters] = field(default_factory=dict)
    """Container name (or the cgroup's last path element when unnamed) -> its counters."""
    rx_bytes: float | None = None
    tx_bytes: float | None = None


def parse(text: str) -> dict[str, PodCounters]:
    """Per pod UID, its counters from one scrape of ``/metrics/cadvisor`` (or cAdvisor's ``/metrics``).

    Rows outside pods (the node, ``/kubepods``) are left out. Raises :class:`ClusterError` when the
    text is not Prometheus exposition format.
    """
    rows: dict[str, Counters] = {}
    labels_of: dict[str, dict[str, str]] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise ClusterError(
            f"the metrics are not Prometheus text ({exc})",
            fix="point firm at /metrics/cadvisor of the kubelet or /metrics of cAdvisor",
        ) from exc
    for family in families:
        for sample in family.samples:
            cgroup_id = sample.labels.get("id")
            if cgroup_id is None or _POD.search(cgroup_id) is None:
                continue
            name = sample.name  # per-CPU series (standalone cAdvisor) are summed into the total
            row = rows.get(cgroup_id)
            if row is None:
                row = rows[cgroup_id] = Counters(container=sample.labels.get("container", ""))
                labels_of[cgroup_id] = dict(sample.labels)
            target = COUNTERS.get(name)
            if name == "container_blkio_device_usage_total":
                operation = sample.labels.get("operation")
                target = {"Read": "read_bytes", "Write": "write_bytes"}.get(operation or "")
            if target is None:
                continue
            row.add(target, float(sample.value))
            if sample.timestamp is not None and (
                row.at is None or name == "container_cpu_usage_seconds_total"
            ):
                row.at = float(sample.timestamp)
    pods: dict[str, PodCounters] = {}
    for cgroup_id, row in rows.items():
        match = _POD.search(cgroup_id)
        assert match is not None
        uid = cgroup.normalise_pod_uid(match.group(1))
        pod = pods.setdefault(uid, PodCounters(uid))
        labels = labels_of[cgroup_id]
        pod.namespace = (
            pod.namespace
            or labels.get("namespace", "")
            or labels.get("container_label_io_kubernetes_pod_namespace", "")
        )
        pod.name = (
            pod.name or labels.get("pod", "") or labels.get("container_label_io_kubernetes_pod_name", "")
        )
        rest = cgroup_id[match.end() :].strip("/")
        if not rest:
            pod.pod = row
            continue
        if row.rx_bytes is not None or row.tx_bytes is not None:
            pod.rx_bytes = (pod.rx_bytes or 0.0) + (row.rx_bytes or 0.0)
            pod.tx_bytes = (pod.tx_bytes or 0.0) + (row.tx_bytes or 0.0)
        pod.containers[row.container or rest.rsplit("/", 1)[-1]] = row
    return pods


def _rate(before: float | None, after: float | None, seconds: float) -> float | None:
    if before is None or after is None:
        return None
    return (after - before) / seconds


def sample_between(instance: str, service: str, before: PodCounters, after: PodCounters) -> Sample | None:
    """The rates of a pod between two scrapes; None when cAdvisor's timestamp did not move or a
    counter went backwards (the pod's cgroup was recreated)."""
    b, a = before.pod, after.pod
    if a.at is None or b.at is None or a.at <= b.at:
        return None
    seconds = a.at - b.at
    pairs = [
        (b.cpu_s, a.cpu_s),
        (b.periods, a.periods),
        (b.throttled_periods, a.throttled_periods),
        (b.throttled_s, a.throttled_s),
        (b.read_bytes, a.read_bytes),
        (b.write_bytes, a.write_bytes),
        (before.rx_bytes, after.rx_bytes),
        (before.tx_bytes, after.tx_bytes),
    ]
    if any(x is not None and y is not None and y < x for x, y in pairs):
        return None
    periods = None if b.periods is None or a.periods is None else a.periods - b.periods
    throttled = (
        None
        if b.throttled_periods is None or a.throttled_periods is None
        else a.throttled_periods - b.throttled_periods
    )
    ratio = None if periods is None or throttled is None else (throttled / periods if periods > 0 else 0.0)
    if periods is None and b.cpu_s is not None:
        ratio = 0.0  # no CFS series: the pod has no CPU limit, so it is never throttled
    throttled_s = _rate(b.throttled_s, a.throttled_s, seconds)
    if throttled_s is None and b.cpu_s is not None and b.periods is None:
        throttled_s = 0.0
    return Sample(
        instance=instance,
        service=service,
        timestamp=a.at,
        interval_s=seconds,
        cpu_cores=_rate(b.cpu_s, a.cpu_s, seconds),
        cpu_throttled_ratio=ratio,
        cpu_throttled_s_per_s=throttled_s,
        memory_bytes=None if a.memory_bytes is None else int(a.memory_bytes),
        disk_read_bps=_rate(b.read_bytes, a.read_bytes, seconds),
        disk_write_bps=_rate(b.write_bytes, a.write_bytes, seconds),
        net_rx_bps=_rate(before.rx_bytes, after.rx_bytes, seconds),
        net_tx_bps=_rate(before.tx_bytes, after.tx_bytes, seconds),
        pids=None if a.tasks is None else int(a.tasks),
        # A sum over the live tasks: it drops when one exits, which gives no figure, not a negative one.
        cpu_wait_s_per_s=(
            _rate(b.runqueue_s, a.runqueue_s, seconds)
            if b.runqueue_s is not None and a.runqueue_s is not None and a.runqueue_s >= b.runqueue_s
            else None
        ),
    )


Fetcher = Callable[[str], str]
"""node name -> the Prometheus text of its cAdvisor metrics."""


def kubelet_fetcher(api: kube_client.ApiClient, *, timeout_s: float = 5.0) -> Fetcher:
    """Each node's kubelet ``/metrics/cadvisor`` through the API server's node proxy
    (``GET /api/v1/nodes/{node}/proxy/metrics/cadvisor``; RBAC: ``get`` on ``nodes/proxy``)."""

    def fetch(node: str) -> str:
        # The generated connect_get_node_proxy_with_path escapes the '/' of the path; the raw path is
        # what kubectl get --raw sends.
        try:
            request = api.param_serialize(
                "GET",
                "/api/v1/nodes/{name}/proxy/metrics/cadvisor",
                path_params={"name": node},
                header_params={"Accept": "text/plain"},
                auth_settings=["BearerToken"],
            )
            response = api.call_api(*request, _request_timeout=timeout_s)
            response.read()  # type: ignore[no-untyped-call]
            return str(api.response_deserialize(response, {"200": "str"}).data)
        except ApiException as exc:
            raise api_error(exc, f"reading /metrics/cadvisor of node {node}") from exc
        except (HTTPError, OSError) as exc:
            raise unreachable(exc, f"reading the metrics of node {node}", api) from exc

    return fetch


def url_fetcher(
    template: str, addresses: Mapping[str, str] | None = None, *, timeout_s: float = 5.0
) -> Fetcher:
    """cAdvisor's own ``/metrics`` over HTTP: ``template`` with ``{node}`` (and ``{address}``, the
    node's address from ``addresses``), e.g. ``http://{address}:8080/metrics``."""

    def fetch(node: str) -> str:
        url = template.format(node=node, address=(addresses or {}).get(node, node))
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return bytes(response.read()).decode()
        except UnicodeDecodeError as exc:
            raise ClusterError(
                f"the cAdvisor metrics at {redact_url(url)} are not UTF-8 text (byte {exc.start})",
                fix="point the URL template at cAdvisor's /metrics (Prometheus text)",
            ) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            why = "not an http(s) URL" if isinstance(exc, ValueError) else describe_transport(exc)
            raise ClusterError(
                f"cannot read cAdvisor metrics at {redact_url(url)}: {why}",
                fix="check that the cadvisor DaemonSet runs and the URL template",
            ) from exc

    return fetch


class ClusterCollector:
    """Turns scrapes of the pods' nodes into samples: one scrape per node per round, nodes in parallel.

    ``pods`` gives the current pods (from :class:`firm.cluster.discovery.Discovery`, refreshed by
    the caller); a pod's first scrape only primes it.
    """

    def __init__(self, fetch: Fetcher, *, workers: int = 8) -> None:
        self.fetch = fetch
        self.workers = workers
        self._previous: dict[str, PodCounters] = {}
        self.errors: dict[str, str] = {}
        """node -> the last error reading it (cleared when it answers again)."""

    def collect(self, pods: Sequence[PodInfo]) -> list[Sample]:
        by_node: dict[str, list[PodInfo]] = {}
        for pod in pods:
            if pod.node is not None:
                by_node.setdefault(pod.node, []).append(pod)
        if not by_node:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(by_node))) as pool:
            scraped = dict(zip(by_node, pool.map(self._scrape, by_node), strict=True))
        samples: list[Sample] = []
        alive = set()
        for node, node_pods in by_node.items():
            counters = scraped[node]
            if counters is None:
                continue
            for pod in node_pods:
                now = counters.get(pod.uid)
                if now is None:
                    continue
                alive.add(pod.uid)
                before = self._previous.get(pod.uid)
                self._previous[pod.uid] = now
                if before is not None:
                    sample = sample_between(pod.instance, pod.service, before, now)
                    if sample is not None:
                        samples.append(sample)
        for uid in set(self._previous) - alive - {p.uid for p in pods}:
            del self._previous[uid]
        return samples

    def _scrape(self, node: str) -> dict[str, PodCounters] | None:
        try:
            counters = parse(self.fetch(node))
            scraped_at = time.time()
            for pod in counters.values():  # rows without cAdvisor's timestamps: the scrape's time
                pod.pod.at = scraped_at if pod.pod.at is None else pod.pod.at
        except ClusterError as exc:
            if self.errors.get(node) is None:
                log.warning("no telemetry from node %s: %s", node, exc)
            self.errors[node] = str(exc)
            return None
        self.errors.pop(node, None)
        return counters


class ClusterSampler:
    """Every ``interval_s``, :meth:`ClusterCollector.collect` for the pods ``pods()`` returns, into
    ``sinks``; in a thread of its own (``start()`` / ``stop()``). A sink that fails is logged and
    retried next round."""

    def __init__(
        self,
        collector: ClusterCollector,
        pods: Callable[[], Sequence[PodInfo]],
        *,
        sinks: Iterable[TelemetrySink],
        interval_s: float = 1.0,
    ) -> None:
        if interval_s <= 0:
            raise ClusterError(
                f"interval_s {interval_s!r} is not positive", fix="give seconds above 0, e.g. 1"
            )
        self.collector, self.pods, self.sinks, self.interval_s = collector, pods, list(sinks), interval_s
        self.rounds = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_once(self) -> list[Sample]:
        samples = self.collector.collect(self.pods())
        for sink in self.sinks:
            try:
                sink.write(samples)
            except Exception as exc:  # a sink must never stop the sampling
                log.warning("%s could not store samples: %s", type(sink).__name__, exc)
        self.rounds += 1
        return samples

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="firm-cluster-telemetry", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:
                log.exception("a cluster sampling round failed")
            due += self.interval_s
            now = time.monotonic()
            if due < now:
                due += self.interval_s * (int((now - due) / self.interval_s) + 1)
            self._stop.wait(due - now)
