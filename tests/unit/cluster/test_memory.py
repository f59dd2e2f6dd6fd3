"""The memory limit through the executor contract: the ansible executor's cgroup tasks (the cgroup path)
and the Kubernetes executor's in-place resize, with its fallback to the node's cgroups.

The pods are the recorded v1.35 ones (``e2e-statefulset-1``: one container, limits 80m / 30Mi,
requests 40m / 15Mi); the pod after a resize is the recorded pod with the patch merged in (as in
test_kube.py); ansible-runner is replaced by a recorder answering as the cgroup module does.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from firm.actuate.executor import Action, ActionError
from firm.cluster.ansible import CGROUP, AnsibleExecutor, AnsibleTarget, inverse_task
from firm.cluster.kube import KubernetesExecutor
from tests.unit.cluster.fixture_server import FixtureServer, Reply
from tests.unit.cluster.kube_api import api
from tests.unit.cluster.test_ansible_executor import CID, POD, Recorder
from tests.unit.cluster.test_kube import STS_PATH, pods, recorded_pod, resized

MI = 2**20


class MemoryRecorder(Recorder):
    """The recorder, its cgroup answers carrying the group's memory limit (30 MiB) as the module's
    ``diff.before`` does."""

    def __call__(self, host: str, tasks: list[dict[str, Any]], check: bool) -> list[dict[str, Any]]:
        events = super().__call__(host, tasks, check)
        for event in events:
            res = event["event_data"]["res"]
            if "diff" in res:
                res["diff"]["before"]["memory_max"] = 30 * MI
        return events


def pod_target(memory: bool = True) -> AnsibleTarget:
    return AnsibleTarget("web-0", "web", "node-1", pod_uid=POD, container_ids=(CID,), memory=memory)


def cgroup_args(recorder: Recorder) -> list[dict[str, Any]]:
    return [t[CGROUP] for _, tasks, _ in recorder.runs for t in tasks if CGROUP in t]


def test_memory_is_an_action_in_bytes() -> None:
    assert Action("a", "memory", 256 * MI).unit == "bytes"
    assert Action("a", "memory", math.inf).value == math.inf  # no limit
    with pytest.raises(ActionError, match="memory"):
        Action("a", "memory", 0)


def test_the_ansible_executor_sets_memory_only_where_managed() -> None:
    assert "memory" in AnsibleExecutor([pod_target()]).resources("web-0")
    plain = AnsibleExecutor([pod_target(memory=False)], run=Recorder())
    assert "memory" not in plain.resources("web-0")
    result = plain.apply([Action("web-0", "memory", 64 * MI)], dry_run=False)
    assert not result.ok and "memory of web-0 cannot be set" in (result.error or "")


def test_memory_through_the_cgroup_module() -> None:
    recorder = MemoryRecorder()
    executor = AnsibleExecutor([pod_target()], run=recorder)

    lowered = executor.apply([Action("web-0", "memory", 20 * MI)], dry_run=False)
    assert lowered.ok, lowered.error
    first = cgroup_args(recorder)
    # lowering (nothing known yet counts as lowering): the container's group first, then the pod's
    assert [a.get("container_id") for a in first] == [CID, None]
    assert {a["memory_max"] for a in first} == {str(20 * MI)}
    assert lowered.applied[0].before == 30 * MI and lowered.applied[0].after == 20 * MI

    recorder.runs.clear()
    raised = executor.apply([Action("web-0", "memory", 64 * MI)], dry_run=False)
    assert raised.ok
    assert [a.get("container_id") for a in cgroup_args(recorder)] == [None, CID]  # the pod's first

    recorder.runs.clear()
    executor.apply([Action("web-0", "memory", math.inf)], dry_run=False)
    assert {a["memory_max"] for a in cgroup_args(recorder)} == {"-1"}


def test_memory_is_read_and_undone_from_the_modules_diff() -> None:
    recorder = MemoryRecorder()
    executor = AnsibleExecutor([pod_target()], run=recorder)
    snapshot = executor.snapshot(["web-0"])
    assert snapshot.limits["web-0"]["memory"] == 30 * MI
    probe = cgroup_args(recorder)[0]
    assert probe["memory_max"] == "-1" and recorder.runs[0][2]  # read in check mode

    task = executor.tasks_for(0, Action("web-0", "memory", 10 * MI))[0]
    undo = inverse_task(task, {"diff": {"before": {"memory_max": 30 * MI}}})
    assert undo is not None and undo.args["memory_max"] == str(30 * MI)
    assert undo.args["pod_uid"] == POD


def test_a_failed_step_restores_the_memory_limit() -> None:
    recorder = MemoryRecorder(fail={"cpuset"})
    executor = AnsibleExecutor([pod_target()], run=recorder)
    result = executor.apply(
        [Action("web-0", "memory", 20 * MI), Action("web-0", "cpuset", "0")], dry_run=False
    )
    assert not result.ok and result.rolled_back and not result.rollback_failures
    undo = [t[CGROUP] for t in recorder.runs[-1][1]]
    assert [u["memory_max"] for u in undo] == [str(30 * MI), str(30 * MI)]  # both groups back


def test_memory_through_in_place_resize(fixture_server: FixtureServer) -> None:
    found = pods(fixture_server)
    pod = recorded_pod("e2e-statefulset-1")
    fixture_server.route(
        "PATCH", STS_PATH + "/resize", lambda r: Reply(200, json.dumps(resized(r.json(), pod)).encode())
    )
    executor = KubernetesExecutor(api(fixture_server), list(found.values()))
    assert executor.snapshot(["e2e-statefulset-1"]).limits["e2e-statefulset-1"]["memory"] == 30 * MI

    raised = executor.apply([Action("e2e-statefulset-1", "memory", 64 * MI)], dry_run=False)
    assert raised.ok, raised.error
    body = fixture_server.sent("PATCH")[-1].json()
    assert body == {
        "spec": {
            "containers": [{"name": "compute-pi-digits", "resources": {"limits": {"memory": str(64 * MI)}}}]
        }
    }  # the 15Mi request stays: it is below the new limit
    assert raised.applied[0].before == 30 * MI
    assert executor.snapshot(["e2e-statefulset-1"]).limits["e2e-statefulset-1"]["memory"] == 64 * MI

    lowered = executor.apply([Action("e2e-statefulset-1", "memory", 10 * MI)], dry_run=False)
    assert lowered.ok
    resources = fixture_server.sent("PATCH")[-1].json()["spec"]["containers"][0]["resources"]
    assert resources == {"limits": {"memory": str(10 * MI)}, "requests": {"memory": str(10 * MI)}}


def test_memory_falls_back_to_the_node_cgroups(fixture_server: FixtureServer) -> None:
    found = pods(fixture_server)
    sts = found["e2e-statefulset-1"]
    recorder = MemoryRecorder()
    node = AnsibleExecutor(
        [
            AnsibleTarget(
                sts.name,
                sts.service,
                "datagen-1-35",
                pod_uid=sts.uid,
                container_ids=tuple(c.container_id or "" for c in sts.containers),
                memory=True,
            )
        ],
        run=recorder,
    )
    executor = KubernetesExecutor(api(fixture_server), list(found.values()), node_executor=node)
    # no route for /resize: the server's 404 for a resource it does not know
    result = executor.apply([Action(sts.name, "memory", 20 * MI)], dry_run=False)
    assert result.ok, result.error
    assert executor.outcomes[-1].state == "fallback"
    assert {a["memory_max"] for a in cgroup_args(recorder)} == {str(20 * MI)}
    assert executor.snapshot([sts.name]).limits[sts.name]["memory"] == 20 * MI  # as written, not the spec
