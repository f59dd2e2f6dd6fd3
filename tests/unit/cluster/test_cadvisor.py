"""cAdvisor / kubelet metrics: the recorded v1.35 /metrics/cadvisor parsed with the real Prometheus parser,
turned into samples and stored in the testbed sampler's Redis layout."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis

from firm.cluster.cadvisor import (
    ClusterCollector,
    ClusterSampler,
    kubelet_fetcher,
    parse,
    sample_between,
    url_fetcher,
)
from firm.cluster.config import ClusterError
from firm.cluster.discovery import Discovery
from firm.telemetry.redis_store import RedisTelemetrySink, RedisTelemetrySource
from firm.telemetry.source import TelemetrySource
from tests.helpers import redis_db
from tests.unit.cluster.fixture_server import FixtureServer, Reply, data_file
from tests.unit.cluster.kube_api import api, serve_pods
from tests.unit.cluster.test_discovery import SERVICES

METRICS = "cadvisor/kubelet-metrics-cadvisor_k8s-v1.35.0_containerd_trimmed.txt"
STS = "b74071bf-fab2-44d0-9850-55ff20eda8c3"
KINDNET = "ebb73de1-03ec-4c34-bda3-bb8a44f01c2b"


def recorded() -> str:
    return data_file(METRICS).read_text()


def later(text: str, seconds: float, add: dict[str, float]) -> str:
    """A CONSTRUCTED second scrape: the recorded one with every timestamp ``seconds`` later and the
    families in ``add`` raised by that amount on every row of the statefulset pod (only one
    scrape of the node was recorded)."""
    out = []
    for line in text.splitlines():
        parts = line.rsplit(" ", 2)
        if line.startswith("#") or len(parts) != 3 or not parts[2].isdigit() or ',id="' not in line:
            out.append(line)  # comments and rows without a timestamp stay as recorded
            continue
        head, value, stamp = parts
        family = head.split("{", 1)[0]
        number = float(value)
        if STS in head and family in add and ('interface="eth0"' in head or "interface" not in head):
            number += add[family]
        out.append(f"{head} {number!r} {int(stamp) + int(seconds * 1000)}")
    return "\n".join(out) + "\n"


def test_parses_pods_containers_and_network_from_the_recording() -> None:
    pods = parse(recorded())
    assert set(pods) >= {
        STS,
        KINDNET,
        "36447428-81f8-45eb-b825-414de2e8012b",
        "559f50c7-6133-4901-a283-262ff4358722",
    }
    sts = pods[STS]
    assert (sts.namespace, sts.name) == ("scraper", "e2e-statefulset-1")
    assert sts.pod.cpu_s == pytest.approx(2.302339)
    assert (sts.pod.periods, sts.pod.throttled_periods) == (290, 271)
    assert sts.pod.throttled_s == pytest.approx(16.549397)
    assert sts.pod.at == pytest.approx(1782468874.995)
    assert sts.containers["compute-pi-digits"].cpu_s == pytest.approx(1.404591)
    assert sts.rx_bytes is not None and sts.rx_bytes >= 446  # eth0 of the sandbox plus idle tunnels
    # Guaranteed pod: the cgroup has no QoS level
    assert pods[KINDNET].pod.memory_bytes is not None and pods[KINDNET].pod.cpu_s is not None
    # node-level rows are not pods
    assert all(re.fullmatch(r"[0-9a-f-]{36}", uid) for uid in pods)


@pytest.mark.parametrize(
    ("spelling", "slice_name"),
    [
        ("/kubepods/burstable/pod{uid}", False),  # cgroupfs driver
        ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice", True),  # systemd
    ],
)
def test_a_static_pod_is_read_under_its_config_hash(spelling: str, slice_name: bool) -> None:
    """A static pod's cgroup is named after its 32-hex-digit config hash (no dashes), which is
    also its mirror pod's UID. CONSTRUCTED: the recorded statefulset pod's rows renamed so (the
    recording has no static pod), in each driver's spelling."""
    static = "3f7a9c0d2b1e4f6a8c5d7e9f0a1b2c3d"
    recorded_id = "/kubepods/burstable/pod" + STS
    text = recorded().replace(recorded_id, spelling.format(uid=static))
    pods = parse(text)
    assert STS not in pods
    assert pods[static].pod.cpu_s == pytest.approx(2.302339)
    assert (pods[static].namespace, pods[static].name) == ("scraper", "e2e-statefulset-1")


def test_parses_standalone_cadvisor_golden_file() -> None:
    """cAdvisor's own /metrics golden file (fake values) has no pod rows: parsed, nothing kept."""
    assert parse(data_file("cadvisor/cadvisor-standalone-metrics_golden-fake-values.txt").read_text()) == {}


def test_rejects_text_that_is_not_prometheus() -> None:
    with pytest.raises(ClusterError, match="not Prometheus text"):
        parse('container_cpu_usage_seconds_total{id="/kubepods/pod' + STS + '" 1\n')


def test_rates_between_two_scrapes() -> None:
    text = recorded()
    before = parse(text)[STS]
    after = parse(
        later(
            text,
            2.0,
            {
                "container_cpu_usage_seconds_total": 0.5,
                "container_cpu_cfs_periods_total": 20,
                "container_cpu_cfs_throttled_periods_total": 5,
                "container_network_receive_bytes_total": 4000,
            },
        )
    )[STS]
    sample = sample_between("e2e-statefulset-1", "statefulset", before, after)
    assert sample is not None
    assert sample.interval_s == pytest.approx(2.0)
    assert sample.cpu_cores == pytest.approx(0.25)
    assert sample.cpu_throttled_ratio == pytest.approx(0.25)
    assert sample.net_rx_bps == pytest.approx(2000)
    assert sample.memory_bytes == int(before.pod.memory_bytes or 0)
    assert sample_between("x", "y", after, after) is None  # the timestamp did not move
    assert sample_between("x", "y", after, before) is None


def with_runqueue(text: str, seconds: float) -> str:
    """The scrape with a CONSTRUCTED row of cAdvisor's ``sched`` family (the kubelet recorded
    here does not expose it) for the statefulset pod's cgroup, at its CPU row's timestamp."""
    row = next(
        line
        for line in text.splitlines()
        if line.startswith('container_cpu_usage_seconds_total{container="",cpu="total"') and STS in line
    )
    labels, _, stamp = row.split(" ")
    labels = labels.split("{", 1)[1].replace('cpu="total",', "")
    family = "container_cpu_schedstat_runqueue_seconds_total"
    return text + f"# TYPE {family} counter\n{family}{{{labels} {seconds!r} {stamp}\n"


def test_waiting_for_a_cpu_comes_from_the_sched_family_when_cadvisor_exposes_it() -> None:
    text = recorded()
    plain = sample_between("x", "y", parse(text)[STS], parse(later(text, 2.0, {}))[STS])
    assert plain is not None and plain.cpu_wait_s_per_s is None  # the kubelet's endpoint has no sched family
    first, second = with_runqueue(text, 10.0), with_runqueue(later(text, 2.0, {}), 10.6)
    sample = sample_between("x", "y", parse(first)[STS], parse(second)[STS])
    assert sample is not None and sample.cpu_wait_s_per_s == pytest.approx(0.3)
    # a task exited and took its share of the sum with it: no figure, and the rest of the sample stays
    dropped = sample_between(
        "x", "y", parse(first)[STS], parse(with_runqueue(later(text, 2.0, {}), 9.0))[STS]
    )
    assert dropped is not None and dropped.cpu_wait_s_per_s is None and dropped.cpu_cores is not None


@pytest.fixture
def db() -> Iterator[redis.Redis]:
    client = redis_db.connect()
    prefix = "firm-test:cluster"
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    yield client
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def test_samples_reach_redis_in_the_sampler_layout(fixture_server: FixtureServer, db: redis.Redis) -> None:
    """Discovery and the kubelet's metrics through the API server's node proxy (both recorded, served
    locally), samples written to Redis db 15 and read back through the TelemetrySource contract."""
    serve_pods(fixture_server)
    text = recorded()
    scrapes = iter([text, later(text, 1.0, {"container_cpu_usage_seconds_total": 0.3})])
    fixture_server.route(
        "GET",
        "/api/v1/nodes/datagen-1-35/proxy/metrics/cadvisor",
        lambda _: Reply(200, next(scrapes).encode(), "text/plain; version=0.0.4"),
    )
    client = api(fixture_server)
    pods = Discovery(client, SERVICES).pods()
    sink = RedisTelemetrySink(redis_db.REDIS_URL, prefix="firm-test:cluster", ttl_s=60)
    sampler = ClusterSampler(ClusterCollector(kubelet_fetcher(client)), lambda: pods, sinks=[sink])
    assert sampler.sample_once() == []  # the first scrape primes
    samples = sampler.sample_once()
    assert {s.instance for s in samples} == {p.name for p in pods}
    assert {s.instance: s.cpu_cores for s in samples}["kindnet-zkpn8"] == 0.0
    source = RedisTelemetrySource(redis_db.REDIS_URL, prefix="firm-test:cluster")
    assert isinstance(source, TelemetrySource)
    assert source.instances() == sorted(p.name for p in pods)
    latest = source.latest("e2e-statefulset-1")
    assert latest is not None and latest.cpu_cores == pytest.approx(0.3) and latest.service == "statefulset"
    # (window() selects by Redis's own entry times, which are now, not the recording's 2026-06 stamps)


def test_unreachable_node_is_survived(fixture_server: FixtureServer) -> None:
    fixture_server.answer(
        "GET",
        "/api/v1/nodes/datagen-1-35/proxy/metrics/cadvisor",
        403,
        data_file("kubernetes/status-403-forbidden_apiserver-golden.json"),
    )
    serve_pods(fixture_server)
    client = api(fixture_server)
    collector = ClusterCollector(kubelet_fetcher(client))
    assert collector.collect(Discovery(client, SERVICES).pods()) == []
    assert "HTTP 403" in collector.errors["datagen-1-35"]
    fetch = url_fetcher(fixture_server.url + "/missing/{node}")
    with pytest.raises(ClusterError, match="cannot read cAdvisor metrics"):
        fetch("datagen-1-35")
