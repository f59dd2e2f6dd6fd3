"""Scaled-in instances leave the loop: the local executor's registry, the testbed's discovery, the
guardrails' state, the baselines and the metrics forget them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from firm.actuate.executor import Action, ExecutorError
from firm.actuate.local import LocalExecutor
from firm.loop import testbed as loop_testbed
from firm.loop.config import Guard, LoopConfig, Reclaim, default_guards
from firm.loop.deciders import NoneDecider
from firm.loop.guard import Guardrails
from firm.loop.metrics import Metrics
from firm.loop.runner import ControlLoop
from firm.testbed import config as testbed_config
from firm.testbed import state as testbed_state
from tests.unit.loop.fakes import MemoryTarget, observation, sample, view, window
from tests.unit.loop.test_local_executor import FakeTc, executor
from tests.unit.plugins.cgroup_tree import FakeCgroupRoot
from tests.unit.plugins.resctrl_tree import FakeResctrl

SLACK = {"compose-post": [50.0] * 10, "read-home-timeline": [30.0] * 10}


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def fake(request: pytest.FixtureRequest, tmp_path: Path) -> FakeCgroupRoot:
    tree = FakeCgroupRoot(tmp_path / "cgroup", request.param, cpus="0-1")
    for name in ("firm-testbed/compose-post-0", "firm-testbed/text-0"):
        tree.make_group(name)
    if request.param == 1:
        for name in ("firm-testbed", "firm-testbed/compose-post-0", "firm-testbed/text-0"):
            (tree.group(name, "cpuset") / "cpuset.cpus").write_text("0-1\n")
    return tree


def _with_resctrl(fake: FakeCgroupRoot, tmp_path: Path) -> tuple[LocalExecutor, FakeResctrl]:
    rdt = FakeResctrl(tmp_path / "rdt")
    local = executor(
        fake, tmp_path, FakeTc(), rdt, **{k: v for k, v in rdt.args().items() if k != "proc_root"}
    )
    return local, rdt


def test_a_removed_instance_is_no_longer_managed_and_its_resctrl_group_goes(
    fake: FakeCgroupRoot, tmp_path: Path
) -> None:
    local, rdt = _with_resctrl(fake, tmp_path)
    assert local.apply([Action("text-0", "llc", 4.0), Action("text-0", "cpu", 0.5)], dry_run=False).ok
    assert "firm-text-0/schemata" in rdt.snapshot()
    local.snapshot(["compose-post-0", "text-0"])  # fills the caches of both

    assert local.remove_target("text-0") is True
    assert sorted(local.targets) == ["compose-post-0"]
    assert local.resources("text-0") == frozenset()
    assert not any(path.startswith("firm-text-0/") for path in rdt.snapshot())
    assert "text-0" not in local._disks and "text-0" not in local._shapings
    assert "firm-testbed/text-0" not in local._groups
    with pytest.raises(ExecutorError, match="no instance 'text-0' is managed here"):
        local.snapshot(["text-0"])
    result = local.apply([Action("text-0", "cpu", 0.6)], dry_run=False)
    assert not result.ok and "text-0" in str(result.error)
    # the one left is untouched and still managed; removing twice is no error
    assert local.apply([Action("compose-post-0", "cpu", 0.7)], dry_run=False).ok
    assert local.remove_target("text-0") is False


def test_a_network_shaping_cache_does_not_outlive_its_instance(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    local = executor(fake, tmp_path, FakeTc())
    assert local.apply([Action("compose-post-0", "network", 100e6)], dry_run=False).ok
    local.snapshot(["compose-post-0"])
    assert "compose-post-0" in local._shapings
    assert local.remove_target("compose-post-0")
    assert local._shapings == {} and "compose-post-0" not in local._disks


def _entry(name: str) -> dict[str, Any]:
    service = name.rsplit("-", 1)[0]
    return {
        "service": service,
        "name": name,
        "address": "198.18.9.10",
        "namespace": f"firmtb-{name}",
        "cgroup": f"firm-testbed/{name}",
        "host_interface": None,
        "spec": {"name": service},
        "process": None,
    }


def _write(path: Path, names: list[str], mtime: float) -> None:
    state = testbed_state.TestbedState(
        bridge="firmtb0",
        port=8080,
        redis_address="198.18.9.2",
        frontend="http://198.18.9.3:8080",
        instances=tuple(_entry(n) for n in names),
        data_dir="/proc",  # no block device under it: no disk_io resource
    )
    testbed_state.write(str(path), state)
    os.utime(path, (mtime, mtime))


def test_discovery_hands_scaled_in_instances_back_and_the_executor_forgets_them(
    fake: FakeCgroupRoot, tmp_path: Path
) -> None:
    fake.make_group("firm-testbed/text-1")
    if fake.version == 1:
        (fake.group("firm-testbed/text-1", "cpuset") / "cpuset.cpus").write_text("0-1\n")
    config = testbed_config.TestbedConfig(state_dir=str(tmp_path / "state"), cgroup_parent="firm-testbed")
    path = tmp_path / "state" / "testbed.json"
    path.parent.mkdir()
    _write(path, ["compose-post-0", "text-0"], 1000.0)
    state = testbed_state.read(str(path))
    assert state is not None
    local = executor(fake, tmp_path, FakeTc())
    target = loop_testbed.TestbedTarget(
        config,
        state,
        loop_testbed.TraceWindow(None, 10.0),  # type: ignore[arg-type]
        None,
        local,
        1000.0,
        {e["name"]: e for e in state.instances},
    )
    _write(path, ["compose-post-0", "text-0", "text-1"], 1001.0)  # scaled out
    assert target.refresh() == (["text-1"], [])
    assert "text-1" in local.targets and target.names() == ["compose-post-0", "text-0", "text-1"]
    assert local.apply([Action("text-1", "cpu", 0.5)], dry_run=False).ok

    _write(path, ["compose-post-0", "text-0"], 1002.0)  # scaled in
    assert target.refresh() == ([], ["text-1"])
    assert sorted(local.targets) == ["compose-post-0", "text-0"]
    assert target.names() == ["compose-post-0", "text-0"]


def test_the_guardrails_forget_a_gone_instance() -> None:
    guard = Guardrails(LoopConfig())
    guard.changed_at = {("text-1", "cpu"): 10.0, ("text-1", "network"): 11.0, ("text-0", "cpu"): 12.0}
    guard.unconfirmed = {"text-1": 11.0, "text-0": 12.0}
    guard.forget(["text-1", "media-3"])
    assert guard.changed_at == {("text-0", "cpu"): 12.0}
    assert guard.unconfirmed == {"text-0": 12.0}


class ScalingTarget(MemoryTarget):
    """A target in memory whose instances come and go between steps, as the testbed's do."""

    def __init__(self, limits: dict[str, dict[str, float]]) -> None:
        super().__init__(limits)
        self.pending: tuple[list[str], list[str]] = ([], [])

    def refresh(self) -> tuple[list[str], list[str]]:
        added, removed = self.pending
        self.pending = ([], [])
        for name in removed:
            del self.executor.limits[name]
        return added, removed


def test_the_loop_drops_the_state_of_a_scaled_in_instance(tmp_path: Path) -> None:
    guards = {**default_guards(cpus=2), "cpu": Guard(min=0.1, max=2.0, max_step=0.5, cooldown_s=60)}
    config = LoopConfig(guards=guards, reclaim=Reclaim(enabled=False))
    target = ScalingTarget({"compose-post-0": {"cpu": 0.5}, "text-0": {"cpu": 0.4}, "text-1": {"cpu": 0.4}})
    metrics = Metrics()
    now = [1000.0]
    loop = ControlLoop(
        config, target, NoneDecider(), slo_ms={}, window_s=5.0, metrics=metrics, clock=lambda: now[0]
    )
    loop.start()
    target.traces = window(SLACK)
    target.samples = {n: sample(n, now[0] - 0.5) for n in target.names()}
    assert loop.step()["status"] == "no_action"
    text = generate_latest(metrics.registry).decode()
    assert 'instance="text-1"' in text
    # an action on text-1 earlier: a cool-down and an unconfirmed change in the guardrails
    loop.guard.changed_at[("text-1", "cpu")] = now[0]
    loop.guard.unconfirmed["text-1"] = now[0]

    target.pending = ([], ["text-1"])
    now[0] += 2
    target.samples = {n: sample(n, now[0] - 0.5) for n in target.names()}
    record = loop.step()
    assert record["inputs"]["removed_instances"] == ["text-1"]
    assert "text-1" not in loop.baseline and "text-1" not in loop.guard.unconfirmed
    assert not any(name == "text-1" for name, _ in loop.guard.changed_at)
    assert 'instance="text-1"' not in generate_latest(metrics.registry).decode()
    # an instance of the same name started again later is a new one: no cool-down from its namesake
    views = [view("text-1", {"cpu": 0.4}), view("text-0", {"cpu": 0.4})]
    accepted, rejected = loop.guard.bound(
        [Action("text-1", "cpu", 0.8, "test", "text")], observation(window(SLACK), views), now=now[0]
    )
    assert [a.value for a in accepted] == [0.8] and rejected == []
