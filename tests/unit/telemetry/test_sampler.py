"""The sampler on fake cgroup trees; the in-memory and Redis stores (real Redis, database 15)."""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

from firm.telemetry import (
    Instance,
    LocalCollector,
    MemoryTelemetry,
    RedisTelemetrySink,
    RedisTelemetrySource,
    Sample,
    Sampler,
    TelemetryError,
    TelemetrySource,
)
from tests.helpers.redis_db import REDIS_URL, connect
from tests.unit.plugins.cgroup_tree import FakeCgroupRoot


@pytest.fixture
def fake(tmp_path: Path) -> FakeCgroupRoot:
    root = FakeCgroupRoot(tmp_path / "cgroup", 1)
    root.make_group("tb/a")
    root.make_group("tb/b")
    return root


def remove_group(fake: FakeCgroupRoot, path: str) -> None:
    for controller in ("cpu", "cpuacct", "cpuset", "blkio", "memory", "pids"):
        directory = fake.group(path, controller)
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()


def make_sample(name: str, timestamp: float, cpu: float = 0.5) -> Sample:
    return Sample(name, "svc", timestamp, 1.0, cpu, 0.0, 0.0, 100, 0.0, 0.0, None, None, 1)


def is_running(sampler: Sampler) -> bool:
    return sampler.running


class FailingSink:
    def __init__(self) -> None:
        self.calls = 0

    def write(self, samples: Sequence[Sample]) -> None:
        self.calls += 1
        raise ConnectionError("store is down")


def test_rounds_give_a_sample_per_instance_after_the_first(fake: FakeCgroupRoot) -> None:
    memory = MemoryTelemetry()
    sampler = Sampler(
        [Instance("svc", "a", "tb/a"), Instance("svc", "b", "tb/b")],
        sinks=[memory],
        collector=LocalCollector(cgroup_root=str(fake.root)),
    )
    assert sampler.sample_once() == []  # priming
    (fake.group("tb/a", "cpuacct") / "cpuacct.usage").write_text("500000000\n")
    samples = sampler.sample_once()
    assert [s.instance for s in samples] == ["a", "b"]
    assert samples[0].cpu_cores is not None and samples[0].cpu_cores > 0
    assert samples[1].cpu_cores == 0
    assert memory.instances() == ["a", "b"]
    assert memory.latest("a") == samples[0]
    stats = sampler.stats()
    assert (stats.rounds, stats.samples, stats.instance_readings, stats.skipped) == (2, 2, 4, 0)
    assert stats.cpu_ms_per_instance is not None and stats.cpu_ms_per_instance > 0


def test_a_disappearing_instance_is_skipped_logged_once_and_picked_up_again(
    fake: FakeCgroupRoot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="firm.telemetry")
    sampler = Sampler(
        [Instance("svc", "a", "tb/a"), Instance("svc", "b", "tb/b")],
        collector=LocalCollector(cgroup_root=str(fake.root)),
    )
    sampler.sample_once()
    remove_group(fake, "tb/b")
    for _ in range(3):
        assert [s.instance for s in sampler.sample_once()] == ["a"]
    assert sampler.stats().skipped == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].getMessage().startswith("skipping b: cgroup tb/b of b")
    fake.make_group("tb/b")  # restarted
    assert [s.instance for s in sampler.sample_once()] == ["a"]  # b primes again
    assert [s.instance for s in sampler.sample_once()] == ["a", "b"]
    assert any(r.getMessage() == "b is back" for r in caplog.records)


def test_a_failing_sink_does_not_stop_sampling(fake: FakeCgroupRoot) -> None:
    failing, memory = FailingSink(), MemoryTelemetry()
    sampler = Sampler(
        [Instance("svc", "a", "tb/a")],
        sinks=[failing, memory],
        collector=LocalCollector(cgroup_root=str(fake.root)),
    )
    for _ in range(3):
        sampler.sample_once()
    assert failing.calls == 3 and sampler.stats().sink_errors == 3
    assert len(memory.window("a", 0, time.time() + 1)) == 2


def test_the_thread_samples_every_interval_and_stops(fake: FakeCgroupRoot) -> None:
    memory = MemoryTelemetry()
    sampler = Sampler(
        [Instance("svc", "a", "tb/a")],
        sinks=[memory],
        collector=LocalCollector(cgroup_root=str(fake.root)),
        interval_s=0.05,
    )
    with sampler:
        assert is_running(sampler)
        deadline = time.monotonic() + 5
        while len(memory.window("a", 0, time.time() + 1)) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert not is_running(sampler)
    samples = memory.window("a", 0, time.time() + 1)
    assert len(samples) >= 5
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(samples)]
    assert all(0.02 < g < 1.0 for g in gaps)
    rounds = sampler.stats().rounds
    time.sleep(0.15)
    assert sampler.stats().rounds == rounds  # stopped means stopped


def test_instances_can_be_added_and_removed_while_running(fake: FakeCgroupRoot) -> None:
    sampler = Sampler(collector=LocalCollector(cgroup_root=str(fake.root)))
    sampler.add(Instance("svc", "a", "tb/a"))
    sampler.sample_once()
    sampler.add(Instance("svc", "b", "tb/b"))
    assert [s.instance for s in sampler.sample_once()] == ["a"]
    sampler.remove("a")
    assert [s.instance for s in sampler.sample_once()] == ["b"]
    assert [i.name for i in sampler.instances()] == ["b"]


def test_interval_must_be_positive() -> None:
    with pytest.raises(TelemetryError):
        Sampler(interval_s=0)


def test_memory_telemetry_is_a_bounded_source() -> None:
    memory = MemoryTelemetry(retention=3)
    assert isinstance(memory, TelemetrySource)
    memory.write([make_sample("a", t) for t in (1.0, 2.0, 3.0, 4.0)])
    assert [s.timestamp for s in memory.window("a", 0, 10)] == [2.0, 3.0, 4.0]
    assert [s.timestamp for s in memory.window("a", 2.5, 3.5)] == [3.0]
    assert memory.latest("b") is None and memory.window("b", 0, 10) == []


# Redis --------------------------------------------------------------------------------------------


@pytest.fixture
def store() -> Iterator[tuple[redis.Redis, str]]:
    client = connect()
    prefix = f"firm:test-telemetry-{uuid.uuid4().hex[:8]}"
    yield client, prefix
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


def test_redis_streams_per_instance_are_read_back(store: tuple[redis.Redis, str]) -> None:
    client, prefix = store
    sink = RedisTelemetrySink(REDIS_URL, prefix=prefix, retention=1000, ttl_s=600)
    source = RedisTelemetrySource(REDIS_URL, prefix=prefix)
    assert isinstance(source, TelemetrySource)
    now = time.time()
    for i in range(5):
        sink.write([make_sample("a", now - 5 + i, cpu=i / 10), make_sample("b", now - 5 + i)])
    assert client.smembers(f"{prefix}:instances") == {"a", "b"}
    assert client.xlen(f"{prefix}:a") == 5
    assert 0 < client.ttl(f"{prefix}:a") <= 600
    assert source.instances() == ["a", "b"]
    latest = source.latest("a")
    assert latest == make_sample("a", now - 1, cpu=0.4)
    window = source.window("a", now - 4.5, now - 2)
    assert [round(s.cpu_cores or 0, 3) for s in window] == [0.1, 0.2, 0.3]  # both ends included
    assert source.latest("nobody") is None and source.window("nobody", 0, now) == []
    client.delete(f"{prefix}:b")  # expired
    assert source.instances() == ["a"]


def test_redis_streams_are_bounded(store: tuple[redis.Redis, str]) -> None:
    client, prefix = store
    sink = RedisTelemetrySink(client, prefix=prefix, retention=100)
    for i in range(600):
        sink.write([make_sample("a", 1000.0 + i)])
    # MAXLEN ~ trims whole stream nodes (100 entries by default), never below the retention.
    assert 100 <= client.xlen(f"{prefix}:a") <= 300
    source = RedisTelemetrySource(client, prefix=prefix)
    latest = source.latest("a")
    assert latest is not None and latest.timestamp == 1599.0
