"""cgroup layouts and refusals as users' nodes have them, on fake trees that follow the kernel's rules:
static pods, write ordering of files that constrain each other, refusals that explain themselves, and
values the kernel normalises. (The same ordering and refusals run on the real kernel in
tests/integration/test_cgroup_field.py.)"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import KernelWriteError
from tests.unit.plugins.cgroup_tree import FakeCgroupRoot

STATIC_UID = "a7d3f8e2b1c94d5e8f7a6b5c4d3e2f1a"  # kubernetes.io/config.hash of a static pod
CID = "4f2a7c1e9b0d3a6f8e5c2b1a0d9f8e7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e"


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def fake(request: pytest.FixtureRequest, tmp_path: Path) -> FakeCgroupRoot:
    tree = FakeCgroupRoot(tmp_path / "cgroup", request.param)
    return tree


@pytest.mark.parametrize(
    ("container_id", "expected"),
    [
        (None, f"kubepods/burstable/pod{STATIC_UID}"),
        (f"containerd://{CID}", f"kubepods/burstable/pod{STATIC_UID}/{CID}"),
        (None, f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice"),
        (
            f"containerd://{CID}",
            f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/"
            f"cri-containerd-{CID}.scope",
        ),
    ],
)
def test_static_pods_are_found_by_their_config_hash(
    fake: FakeCgroupRoot, container_id: str | None, expected: str
) -> None:
    fake.make_group(expected)
    group = cgroup.group_of_pod(cgroup.detect_layout(str(fake.root)), STATIC_UID, container_id)
    assert group.paths["cpu"] == expected


@pytest.mark.parametrize(
    "uid", ["a7d3f8e2b1c94d5e8f7a6b5c4d3e2f1", "a7d3f8e2b1c94d5e8f7a6b5c4d3e2f1az", "../etc"]
)
def test_near_uids_are_still_refused(uid: str) -> None:
    with pytest.raises(cgroup.CgroupInputError, match=r"config\.hash"):
        cgroup.kubernetes_candidates(uid)


# -- write ordering (cgroup v1 checks every write against parent and children) -------------------


def _order(now: tuple[int, int], wanted: tuple[int, int], children: bool = True) -> list[tuple[str, str]]:
    quota_write = cgroup.Write("cpu_quota_us", "q", str(wanted[0]))
    period_write = cgroup.Write("cpu_period_us", "p", str(wanted[1]))
    writes = cgroup._order_v1_cpu_writes(
        now[0], now[1], wanted[0], wanted[1], quota_write, period_write, has_limited_children=children
    )
    return [(w.path, w.value) for w in writes]


def _ratios(now: tuple[int, int], writes: list[tuple[str, str]]) -> list[float]:
    quota, period = now
    seen = []
    for path, value in writes:
        quota, period = (int(value), period) if path == "q" else (quota, int(value))
        seen.append(float("inf") if quota < 0 else quota / period)
    return seen


@pytest.mark.parametrize(
    ("now", "wanted"),
    [
        ((200000, 100000), (400000, 200000)),
        ((400000, 200000), (200000, 100000)),
        ((200000, 100000), (300000, 100000)),
        ((200000, 100000), (100000, 200000)),
        ((50000, 100000), (400000, 1000000)),
        ((100000, 100000), (50000, 25000)),
    ],
)
def test_no_intermediate_state_leaves_the_range_of_the_old_and_new_ratio(
    now: tuple[int, int], wanted: tuple[int, int]
) -> None:
    writes = _order(now, wanted)
    low, high = sorted((now[0] / now[1], wanted[0] / wanted[1]))
    for ratio in _ratios(now, writes)[:-1]:
        assert ratio == float("inf") or low <= ratio <= high  # unlimited: always accepted by v1
    assert _ratios(now, writes)[-1] == wanted[0] / wanted[1]


def test_a_pair_that_keeps_its_ratio_goes_through_unlimited() -> None:
    assert _order((200000, 100000), (400000, 200000)) == [("q", "-1"), ("p", "200000"), ("q", "400000")]


def test_without_limited_children_the_lower_intermediate_is_taken() -> None:
    # Only the parent constrains such a group, and a lower ratio never exceeds it.
    assert _order((200000, 100000), (400000, 200000), children=False) == [("p", "200000"), ("q", "400000")]
    assert _order((50000, 100000), (20000, 50000), children=False) == [("q", "20000"), ("p", "50000")]


# -- refusals that explain themselves ------------------------------------------------------------


def _refusal(path: str, value: str, code: int) -> str:
    write = cgroup.Write("x", path, value)
    message, fix = cgroup.explain_refusal(write, KernelWriteError("refused", "generic advice", errno=code))
    return f"{message}. Fix: {fix}"


def test_v2_burst_above_the_quota_is_named(tmp_path: Path) -> None:
    group = tmp_path / "svc"
    group.mkdir()
    (group / "cpu.max").write_text("max 100000\n")
    (group / "cpu.max.burst").write_text("50000\n")
    text = _refusal(str(group / "cpu.max"), "20000 100000", errno.EINVAL)
    assert "cpu.max.burst (50000 us) is larger than the new quota" in text


def test_memory_below_usage_and_above_the_swap_limit_are_named(tmp_path: Path) -> None:
    group = tmp_path / "svc"
    group.mkdir()
    (group / "memory.usage_in_bytes").write_text("734003200\n")
    (group / "memory.memsw.limit_in_bytes").write_text("536870912\n")
    busy = _refusal(str(group / "memory.limit_in_bytes"), "104857600", errno.EBUSY)
    assert "uses 734003200 bytes, more than the new limit" in busy
    swap = _refusal(str(group / "memory.limit_in_bytes"), "1073741824", errno.EINVAL)
    assert "memory+swap limit (memory.memsw.limit_in_bytes) is 536870912" in swap


@pytest.mark.parametrize(
    ("name", "code", "words"),
    [
        ("cgroup.subtree_control", errno.EBUSY, "no-internal-processes"),
        ("cgroup.procs", errno.EBUSY, "no-internal-processes"),
        ("cgroup.procs", errno.ENOSPC, "cpuset.cpus or cpuset.mems is empty"),
        ("cpuset.cpus", errno.EBUSY, "a child group still uses"),
        ("blkio.throttle.read_bps_device", errno.EINVAL, "not a whole block device"),
        ("cpu.cfs_quota_us", errno.EACCES, "permission denied"),
    ],
)
def test_each_refusal_says_which_constraint(tmp_path: Path, name: str, code: int, words: str) -> None:
    group = tmp_path / "svc"
    group.mkdir()
    text = _refusal(str(group / name), "8:1 1000" if name.startswith("blkio") else "1", code)
    assert words in text
    assert "generic advice" not in text


def test_an_unknown_refusal_keeps_the_kernels_words(tmp_path: Path) -> None:
    text = _refusal(str(tmp_path / "pids.max"), "5", errno.EINVAL)
    assert "refused" in text and "generic advice" in text


# -- values the kernel normalises ------------------------------------------------------------------


def test_memory_limits_compare_as_whole_pages(fake: FakeCgroupRoot) -> None:
    layout = cgroup.detect_layout(str(fake.root))
    group = cgroup.group_at(layout, "svc")
    cgroup.create_group(group, kernel=fake)
    page = os.sysconf("SC_PAGE_SIZE")
    held = cgroup.kernel_memory_limit(1_000_000_000)
    assert held % page == 0 and 0 <= 1_000_000_000 - held < page
    name = "memory.max" if fake.version == 2 else "memory.limit_in_bytes"
    Path(group.file("memory", name)).write_text(f"{held}\n")  # what the kernel stored for 1000000000
    assert cgroup.plan_writes(group, cgroup.CgroupSettings(memory_max=1_000_000_000)) == []
    assert cgroup.plan_writes(group, cgroup.CgroupSettings(memory_max=held + page)) != []


@pytest.mark.parametrize("weight", [1, 2, 3, 50, 99, 100, 101, 333, 9999, 10000])
def test_a_cpu_weight_already_held_is_not_rewritten(fake: FakeCgroupRoot, weight: int) -> None:
    layout = cgroup.detect_layout(str(fake.root))
    group = cgroup.group_at(layout, "svc")
    cgroup.create_group(group, kernel=fake)
    cgroup.apply_writes(cgroup.plan_writes(group, cgroup.CgroupSettings(cpu_weight=weight)), kernel=fake)
    assert cgroup.plan_writes(group, cgroup.CgroupSettings(cpu_weight=weight)) == []
