"""Unit tests of plugins/module_utils/resctrl.py against a fake resctrl tree.

The tree and its kernel behaviour come from ``resctrl_tree.FakeResctrl`` (see its docstring for
why the library's mkdir, rmdir and writes go to a model of the kernel, and what is modelled).
Each test builds one platform: Intel, Intel mounted with cdp, Intel mounted with mba_MBps, AMD.
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.firm.core.plugins.module_utils import resctrl
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from ansible_collections.firm.core.plugins.module_utils.resctrl import (
    ResctrlInputError,
    ResctrlNotFoundError,
    ResctrlWriteError,
)

from .resctrl_tree import AMD, INTEL, INTEL_CDP, INTEL_MBPS, U32_MAX, FakeResctrl, Platform

MakeFake = Callable[..., FakeResctrl]


@pytest.fixture
def make_fake(tmp_path: Path) -> MakeFake:
    def make(platform: Platform = INTEL, mounted: bool = True, base: Path | None = None) -> FakeResctrl:
        return FakeResctrl(base or tmp_path / platform.name, platform, mounted)

    return make


def plan(fake: FakeResctrl, group: str = "g", **options: Any) -> dict[str, str]:
    """Build, validate and plan a request against ``group`` (a new group if it does not exist)."""
    info = fake.read_info()
    request = resctrl.build_request(info, **options)
    current = (
        resctrl.read_schemata(fake.root, group)
        if resctrl.group_exists(fake.root, group)
        else resctrl.initial_schemata(info)
    )
    return resctrl.plan_schemata(info, current, request)


# ------------------------------------------------------------------------------------- info


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        (
            INTEL,
            {
                "vendor": "intel",
                "cdp": False,
                "mba_mbps": False,
                "caches": ["L3"],
                "cbm_mask": 0x7FF,
                "min_cbm_bits": 1,
                "sparse": False,
                "num_closids": 16,
                "unit": "percent",
                "mb": (10, 10, 100),
                "domains": (0, 1),
            },
        ),
        (
            INTEL_CDP,
            {
                "vendor": "intel",
                "cdp": True,
                "mba_mbps": False,
                "caches": ["L3CODE", "L3DATA"],
                "cbm_mask": 0x7FF,
                "min_cbm_bits": 1,
                "sparse": False,
                "num_closids": 8,
                "unit": "percent",
                "mb": (10, 10, 100),
                "domains": (0, 1),
            },
        ),
        (
            INTEL_MBPS,
            {
                "vendor": "intel",
                "cdp": False,
                "mba_mbps": True,
                "caches": ["L3"],
                "cbm_mask": 0x7FF,
                "min_cbm_bits": 1,
                "sparse": False,
                "num_closids": 16,
                "unit": "MiB/s",
                "mb": (10, 10, U32_MAX),
                "domains": (0, 1),
            },
        ),
        (
            AMD,
            {
                "vendor": "amd",
                "cdp": False,
                "mba_mbps": False,
                "caches": ["L3"],
                "cbm_mask": 0xFFFF,
                "min_cbm_bits": 0,
                "sparse": True,
                "num_closids": 16,
                "unit": "1/8 GB/s",
                "mb": (0, 1, 2048),
                "domains": (0, 1, 2, 3),
            },
        ),
    ],
    ids=lambda value: value.name if isinstance(value, Platform) else "",
)
def test_read_info_reports_each_platform(
    make_fake: MakeFake, platform: Platform, expected: dict[str, Any]
) -> None:
    info = make_fake(platform).read_info()
    assert (info.vendor, info.cdp, info.mba_mbps) == (
        expected["vendor"],
        expected["cdp"],
        expected["mba_mbps"],
    )
    assert list(info.caches) == expected["caches"]
    for cache in info.caches.values():
        assert cache.cbm_mask == expected["cbm_mask"]
        assert cache.min_cbm_bits == expected["min_cbm_bits"]
        assert cache.sparse_masks is expected["sparse"]
        assert cache.domains == expected["domains"]
    assert info.num_closids == expected["num_closids"]
    assert info.mba is not None
    assert info.mba.unit == expected["unit"]
    assert (info.mba.min_bandwidth, info.mba.bandwidth_gran, info.mba.max_bandwidth) == expected["mb"]
    assert info.mba.domains == expected["domains"]
    assert info.mon is not None
    assert info.mon.features == ("llc_occupancy", "mbm_total_bytes", "mbm_local_bytes")
    json.dumps(info.as_dict())  # the module returns it


def test_amd_maximum_follows_what_the_default_group_shows(make_fake: MakeFake) -> None:
    """A newer part with a wider bandwidth field shows its larger unthrottled value in the root."""
    info = make_fake(replace(AMD, name="amd-wide", mb_max=4096)).read_info()
    assert info.mba is not None
    assert info.mba.max_bandwidth == 4096


def test_unknown_vendor_is_treated_as_percent(make_fake: MakeFake) -> None:
    info = make_fake(replace(INTEL, name="other", vendor_id="SomethingElse")).read_info()
    assert info.vendor == "unknown"
    assert info.mba is not None
    assert (info.mba.unit, info.mba.max_bandwidth) == ("percent", 100)


def test_not_mounted_says_how_to_mount(make_fake: MakeFake) -> None:
    fake = make_fake(mounted=False)
    with pytest.raises(ResctrlNotFoundError) as caught:
        fake.read_info()
    assert "is not a mounted resctrl" in str(caught.value)
    assert "mount -t resctrl resctrl /sys/fs/resctrl" in caught.value.fix


def test_mounted_elsewhere_names_the_mount_point(make_fake: MakeFake, tmp_path: Path) -> None:
    fake = make_fake()
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(ResctrlNotFoundError) as caught:
        resctrl.read_info(str(other), str(fake.mounts_path), str(fake.cpuinfo_path))
    assert fake.root in str(caught.value)
    assert f"set resctrl_root to {fake.root}" in caught.value.fix


def test_unreadable_mount_table(make_fake: MakeFake, tmp_path: Path) -> None:
    fake = make_fake()
    with pytest.raises(ResctrlNotFoundError, match="cannot read"):
        resctrl.read_info(fake.root, str(tmp_path / "no-such-mounts"), str(fake.cpuinfo_path))


def test_mount_point_with_a_space_is_unescaped(make_fake: MakeFake, tmp_path: Path) -> None:
    fake = make_fake(base=tmp_path / "with space")
    assert "\\040" in fake.mounts_path.read_text()
    assert fake.read_info().caches["L3"].cbm_mask == 0x7FF


# ------------------------------------------------------------------------------------- schemata


@pytest.mark.parametrize("platform", [INTEL, INTEL_CDP, INTEL_MBPS, AMD], ids=lambda p: p.name)
def test_schemata_parses_the_kernels_padded_format(make_fake: MakeFake, platform: Platform) -> None:
    fake = make_fake(platform)
    assert resctrl.read_schemata(fake.root, "/").values == fake.ctrl("/")


def test_parse_schemata_of_the_documented_amd_example() -> None:
    text = "    MB:0=2048;1=  16;2=2048;3=2048\n    L3:0=ffff;1=ffff;2=ffff;3=ffff\n"
    schemata = resctrl.parse_schemata(text)
    assert schemata.values == {
        "MB": {0: 2048, 1: 16, 2: 2048, 3: 2048},
        "L3": dict.fromkeys(range(4), 0xFFFF),
    }
    assert schemata.lines() == ["MB:0=2048;1=16;2=2048;3=2048", "L3:0=ffff;1=ffff;2=ffff;3=ffff"]
    assert schemata.as_dict()["L3"] == {"0": "ffff", "1": "ffff", "2": "ffff", "3": "ffff"}


def test_parse_schemata_refuses_a_pseudo_locksetup_group() -> None:
    with pytest.raises(FirmError, match="uninitialized"):
        resctrl.parse_schemata("L3:uninitialized\n")


# ------------------------------------------------------------------------------------- validation

INTEL_TWO_BITS = replace(INTEL, name="intel-min2", min_cbm_bits=2)
INTEL_NO_MBA = replace(INTEL, name="intel-no-mba", has_mba=False)

INVALID: list[tuple[Platform, dict[str, Any], str]] = [
    # (platform, options, a phrase the error must contain)
    (INTEL, {"l3": "5"}, "non-contiguous 1-bits"),
    (INTEL, {"l3": {0: "7f0", 1: "c3"}}, "L3 cache id 1: mask 0xc3 (11000011) has non-contiguous"),
    (INTEL, {"l3": "800"}, "outside info/L3/cbm_mask 0x7ff (11 ways)"),
    (INTEL, {"l3": 0}, "mask 0 leaves no cache"),
    (
        INTEL_TWO_BITS,
        {"l3": "4"},
        "has 1 consecutive bit(s); info/L3/min_cbm_bits asks for at least 2, e.g. 0xc",
    ),
    (INTEL, {"l3": {7: "f"}}, "there is no cache id 7; the cache ids here are 0, 1"),
    (INTEL, {"l3": "zz"}, "is not a cache mask"),
    (INTEL, {"l3": {"x": "f"}}, "domain id 'x' is not a number"),
    (INTEL, {"l3": True}, "is not a cache mask"),
    (INTEL, {"l3_code": "f"}, "remount with -o cdp"),
    (INTEL, {"l3": "f", "l3_data": "f"}, "either l3 or l3_code/l3_data"),
    (INTEL, {"mb": 5}, "outside info/MB/min_bandwidth 10 .. 100 percent"),
    (INTEL, {"mb": 110}, "outside info/MB/min_bandwidth 10 .. 100 percent"),
    (INTEL, {"mb": 55}, "round it up to 60, which then reads back different on every run; ask for 50 or 60"),
    (INTEL, {"mb": {2: 50}}, "MB: there is no domain 2; the MB domains here are 0, 1"),
    (INTEL, {"mb": "half"}, "is not a bandwidth in percent"),
    (INTEL_NO_MBA, {"mb": 50}, "no memory bandwidth allocation"),
    (INTEL_CDP, {"l3_code": "5"}, "L3CODE cache id 0: mask 0x5 (101) has non-contiguous"),
    (AMD, {"mb": 3000}, "AMD counts in 1/8 GB/s (16 = 2 GB/s, 2048 = unthrottled)"),
    (AMD, {"l3": "10000"}, "outside info/L3/cbm_mask 0xffff"),
    (INTEL_MBPS, {"mb": 2**32}, "not a MiB/s value"),
]


@pytest.mark.parametrize(
    ("platform", "options", "phrase"),
    INVALID,
    ids=[f"{p.name}-{'-'.join(o)}-{i}" for i, (p, o, _) in enumerate(INVALID)],
)
def test_invalid_requests_are_refused_before_writing(
    make_fake: MakeFake, platform: Platform, options: dict[str, Any], phrase: str
) -> None:
    fake = make_fake(platform)
    fake.mkdir_group("g")
    before = fake.snapshot()
    with pytest.raises(ResctrlInputError) as caught:
        plan(fake, **options)
    assert phrase in str(caught.value)
    assert caught.value.fix
    assert fake.calls == []
    assert fake.snapshot() == before


def test_every_problem_is_listed_at_once(make_fake: MakeFake) -> None:
    fake = make_fake()
    with pytest.raises(ResctrlInputError) as caught:
        plan(fake, l3={0: "5", 1: "800"}, mb={0: 55})
    problems = caught.value.details["problems"]
    assert len(problems) == 3
    assert [p.split(":")[0] for p in problems] == ["L3 cache id 0", "L3 cache id 1", "MB domain 0"]


VALID: list[tuple[Platform, dict[str, Any], dict[str, str]]] = [
    # (platform, options, lines planned against a new group, which start with all ways and full bandwidth)
    (INTEL, {"l3": "0f0"}, {"L3": "L3:0=f0;1=f0"}),
    (INTEL, {"l3": 0x0F0}, {"L3": "L3:0=f0;1=f0"}),
    (INTEL, {"l3": "0x7f0"}, {"L3": "L3:0=7f0;1=7f0"}),
    (INTEL, {"l3": {1: "00f"}}, {"L3": "L3:1=f"}),
    (INTEL, {"l3": {"0": "3", "1": "7ff"}}, {"L3": "L3:0=3"}),
    (INTEL, {"l3": "7ff"}, {}),
    (INTEL, {"mb": 50}, {"MB": "MB:0=50;1=50"}),
    (INTEL, {"mb": "10", "l3": "1"}, {"L3": "L3:0=1;1=1", "MB": "MB:0=10;1=10"}),
    (INTEL_TWO_BITS, {"l3": "600"}, {"L3": "L3:0=600;1=600"}),
    (INTEL_CDP, {"l3": "0ff"}, {"L3CODE": "L3CODE:0=ff;1=ff", "L3DATA": "L3DATA:0=ff;1=ff"}),
    (
        INTEL_CDP,
        {"l3_code": "00f", "l3_data": "7f0"},
        {"L3CODE": "L3CODE:0=f;1=f", "L3DATA": "L3DATA:0=7f0;1=7f0"},
    ),
    (INTEL_CDP, {"l3_data": {1: "3"}, "mb": {0: 20}}, {"L3DATA": "L3DATA:1=3", "MB": "MB:0=20"}),
    (AMD, {"mb": {1: 16}}, {"MB": "MB:1=16"}),
    (AMD, {"mb": 0}, {"MB": "MB:0=0;1=0;2=0;3=0"}),
    (AMD, {"l3": "f0f"}, {"L3": "L3:0=f0f;1=f0f;2=f0f;3=f0f"}),
    (AMD, {"l3": {3: 0}}, {"L3": "L3:3=0"}),
    (INTEL_MBPS, {"mb": 2048}, {"MB": "MB:0=2048;1=2048"}),
    (INTEL_MBPS, {"mb": {1: 37}}, {"MB": "MB:1=37"}),
]


@pytest.mark.parametrize(
    ("platform", "options", "lines"),
    VALID,
    ids=[f"{p.name}-{'-'.join(o)}-{i}" for i, (p, o, _) in enumerate(VALID)],
)
def test_valid_requests_plan_only_what_differs_and_the_kernel_accepts_them(
    make_fake: MakeFake, platform: Platform, options: dict[str, Any], lines: dict[str, str]
) -> None:
    fake = make_fake(platform)
    fake.mkdir_group("g")
    assert plan(fake, **options) == lines
    resctrl.write_schemata(fake.root, "g", lines, kernel=fake)
    assert (fake.root_path / "info" / "last_cmd_status").read_text() == "ok\n"
    after = resctrl.read_schemata(fake.root, "g")
    assert after.values == fake.ctrl("g")
    assert plan(fake, **options) == {}  # a second run has nothing to write


def test_write_sends_one_write_with_a_trailing_newline(make_fake: MakeFake) -> None:
    fake = make_fake()
    fake.mkdir_group("g")
    resctrl.write_schemata(fake.root, "g", plan(fake, l3="0f0", mb=50), kernel=fake)
    assert fake.calls == [("write", "g/schemata", "L3:0=f0;1=f0\nMB:0=50;1=50\n")]


def test_nothing_to_write_writes_nothing(make_fake: MakeFake) -> None:
    fake = make_fake()
    fake.mkdir_group("g")
    resctrl.write_schemata(fake.root, "g", {}, kernel=fake)
    assert fake.calls == []


# ------------------------------------------------------------------------------------- kernel refusals


def test_kernel_refusal_carries_last_cmd_status(make_fake: MakeFake) -> None:
    fake = make_fake()
    fake.mkdir_group("g")
    before = fake.ctrl("g")
    with pytest.raises(ResctrlWriteError) as caught:
        resctrl.write_schemata(fake.root, "g", {"L3": "L3:0=5"}, kernel=fake)  # bypasses plan_schemata
    assert "Invalid argument (EINVAL)" in str(caught.value)
    assert "info/last_cmd_status says: The mask 5 has non-consecutive 1-bits" in str(caught.value)
    assert caught.value.details["errno"] == errno.EINVAL
    assert fake.ctrl("g") == before


def test_kernel_refusal_without_a_reason_still_says_what_was_refused(make_fake: MakeFake) -> None:
    fake = make_fake()
    fake.mkdir_group("g")
    with pytest.raises(ResctrlWriteError) as caught:
        resctrl.write_schemata(
            fake.root, "g", {"L3": "L3:9=f"}, kernel=fake
        )  # the kernel sets no message here
    assert "'L3:9=f'" in str(caught.value)
    assert "last_cmd_status" not in str(caught.value)
    assert caught.value.details["last_cmd_status"] == ""


def test_mba_mbps_value_kept_by_a_failed_write_is_rolled_back(make_fake: MakeFake) -> None:
    """Under mba_MBps the kernel stores an MB value while parsing; a later bad line leaves it."""
    fake = make_fake(INTEL_MBPS)
    fake.mkdir_group("g")
    with pytest.raises(ResctrlWriteError) as caught:
        resctrl.write_schemata(fake.root, "g", {"MB": "MB:0=500", "L3": "L3:0=5"}, kernel=fake)
    assert "non-consecutive" in str(caught.value)
    assert caught.value.details["rolled_back"] == [f"MB:0={U32_MAX}"]
    assert fake.ctrl("g")["MB"] == {0: U32_MAX, 1: U32_MAX}
    assert [call[2] for call in fake.calls] == ["MB:0=500\nL3:0=5\n", f"MB:0={U32_MAX}\n"]


def test_planned_lines_put_mb_last_so_mba_mbps_cannot_half_apply(make_fake: MakeFake) -> None:
    fake = make_fake(INTEL_MBPS)
    assert list(plan(fake, mb=500, l3="f")) == ["L3", "MB"]


# ------------------------------------------------------------------------------------- groups

BAD_NAMES = [
    ("a/b", "contains '/'"),
    ("../x", "contains '/'"),
    ("..", "is not a directory name"),
    (".", "is not a directory name"),
    ("", "is empty"),
    ("info", "resctrl's own directories"),
    ("mon_groups", "resctrl's own directories"),
    ("mon_data", "resctrl's own directories"),
    ("a\nb", "newline"),
    ("x" * 256, "longer than 255 bytes"),
]


@pytest.mark.parametrize(("name", "phrase"), BAD_NAMES, ids=[repr(n[:8]) for n, _ in BAD_NAMES])
def test_bad_group_names_are_refused(make_fake: MakeFake, name: str, phrase: str) -> None:
    fake = make_fake()
    before = fake.snapshot()
    with pytest.raises(ResctrlInputError) as caught:
        resctrl.create_group(fake.root, name, kernel=fake)
    assert phrase in str(caught.value)
    assert fake.calls == []
    assert fake.snapshot() == before


def test_default_group_is_the_root(make_fake: MakeFake) -> None:
    fake = make_fake()
    assert resctrl.group_path(fake.root, "/") == fake.root
    assert resctrl.create_group(fake.root, "/", kernel=fake) is False
    with pytest.raises(ResctrlInputError, match="default group cannot be removed"):
        resctrl.remove_group(fake.root, "/", kernel=fake)


def test_create_group_gets_what_the_kernel_creates(make_fake: MakeFake) -> None:
    fake = make_fake()
    assert resctrl.create_group(fake.root, "web", kernel=fake) is True
    assert fake.calls == [("mkdir", "web", "")]
    assert resctrl.list_groups(fake.root) == ["web"]
    assert resctrl.read_schemata(fake.root, "web").values == {
        "L3": {0: 0x7FF, 1: 0x7FF},
        "MB": {0: 100, 1: 100},
    }
    assert resctrl.read_tasks(fake.root, "web") == set()
    assert resctrl.create_group(fake.root, "web", kernel=fake) is False
    assert len(fake.calls) == 1


def test_initial_schemata_predicts_a_new_group(make_fake: MakeFake) -> None:
    for platform in (INTEL, INTEL_CDP, INTEL_MBPS, AMD):
        fake = make_fake(platform)
        info = fake.read_info()
        fake.mkdir_group("g")
        assert resctrl.initial_schemata(info).values == resctrl.read_schemata(fake.root, "g").values


def test_more_groups_than_closids_is_refused_before_mkdir(make_fake: MakeFake) -> None:
    fake = make_fake(INTEL_CDP)  # 8 CLOSIDs with cdp: the default group and 7 more
    for index in range(7):
        assert resctrl.create_group(fake.root, f"g{index}", kernel=fake)
    fake.calls.clear()
    with pytest.raises(ResctrlInputError) as caught:
        resctrl.create_group(fake.root, "one-too-many", kernel=fake)
    assert "all 8 classes of service (CLOSIDs) are used by the default group and g0, g1" in str(caught.value)
    assert "state=absent" in caught.value.fix
    assert fake.calls == []
    resctrl.remove_group(fake.root, "g3", kernel=fake)
    assert resctrl.create_group(fake.root, "one-too-many", kernel=fake)


def test_kernel_out_of_rmids_is_reported_with_its_reason(make_fake: MakeFake) -> None:
    fake = make_fake(replace(INTEL, name="few-rmids", num_rmids=2))
    assert resctrl.create_group(fake.root, "a", kernel=fake)
    with pytest.raises(ResctrlWriteError) as caught:
        resctrl.create_group(fake.root, "b", kernel=fake)
    assert "No space left on device (ENOSPC)" in str(caught.value)
    assert "Out of RMIDs" in str(caught.value)
    assert "remove a group" in caught.value.fix
    assert resctrl.list_groups(fake.root) == ["a"]


def test_remove_group_hands_tasks_back_to_the_default_group(make_fake: MakeFake) -> None:
    fake = make_fake()
    fake.mkdir_group("web")
    fake.add_process(4242, group="web")
    assert resctrl.remove_group(fake.root, "web", kernel=fake) is True
    assert resctrl.list_groups(fake.root) == []
    assert 4242 in resctrl.read_tasks(fake.root, "/")
    assert resctrl.remove_group(fake.root, "web", kernel=fake) is False


def test_no_allocation_resource_means_no_groups(make_fake: MakeFake, tmp_path: Path) -> None:
    fake = make_fake()
    for entry in ("L3", "MB"):
        for path in (fake.root_path / "info" / entry).iterdir():
            path.unlink()
        (fake.root_path / "info" / entry).rmdir()
    with pytest.raises(ResctrlNotFoundError, match="no allocation resource"):
        resctrl.create_group(fake.root, "g", kernel=fake)


# ------------------------------------------------------------------------------------- tasks


def test_task_ids_lists_every_thread(make_fake: MakeFake) -> None:
    fake = make_fake()
    fake.add_process(4242, threads=(4243, 4250))
    fake.add_process(5000)
    proc = str(fake.proc_path)
    assert resctrl.task_ids([4242, 5000], proc) == [4242, 4243, 4250, 5000]
    assert resctrl.task_ids([4242], proc, all_threads=False) == [4242]


@pytest.mark.parametrize(
    ("pids", "phrase"),
    [
        ([0], "not a positive process id (0 would mean the writer itself)"),
        ([-3], "not a positive process id"),
        ([True], "not a positive process id"),
        ([999], "there is no process 999"),
    ],
)
def test_task_ids_refuses_what_is_not_a_running_process(
    make_fake: MakeFake, pids: list[object], phrase: str
) -> None:
    fake = make_fake()
    with pytest.raises(ResctrlInputError, match=re.escape(phrase)):
        resctrl.task_ids(pids, str(fake.proc_path))


def test_assign_pids_moves_only_what_is_not_there(make_fake: MakeFake) -> None:
    fake = make_fake()
    fake.mkdir_group("web")
    fake.add_process(4242, threads=(4243,))
    tasks = resctrl.task_ids([4242], str(fake.proc_path))
    assert resctrl.assign_pids(fake.root, "web", tasks, kernel=fake) == [4242, 4243]
    assert fake.tasks("web") == {4242, 4243}
    assert 4242 not in fake.tasks("/")
    assert [call[2] for call in fake.calls] == ["4242\n", "4243\n"]
    fake.calls.clear()
    assert resctrl.assign_pids(fake.root, "web", tasks, kernel=fake) == []
    assert fake.calls == []


def test_a_task_that_exits_midway_undoes_the_moves(make_fake: MakeFake) -> None:
    fake = make_fake()
    fake.mkdir_group("web")
    fake.mkdir_group("batch")
    fake.add_process(4242, group="batch")
    fake.add_process(5000)
    tasks = resctrl.task_ids([4242, 5000], str(fake.proc_path))
    fake.exit_process(5000)  # exits between the listing and the write
    with pytest.raises(ResctrlWriteError) as caught:
        resctrl.assign_pids(fake.root, "web", tasks, kernel=fake)
    assert "No task 5000" in str(caught.value)
    assert "exited" in caught.value.fix
    assert fake.tasks("web") == set()
    assert fake.tasks("batch") == {4242}


def test_read_monitoring_per_domain(make_fake: MakeFake) -> None:
    fake = make_fake()
    fake.mkdir_group("web")
    fake.set_monitoring("web", 0, "llc_occupancy", "1245184")
    fake.set_monitoring("web", 1, "mbm_local_bytes", "Unavailable")
    data = resctrl.read_monitoring(fake.root, "web")
    assert data == {
        0: {"llc_occupancy": 1245184, "mbm_local_bytes": 0, "mbm_total_bytes": 0},
        1: {"llc_occupancy": 0, "mbm_local_bytes": "Unavailable", "mbm_total_bytes": 0},
    }


def test_read_monitoring_without_monitoring_is_empty(make_fake: MakeFake) -> None:
    fake = make_fake()
    fake.mkdir_group("web")
    for path in sorted((fake.root_path / "web" / "mon_data").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (fake.root_path / "web" / "mon_data").rmdir()
    assert resctrl.read_monitoring(fake.root, "web") == {}


# ------------------------------------------------------------------------------------- ensure_group


def test_ensure_group_creates_writes_and_moves(make_fake: MakeFake) -> None:
    fake = make_fake()
    fake.add_process(4242, threads=(4243,))
    info = fake.read_info()
    request = resctrl.build_request(info, l3="0f0", mb=50)
    tasks = resctrl.task_ids([4242], str(fake.proc_path))
    change = resctrl.ensure_group(info, "web", request, tasks, kernel=fake)
    assert change.changed and change.created
    assert dict(change.lines) == {"L3": "L3:0=f0;1=f0", "MB": "MB:0=50;1=50"}
    assert change.moved == (4242, 4243)
    assert change.before is None
    assert change.after is not None
    assert change.after.values == fake.ctrl("web") == {"L3": {0: 0xF0, 1: 0xF0}, "MB": {0: 50, 1: 50}}
    assert fake.tasks("web") == {4242, 4243}
    fake.calls.clear()
    again = resctrl.ensure_group(info, "web", request, tasks, kernel=fake)
    assert not again.changed
    assert fake.calls == []


def test_ensure_group_check_mode_predicts_without_writing(make_fake: MakeFake) -> None:
    fake = make_fake(AMD)
    fake.add_process(77)
    info = fake.read_info()
    request = resctrl.build_request(info, l3={0: "f0f"}, mb={1: 16})
    before = fake.snapshot()
    predicted = resctrl.ensure_group(info, "batch", request, [77], check_mode=True, kernel=fake)
    assert fake.calls == []
    assert fake.snapshot() == before
    real = resctrl.ensure_group(info, "batch", request, [77], kernel=fake)
    assert predicted == real


def test_ensure_group_rolls_back_a_new_group(make_fake: MakeFake) -> None:
    fake = make_fake()
    fake.mkdir_group("batch")
    fake.add_process(4242, group="batch")
    info = fake.read_info()
    request = resctrl.build_request(info, l3="0f0")
    with pytest.raises(ResctrlWriteError, match="No task 31337"):
        resctrl.ensure_group(info, "web", request, [4242, 31337], kernel=fake)  # 31337 is not running
    assert resctrl.list_groups(fake.root) == ["batch"]
    assert fake.tasks("batch") == {4242}
    assert ("rmdir", "web", "") in fake.calls


def test_ensure_group_rolls_back_an_existing_group(make_fake: MakeFake) -> None:
    fake = make_fake()
    fake.mkdir_group("web")
    fake.add_process(4242)
    info = fake.read_info()
    resctrl.ensure_group(info, "web", resctrl.build_request(info, l3="3", mb=20), kernel=fake)
    before = fake.ctrl("web")
    with pytest.raises(ResctrlWriteError) as caught:
        resctrl.ensure_group(
            info, "web", resctrl.build_request(info, l3={1: "7f0"}, mb=90), [4242, 31337], kernel=fake
        )
    assert "rollback_failures" not in caught.value.details
    assert fake.ctrl("web") == before
    assert fake.tasks("web") == set()
    assert 4242 in fake.tasks("/")


def test_ensure_group_refuses_a_group_beyond_the_closids_in_check_mode_too(make_fake: MakeFake) -> None:
    fake = make_fake(replace(INTEL, name="two-closids", num_closids=2))
    fake.mkdir_group("only")
    info = fake.read_info()
    with pytest.raises(ResctrlInputError, match="all 2 classes of service"):
        resctrl.ensure_group(info, "second", {}, check_mode=True, kernel=fake)
    assert fake.calls == []


def test_ensure_absent(make_fake: MakeFake) -> None:
    fake = make_fake()
    fake.mkdir_group("web")
    assert resctrl.ensure_absent(fake.root, "web", check_mode=True, kernel=fake) is True
    assert resctrl.list_groups(fake.root) == ["web"]
    assert resctrl.ensure_absent(fake.root, "web", kernel=fake) is True
    assert resctrl.list_groups(fake.root) == []
    assert resctrl.ensure_absent(fake.root, "web", kernel=fake) is False
    with pytest.raises(ResctrlInputError, match="default group cannot be removed"):
        resctrl.ensure_absent(fake.root, "/", kernel=fake)
