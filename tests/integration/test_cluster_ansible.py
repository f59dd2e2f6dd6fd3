"""The ansible executor for real: firm.core modules run by ansible-runner with the local connection
change a real cgroup, a failed step is rolled back, an unreachable host is survived and audited."""

from __future__ import annotations

import math
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils import cgroup
from firm.actuate.executor import Action
from firm.cluster.ansible import AnsibleExecutor, AnsibleTarget
from firm.cluster.discovery import host_veth

REPO = Path(__file__).resolve().parents[2]


def _quota(layout: cgroup.Layout, path: str) -> tuple[int, int]:
    return cgroup.read_cpu_max(cgroup.group_at(layout, path))


@pytest.fixture
def made_group(layout: cgroup.Layout, group_path: str) -> str:
    group = cgroup.group_at(layout, group_path)
    cgroup.create_group(group)
    return group_path


def test_applies_dry_runs_rolls_back_and_restores(
    layout: cgroup.Layout, made_group: str, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    executor = AnsibleExecutor(
        [AnsibleTarget("web-0", "web", "localhost", cgroup=made_group)],
        str(REPO / "inventory" / "local"),
        audit_path=str(audit),
    )
    baseline = executor.snapshot(["web-0"])
    assert baseline.limits["web-0"]["cpu"] == math.inf
    quota_before = _quota(layout, made_group)

    planned = executor.apply([Action("web-0", "cpu", 0.5)], dry_run=True)
    assert planned.ok and planned.dry_run and planned.applied[0].changed
    assert _quota(layout, made_group) == quota_before  # check mode wrote nothing

    done = executor.apply([Action("web-0", "cpu", 0.5), Action("web-0", "cpu_weight", 50.0)], dry_run=False)
    assert done.ok, done.error
    assert _quota(layout, made_group) == (50_000, 100_000)
    assert [a.before for a in done.applied] == [math.inf, 100.0]
    again = executor.apply([Action("web-0", "cpu", 0.5)], dry_run=False)
    assert again.ok and not again.changed  # idempotent

    # the second action fails on the node (CPU 4095 does not exist): the first is undone
    failed = executor.apply([Action("web-0", "cpu", 0.8), Action("web-0", "cpuset", "4095")], dry_run=False)
    assert not failed.ok and failed.rolled_back and not failed.rollback_failures
    assert "cpuset of web-0" in (failed.error or "")
    assert _quota(layout, made_group) == (50_000, 100_000)

    restored = executor.restore(baseline)
    assert restored.ok, restored.error
    assert _quota(layout, made_group) == quota_before
    kinds = [line for line in audit.read_text().splitlines()]
    assert any('"kind": "rollback"' in k for k in kinds) and any('"status": "failed"' in k for k in kinds)


def test_an_unreachable_host_is_survived_and_the_other_host_rolled_back(
    layout: cgroup.Layout, made_group: str, tmp_path: Path
) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        '      ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
        "    gone:\n      ansible_host: 127.0.0.1\n      ansible_port: 9\n      ansible_user: root\n"
        "      ansible_ssh_common_args: -o ConnectTimeout=5 -o BatchMode=yes\n"
    )
    executor = AnsibleExecutor(
        [
            AnsibleTarget("web-0", "web", "localhost", cgroup=made_group),
            AnsibleTarget("db-0", "db", "gone", cgroup=made_group),
        ],
        str(inventory),
    )
    quota_before = _quota(layout, made_group)
    result = executor.apply([Action("web-0", "cpu", 0.3), Action("db-0", "cpu", 0.3)], dry_run=False)
    assert not result.ok and result.rolled_back
    assert "unreachable" in (result.error or "")
    assert _quota(layout, made_group) == quota_before  # localhost's change was undone
    hosts = {(r["kind"], r["host"]) for r in executor.audit}
    assert {("apply", "localhost"), ("apply", "gone"), ("rollback", "localhost")} <= hosts
    assert any(t["status"] == "unreachable" for r in executor.audit for t in r["tasks"])


@pytest.fixture
def pod_netns(spawn: list[subprocess.Popen[bytes]]) -> Iterator[tuple[str, int]]:
    """A pod-like network namespace: a veth whose host end is in this namespace and whose other end is
    ``eth0`` inside, and a process running in it. Yields (host end, the process's PID); all removed after."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    namespace, host_end = f"firm-podns-{os.getpid()}", f"fh{os.getpid()}"[:15]
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(
            ["ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", namespace],
            check=True,
        )
        subprocess.run(["ip", "link", "set", host_end, "up"], check=True)
        proc = subprocess.Popen(["ip", "netns", "exec", namespace, "sleep", "600"])
        spawn.append(proc)
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{proc.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "the process never entered the namespace"
            time.sleep(0.01)  # polling for the exec into the namespace, bounded by the deadline
        yield host_end, proc.pid
    finally:
        subprocess.run(["ip", "link", "del", host_end], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], check=False)


def _root_qdisc(interface: str) -> str:
    return subprocess.run(
        ["tc", "qdisc", "show", "dev", interface, "root"], capture_output=True, text=True, check=True
    ).stdout


def test_the_host_side_veth_is_found_and_shaped_through_ansible(
    layout: cgroup.Layout, made_group: str, pod_netns: tuple[str, int]
) -> None:
    host_end, pid = pod_netns
    assert host_veth(pid, "eth0") == host_end
    executor = AnsibleExecutor(
        [AnsibleTarget("web-0", "web", "localhost", cgroup=made_group, interface=host_end)],
        str(REPO / "inventory" / "local"),
    )
    assert executor.snapshot(["web-0"]).limits["web-0"]["network"] == math.inf
    done = executor.apply([Action("web-0", "network", 10e6)], dry_run=False)
    assert done.ok, done.error
    assert "tbf" in _root_qdisc(host_end) and "10Mbit" in _root_qdisc(host_end)
    assert executor.snapshot(["web-0"]).limits["web-0"]["network"] == 10e6
    # a failing second action: the qdisc goes back to the TBF at 10 Mbit/s
    failed = executor.apply(
        [Action("web-0", "network", 20e6), Action("web-0", "cpuset", "4095")], dry_run=False
    )
    assert failed.rolled_back and not failed.rollback_failures, failed.error
    assert "10Mbit" in _root_qdisc(host_end)
    lifted = executor.apply([Action("web-0", "network", math.inf)], dry_run=False)
    assert lifted.ok and "tbf" not in _root_qdisc(host_end)
