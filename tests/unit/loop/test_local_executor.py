"""The local executor against a fake cgroup tree and a fake tc: units, one-unit steps, dry run, restore."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils import tc
from ansible_collections.firm.core.plugins.module_utils.kernel import Kernel
from firm.actuate.executor import Action, ActionError, Executor
from firm.actuate.local import LocalExecutor, LocalTarget
from tests.unit.plugins.cgroup_tree import FakeCgroupRoot, fake_block_devices
from tests.unit.plugins.resctrl_tree import FakeResctrl

PSCHED_HIGHRES = "000003e8 00000040 000f4240 3b9aca00\n"
LINK_VETH = (
    '[{"ifindex":2,"ifname":"ftb3","mtu":1500,"qdisc":"noqueue","operstate":"UP",'
    '"link_type":"ether","address":"8a:dd:9a:77:1b:02"}]\n'
)
NOQUEUE = '[{"kind":"noqueue","handle":"0:","root":true,"refcnt":2,"options":{}}]\n'


class FakeTc:
    """A tc that keeps one interface's root qdisc (noqueue or a tbf) and can refuse tbf changes."""

    def __init__(self) -> None:
        self.qdisc = NOQUEUE
        self.fail = False
        self.writes: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str]) -> str:
        command = tuple(argv)
        if command[0] == "ip":
            return LINK_VETH
        if command[1:4] in (("-j", "qdisc", "show"), ("-j", "class", "show")):
            return self.qdisc if command[2] == "qdisc" else ""
        self.writes.append(command)
        if "tbf" in command:
            if self.fail:
                raise tc.TcCommandError(
                    "tc failed",
                    command=list(command),
                    rc=2,
                    stdout="",
                    stderr="RTNETLINK answers: No such device",
                )
            rate = int(re.sub("bit$", "", command[command.index("rate") + 1]))
            burst = int(command[command.index("burst") + 1])
            self.qdisc = json.dumps(
                [
                    {
                        "kind": "tbf",
                        "handle": "8001:",
                        "root": True,
                        "refcnt": 2,
                        "options": {"rate": rate // 8, "burst": burst, "lat": 50000},
                    }
                ]
            )
        elif command[1:3] == ("qdisc", "del"):
            self.qdisc = NOQUEUE
        return ""


class Machine(Kernel):
    """The kernel of this machine: the fake cgroup tree, the fake tc and, when given, a fake resctrl."""

    def __init__(self, cgroups: FakeCgroupRoot, tc_: FakeTc, rdt: FakeResctrl | None = None) -> None:
        self.cgroups, self.tc, self.rdt = cgroups, tc_, rdt

    def _owner(self, path: str) -> Kernel:
        if self.rdt is not None and os.path.realpath(path).startswith(
            os.path.realpath(self.rdt.root) + os.sep
        ):
            return self.rdt
        return self.cgroups

    def write(self, path: str, data: str) -> None:
        self._owner(path).write(path, data)

    def mkdir(self, path: str) -> None:
        self._owner(path).mkdir(path)

    def rmdir(self, path: str) -> None:
        self._owner(path).rmdir(path)

    def run(self, argv: Sequence[str]) -> str:
        return self.tc.run(argv)


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def fake(request: pytest.FixtureRequest, tmp_path: Path) -> FakeCgroupRoot:
    tree = FakeCgroupRoot(tmp_path / "cgroup", request.param, cpus="0-1")
    for name in ("firm-testbed/compose-post-0", "firm-testbed/text-0"):
        tree.make_group(name)
    if request.param == 1:  # as the testbed sets them up: every group on both CPUs
        for name in ("firm-testbed", "firm-testbed/compose-post-0", "firm-testbed/text-0"):
            (tree.group(name, "cpuset") / "cpuset.cpus").write_text("0-1\n")
    return tree


def executor(
    fake: FakeCgroupRoot, tmp_path: Path, fake_tc: FakeTc, rdt: FakeResctrl | None = None, **kwargs: object
) -> LocalExecutor:
    sysfs = fake_block_devices(tmp_path / "sys")
    psched = tmp_path / "psched"
    psched.write_text(PSCHED_HIGHRES)
    targets = [
        LocalTarget("compose-post-0", "compose-post", "firm-testbed/compose-post-0", "ftb3", None, "8:1"),
        LocalTarget("text-0", "text", "firm-testbed/text-0", None, None, None),
    ]
    roots: dict[str, object] = {
        "resctrl_root": str(tmp_path / "no-resctrl"),
        "mounts_file": str(tmp_path / "no-mounts"),
        **kwargs,
    }
    return LocalExecutor(
        targets,
        cgroup_root=str(fake.root),
        sysfs_root=str(sysfs),
        psched_path=str(psched),
        kernel=Machine(fake, fake_tc, rdt),
        **roots,  # type: ignore[arg-type]
    )


def files(fake: FakeCgroupRoot) -> dict[str, str]:
    """Every control file's content; a v1 throttle of 0 is no rule (the kernel drops it, the fake keeps it)."""
    out = {}
    for path in sorted(fake.root.rglob("*")):
        if path.is_file():
            lines = path.read_text().strip().splitlines()
            if path.name.startswith("blkio.throttle."):
                lines = [line for line in lines if not line.endswith(" 0")]
            if path.name == "io.max":  # and a v2 rule of nothing but max
                lines = [
                    line
                    for line in lines
                    if line.split()[1:] != ["rbps=max", "wbps=max", "riops=max", "wiops=max"]
                ]
            out[str(path)] = "\n".join(lines)
    return out


def test_it_implements_the_contract_and_masks_resctrl_where_it_is_absent(
    fake: FakeCgroupRoot, tmp_path: Path
) -> None:
    local = executor(fake, tmp_path, FakeTc())
    assert isinstance(local, Executor)
    assert local.resources("compose-post-0") == {"cpu", "cpu_weight", "cpuset", "disk_io", "network"}
    assert local.resources("text-0") == {"cpu", "cpu_weight", "cpuset"}
    limits = local.snapshot(["compose-post-0"]).limits["compose-post-0"]
    assert limits["cpu"] == math.inf and limits["disk_io"] == math.inf and limits["network"] == math.inf


def test_a_step_applies_every_knob_in_firms_units_and_a_second_run_writes_nothing(
    fake: FakeCgroupRoot, tmp_path: Path
) -> None:
    fake_tc = FakeTc()
    local = executor(fake, tmp_path, fake_tc)
    step = [
        Action("compose-post-0", "cpu", 0.75),
        Action("compose-post-0", "disk_io", 50e6),
        Action("compose-post-0", "network", 20e6),
        Action("compose-post-0", "cpu_weight", 200),
        Action("text-0", "cpuset", "1"),
    ]
    result = local.apply(step, dry_run=False)
    assert result.ok and result.changed
    assert {(a.action.resource, a.after) for a in result.applied} == {
        ("cpu", 0.75),
        ("disk_io", 50e6),
        ("network", 20e6),
        ("cpu_weight", 200.0),
        ("cpuset", "1"),
    }
    group = fake.group("firm-testbed/compose-post-0", "cpu")
    if fake.version == 1:
        assert (group / "cpu.cfs_quota_us").read_text().strip() == "75000"
        blkio = fake.group("firm-testbed/compose-post-0", "blkio")
        assert (blkio / "blkio.throttle.write_bps_device").read_text().strip() == "8:0 50000000"
    else:
        assert (group / "cpu.max").read_text().strip() == "75000 100000"
    now = local.snapshot(["compose-post-0", "text-0"]).limits
    assert now["compose-post-0"]["cpu"] == 0.75 and now["compose-post-0"]["network"] == 20e6
    assert now["text-0"]["cpuset"] == "1"
    writes = len(fake_tc.writes)
    before = files(fake)
    again = local.apply(step, dry_run=False)
    assert again.ok and not again.changed
    assert files(fake) == before and len(fake_tc.writes) == writes


def test_a_dry_run_reports_the_plan_and_writes_nothing(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    fake_tc = FakeTc()
    local = executor(fake, tmp_path, fake_tc)
    before = files(fake)
    result = local.apply(
        [Action("compose-post-0", "cpu", 0.3), Action("compose-post-0", "network", 5e6)], dry_run=True
    )
    assert result.ok and result.dry_run and not result.changed
    assert [(a.before, a.after, a.changed) for a in result.applied] == [
        (math.inf, 0.3, True),
        (math.inf, 5e6, True),
    ]
    assert files(fake) == before and fake_tc.writes == []


def test_a_failure_halfway_undoes_what_the_step_had_written(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    fake_tc = FakeTc()
    local = executor(fake, tmp_path, fake_tc)
    before = files(fake)
    fake_tc.fail = True
    result = local.apply(
        [
            Action("compose-post-0", "cpu", 0.3),
            Action("text-0", "cpu", 0.2),
            Action("compose-post-0", "network", 5e6),
        ],
        dry_run=False,
    )
    assert not result.ok and result.rolled_back and result.rollback_failures == ()
    assert "network of compose-post-0" in (result.error or "")
    assert files(fake) == before
    assert all(a.after == a.before for a in result.applied)


def test_invalid_steps_are_refused_before_anything_is_written(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    local = executor(fake, tmp_path, FakeTc())
    before = files(fake)
    for step in (
        [Action("text-0", "cpu", 0.5), Action("text-0", "network", 1e6)],  # no veth: masked
        [Action("text-0", "cpu", 0.5), Action("text-0", "cpuset", "5")],  # outside the parent's
        [Action("text-0", "cpu", 0.5), Action("text-0", "cpu", 0.6)],  # twice
        [Action("nobody-0", "cpu", 0.5)],
    ):
        result = local.apply(step, dry_run=False)
        assert not result.ok and not result.rolled_back and result.applied == ()
    assert files(fake) == before
    with pytest.raises(ActionError, match="positive"):
        Action("text-0", "cpu", -1.0)
    with pytest.raises(ActionError, match="unknown resource"):
        Action("text-0", "gpu", 1.0)


def test_restore_brings_back_the_snapshot_exactly(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    fake_tc = FakeTc()
    local = executor(fake, tmp_path, fake_tc)
    before = files(fake)
    baseline = local.snapshot(["compose-post-0", "text-0"])
    assert local.apply(
        [
            Action("compose-post-0", "cpu", 0.3),
            Action("compose-post-0", "disk_io", 1e6),
            Action("compose-post-0", "network", 5e6),
            Action("text-0", "cpu_weight", 300),
        ],
        dry_run=False,
    ).ok
    result = local.restore(baseline)
    assert result.ok and result.changed
    assert files(fake) == before
    assert fake_tc.qdisc == NOQUEUE


def test_resctrl_knobs_where_it_is_mounted(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    rdt = FakeResctrl(tmp_path / "rdt")
    local = executor(
        fake, tmp_path, FakeTc(), rdt, **{k: v for k, v in rdt.args().items() if k != "proc_root"}
    )
    assert {"llc", "memory_bandwidth"} <= local.resources("text-0")
    baseline = local.snapshot(["text-0"])
    full = baseline.limits["text-0"]["llc"]
    result = local.apply(
        [
            Action("text-0", "llc", 4.0),
            Action("text-0", "memory_bandwidth", 50.0),
            Action("text-0", "cpu", 0.5),
        ],
        dry_run=False,
    )
    assert result.ok, result.error
    assert rdt.ctrl("firm-text-0")["L3"][0] == 0b1111
    assert rdt.ctrl("firm-text-0")["MB"][0] == 50
    assert local.read("text-0", "llc") == 4.0
    assert local.restore(baseline).ok
    assert not any(path.startswith("firm-text-0/") for path in rdt.snapshot())
    assert local.read("text-0", "llc") == full


def test_a_quota_larger_than_the_cpuset_widens_it_and_restore_narrows_it_again(
    fake: FakeCgroupRoot, tmp_path: Path
) -> None:
    cpus = fake.group("firm-testbed/text-0", "cpuset") / "cpuset.cpus"
    cpus.write_text("0\n")
    local = executor(fake, tmp_path, FakeTc())
    baseline = local.snapshot(["text-0"])
    assert local.apply([Action("text-0", "cpu", 0.8)], dry_run=False).ok
    assert cpus.read_text().strip() == "0"  # fits on one CPU
    assert local.apply([Action("text-0", "cpu", 1.5)], dry_run=False).ok
    assert cpus.read_text().strip() == "0-1"
    assert local.read("text-0", "cpu") == 1.5
    assert local.restore(baseline).ok
    assert cpus.read_text().strip() == "0" and local.read("text-0", "cpu") == math.inf


def test_a_raise_gives_one_more_cpu_to_run_on_and_a_cut_keeps_it(
    fake: FakeCgroupRoot, tmp_path: Path
) -> None:
    """On a raise the quota grows and so does the cpuset (by the parent's next CPU): more time on a
    CPU that other work keeps busy would be no more time. A cut leaves the cpuset alone; restoring
    the snapshot brings the configured placement back."""
    cpus = fake.group("firm-testbed/text-0", "cpuset") / "cpuset.cpus"
    cpus.write_text("1\n")
    local = executor(fake, tmp_path, FakeTc())
    assert local.apply([Action("text-0", "cpu", 0.5)], dry_run=False).ok  # from no quota: a cut
    baseline = local.snapshot(["text-0"])
    assert cpus.read_text().strip() == "1"
    assert local.apply([Action("text-0", "cpu", 0.6)], dry_run=False).ok
    assert cpus.read_text().strip() == "0-1"
    assert local.apply([Action("text-0", "cpu", 0.3)], dry_run=False).ok
    assert cpus.read_text().strip() == "0-1" and local.read("text-0", "cpu") == 0.3
    assert local.restore(baseline).ok
    assert cpus.read_text().strip() == "1" and local.read("text-0", "cpu") == 0.5


def test_a_raise_with_the_instances_cpuset_in_the_same_step_keeps_that_cpuset(
    fake: FakeCgroupRoot, tmp_path: Path
) -> None:
    """Placement gives the cpuset with the raise: the executor writes it as given and adds no CPU of
    its own choosing, also when the given cpuset is the one in force (nothing written for it) and
    when the quota would want more CPUs than it holds."""
    cpus = fake.group("firm-testbed/text-0", "cpuset") / "cpuset.cpus"
    cpus.write_text("1\n")
    local = executor(fake, tmp_path, FakeTc())
    assert local.apply([Action("text-0", "cpu", 0.5)], dry_run=False).ok
    result = local.apply([Action("text-0", "cpu", 0.6), Action("text-0", "cpuset", "1")], dry_run=False)
    assert result.ok and cpus.read_text().strip() == "1" and local.read("text-0", "cpu") == 0.6
    assert [a.changed for a in result.applied] == [True, False]
    assert local.apply([Action("text-0", "cpu", 1.5), Action("text-0", "cpuset", "1")], dry_run=False).ok
    assert cpus.read_text().strip() == "1" and local.read("text-0", "cpu") == 1.5
    assert local.apply([Action("text-0", "cpuset", "0")], dry_run=False).ok
    assert cpus.read_text().strip() == "0"
