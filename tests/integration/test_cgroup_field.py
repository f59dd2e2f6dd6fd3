"""cgroup v1 on this machine's real kernel, as users' nodes have it: pairs of files that constrain each
other written in an order the kernel accepts, refusals that say which constraint refused them, and
values the kernel normalises compared as the kernel will hold them (so a second run changes nothing)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ansible_collections.firm.core.plugins.module_utils import cgroup


@pytest.fixture
def pod(layout: cgroup.Layout, group_path: str) -> Iterator[tuple[cgroup.Group, cgroup.Group]]:
    """A pod-like group holding 2 CPUs as 200000/100000 and a container below it at the same ratio."""
    pod_group = cgroup.group_at(layout, group_path)
    container = cgroup.group_at(layout, f"{group_path}/container")
    cgroup.create_group(pod_group)
    cgroup.create_group(container)
    two_cpus = cgroup.CgroupSettings(cpu_quota_us=200000, cpu_period_us=100000)
    cgroup.apply_writes(cgroup.plan_writes(pod_group, two_cpus))
    cgroup.apply_writes(cgroup.plan_writes(container, two_cpus))
    yield pod_group, container
    cgroup.remove_group_when_empty(container)


def test_raising_period_and_quota_together_over_a_child_at_the_same_ratio(
    pod: tuple[cgroup.Group, cgroup.Group],
) -> None:
    """Period first would drop the pod to 1 CPU below its child's 2 (EINVAL): the plan avoids that."""
    pod_group, container = pod
    wanted = cgroup.CgroupSettings(cpu_quota_us=400000, cpu_period_us=200000)
    cgroup.apply_writes(cgroup.plan_writes(pod_group, wanted))
    assert cgroup.read_cpu_max(pod_group) == (400000, 200000)
    assert cgroup.read_cpu_max(container) == (200000, 100000)
    assert cgroup.plan_writes(pod_group, wanted) == []  # idempotent


@pytest.mark.parametrize(
    ("quota", "period"),
    [(400000, 200000), (100000, 50000), (300000, 100000), (200000, 50000), (-1, 1000000), (250000, 125000)],
)
def test_every_pair_change_that_the_end_state_allows_is_accepted(
    pod: tuple[cgroup.Group, cgroup.Group], quota: int, period: int
) -> None:
    pod_group, _ = pod
    cgroup.apply_writes(
        cgroup.plan_writes(pod_group, cgroup.CgroupSettings(cpu_quota_us=quota, cpu_period_us=period))
    )
    assert cgroup.read_cpu_max(pod_group) == (quota, period)


def test_a_quota_below_a_child_is_refused_naming_the_child(pod: tuple[cgroup.Group, cgroup.Group]) -> None:
    pod_group, _ = pod
    with pytest.raises(cgroup.CgroupWriteError) as info:
        cgroup.apply_writes(cgroup.plan_writes(pod_group, cgroup.CgroupSettings(cpu_quota_us=100000)))
    text = str(info.value)
    assert "less than its children container (200000/100000 us (2.00 CPUs))" in text
    assert "lower the children's quotas first" in text
    assert cgroup.read_cpu_max(pod_group) == (200000, 100000)  # nothing half-applied


def test_a_child_above_its_parent_is_refused_naming_the_parent(
    pod: tuple[cgroup.Group, cgroup.Group],
) -> None:
    _, container = pod
    with pytest.raises(cgroup.CgroupWriteError) as info:
        cgroup.apply_writes(cgroup.plan_writes(container, cgroup.CgroupSettings(cpu_quota_us=300000)))
    assert "more than the parent group's 200000/100000 us (2.00 CPUs)" in str(info.value)
    assert "raise the parent's quota first" in str(info.value)


def test_an_empty_cpuset_refuses_processes_and_says_so(layout: cgroup.Layout, group_path: str) -> None:
    if "cpuset" not in layout.hierarchies:
        pytest.skip("this machine has no cpuset controller")
    group = cgroup.group_at(layout, group_path)
    cgroup.create_group(group)
    # create_group fills cpuset.cpus/mems from the parent; empty them as a hand-made group has them.
    for name in ("cpuset.cpus", "cpuset.mems"):
        with open(group.file("cpuset", name), "w") as handle:
            handle.write("\n")
    with pytest.raises(cgroup.CgroupWriteError, match=r"cpuset\.cpus or cpuset\.mems is empty"):
        cgroup.attach_pids({group.dir("cpuset"): [os.getpid()]})


def test_a_memory_limit_the_kernel_rounds_is_not_rewritten(layout: cgroup.Layout, group_path: str) -> None:
    if "memory" not in layout.hierarchies:
        pytest.skip("this machine has no memory controller")
    group = cgroup.group_at(layout, group_path)
    cgroup.create_group(group)
    wanted = cgroup.CgroupSettings(memory_max=1_000_000_000)
    cgroup.apply_writes(cgroup.plan_writes(group, wanted))
    held = cgroup.read_memory_max(group)
    assert held == cgroup.kernel_memory_limit(1_000_000_000) != 1_000_000_000
    assert cgroup.plan_writes(group, wanted) == []
