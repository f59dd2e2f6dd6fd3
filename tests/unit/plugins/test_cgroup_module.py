"""firm.core.cgroup as Ansible runs it, against fake v1 and v2 trees."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.firm.core.plugins.modules import cgroup as module
from tests.helpers.modules import run_module
from tests.unit.plugins.cgroup_tree import FakeCgroupRoot, fake_block_devices


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def roots(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    fake = FakeCgroupRoot(tmp_path / "cgroup", request.param)
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    return {
        "fake": fake,
        "args": {
            "cgroup_root": str(fake.root),
            "sysfs_root": str(fake_block_devices(tmp_path / "sys")),
            "proc_root": str(proc),
        },
    }


def run(
    roots: dict[str, Any], capsys: pytest.CaptureFixture[str], check_mode: bool = False, **args: Any
) -> dict[str, Any]:
    return run_module(
        functools.partial(module.main, roots["fake"]),
        {**roots["args"], **args},
        check_mode=check_mode,
        capsys=capsys,
    )


def test_check_mode_reports_the_change_and_creates_nothing(
    roots: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(roots, capsys, check_mode=True, path="firm/web", cpu_quota_us=20000)
    assert result["changed"] is True
    assert result["diff"]["before"] == {"exists": False}
    assert result["diff"]["after"]["cpu_quota_us"] == 20000
    assert not roots["fake"].group("firm").exists()


def test_second_run_reports_no_change(roots: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    args: dict[str, Any] = {
        "path": "firm/web",
        "cpu_quota_us": 20000,
        "cpu_weight": 50,
        "cpuset_cpus": "0-1",
        "memory_max": "256M",
        "devices": [{"device": "8:1", "write_bps": 1048576}],
        "pids": [4242],
    }
    first = run(roots, capsys, **args)
    assert first["changed"] is True
    assert first["settings"]["cpu_quota_us"] == 20000
    assert first["settings"]["memory_max"] == 256 << 20
    assert first["settings"]["disk"]["8:0"]["write_bps"] == 1048576
    second = run(roots, capsys, **args)
    assert second["changed"] is False
    assert second["writes"] == []
    assert second["diff"]["before"] == second["diff"]["after"]


def test_a_change_shows_before_and_after(roots: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    run(roots, capsys, path="svc", cpu_quota_us=20000)
    result = run(roots, capsys, path="svc", cpu_quota_us=40000)
    assert result["changed"] is True
    assert result["diff"]["before"]["cpu_quota_us"] == 20000
    assert result["diff"]["after"]["cpu_quota_us"] == 40000
    assert len(result["writes"]) == 1


def test_check_mode_on_an_existing_group_writes_nothing(
    roots: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run(roots, capsys, path="svc", cpu_quota_us=20000)
    result = run(roots, capsys, check_mode=True, path="svc", cpu_quota_us=40000)
    assert result["changed"] is True
    assert result["settings"]["cpu_quota_us"] == 20000


def test_absent_removes_and_is_then_unchanged(
    roots: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run(roots, capsys, path="firm/web", cpu_quota_us=20000)
    assert run(roots, capsys, check_mode=True, path="firm", state="absent")["changed"] is True
    assert roots["fake"].group("firm").exists()
    assert run(roots, capsys, path="firm", state="absent")["changed"] is True
    assert not roots["fake"].group("firm").exists()
    assert run(roots, capsys, path="firm", state="absent")["changed"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"path": "svc", "cpu_quota_us": 500}, "below 1 ms"),
        ({"path": "../svc", "cpu_quota_us": 5000}, "contains '..'"),
        ({"path": "svc", "memory_max": "lots"}, "cannot be parsed"),
        ({"path": "svc", "devices": [{"device": "9:9", "read_bps": 1}]}, "not known to the kernel"),
        ({"pid": 999999, "cpu_quota_us": 5000}, "process 999999 does not exist"),
        ({"pid": 4242, "state": "absent"}, "state is absent but all of the following are missing: path"),
        ({"path": "svc", "pid": 4242}, "mutually exclusive"),
        (
            {"container_id": "containerd://abcdef123456", "path": "x"},
            "missing parameter(s) required by 'container_id'",
        ),
    ],
)
def test_bad_input_fails_with_a_message_and_changes_nothing(
    roots: dict[str, Any], capsys: pytest.CaptureFixture[str], args: dict[str, Any], message: str
) -> None:
    result = run(roots, capsys, **args)
    assert result["failed"] is True
    assert message in result["msg"]
    assert not roots["fake"].group("svc").exists()


def test_every_example_runs(roots: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """EXAMPLES, in order, against the fake tree (the pod's group made as a kubelet would)."""
    examples = yaml.safe_load(module.EXAMPLES)
    pod = next(t["firm.core.cgroup"] for t in examples if "pod_uid" in t["firm.core.cgroup"])
    pod_dir = f"kubepods/burstable/pod{pod['pod_uid']}/{pod['container_id'].split('://')[1]}"
    roots["fake"].make_group(pod_dir)
    for task in examples:
        args = dict(task["firm.core.cgroup"])
        if args.get("pids") == ["{{ web_pid }}"]:
            args["pids"] = [4242]
        for device in args.get("devices", []):
            device["device"] = "8:0"  # the fake sysfs's disk stands in for /dev/vda
        if args.get("state") == "absent":  # the moved process has exited by now
            for directory in roots["fake"].root.rglob("firm/web"):
                (directory / "cgroup.procs").write_text("")
        result = run(roots, capsys, **args)
        assert not result.get("failed"), (task["name"], result)
        assert result["changed"] is True, task["name"]
    assert not roots["fake"].group("firm/web").exists()
