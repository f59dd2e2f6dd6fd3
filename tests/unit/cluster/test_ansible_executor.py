"""The ansible executor's plays, result mapping and rollback, with ansible-runner replaced by a
recorder that answers as the modules do (the real runs are in tests/integration/test_cluster_ansible.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from firm.actuate.executor import Action, Executor, ExecutorError
from firm.actuate.local import LocalTarget
from firm.cluster.ansible import (
    RESCTRL,
    TC,
    AnsibleExecutor,
    AnsibleTarget,
    Task,
    inverse_task,
    targets_from_local,
)

POD = "b74071bf-fab2-44d0-9850-55ff20eda8c3"
CID = "containerd://f178027c6d8689af7d274bb9018b4e3a84135a753543436bed5a52c4797760de"
INTEL = {
    "caches": {"L3": {"cbm_len": 11, "min_cbm_bits": 1}},
    "mb": {"min_bandwidth": 10, "bandwidth_gran": 10, "unit": "percent"},
}


class Recorder:
    """Answers each task ok/changed with a diff.before, or fails / is unreachable on request."""

    def __init__(self, fail: set[str] = frozenset(), unreachable: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.runs: list[tuple[str, list[dict[str, Any]], bool]] = []
        self.fail, self.unreachable = fail, unreachable

    def __call__(self, host: str, tasks: list[dict[str, Any]], check: bool) -> list[dict[str, Any]]:
        self.runs.append((host, tasks, check))
        if host in self.unreachable:
            return [
                {
                    "event": "runner_on_unreachable",
                    "event_data": {
                        "host": host,
                        "task": tasks[0]["name"],
                        "res": {"msg": "ssh: connect refused"},
                    },
                }
            ]
        events = []
        for task in tasks:
            if any(f in task["name"] for f in self.fail):
                events.append(
                    {
                        "event": "runner_on_failed",
                        "event_data": {"host": host, "task": task["name"], "res": {"msg": "kernel said no"}},
                    }
                )
                break
            before = {
                "cpu_quota_us": -1,
                "cpu_period_us": 100000,
                "cpu_weight": 100,
                "cpuset_cpus": "0-1",
                "shaping": None,
            }
            events.append(
                {
                    "event": "runner_on_ok",
                    "event_data": {
                        "host": host,
                        "task": task["name"],
                        "res": {"changed": True, "diff": {"before": before}},
                    },
                }
            )
        return events


def test_one_run_per_host_and_results_mapped_back() -> None:
    recorder = Recorder()
    executor = AnsibleExecutor(
        [
            AnsibleTarget("a-0", "a", "node1", cgroup="firm/a-0", interface="veth1", disk_device="8:0"),
            AnsibleTarget("b-0", "b", "node2", cgroup="firm/b-0"),
        ],
        run=recorder,
    )
    assert isinstance(executor, Executor)
    assert executor.resources("a-0") == {"cpu", "cpu_weight", "cpuset", "disk_io", "network"}
    result = executor.apply(
        [
            Action("a-0", "cpu", 1.5),
            Action("a-0", "network", 8e6),
            Action("a-0", "disk_io", math.inf),
            Action("b-0", "cpu", 0.25),
        ],
        dry_run=False,
    )
    assert result.ok and result.changed
    assert sorted(host for host, _, _ in recorder.runs) == ["node1", "node2"]
    node1 = next(tasks for host, tasks, _ in recorder.runs if host == "node1")
    assert node1[0]["firm.core.cgroup"] == {
        "path": "firm/a-0",
        "cpu_quota_us": 150000,
        "cpu_period_us": 100000,
    }
    assert node1[1]["firm.core.tc"] == {
        "interface": "veth1",
        "kind": "tbf",
        "rate": 8000000,
    }  # the module's burst
    assert node1[2]["firm.core.cgroup"]["devices"] == [{"device": "8:0"}]  # inf: no limit
    assert [a.before for a in result.applied] == [math.inf, math.inf, None, math.inf]


def test_a_failure_rolls_back_every_host() -> None:
    recorder = Recorder(fail={"cpuset of a-0"})
    executor = AnsibleExecutor(
        [
            AnsibleTarget("a-0", "a", "node1", cgroup="firm/a-0"),
            AnsibleTarget("b-0", "b", "node2", cgroup="firm/b-0"),
        ],
        run=recorder,
    )
    result = executor.apply(
        [Action("a-0", "cpu", 1.0), Action("a-0", "cpuset", "1"), Action("b-0", "cpu", 0.5)], dry_run=False
    )
    assert not result.ok and result.rolled_back and not result.rollback_failures
    assert "kernel said no" in (result.error or "")
    undo = {host: tasks for host, tasks, _ in recorder.runs[2:]}
    assert undo["node1"][0]["firm.core.cgroup"] == {
        "path": "firm/a-0",
        "cpu_quota_us": -1,
        "cpu_period_us": 100000,
    }
    assert undo["node2"][0]["firm.core.cgroup"]["cpu_quota_us"] == -1
    assert [r["kind"] for r in executor.audit].count("rollback") == 2


def test_an_unreachable_host_is_reported_and_audited() -> None:
    recorder = Recorder(unreachable={"node2"})
    executor = AnsibleExecutor(
        [
            AnsibleTarget("a-0", "a", "node1", cgroup="firm/a-0"),
            AnsibleTarget("b-0", "b", "node2", cgroup="firm/b-0"),
        ],
        run=recorder,
    )
    result = executor.apply([Action("a-0", "cpu", 1.0), Action("b-0", "cpu", 0.5)], dry_run=False)
    assert not result.ok and result.rolled_back and "unreachable" in (result.error or "")
    assert any(t["status"] == "unreachable" for r in executor.audit for t in r["tasks"])
    dry = AnsibleExecutor([AnsibleTarget("a-0", "a", "node1", cgroup="x")], run=recorder).apply(
        [Action("a-0", "cpu", 1.0)], dry_run=True
    )
    assert dry.ok and recorder.runs[-1][2] is True


def test_pod_targets_write_the_pod_and_its_containers_in_a_safe_order() -> None:
    executor = AnsibleExecutor(
        [AnsibleTarget("sts-1", "sts", "node1", pod_uid=POD, container_ids=(CID,), cgroup_driver="cgroupfs")],
        run=Recorder(),
    )
    lowering = executor.tasks_for(0, Action("sts-1", "cpu", 0.05))
    assert [t.args.get("container_id") for t in lowering] == [CID, None]  # containers first when lowering
    assert lowering[-1].main and not lowering[0].main
    executor.apply([Action("sts-1", "cpu", 0.05)], dry_run=False)
    raising = executor.tasks_for(0, Action("sts-1", "cpu", 2.0))
    assert [t.args.get("container_id") for t in raising] == [None, CID]
    assert raising[0].args["pod_uid"] == POD and raising[0].args["cgroup_driver"] == "cgroupfs"


def test_resctrl_tasks_and_their_inverse() -> None:
    executor = AnsibleExecutor(
        [AnsibleTarget("a-0", "a", "node1", cgroup="firm/a-0", resctrl=INTEL)], run=Recorder()
    )
    assert {"llc", "memory_bandwidth"} <= executor.resources("a-0")
    probe, llc = executor.tasks_for(0, Action("a-0", "llc", 4.0))
    assert probe.module == "ansible.builtin.command" and probe.register
    assert llc.module == RESCTRL and llc.args["l3"] == "f" and "pids" in llc.args
    (_, mb) = executor.tasks_for(1, Action("a-0", "memory_bandwidth", 33.0))
    assert mb.args["mb"] == 40  # rounded up to the 10 % step
    undo = inverse_task(mb, {"changed": True, "created": False, "diff": {"before": "L3:0=7ff\nMB:0=100\n"}})
    assert undo is not None and undo.args == {"name": "firm-a-0", "mb": {"0": 100}}
    created = inverse_task(mb, {"changed": True, "created": True, "diff": {"before": ""}})
    assert created is not None and created.args == {"name": "firm-a-0", "state": "absent"}


def test_tc_inverse_restores_the_previous_qdisc() -> None:
    task = Task(0, TC, {"interface": "veth1", "kind": "tbf", "rate": 1000000}, "t")
    shaping = {"kind": "tbf", "rate_bps": 5000000, "burst_bytes": 6250, "latency_us": 50000}
    undo = inverse_task(task, {"diff": {"before": {"shaping": shaping}}})
    assert undo is not None and undo.args == {
        "interface": "veth1",
        "kind": "tbf",
        "rate": 5000000,
        "burst": 6250,
        "latency": 50000,
    }
    removed = inverse_task(task, {"diff": {"before": {"shaping": None}}})
    assert removed is not None and removed.args == {"interface": "veth1", "state": "absent"}


def test_rejections_before_anything_runs() -> None:
    recorder = Recorder()
    executor = AnsibleExecutor([AnsibleTarget("a-0", "a", "node1", cgroup="firm/a-0")], run=recorder)
    assert "cannot be set" in (executor.apply([Action("a-0", "network", 1e6)], dry_run=False).error or "")
    assert "twice" in (
        executor.apply([Action("a-0", "cpu", 1.0), Action("a-0", "cpu", 2.0)], dry_run=False).error or ""
    )
    assert "no instance" in (executor.apply([Action("x", "cpu", 1.0)], dry_run=False).error or "")
    assert recorder.runs == []
    with pytest.raises(ExecutorError, match="exactly one"):
        AnsibleTarget("a", "a", "h")


def test_targets_from_local_executor_targets() -> None:
    (target,) = targets_from_local([LocalTarget("a-0", "a", "firm/a-0", interface="v1")])
    assert (target.host, target.cgroup, target.interface) == ("localhost", "firm/a-0", "v1")


def test_snapshots_read_the_node_once_per_ttl_and_follow_the_steps() -> None:
    recorder = Recorder()
    clock_target = AnsibleTarget("a-0", "a", "node1", cgroup="firm/a-0")
    executor = AnsibleExecutor([clock_target], run=recorder, snapshot_ttl_s=3600)
    first = executor.snapshot(["a-0"])
    assert first.limits["a-0"] == {"cpu": math.inf, "cpu_weight": 100.0, "cpuset": "0-1"}
    assert executor.snapshot(["a-0"]).limits == first.limits and len(recorder.runs) == 1
    executor.apply([Action("a-0", "cpu", 0.5)], dry_run=False)
    assert executor.snapshot(["a-0"]).limits["a-0"]["cpu"] == 0.5 and len(recorder.runs) == 2
    fresh = AnsibleExecutor([clock_target], run=recorder, snapshot_ttl_s=0)
    fresh.snapshot(["a-0"])
    fresh.snapshot(["a-0"])
    assert len(recorder.runs) == 4  # no cache: a read each time
