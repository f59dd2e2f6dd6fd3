"""The cgroup library against fake v1 and v2 trees (see cgroup_tree.py for how they behave)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import (
    InvalidInputError,
    NotFoundError,
)
from ansible_collections.firm.core.plugins.module_utils.kernel import Kernel
from tests.unit.plugins.cgroup_tree import FakeCgroupRoot, fake_block_devices


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def fake(request: pytest.FixtureRequest, tmp_path: Path) -> FakeCgroupRoot:
    tree = FakeCgroupRoot(tmp_path / "cgroup", request.param)
    return tree


def layout_of(fake: FakeCgroupRoot) -> cgroup.Layout:
    return cgroup.detect_layout(str(fake.root))


def apply(
    fake: FakeCgroupRoot, path: str, settings: cgroup.CgroupSettings, sysfs: str = "/sys"
) -> cgroup.Group:
    group = cgroup.group_at(layout_of(fake), path)
    cgroup.ensure_cgroup(group, settings, sysfs_root=sysfs, kernel=fake)
    return group


# layout ----------------------------------------------------------------------------------------------


def test_hybrid_v1_layout_puts_every_controller_in_its_own_hierarchy(tmp_path: Path) -> None:
    fake = FakeCgroupRoot(tmp_path / "cg", 1)
    layout = cgroup.detect_layout(str(fake.root))
    assert layout.versions() == dict.fromkeys(cgroup.CONTROLLERS, 1)
    assert layout.hierarchies["blkio"].mount == str((fake.root / "blkio").resolve())


def test_pure_v2_layout_maps_blkio_to_io_in_the_unified_tree(tmp_path: Path) -> None:
    fake = FakeCgroupRoot(tmp_path / "cg", 2)
    layout = cgroup.detect_layout(str(fake.root))
    assert layout.versions() == dict.fromkeys(cgroup.CONTROLLERS, 2)
    assert {h.mount for h in layout.hierarchies.values()} == {str(fake.root)}


def test_comounted_cpu_and_cpuacct_are_one_directory(tmp_path: Path) -> None:
    fake = FakeCgroupRoot(tmp_path / "cg", 1, comount_cpu=True)
    group = cgroup.group_at(cgroup.detect_layout(str(fake.root)), "svc")
    dirs = group.distinct_dirs()
    assert len(dirs) == 5  # cpu,cpuacct + cpuset + blkio + memory + pids
    assert sum("cpu,cpuacct" in d for d in dirs) == 1


def test_missing_root_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        cgroup.detect_layout(str(tmp_path / "nothing"))


# CPU -------------------------------------------------------------------------------------------------


def test_cpu_quota_is_written_in_each_versions_own_format(fake: FakeCgroupRoot) -> None:
    group = apply(fake, "firm/web", cgroup.CgroupSettings(cpu_quota_us=20000, cpu_period_us=50000))
    if fake.version == 1:
        assert (fake.group("firm/web") / "cpu.cfs_quota_us").read_text().strip() == "20000"
        assert (fake.group("firm/web") / "cpu.cfs_period_us").read_text().strip() == "50000"
    else:
        assert (fake.group("firm/web") / "cpu.max").read_text().strip() == "20000 50000"
    assert cgroup.read_cpu_max(group) == (20000, 50000)


def test_unlimited_quota_reads_back_as_minus_one(fake: FakeCgroupRoot) -> None:
    group = apply(fake, "svc", cgroup.CgroupSettings(cpu_quota_us=30000))
    cgroup.apply_writes(cgroup.plan_writes(group, cgroup.CgroupSettings(cpu_quota_us=-1)), kernel=fake)
    assert cgroup.read_cpu_max(group) == (-1, 100000)
    expected = "-1" if fake.version == 1 else "max 100000"
    name = "cpu.cfs_quota_us" if fake.version == 1 else "cpu.max"
    assert (fake.group("svc") / name).read_text().strip() == expected


def test_applying_the_same_settings_twice_plans_no_write(fake: FakeCgroupRoot) -> None:
    settings = cgroup.CgroupSettings(
        cpu_quota_us=20000, cpu_weight=200, cpuset_cpus="0,1", memory_max=1 << 28
    )
    group = apply(fake, "svc", settings)
    assert cgroup.plan_writes(group, settings) == []
    # the same CPUs written another way are the same set
    assert cgroup.plan_writes(group, cgroup.CgroupSettings(cpuset_cpus="0-1")) == []


def test_changing_only_the_quota_keeps_the_period(fake: FakeCgroupRoot) -> None:
    group = apply(fake, "svc", cgroup.CgroupSettings(cpu_quota_us=20000, cpu_period_us=20000))
    writes = cgroup.plan_writes(group, cgroup.CgroupSettings(cpu_quota_us=10000))
    cgroup.apply_writes(writes, kernel=fake)
    assert cgroup.read_cpu_max(group) == (10000, 20000)
    assert len(writes) == 1


@pytest.mark.parametrize(
    ("period", "order"),
    [(50000, ["cpu_quota_us", "cpu_period_us"]), (200000, ["cpu_period_us", "cpu_quota_us"])],
)
def test_v1_writes_quota_and_period_in_the_order_that_never_exceeds_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, period: int, order: list[str]
) -> None:
    fake = FakeCgroupRoot(tmp_path / "cg", 1)
    group = apply(fake, "svc", cgroup.CgroupSettings(cpu_quota_us=50000, cpu_period_us=100000))
    writes = cgroup.plan_writes(group, cgroup.CgroupSettings(cpu_quota_us=20000, cpu_period_us=period))
    assert [w.knob for w in writes] == order


@pytest.mark.parametrize(("weight", "shares"), [(100, 1024), (1, 10), (10000, 102400), (50, 512)])
def test_weight_maps_to_shares_on_v1_and_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weight: int, shares: int
) -> None:
    fake = FakeCgroupRoot(tmp_path / "cg", 1)
    group = apply(fake, "svc", cgroup.CgroupSettings(cpu_weight=weight))
    assert (fake.group("svc") / "cpu.shares").read_text().strip() == str(shares)
    assert cgroup.read_cpu_weight(group) == weight


def test_weight_is_written_as_is_on_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCgroupRoot(tmp_path / "cg", 2)
    apply(fake, "svc", cgroup.CgroupSettings(cpu_weight=250))
    assert (fake.group("svc") / "cpu.weight").read_text().strip() == "250"


# cpuset ----------------------------------------------------------------------------------------------


def test_new_v1_cpuset_group_inherits_its_parents_cpus_and_mems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCgroupRoot(tmp_path / "cg", 1, cpus="0-3")
    cgroup.create_group(cgroup.group_at(layout_of(fake), "a/b"), kernel=fake)
    assert (fake.group("a/b", "cpuset") / "cpuset.cpus").read_text().strip() == "0-3"
    assert (fake.group("a/b", "cpuset") / "cpuset.mems").read_text().strip() == "0"


def test_cpuset_outside_the_parent_is_refused_before_writing(fake: FakeCgroupRoot) -> None:
    group = apply(fake, "svc", cgroup.CgroupSettings(cpu_quota_us=5000))
    with pytest.raises(InvalidInputError, match="not within '0-3'"):
        cgroup.plan_writes(group, cgroup.CgroupSettings(cpu_quota_us=9000, cpuset_cpus="2-5"))
    assert cgroup.read_cpu_max(group)[0] == 5000


def test_new_v2_group_gets_its_controllers_delegated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCgroupRoot(tmp_path / "cg", 2)
    cgroup.create_group(cgroup.group_at(layout_of(fake), "firm/web"), kernel=fake)
    assert set((fake.root / "cgroup.subtree_control").read_text().split()) == {
        "+cpu",
        "+cpuset",
        "+io",
        "+memory",
        "+pids",
    }
    assert (fake.group("firm/web") / "cpu.max").exists()


@pytest.mark.parametrize(
    ("text", "numbers", "canonical"),
    [
        ("0-2,5", [0, 1, 2, 5], "0-2,5"),
        ("5,0,1,2", [0, 1, 2, 5], "0-2,5"),
        ("3", [3], "3"),
        ("", [], ""),
    ],
)
def test_cpu_lists_parse_and_format_canonically(text: str, numbers: list[int], canonical: str) -> None:
    assert cgroup.parse_list(text) == numbers
    assert cgroup.format_list(numbers) == canonical


# memory and disk -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 << 20),
        ("1G", 1 << 30),
        ("4096", 4096),
        ("max", -1),
        ("-1", -1),
        ("2Gi", 2 << 30),
        (1048576, 1048576),
    ],
)
def test_sizes_parse_in_powers_of_1024(text: str | int, size: int) -> None:
    assert cgroup.parse_size(text) == size


def test_memory_limit_and_unlimited_on_both_versions(fake: FakeCgroupRoot) -> None:
    group = apply(fake, "svc", cgroup.CgroupSettings(memory_max=cgroup.parse_size("64M")))
    assert cgroup.read_memory_max(group) == 64 << 20
    cgroup.apply_writes(cgroup.plan_writes(group, cgroup.CgroupSettings(memory_max=-1)), kernel=fake)
    assert cgroup.read_memory_max(group) == -1


def test_disk_limits_resolve_a_partition_to_its_disk(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    sysfs = fake_block_devices(tmp_path / "sys")
    limit = cgroup.DiskLimit("8:1", write_bps=1048576, read_iops=100)
    group = apply(fake, "svc", cgroup.CgroupSettings(disk=(limit,)), str(sysfs))
    assert cgroup.read_disk_limits(group)["8:0"] == cgroup.DiskLimit("8:0", write_bps=1048576, read_iops=100)
    if fake.version == 1:
        assert (
            fake.group("svc", "blkio") / "blkio.throttle.write_bps_device"
        ).read_text().strip() == "8:0 1048576"
    else:
        assert (
            fake.group("svc") / "io.max"
        ).read_text().strip() == "8:0 rbps=max wbps=1048576 riops=100 wiops=max"
    assert cgroup.plan_writes(group, cgroup.CgroupSettings(disk=(limit,)), str(sysfs)) == []


def test_removing_a_disk_field_lifts_that_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCgroupRoot(tmp_path / "cg", 1)
    sysfs = str(fake_block_devices(tmp_path / "sys"))
    group = apply(
        fake,
        "svc",
        cgroup.CgroupSettings(disk=(cgroup.DiskLimit("8:0", write_bps=1000, read_bps=10),)),
        sysfs,
    )
    writes = cgroup.plan_writes(
        group, cgroup.CgroupSettings(disk=(cgroup.DiskLimit("8:0", read_bps=10),)), sysfs
    )
    assert [w.value for w in writes] == ["8:0 0"]  # v1 deletes a rule written as 0


def test_unknown_device_is_refused(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    sysfs = str(fake_block_devices(tmp_path / "sys"))
    group = cgroup.group_at(layout_of(fake), "svc")
    with pytest.raises(NotFoundError, match="7:9 is not known"):
        cgroup.plan_writes(group, cgroup.CgroupSettings(disk=(cgroup.DiskLimit("7:9", write_bps=1),)), sysfs)
    with pytest.raises(NotFoundError, match="/dev/nonexistent does not exist"):
        cgroup.plan_writes(
            group, cgroup.CgroupSettings(disk=(cgroup.DiskLimit("/dev/nonexistent", write_bps=1),)), sysfs
        )


# bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (cgroup.CgroupSettings(cpu_quota_us=-5), "negative"),
        (cgroup.CgroupSettings(cpu_quota_us=999), "below 1 ms"),
        (cgroup.CgroupSettings(cpu_period_us=999), "outside"),
        (cgroup.CgroupSettings(cpu_period_us=2000000), "outside"),
        (cgroup.CgroupSettings(cpu_weight=0), "outside"),
        (cgroup.CgroupSettings(cpu_weight=10001), "outside"),
        (cgroup.CgroupSettings(cpuset_cpus="1-0"), "not a list"),
        (cgroup.CgroupSettings(cpuset_cpus="a"), "not a list"),
        (cgroup.CgroupSettings(memory_max=100), "below one page"),
        (cgroup.CgroupSettings(disk=(cgroup.DiskLimit("8:0", write_bps=0),)), "not positive"),
        (cgroup.CgroupSettings(disk=(cgroup.DiskLimit("8:0"), cgroup.DiskLimit("8:0"))), "listed twice"),
    ],
)
def test_bad_values_are_refused_with_a_fix_before_any_write(
    fake: FakeCgroupRoot, settings: cgroup.CgroupSettings, message: str
) -> None:
    group = cgroup.group_at(layout_of(fake), "svc")
    with pytest.raises(InvalidInputError, match=message) as raised:
        cgroup.plan_writes(group, settings)
    assert raised.value.fix
    assert not fake.group("svc").exists()


@pytest.mark.parametrize(
    ("path", "message"),
    [("../etc", "contains '..'"), ("a/../../b", "contains '..'"), ("/sys/fs/cgroup/cpu/x", "is absolute")],
)
def test_paths_that_escape_the_root_are_refused(fake: FakeCgroupRoot, path: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        cgroup.group_at(layout_of(fake), path)


def test_a_symlink_out_of_the_root_is_refused(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    fake.group("escape").symlink_to(outside)
    with pytest.raises(InvalidInputError, match="outside"):
        cgroup.group_at(layout_of(fake), "escape/x")


def test_size_with_a_bad_unit_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown unit 'Q'"):
        cgroup.parse_size("12Q")
    with pytest.raises(InvalidInputError, match="ambiguous"):
        cgroup.parse_size("512Mb")


# rollback --------------------------------------------------------------------------------------------


class Through(Kernel):
    """The fake tree's kernel, for tests that change one of its answers."""

    def __init__(self, fake: FakeCgroupRoot) -> None:
        self.fake = fake

    def mkdir(self, path: str) -> None:
        self.fake.mkdir(path)

    def rmdir(self, path: str) -> None:
        self.fake.rmdir(path)

    def write(self, path: str, data: str) -> None:
        self.fake.write(path, data)


class BusyMemory(Through):
    """A kernel that cannot reclaim memory below usage (EBUSY)."""

    def __init__(self, fake: FakeCgroupRoot, memory_file: str) -> None:
        super().__init__(fake)
        self.memory_file = memory_file

    def write(self, path: str, data: str) -> None:
        if path.endswith(self.memory_file):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        self.fake.write(path, data)


def test_a_refused_write_rolls_back_the_earlier_ones(fake: FakeCgroupRoot) -> None:
    group = apply(fake, "svc", cgroup.CgroupSettings(cpu_quota_us=50000, memory_max=1 << 30))
    memory_file = "memory.limit_in_bytes" if fake.version == 1 else "memory.max"
    settings = cgroup.CgroupSettings(cpu_quota_us=10000, cpu_period_us=50000, memory_max=1 << 20)
    with pytest.raises(cgroup.CgroupWriteError, match="EBUSY"):
        cgroup.apply_writes(cgroup.plan_writes(group, settings), kernel=BusyMemory(fake, memory_file))
    assert cgroup.read_cpu_max(group) == (50000, 100000)
    assert cgroup.read_memory_max(group) == 1 << 30
    with pytest.raises(cgroup.CgroupWriteError, match="EBUSY"):
        cgroup.ensure_cgroup(group, settings, kernel=BusyMemory(fake, memory_file))
    assert cgroup.read_cpu_max(group) == (50000, 100000)
    assert cgroup.read_memory_max(group) == 1 << 30


def test_ensure_removes_a_group_it_created_when_a_write_is_refused(fake: FakeCgroupRoot) -> None:
    group = cgroup.group_at(layout_of(fake), "firm/new")
    memory_file = "memory.limit_in_bytes" if fake.version == 1 else "memory.max"
    with pytest.raises(cgroup.CgroupWriteError, match="EBUSY"):
        cgroup.ensure_cgroup(
            group,
            cgroup.CgroupSettings(cpu_quota_us=10000, memory_max=1 << 20),
            kernel=BusyMemory(fake, memory_file),
        )
    assert not any(os.path.isdir(d) for d in group.distinct_dirs())


def test_ensure_reports_before_after_and_writes_and_check_mode_writes_nothing(fake: FakeCgroupRoot) -> None:
    group = cgroup.group_at(layout_of(fake), "svc")
    settings = cgroup.CgroupSettings(cpu_quota_us=20000)
    predicted = cgroup.ensure_cgroup(group, settings, check_mode=True, kernel=fake)
    assert predicted.changed and predicted.created and predicted.before is None
    assert predicted.after == {"cpu_quota_us": 20000}
    assert not group.exists()
    first = cgroup.ensure_cgroup(group, settings, kernel=fake)
    assert first.changed and first.created and first.writes
    assert first.after is not None and first.after["cpu_quota_us"] == 20000
    second = cgroup.ensure_cgroup(group, settings, kernel=fake)
    assert not second.changed and second.writes == () and second.before == second.after
    removed = cgroup.ensure_cgroup(group, None, kernel=fake)
    assert removed.changed and removed.removed and not group.exists()


class IgnoresQuota(Through):
    """A kernel that accepts a CPU quota but keeps the old one (as when another agent rewrites it)."""

    def write(self, path: str, data: str) -> None:
        if not path.endswith(("cpu.cfs_quota_us", "cpu.max")):
            self.fake.write(path, data)


def test_ensure_verifies_what_the_kernel_holds_and_undoes_the_rest(fake: FakeCgroupRoot) -> None:
    group = apply(fake, "svc", cgroup.CgroupSettings(cpu_quota_us=50000, cpu_weight=100))
    with pytest.raises(cgroup.CgroupWriteError, match="does not hold"):
        cgroup.ensure_cgroup(
            group, cgroup.CgroupSettings(cpu_quota_us=10000, cpu_weight=300), kernel=IgnoresQuota(fake)
        )
    assert cgroup.read_cpu_weight(group) == 100
    assert cgroup.read_cpu_max(group) == (50000, 100000)


# groups and processes --------------------------------------------------------------------------------


def test_remove_refuses_while_processes_are_inside_and_removes_nothing(fake: FakeCgroupRoot) -> None:
    group = cgroup.group_at(layout_of(fake), "a")
    cgroup.create_group(cgroup.group_at(layout_of(fake), "a/b"), kernel=fake)
    (fake.group("a/b", "memory") / "cgroup.procs").write_text("4242\n")
    with pytest.raises(InvalidInputError, match="4242"):
        cgroup.remove_group(group, kernel=fake)
    assert all(Path(d).is_dir() for d in group.distinct_dirs())
    (fake.group("a/b", "memory") / "cgroup.procs").write_text("")
    cgroup.remove_group(group, kernel=fake)
    assert not any(Path(d).exists() for d in group.distinct_dirs())


def test_attach_writes_each_pid_once_per_hierarchy(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "77").mkdir(parents=True)
    group = cgroup.group_at(layout_of(fake), "svc")
    cgroup.create_group(group, kernel=fake)
    plan = cgroup.pids_to_attach(group, [77, 77], str(proc))
    assert len(plan) == len(group.distinct_dirs())
    assert all(pids == [77] for pids in plan.values())
    cgroup.attach_pids(plan, kernel=fake)
    for directory in plan:  # the fake's cgroup.procs holds the last write, as a kernel would list it
        assert (Path(directory) / "cgroup.procs").read_text().strip() == "77"
    assert cgroup.pids_to_attach(group, [77], str(proc)) == {}


def test_attach_refuses_a_missing_process(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    group = cgroup.group_at(layout_of(fake), "svc")
    with pytest.raises(NotFoundError, match="process 999999 does not exist"):
        cgroup.pids_to_attach(group, [999999], str(tmp_path))


def test_group_of_pid_reads_per_hierarchy_paths(tmp_path: Path) -> None:
    fake = FakeCgroupRoot(tmp_path / "cg", 1)
    proc = tmp_path / "proc" / "42"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(
        "9:name=systemd:/\n4:memory:/mem/x\n3:cpuset:/\n1:cpu:/svc\n2:cpuacct:/svc\n0::/\n"
    )
    group = cgroup.group_of_pid(cgroup.detect_layout(str(fake.root)), 42, str(tmp_path / "proc"))
    assert group.paths["memory"] == "mem/x"
    assert group.paths["cpu"] == "svc"
    assert group.paths["cpuset"] == ""


# Kubernetes ------------------------------------------------------------------------------------------

UID = "6f1c1f4e-1e1b-4c57-9d5b-0b6d3c2d9a10"
CID = "4f2a7c1e9b0d3a6f8e5c2b1a0d9f8e7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e"


@pytest.mark.parametrize(
    ("container_id", "driver", "expected"),
    [
        (f"containerd://{CID}", "cgroupfs", f"kubepods/burstable/pod{UID}/{CID}"),
        (f"cri-o://{CID}", "cgroupfs", f"kubepods/burstable/pod{UID}/crio-{CID}"),
        (f"docker://{CID}", "cgroupfs", f"kubepods/burstable/pod{UID}/{CID}"),
        (
            f"containerd://{CID}",
            "systemd",
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            f"{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope",
        ),
        (
            f"cri-o://{CID}",
            "systemd",
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            f"{UID.replace('-', '_')}.slice/crio-{CID}.scope",
        ),
        (
            f"docker://{CID}",
            "systemd",
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            f"{UID.replace('-', '_')}.slice/docker-{CID}.scope",
        ),
        (None, "systemd", f"kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice"),
        (None, "cgroupfs", f"kubepods/besteffort/pod{UID}"),
    ],
)
def test_pod_groups_are_found_for_every_driver_and_runtime(
    fake: FakeCgroupRoot, container_id: str | None, driver: str, expected: str
) -> None:
    fake.make_group(expected)
    group = cgroup.group_of_pod(layout_of(fake), UID, container_id)
    assert group.paths["cpu"] == expected
    assert expected in cgroup.kubernetes_candidates(UID, container_id, driver)


def test_missing_pod_lists_where_it_looked(fake: FakeCgroupRoot) -> None:
    with pytest.raises(NotFoundError) as raised:
        cgroup.group_of_pod(layout_of(fake), UID, f"containerd://{CID}")
    assert len(raised.value.details["candidates"]) == 6  # 3 QoS classes x 2 drivers


@pytest.mark.parametrize(
    ("uid", "cid", "message"),
    [
        ("nope", None, "not a pod UID"),
        (UID, "rkt://abcdef123456", "not known"),
        (UID, "containerd://XYZ", "not a container ID"),
    ],
)
def test_bad_pod_targets_are_refused(uid: str, cid: str | None, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        cgroup.kubernetes_candidates(uid, cid)


# statistics ------------------------------------------------------------------------------------------


def test_stats_have_the_same_units_on_both_versions(fake: FakeCgroupRoot) -> None:
    group = apply(fake, "svc", cgroup.CgroupSettings())
    if fake.version == 1:
        (fake.group("svc") / "cpu.stat").write_text("nr_periods 10\nnr_throttled 4\nthrottled_time 2000000\n")
        (fake.group("svc", "cpuacct") / "cpuacct.usage").write_text("5000000\n")
        (fake.group("svc", "blkio") / "blkio.throttle.io_service_bytes").write_text(
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\nTotal 12288\n"
        )
        (fake.group("svc", "memory") / "memory.usage_in_bytes").write_text("1048576\n")
    else:
        (fake.group("svc") / "cpu.stat").write_text(
            "usage_usec 5000\nuser_usec 4000\nsystem_usec 1000\nnr_periods 10\nnr_throttled 4\nthrottled_usec 2000\n"
        )
        (fake.group("svc") / "io.stat").write_text(
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
        )
        (fake.group("svc") / "memory.current").write_text("1048576\n")
    stats = cgroup.read_stats(group)
    assert stats == cgroup.CgroupStats(
        cpu_usage_ns=5000000,
        cpu_periods=10,
        cpu_throttled_periods=4,
        cpu_throttled_ns=2000000,
        memory_bytes=1048576,
        disk_read_bytes=4096,
        disk_write_bytes=8192,
        pids=0,
    )


# disk accounting -------------------------------------------------------------------------------------


def sys_block(sysfs: Path, devices: dict[str, str]) -> Path:
    """``/sys/block/<name>/dev`` for each device (the kernel's links, here plain directories)."""
    for name, number in devices.items():
        (sysfs / "block" / name).mkdir(parents=True)
        (sysfs / "block" / name / "dev").write_text(number + "\n")
    return sysfs


def test_disk_accounting_is_enabled_by_a_no_limit_rule_on_each_device_without_one(
    fake: FakeCgroupRoot, tmp_path: Path
) -> None:
    """Linux >= 6.10 counts v1 blkio bytes only on devices that have had a throttle rule; firm writes
    ``MAJ:MIN 0`` (no limit) to the root for each device that has none, and never touches a held rule."""
    sysfs = sys_block(tmp_path / "sys", {"vda": "254:0", "vdb": "254:16", "loop0": "7:0"})
    layout = layout_of(fake)
    if fake.version == 2:
        assert cgroup.enable_disk_accounting(layout, str(sysfs), kernel=fake) == []
        return
    rules = fake.root / "blkio" / "blkio.throttle.read_bps_device"
    rules.write_text("254:16 1048576\n")  # a limit someone holds on the root: it must stay
    writes: list[tuple[str, str]] = []

    class Recording(Kernel):
        def write(self, path: str, data: str) -> None:
            writes.append((path, data))
            fake.write(path, data)

    assert cgroup.enable_disk_accounting(layout, str(sysfs), kernel=Recording()) == ["7:0", "254:0"]
    assert writes == [(str(rules.resolve()), "7:0 0"), (str(rules.resolve()), "254:0 0")]
    assert rules.read_text().split("\n")[0] == "254:16 1048576"  # 0 deletes a rule: none was there
    # no /sys/block (a container without it) or no blkio hierarchy: nothing to do
    assert cgroup.enable_disk_accounting(layout, str(tmp_path / "nowhere"), kernel=fake) == []
