"""The embedded testbed on this machine, end to end: real processes, namespaces, cgroups, traces, contention.

The testbed under test has its own names and subnet (203.0.113.0/24), so it never collides with one a
developer keeps running. Everything it makes is removed at the end, and the test checks that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from ansible_collections.firm.core.plugins.module_utils import anomaly, cgroup, redis_auth
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.load.stats import RequestRecord, percentile
from firm.telemetry.redis_store import RedisTelemetrySource
from firm.testbed import config as testbed_config
from firm.testbed import experiment, lifecycle, network
from firm.testbed.store import RedisTraceStore
from firm.tracing.model import Trace
from tests.helpers.measure import BusyMonitor, SloTest, background_cores, more_often, own_cpu_s, poll
from tests.helpers.modules import run_ansible_module
from tests.helpers.redis_db import REDIS_URL

EXPECTED_COMPOSE_SERVICES = {
    "frontend",
    "compose-post",
    "unique-id",
    "text",
    "url-shorten",
    "user-mention",
    "media",
    "user",
    "post-storage",
    "user-timeline",
    "home-timeline",
    "social-graph",
}


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testbed_config.TestbedConfig]:
    if os.geteuid() != 0:
        pytest.skip("the testbed needs root")
    root = tmp_path_factory.mktemp("testbed")
    defaults = testbed_config.load()
    # user-mention runs two instances: callers must spread its requests over both (scale-out)
    services = tuple(
        dataclasses.replace(s, instances=2) if s.name == "user-mention" else s for s in defaults.services
    )
    config = dataclasses.replace(
        defaults,
        services=services,
        subnet="203.0.113.0/24",
        bridge="firmtbt0",
        namespace_prefix="firmtbt-",
        veth_prefix="ftt",
        cgroup_parent="firm-testbed-test",
        state_dir=str(root / "state"),
        data_dir=str(root / "data"),
        telemetry_redis=REDIS_URL,
    )
    try:
        assert lifecycle.up(config) is True
        assert lifecycle.up(config) is False  # already up: nothing to do
        yield config
    finally:
        lifecycle.down(config)
    assert_nothing_left(config)


def assert_nothing_left(config: testbed_config.TestbedConfig) -> None:
    assert network.namespaces(config.namespace_prefix) == []
    assert not Path("/sys/class/net", config.bridge).exists()
    assert network.host_links(config.veth_prefix) == []
    layout = cgroup.detect_layout()
    assert not any(os.path.exists(d) for d in cgroup.group_at(layout, config.cgroup_parent).distinct_dirs())
    assert not Path(config.state_dir).exists() and not Path(config.data_dir).exists()
    # service instances name the state directory, the telemetry sampler the cgroups
    markers = (config.state_dir, f"cgroup={config.cgroup_parent}/")
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and any(m in _cmdline(p) for m in markers)]
    assert leftovers == []
    client = redis_auth.connect(REDIS_URL)
    for key in client.scan_iter("firm:telemetry*"):
        client.delete(key)


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


BUSY_CORES = 0.5
"""Cores of other work (other users, other guests' steal) above which a missed SLO is put down to the
machine, not to firm: the test is then skipped with the figures. Without such load every SLO holds."""


PEAK_BUSY_CORES = 0.8
"""Cores of other work over one second of a judged phase above which a missed SLO is put down to the
machine: such a burst stalls the services pinned to a CPU for long enough to put a percent of a
phase's requests over the objective, and a phase's mean hides it."""


def _ours(config: testbed_config.TestbedConfig, anomalies: bool = False) -> Callable[[], float]:
    layout = cgroup.detect_layout()
    groups = [cgroup.group_at(layout, config.cgroup_parent)]
    if anomalies:  # the anomaly a test injects is its own work too
        groups.append(cgroup.group_at(layout, anomaly.CGROUP_PARENT))

    def cpu_s() -> float:
        used = 0
        for group in groups:
            with contextlib.suppress(FirmError):  # no anomaly running: no group
                used += cgroup.read_stats(group).cpu_usage_ns or 0
        return used / 1e9 + own_cpu_s()

    return cpu_s


def background(config: testbed_config.TestbedConfig) -> float:
    """Cores this machine spends on other work now (2 s): all but the testbed's cgroups and this test."""
    return background_cores(_ours(config))


def busy_monitor(config: testbed_config.TestbedConfig, anomalies: bool = False) -> BusyMonitor:
    """Other work sampled all through a run (see ``BusyMonitor``), the testbed and this test excluded
    (and the anomalies' cgroups, with ``anomalies``)."""
    marker = f"{config.cgroup_parent}/"

    def in_testbed(pid: int) -> bool:
        try:
            return marker in Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:  # it has ended: not known to be the testbed's
            return False

    return BusyMonitor(_ours(config, anomalies), mine=in_testbed)


def skip_if_busy(met: bool, other_cores: float, what: str, peak_cores: float = 0.0) -> None:
    if met:
        return
    if other_cores > BUSY_CORES:
        pytest.skip(
            f"{what} while other work took {other_cores:.2f} of this machine's cores (more than "
            f"{BUSY_CORES}): the machine cannot show the testbed's SLO now"
        )
    if peak_cores > PEAK_BUSY_CORES:
        pytest.skip(
            f"{what} while other work took {peak_cores:.2f} of this machine's cores over one second "
            f"of it (more than {PEAK_BUSY_CORES}): the machine cannot show the testbed's SLO now"
        )


def other_work(busy: BusyMonitor, start: float, end: float) -> str:
    """The other work in a stretch: its mean, its busiest second (when, and which processes ran)."""
    peak, peak_from, peak_to = busy.peak(start, end)
    return (
        f"other work there {busy.other_cores(start, end):.2f} cores, {peak:.2f} at most over 1 s, "
        f"{peak_from - start:.1f} s in; busiest then: {busy.busiest(peak_from, peak_to) or '-'}"
    )


def slow_moments(
    records: list[RequestRecord], request_type: str, objective: float, start: float, end: float
) -> str:
    """When the requests of a stretch that were over the objective were sent, in seconds from
    ``start`` (their latencies in brackets): whether they cluster, and where."""
    slow = [
        f"{r.intended_at - start:.1f} ({r.latency_ms:.0f})"
        for r in records
        if r.request_type.value == request_type
        and start <= r.intended_at < end
        and not r.error
        and r.latency_ms > objective
    ]
    return ", ".join(slow[:30]) + (f" and {len(slow) - 30} more" if len(slow) > 30 else "")


TYPES = ("compose-post", "read-home-timeline")
"""The types the contention checks hold to their SLO (read-user-timeline's tail moves less)."""


def p99(report: experiment.RunReport, phase: str, request_type: str) -> float:
    value = report.phase(phase, request_type)["p99_ms"]
    assert value is not None, f"no {request_type} requests in phase {phase}"
    return float(value)


def test_the_applications_redis_listens_on_its_bridge_only_and_requires_its_password(
    testbed: testbed_config.TestbedConfig,
) -> None:
    state = lifecycle.read_state(testbed)
    assert state is not None
    password_file = Path(state.redis_password_file or "")
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert Path(testbed.state_dir, "redis.conf").stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert password and password not in Path(lifecycle.state_file(testbed)).read_text()
    unauthenticated = redis.Redis(host=state.redis_address, port=6379, socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        unauthenticated.set("firm:test", "1")
    authenticated = redis.Redis(
        host=state.redis_address, port=6379, password=password, socket_timeout=5, decode_responses=True
    )
    assert authenticated.config_get("bind") == {"bind": state.redis_address}
    assert authenticated.config_get("protected-mode") == {"protected-mode": "yes"}
    assert RedisTraceStore.of(state).client.ping()


def test_default_load_succeeds_meets_the_slo_and_leaves_complete_traces(
    testbed: testbed_config.TestbedConfig,
) -> None:
    other = background(testbed)
    started = int(time.time() * 1e6)
    plan = experiment.RunPlan(duration_s=30, redis_url=REDIS_URL)
    with busy_monitor(testbed) as busy:
        report = experiment.run(testbed, plan)
    other = max(other, background(testbed))
    records = collector_records(report)
    judged = (min(r.intended_at for r in records) + plan.warmup_s, max(r.intended_at for r in records))
    overall = report.summary.overall
    print(
        f"{overall.succeeded}/{overall.sent} succeeded, p99 {overall.p99_ms:.1f} ms, "
        f"testbed CPU {report.testbed_cpu_cores:.2f} cores, other work {other:.2f} cores"
    )
    assert overall.success_ratio is not None and overall.success_ratio >= 0.99
    # Held as a statistical claim on the run's requests (SloTest, as the contention test below does),
    # not as one sample of the p99 against a hard line: 30 s hold about 110 compose-posts, whose p99
    # is their second slowest (280 ms against 250 ms on one quiet machine of this kind: 2 slow ones).
    for request_type, objective in testbed.slo_ms.items():
        test = slo_test(report, "run", request_type, objective)
        what = (
            f"{request_type}: p99 {p99(report, 'run', request_type):.0f} ms, {test.describe()}, sent at "
            f"{slow_moments(records, request_type, objective, *judged) or '-'} s in "
            f"({other_work(busy, *judged)})"
        )
        print(what)
        skip_if_busy(test.meets, max(other, busy.other_cores(*judged)), what, busy.peak_other_cores(*judged))
        assert test.meets, f"{request_type}: {test.describe()}"

    state = lifecycle.read_state(testbed)
    assert state is not None
    store = RedisTraceStore.of(state)
    # The exporters flush every 0.5 s: wait (up to 15 s) until the traces are in and no span arrived
    # over the last 0.6 s, so that no trace is read half exported.
    spans_seen = [-1]

    def complete(found: list[Trace]) -> bool:
        spans, spans_seen[0] = spans_seen[0], sum(len(t.spans) for t in found)
        return len(found) >= 0.95 * overall.sent and spans == spans_seen[0]

    traces = poll(
        lambda: store.traces(started, int(time.time() * 1e6)), complete, timeout_s=15, interval_s=0.6
    ).value
    assert len(traces) >= 0.95 * overall.sent
    for trace in traces:
        ids = {s.span_id for s in trace.spans}
        roots = [s for s in trace.spans if s.parent_id is None]
        assert len(roots) == 1 and roots[0].service == "frontend", trace.trace_id
        assert all(s.parent_id in ids for s in trace.spans if s.parent_id is not None), trace.trace_id
    composed = [t for t in traces if t.spans[0].operation == "compose_post"]
    assert composed and all({s.service for s in t.spans} == EXPECTED_COMPOSE_SERVICES for t in composed)
    mentions = Counter(
        s.instance for t in composed for s in t.spans if s.service == "user-mention" and s.kind == "server"
    )
    assert set(mentions) == {"user-mention-0", "user-mention-1"}
    assert min(mentions.values()) >= 0.35 * sum(mentions.values())  # round robin, give or take retries

    telemetry = RedisTelemetrySource(REDIS_URL)
    for instance in testbed.instances():
        samples = telemetry.window(instance.name, started / 1e6, time.time())
        assert len(samples) >= 25, instance.name  # one a second over the 30 s of load
    frontend = telemetry.window("frontend-0", started / 1e6, time.time())
    assert max(s.cpu_cores or 0.0 for s in frontend) > 0.01
    assert max(s.net_rx_bps or 0.0 for s in frontend) > 0


CONTENTION = [
    pytest.param(experiment.AnomalyPlan("cpu", "compose-post", 80, 15, 18), id="cpu-beside-compose-post"),
    pytest.param(
        experiment.AnomalyPlan("disk_io", "post-storage", 50, 15, 18), id="disk-beside-post-storage"
    ),
    pytest.param(
        experiment.AnomalyPlan("network_bandwidth", "post-storage", 99, 15, 18, "100mbit"),
        id="bandwidth-cap-on-post-storage",
    ),
]


def slo_test(report: experiment.RunReport, phase: str, request_type: str, objective: float) -> SloTest:
    latencies = report.phases.get(phase, {}).get(request_type, experiment.Phase()).latencies_ms
    assert latencies, f"no {request_type} requests in phase {phase}"
    return SloTest(latencies, objective)


RECOVERY_S = 2.0
"""Seconds after the anomaly's queue has drained before the "after" phase is held to the SLO."""


@dataclasses.dataclass
class ContentionRun:
    """One loaded run with an anomaly, measured phase by phase for each of ``TYPES``."""

    report: experiment.RunReport
    tests: dict[str, dict[str, SloTest]]
    """request type -> phase (before, during, after) -> its requests against the SLO"""
    other_cores: float
    """other work sampled for 2 s before and after the run, the larger"""
    busy: BusyMonitor
    judged: dict[str, tuple[float, float]]
    """the stretches "before" and "after" are judged on (Unix seconds)"""
    fsync_ms: tuple[float, float]
    """p99 of a 4 KiB fsync beside the run, before and during the anomaly"""

    def describe(self, request_type: str, phase: str) -> str:
        """The phase's figures: requests over the SLO, when they were sent, and the other work there."""
        start, end = self.judged[phase]
        test = self.tests[request_type][phase]
        moments = slow_moments(collector_records(self.report), request_type, test.objective_ms, start, end)
        return (
            f"{request_type} {phase} the anomaly: {test.describe()}, sent at {moments or '-'} s into the "
            f"phase ({other_work(self.busy, start, end)})"
        )

    def skip_if_busy(self, request_type: str, phase: str) -> None:
        start, end = self.judged[phase]
        skip_if_busy(
            self.tests[request_type][phase].meets,
            max(self.other_cores, self.busy.other_cores(start, end)),
            self.describe(request_type, phase),
            self.busy.peak_other_cores(start, end),
        )


def contention_run(testbed: testbed_config.TestbedConfig, plan: experiment.AnomalyPlan) -> ContentionRun:
    """50 s of the default load with ``plan``'s anomaly, its phases measured and printed."""
    other = background(testbed)
    run_plan = experiment.RunPlan(duration_s=50, anomaly=plan)
    with busy_monitor(testbed) as busy, FsyncProbe(Path(testbed.data_dir)) as disk:
        report = experiment.run(testbed, run_plan)
    other = max(other, background(testbed))
    records = collector_records(report)
    began, ended = min(r.intended_at for r in records), max(r.intended_at for r in records)
    fsync_before = percentile(disk.latencies_ms(began + 2, began + plan.start_s), 99) or 0.0
    fsync_during = percentile(
        disk.latencies_ms(began + plan.start_s, began + plan.start_s + plan.duration_s), 99
    )
    # "After" is judged from RECOVERY_S after the queue the anomaly left has drained: the report's
    # phase starts at the drain, and the first requests of a service whose backlog just cleared were
    # still slow there (CI, quiet: read-home-timeline 180-290 ms for its first 5 of 312 requests).
    assert report.anomaly is not None
    recovered = experiment.anomaly_end(report.anomaly) + (report.drain_s or 0.0) + RECOVERY_S
    judged = {
        "before": (
            began + run_plan.warmup_s,
            report.anomaly.get("requested_at") or report.anomaly["started_at"],
        ),
        "after": (recovered, ended),
    }
    tests: dict[str, dict[str, SloTest]] = {}
    for request_type in TYPES:
        objective = testbed.slo_ms[request_type]
        tests[request_type] = {
            phase: slo_test(report, phase, request_type, objective) for phase in ("before", "during")
        }
        tests[request_type]["after"] = SloTest(
            [
                r.latency_ms
                for r in records
                if r.request_type.value == request_type and r.intended_at >= recovered and not r.error
            ],
            objective,
        )
        assert tests[request_type]["after"].latencies_ms, (
            f"no {request_type} request {RECOVERY_S} s after the queue drained"
        )
    run = ContentionRun(report, tests, other, busy, judged, (fsync_before, fsync_during or 0.0))
    for request_type in TYPES:
        phases = tests[request_type]
        before, during = p99(report, "before", request_type), p99(report, "during", request_type)
        after = percentile(phases["after"].latencies_ms, 99) or 0.0
        print(
            f"{plan.kind}: {request_type} p99 {before:.0f} ms before, {during:.0f} during, {after:.0f} after "
            f"(SLO {testbed.slo_ms[request_type]:.0f}); "
            + "; ".join(f"{name}: {test.describe()}" for name, test in phases.items())
            + f"; other work {other:.2f} cores; the queue drained {report.drain_s or 0.0:.1f} s after the end"
        )
        for phase in run.judged:
            print(run.describe(request_type, phase))
    return run


BASELINE_RUNS = 2
"""Runs tried for one whose baseline (before the anomaly) meets the SLO: the default-load test holds
that claim; this test's claim (contention breaks the SLO, its end restores it) needs it met first."""


@pytest.mark.parametrize("plan", CONTENTION)
def test_contention_on_one_service_breaks_the_slo_and_its_end_restores_it(
    testbed: testbed_config.TestbedConfig, plan: experiment.AnomalyPlan
) -> None:
    """Each phase (15 s before, during and after the anomaly) is held to the SLO as a statistical
    claim on its requests (``SloTest``: at most 1 % slower than the objective, one-sided binomial
    test at 1 %), not as one sample of its p99 against a hard line: a compose-post phase has about
    60 requests, whose p99 is their slowest. Before must be consistent with the SLO, during must
    break it beyond that noise (and its p99 be above the objective and 1.5 times the one before),
    and after must be consistent with the SLO or have no more requests over the objective than
    before (one-sided Fisher exact test at 1 %: the baseline's own distribution): the end restores
    the SLO as the same statistical claim that found it met before.

    The baseline is this test's precondition, not its claim (the default-load test makes that
    claim): a run whose baseline missed the SLO is run again, and after BASELINE_RUNS such runs the
    test is skipped with their figures. (CI, quiet: read-home-timeline 18 of 326 requests over the
    SLO before a CPU anomaly, p99 244 ms, against 0 of 268 and 59 ms after it, in one run.)"""
    missed: list[str] = []
    for _ in range(BASELINE_RUNS):
        run = contention_run(testbed, plan)
        for request_type in TYPES:
            run.skip_if_busy(request_type, "before")
        baseline = [run.describe(t, "before") for t in TYPES if not run.tests[t]["before"].meets]
        if not baseline:
            break
        missed.append("; ".join(baseline))
    else:
        pytest.skip(
            f"the baseline missed the SLO before the anomaly in {BASELINE_RUNS} runs, with no other work "
            f"to blame: {' | '.join(missed)}; this machine cannot show the anomaly's effect now (the "
            "default-load test holds the baseline's SLO)"
        )
    report = run.report
    for request_type in TYPES:
        objective = testbed.slo_ms[request_type]
        tests = run.tests[request_type]
        before, during = p99(report, "before", request_type), p99(report, "during", request_type)
        run.skip_if_busy(request_type, "after")
        if plan.kind == "disk_io" and not tests["during"].breaks:
            fsync_before, fsync_during = run.fsync_ms
            added, headroom = fsync_during - fsync_before, objective - before
            if added < headroom:  # the disk itself could not have broken it: measured, not assumed
                pytest.skip(
                    f"this machine's disk absorbs the disk anomaly: an fsync of 4 KiB beside it took "
                    f"{fsync_during:.0f} ms at p99 against {fsync_before:.0f} ms before, {added:.0f} ms "
                    f"more where the {request_type} SLO leaves {headroom:.0f} ms "
                    f"({tests['during'].describe()})"
                )
        assert tests["during"].breaks, f"{request_type} during the anomaly: {tests['during'].describe()}"
        assert during > objective and during > 1.5 * before
        # restored: consistent with the SLO, or no more requests over it than before (Fisher, 1 %)
        rose = more_often(
            tests["after"].slower,
            len(tests["after"].latencies_ms),
            tests["before"].slower,
            len(tests["before"].latencies_ms),
        )
        assert tests["after"].meets or rose >= 0.01, (
            f"{run.describe(request_type, 'after')}, more often than before (p = {rose:.2g})"
        )
        # No line is drawn on the p99 of "after" itself: of about 50 requests it is their slowest one
        # (CI, quiet: 216 ms after a disk anomaly, 123 before, 378 during, with 0 of 52 over the SLO)


class FsyncProbe:
    """Times a 4 KiB write and fsync in ``directory`` five times a second while in its ``with`` block:
    what a post's storage waits for, on the same disk, whatever the disk's speed."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "fsync-probe"
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FsyncProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        block = os.urandom(4096)
        with open(self.path, "wb") as handle:
            while not self._stop.wait(0.2):
                began = time.monotonic()
                handle.write(block)
                handle.flush()
                os.fsync(handle.fileno())
                self.samples.append((time.time(), (time.monotonic() - began) * 1000))

    def latencies_ms(self, start: float, end: float) -> list[float]:
        """Latencies of the fsyncs that ended between wall-clock ``start`` and ``end``."""
        return [ms for at, ms in self.samples if start <= at < end]


def collector_records(report: experiment.RunReport) -> list[RequestRecord]:
    assert report.records, "the run kept no request records"
    return report.records


MIN_RELIEVED = 100
"""Requests after the cpusets grew needed to judge the SLO (about 400 on a quiet machine)."""


def test_giving_the_contended_services_more_cpus_restores_the_slo(
    testbed: testbed_config.TestbedConfig,
) -> None:
    """A CPU anomaly on compose-post's CPU breaks the SLO; firm.core.cgroup gives the services pinned to
    that CPU a second one (their cpuset grows), and the SLO holds again while the anomaly goes on.

    (Raising their CPU weight would not do: on cgroup v1 a weight only counts against siblings, and the
    anomaly's group is a sibling of the testbed's parent group, not of the services.)

    The anomaly takes 60 % of the CPU: enough to break the SLO there (p99 364 ms, 101 of 420
    requests over 120 ms, on this project's 2-vCPU machine), and after the cpusets grew 0 of 363
    were over. At 75 % it outweighs the services 3 to 1 on their old CPU, where the scheduler still
    wakes some of their threads: after the cpusets grew 10 of 318 and 11 of 342 requests were 125 to
    170 ms, in bursts a few seconds apart, with no other work on the machine. A wider cpuset
    relieves such an anomaly but does not hide it; moving the services off its CPU would."""
    on_cpu0 = [i for i in testbed.instances() if i.spec.cpus == "0"]
    raised_at = 30.0

    failures: list[str] = []
    grown_at: list[float] = []

    def grow_cpusets() -> None:  # runs in a timer thread: failures are reported to the test below
        for instance in on_cpu0:
            result = run_ansible_module("firm.core.cgroup", {"path": instance.cgroup, "cpuset_cpus": "0-1"})
            if result.get("changed") is not True:
                failures.append(f"{instance.name}: {result}")
        grown_at.append(time.time())  # each module run is a process of its own, taking seconds of CPU

    plan = experiment.AnomalyPlan("cpu", "compose-post", 60, 8, 60)
    other = background(testbed)
    timer = threading.Timer(raised_at, grow_cpusets)
    timer.start()
    try:
        with busy_monitor(testbed, anomalies=True) as busy:
            report = experiment.run(testbed, experiment.RunPlan(duration_s=55, anomaly=plan))
    finally:
        timer.cancel()
        for instance in on_cpu0:
            run_ansible_module(
                "firm.core.cgroup", {"path": instance.cgroup, "cpuset_cpus": instance.spec.cpus}
            )
    assert failures == [] and not timer.is_alive() and grown_at
    began = min(r.intended_at for r in collector_records(report))
    contended = [
        r.latency_ms
        for r in collector_records(report)
        if r.request_type.value == "read-home-timeline" and 12 <= r.intended_at - began <= raised_at
    ]
    # Judged from when the queue the contention left has drained (the last request sent before the
    # cpusets grew has completed; seconds when p99 was seconds under the anomaly), at least 3 s after.
    drained = max(
        (
            r.intended_at + r.latency_ms / 1000
            for r in collector_records(report)
            if r.intended_at < grown_at[0]
        ),
        default=grown_at[0],
    )
    judged_from = max(grown_at[0] + 3, drained)
    relieved = [
        r.latency_ms
        for r in collector_records(report)
        if r.request_type.value == "read-home-timeline" and r.intended_at >= judged_from
    ]
    objective = testbed.slo_ms["read-home-timeline"]
    other = max(other, background(testbed))
    # The module runs that grow the cpusets are processes of their own: on a machine busy with other
    # work they took so long (in CI, under a hog on both CPUs) that no request was left after them.
    late = grown_at[0] - began - raised_at
    skip_if_busy(
        len(relieved) >= MIN_RELIEVED,
        other,
        f"the cpusets grew {late:.0f} s after they were asked to, leaving {len(relieved)} read-home-timeline "
        f"requests of the load to judge (fewer than {MIN_RELIEVED})",
    )
    assert len(relieved) >= MIN_RELIEVED, (
        f"only {len(relieved)} requests after the cpusets grew ({late:.0f} s late)"
    )
    under, after = percentile(contended, 99), percentile(relieved, 99)
    assert under is not None and after is not None
    contended_test, relieved_test = SloTest(contended, objective), SloTest(relieved, objective)
    print(
        f"read-home-timeline p99 {under:.0f} ms under the anomaly ({contended_test.describe()}), {after:.0f} ms "
        f"after their cpusets grew and the queue drained ({drained - grown_at[0]:.1f} s) "
        f"({relieved_test.describe()}); other work {other:.2f} cores"
    )
    assert under > objective and contended_test.breaks
    # held as a statistical claim on the requests (SloTest), as the contention test does: ~400 requests
    # whose p99 is their fourth slowest
    ended = max(r.intended_at for r in collector_records(report))
    what = (
        f"read-home-timeline after the cpusets grew: {relieved_test.describe()}, sent at "
        f"{slow_moments(collector_records(report), 'read-home-timeline', objective, judged_from, ended) or '-'}"
        f" s into the stretch judged ({other_work(busy, judged_from, ended)})"
    )
    print(what)
    skip_if_busy(
        relieved_test.meets,
        max(other, busy.other_cores(judged_from, ended)),
        what,
        busy.peak_other_cores(judged_from, ended),
    )
    assert relieved_test.meets, f"read-home-timeline after the cpusets grew: {relieved_test.describe()}"
