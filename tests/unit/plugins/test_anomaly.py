"""Anomaly requests: validation, and how intensity becomes workers, quotas and kernel changes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils import anomaly
from ansible_collections.firm.core.plugins.module_utils.errors import (
    FirmError,
    InvalidInputError,
    NotFoundError,
)
from ansible_collections.firm.core.plugins.module_utils.process import ProcessRef


@pytest.fixture
def env(tmp_path: Path) -> anomaly.Environment:
    files = tmp_path / "sysbench"
    files.mkdir()
    for i in range(2):
        (files / f"test_file.{i}").write_bytes(b"\0" * 4096)
    return anomaly.Environment(state_dir=str(tmp_path / "state"), sysbench_dir=str(files), max_duration_s=600)


def spec(kind: str = "cpu", intensity: int = 50, duration: int = 10, **target: str) -> anomaly.AnomalySpec:
    return anomaly.AnomalySpec("a1", kind, intensity, duration, anomaly.Target(**target))


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (anomaly.AnomalySpec("bad name!", "cpu", 50, 10), "not a plain name"),
        (spec(kind="gpu"), "kind 'gpu' is not known"),
        (spec(intensity=101), "outside 0..100"),
        (spec(intensity=-1), "outside 0..100"),
        (spec(duration=0), "outside 1..600 s"),
        (spec(duration=601), "outside 1..600 s"),
        (spec(kind="network_loss"), "needs target interface"),
        (spec(kind="llc", interface="lo"), "does not use an interface"),
    ],
)
def test_bad_requests_are_refused_with_a_fix(
    env: anomaly.Environment, request_: anomaly.AnomalySpec, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message) as raised:
        anomaly.validate(request_, env)
    assert raised.value.fix


def test_missing_targets_are_refused(env: anomaly.Environment) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        anomaly.validate(spec(cgroup="no/such/service"), env)
    with pytest.raises(NotFoundError, match="firm-no-such-ns"):
        anomaly.validate(spec(kind="network_loss", namespace="firm-no-such-ns", interface="eth0"), env)
    with pytest.raises(NotFoundError, match="firmnoif0"):
        anomaly.validate(spec(kind="network_loss", interface="firmnoif0"), env)


def test_a_missing_tool_is_named_with_how_to_install_it(
    env: anomaly.Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "sysbench" else real_which(tool))
    with pytest.raises(NotFoundError, match="sysbench is not installed") as raised:
        anomaly.validate(spec(kind="disk_io"), env)
    assert "anomaly_tools" in raised.value.fix


def test_disk_io_without_prepared_files_says_how_to_prepare_them(
    env: anomaly.Environment, tmp_path: Path
) -> None:
    empty = anomaly.Environment(state_dir=env.state_dir, sysbench_dir=str(tmp_path / "empty"))
    with pytest.raises(NotFoundError, match="no sysbench files") as raised:
        anomaly.validate(spec(kind="disk_io"), empty)
    assert "prepare" in raised.value.fix


def test_sysbench_files_come_from_the_anomaly_tools_facts(tmp_path: Path) -> None:
    facts = tmp_path / "anomaly_tools.json"
    facts.write_text('{"sysbench_dir": "/srv/sysbench", "sysbench_total_size": 1073741824}')
    assert anomaly.Environment(tools_facts=str(facts)).sysbench_files() == "/srv/sysbench"
    assert (
        anomaly.Environment(tools_facts=str(tmp_path / "none")).sysbench_files()
        == anomaly.DEFAULT_SYSBENCH_DIR
    )


def test_network_delay_names_the_kinds_that_work_when_netem_is_missing(env: anomaly.Environment) -> None:
    if anomaly.netem_available():
        pytest.skip("this kernel has netem, so network_delay is accepted")
    with pytest.raises(NotFoundError, match="netem") as raised:
        anomaly.validate(spec(kind="network_delay", interface="lo"), env)
    assert "cpu" in raised.value.fix and "network_loss" in raised.value.fix


@pytest.mark.parametrize(
    ("intensity", "quota", "workers"),
    [(100, 200000, "10"), (50, 100000, "6"), (25, 50000, "4"), (0, 1000, "2")],
)
def test_cpu_intensity_sets_the_duty_cycle_and_the_workers_per_cpu(
    env: anomaly.Environment, monkeypatch: pytest.MonkeyPatch, intensity: int, quota: int, workers: str
) -> None:
    monkeypatch.setattr(anomaly, "target_cpus", lambda spec, env: [0, 1])
    work = anomaly.plan(spec(intensity=intensity), env)
    assert work.commands[0][:3] == ["stress-ng", "--cpu", workers]
    assert work.settings.cpu_quota_us == quota
    assert work.settings.cpu_period_us == anomaly.CPU_PERIOD_US
    assert work.settings.cpuset_cpus == "0-1"


@pytest.mark.parametrize(
    ("intensity", "weight"), [(0, 1), (1, 1), (25, 33), (50, 100), (80, 400), (99, 9900), (100, 10000)]
)
def test_cpu_intensity_sets_the_weight_that_takes_that_share_from_busy_services(
    env: anomaly.Environment, monkeypatch: pytest.MonkeyPatch, intensity: int, weight: int
) -> None:
    """weight / (weight + 100) = intensity / 100 against a service group of the default weight."""
    monkeypatch.setattr(anomaly, "target_cpus", lambda spec, env: [0])
    work = anomaly.plan(spec(intensity=intensity), env)
    assert work.settings.cpu_weight == weight == anomaly.contending_weight(intensity)
    assert work.describe()["cpu_weight"] == weight
    if 0 < intensity < 100:
        assert weight / (weight + 100) == pytest.approx(intensity / 100, abs=0.01)
    # the other kinds keep the default weight: their contention is of memory, cache or disk
    assert anomaly.plan(spec(kind="memory_bandwidth", intensity=intensity), env).settings.cpu_weight is None


def test_target_cpus_pin_the_workers_whatever_the_cgroups_cpuset_became(
    env: anomaly.Environment,
) -> None:
    online = sorted(os.sched_getaffinity(0))
    pinned = spec(cgroup="no/such/service", cpus=str(online[-1]))
    assert anomaly.target_cpus(pinned, env) == [online[-1]]  # the cgroup's cpuset is not read
    assert anomaly.plan(pinned, env).settings.cpuset_cpus == str(online[-1])
    for bad in (str(online[-1] + 1), "", "1-0"):
        with pytest.raises(FirmError, match="target_cpus") as refused:
            anomaly.validate(spec(cpus=bad), env)
        assert refused.value.fix


def test_llc_working_set_is_a_share_of_the_last_level_cache(
    env: anomaly.Environment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "sys" / "devices" / "system" / "cpu" / "cpu0" / "cache"
    for index, (level, size) in enumerate([(1, "32K"), (2, "1024K"), (3, "32768K")]):
        (cache / f"index{index}").mkdir(parents=True)
        (cache / f"index{index}" / "level").write_text(f"{level}\n")
        (cache / f"index{index}" / "size").write_text(f"{size}\n")
    sized = anomaly.Environment(state_dir=env.state_dir, sysfs_root=str(tmp_path / "sys"))
    assert anomaly.llc_bytes(str(tmp_path / "sys")) == 32 << 20
    monkeypatch.setattr(anomaly, "target_cpus", lambda spec, env: [0, 1])
    half = anomaly.plan(spec(kind="llc", intensity=50), sized).commands[0]
    full = anomaly.plan(spec(kind="llc", intensity=100), sized).commands[0]
    # the total: stress-ng shares --vm-bytes among its workers (2 here, 8 and 16 MiB each)
    assert half[half.index("--vm-bytes") + 1] == str(16 << 20)  # 50 % of 32 MiB
    assert full[full.index("--vm-bytes") + 1] == str(32 << 20)


@pytest.mark.parametrize(("intensity", "threads", "rate"), [(100, 4, 40000), (50, 2, 20000), (10, 1, 4000)])
def test_disk_intensity_sets_threads_and_io_rate(
    env: anomaly.Environment, intensity: int, threads: int, rate: int
) -> None:
    command = anomaly.plan(spec(kind="disk_io", intensity=intensity), env).commands[0]
    assert f"--threads={threads}" in command
    assert f"--rate={rate}" in command
    assert "--file-extra-flags=direct" in command
    assert f"--file-total-size={2 * 4096}" in command
    assert "--file-num=2" in command


def test_network_bandwidth_shapes_to_the_rest_of_the_link_or_floods_a_peer(env: anomaly.Environment) -> None:
    shaped = anomaly.AnomalySpec(
        "n", "network_bandwidth", 75, 10, anomaly.Target(interface="lo"), 1_000_000_000
    )
    assert anomaly.plan(shaped, env).shaping_rate_bps == 250_000_000
    flood = anomaly.AnomalySpec(
        "n",
        "network_bandwidth",
        30,
        10,
        anomaly.Target(namespace="ns1"),
        1_000_000_000,
        peer="192.0.2.2:5202",
    )
    command = anomaly.plan(flood, env).commands[0]
    assert command[:4] == ["ip", "netns", "exec", "ns1"]
    assert command[command.index("-b") + 1] == "300000000"
    assert command[command.index("-p") + 1] == "5202"


def test_every_worker_carries_its_own_time_limit(env: anomaly.Environment) -> None:
    for kind in ("cpu", "memory_bandwidth", "llc", "disk_io"):
        command = " ".join(anomaly.plan(spec(kind=kind, duration=17), env).commands[0])
        assert "--timeout 17" in command or "--time=17" in command, kind


def test_a_record_round_trips_through_its_json_file(env: anomaly.Environment) -> None:
    store = anomaly.Store(env.state_dir)
    record = anomaly.Record(
        spec(cgroup="firm/web"),
        "node1",
        100.0,
        110.0,
        workers=[ProcessRef(4242, 99)],
        cgroup_path="firm-anomaly/a1",
    )
    store.save(record)
    assert store.load("a1") == record
    store.finish(record)
    assert store.load("a1") is None
    history = (Path(env.state_dir) / "history.jsonl").read_text().splitlines()
    assert '"kind": "cpu"' in history[0] and '"ended_at"' in history[0]


def test_peer_is_refused_for_kinds_that_do_not_flood(env: anomaly.Environment) -> None:
    request = anomaly.AnomalySpec(
        "a1", "network_loss", 10, 5, anomaly.Target(interface="lo"), peer="192.0.2.2"
    )
    with pytest.raises(InvalidInputError, match="peer applies to network_bandwidth only"):
        anomaly.validate(request, env)


def test_a_record_whose_interface_is_gone_is_still_filed_and_never_blocks_the_sweep(
    env: anomaly.Environment,
) -> None:
    """The namespace of a shaped veth was deleted before expiry: undoing fails, filing must not."""
    store = anomaly.Store(env.state_dir)
    gone = anomaly.Record(
        spec(kind="network_bandwidth", namespace="firm-gone", interface="eth0"),
        "node1",
        1.0,
        2.0,
        restore={"type": "tc", "interface": "eth0", "namespace": "firm-gone", "previous": None},
    )
    store.save(gone)
    assert anomaly.sweep(env) == ["a1"]  # no supervisor: swept, without raising
    assert store.all() == []
    entry = store.history()[-1]
    assert entry["name"] == "a1" and entry["ended_at"] is not None
    assert entry["note"] == "its supervisor had gone"
    assert entry["problems"] and "firm-gone" in entry["problems"][0]
    assert anomaly.sweep(env) == []


def test_nftables_tables_of_similar_names_differ() -> None:
    tables = {anomaly._loss_table(name) for name in ("a-b", "a.b", "a_b")}
    assert len(tables) == 3
    assert all(t.startswith("firm_anomaly_") and len(t) <= 30 for t in tables)
