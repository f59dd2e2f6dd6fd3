"""Tests of the firm.core.resctrl module, run in-process against the fake resctrl tree.

``resctrl_tree.FakeResctrl`` models the kernel (see its docstring); the module is pointed at it
with ``resctrl_root``, ``mounts_file``, ``cpuinfo_file`` and ``proc_root``. What a user sees is
asserted: check mode changes nothing, a real run changes the fake kernel and returns a diff, a
second run is not changed, bad input fails with a message and changes nothing, and every entry
of EXAMPLES runs on the platform it is written for.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.firm.core.plugins.modules import resctrl as resctrl_module
from tests.helpers.modules import REPO_ROOT, VENV_BIN, run_ansible_module, run_module

from .resctrl_tree import AMD, INTEL, INTEL_CDP, INTEL_MBPS, FakeResctrl, Platform

Run = Callable[..., dict[str, Any]]


@pytest.fixture
def fake(tmp_path: Path) -> FakeResctrl:
    return FakeResctrl(tmp_path / "intel", INTEL)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def call(fake: FakeResctrl, check_mode: bool = False, **args: Any) -> dict[str, Any]:
        return run_module(
            functools.partial(resctrl_module.main, fake),
            {**fake.args(), **args},
            check_mode=check_mode,
            capsys=capsys,
        )

    return call


def test_check_mode_changes_nothing(fake: FakeResctrl, run: Run) -> None:
    fake.add_process(4242, threads=(4243,))
    before = fake.snapshot()
    result = run(fake, check_mode=True, name="web", l3="0f0", mb=50, pids=[4242])
    assert result["changed"] is True
    assert result["created"] is True
    assert result["written"] == ["L3:0=f0;1=f0", "MB:0=50;1=50"]
    assert result["tasks_added"] == [4242, 4243]
    assert result["schemata"] == {"L3": {"0": "f0", "1": "f0"}, "MB": {"0": 50, "1": 50}}
    assert result["diff"]["before"] == ""
    assert result["diff"]["after"] == "L3:0=f0;1=f0\nMB:0=50;1=50\ntasks: 4242 4243\n"
    assert result["monitoring"] == {}
    assert fake.calls == []
    assert fake.snapshot() == before


def test_run_changes_then_second_run_is_not_changed(fake: FakeResctrl, run: Run) -> None:
    fake.add_process(4242, threads=(4243,))
    first = run(fake, name="web", l3="0f0", mb=50, pids=[4242])
    assert first["changed"] is True
    assert first["path"] == f"{fake.root}/web"
    assert fake.ctrl("web") == {"L3": {0: 0xF0, 1: 0xF0}, "MB": {0: 50, 1: 50}}
    assert fake.tasks("web") == {4242, 4243}
    assert first["diff"]["before"] == ""
    assert first["diff"]["after"] == "L3:0=f0;1=f0\nMB:0=50;1=50\ntasks: 4242 4243\n"
    fake.calls.clear()
    second = run(fake, name="web", l3="0f0", mb=50, pids=[4242])
    assert second["changed"] is False
    assert second["written"] == []
    assert second["tasks_added"] == []
    assert second["diff"]["before"] == second["diff"]["after"]
    assert fake.calls == []


def test_only_the_changed_domain_is_written(fake: FakeResctrl, run: Run) -> None:
    run(fake, name="web", l3="0f0")
    fake.calls.clear()
    result = run(fake, name="web", l3={1: "00f"})
    assert result["changed"] is True
    assert result["written"] == ["L3:1=f"]
    assert fake.calls == [("write", "web/schemata", "L3:1=f\n")]
    assert result["diff"]["before"].startswith("L3:0=f0;1=f0\n")
    assert result["diff"]["after"].startswith("L3:0=f0;1=f\n")


def test_returns_info_and_monitoring(fake: FakeResctrl, run: Run) -> None:
    fake.mkdir_group("web")
    fake.set_monitoring("web", 0, "llc_occupancy", "1245184")
    fake.set_monitoring("web", 1, "mbm_total_bytes", "Unavailable")
    result = run(fake, name="web")
    assert result["changed"] is False
    assert result["monitoring"]["0"]["llc_occupancy"] == 1245184
    assert result["monitoring"]["1"]["mbm_total_bytes"] == "Unavailable"
    assert result["info"]["mb"]["unit"] == "percent"
    assert result["info"]["caches"]["L3"]["cbm_mask"] == "7ff"
    assert result["info"]["num_closids"] == 16


def test_absent_removes_and_check_mode_does_not(fake: FakeResctrl, run: Run) -> None:
    fake.mkdir_group("web")
    fake.add_process(4242, group="web")
    checked = run(fake, check_mode=True, name="web", state="absent")
    assert checked["changed"] is True
    assert checked["diff"]["before"].startswith("L3:0=7ff;1=7ff\n")
    assert checked["diff"]["after"] == ""
    assert (fake.root_path / "web").is_dir()
    removed = run(fake, name="web", state="absent")
    assert removed["changed"] is True
    assert not (fake.root_path / "web").exists()
    assert 4242 in fake.tasks("/")
    again = run(fake, name="web", state="absent")
    assert again["changed"] is False


def test_default_group_schemata_can_be_set(fake: FakeResctrl, run: Run) -> None:
    result = run(fake, name="/", l3="00f")
    assert result["changed"] is True
    assert result["path"] == fake.root
    assert fake.ctrl("/")["L3"] == {0: 0xF, 1: 0xF}
    assert run(fake, name="/", l3="00f")["changed"] is False


INTEL_TWO_CLOSIDS = replace(INTEL, name="two-closids", num_closids=2)

FAILURES: list[tuple[Platform, list[str], dict[str, Any], str]] = [
    # (platform, setup groups, args, phrase in msg)
    (INTEL, [], {"name": "web", "l3": "5"}, "non-contiguous 1-bits"),
    (INTEL, [], {"name": "web", "l3": "800"}, "outside info/L3/cbm_mask 0x7ff"),
    (INTEL, [], {"name": "web", "l3": {"7": "f"}}, "there is no cache id 7"),
    (INTEL, [], {"name": "web", "mb": 55}, "ask for 50 or 60"),
    (INTEL, [], {"name": "web", "mb": 5}, "outside info/MB/min_bandwidth 10 .. 100 percent"),
    (INTEL, [], {"name": "web", "l3_code": "f"}, "remount with -o cdp"),
    (INTEL, [], {"name": "web", "l3": "f", "l3_code": "f"}, "mutually exclusive: l3|l3_code"),
    (INTEL, [], {"name": "a/b", "l3": "f"}, "contains '/'"),
    (INTEL, [], {"name": "..", "l3": "f"}, "is not a directory name"),
    (INTEL, [], {"name": "web", "pids": [999]}, "there is no process 999"),
    (
        INTEL,
        ["web"],
        {"name": "web", "state": "absent", "mb": 50},
        "state=absent removes the group; mb cannot",
    ),
    (INTEL, [], {"name": "/", "state": "absent"}, "default group cannot be removed"),
    (
        INTEL_TWO_CLOSIDS,
        ["only"],
        {"name": "second", "l3": "f"},
        "all 2 classes of service (CLOSIDs) are used",
    ),
    (AMD, [], {"name": "web", "mb": 4000}, "AMD counts in 1/8 GB/s"),
]


@pytest.mark.parametrize("case", FAILURES, ids=[f"{i}-{p.name}" for i, (p, *_) in enumerate(FAILURES)])
def test_bad_input_fails_and_changes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run: Run,
    case: tuple[Platform, list[str], dict[str, Any], str],
) -> None:
    platform, groups, args, phrase = case
    fake = FakeResctrl(tmp_path / platform.name, platform)
    for group in groups:
        fake.mkdir_group(group)
    before = fake.snapshot()
    result = run(fake, **args)
    assert result["failed"] is True
    assert phrase in result["msg"]
    assert fake.calls == []
    assert fake.snapshot() == before


def test_failure_carries_the_fix_and_every_problem(fake: FakeResctrl, run: Run) -> None:
    result = run(fake, name="web", l3={"0": "5", "1": "7ff"}, mb={"0": 55})
    assert result["failed"] is True
    assert "Fix: correct the values above" in result["msg"]
    assert len(result["problems"]) == 2


def test_not_mounted_says_how_to_mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Run) -> None:
    fake = FakeResctrl(tmp_path / "unmounted", INTEL, mounted=False)
    result = run(fake, name="web", l3="f")
    assert result["failed"] is True
    assert "is not a mounted resctrl file system" in result["msg"]
    assert "mount -t resctrl resctrl /sys/fs/resctrl" in result["fix"]
    assert fake.calls == []


def test_kernel_refusal_rolls_back_and_reports(fake: FakeResctrl, run: Run) -> None:
    """A pid that exits after validation: the new group is removed again and the reason shown."""
    fake.add_process(4242)
    original_write = fake.write

    def write_then_exit(path: str, data: str) -> None:
        if path.endswith("schemata"):
            fake.exit_process(4242)  # the process exits while the schemata is written
        original_write(path, data)

    fake.write = write_then_exit  # type: ignore[method-assign]
    result = run(fake, name="web", l3="0f0", pids=[4242])
    assert result["failed"] is True
    assert "No task 4242" in result["msg"]
    assert result["errno"] == 3
    assert not (fake.root_path / "web").exists()


# ------------------------------------------------------------------------------------- EXAMPLES

EXAMPLE_PLATFORMS: dict[str, Platform] = {
    "Give the web tier": INTEL,
    "Use different ways on each socket": INTEL,
    "Keep unclassified tasks out": INTEL,
    "With CDP": INTEL_CDP,
    "On AMD": AMD,
    "Mounted with mba_MBps": INTEL_MBPS,
    "Read the monitoring counters": INTEL,
    "Remove the group": INTEL,
}


def _examples() -> list[dict[str, Any]]:
    tasks = yaml.safe_load(resctrl_module.EXAMPLES)
    assert isinstance(tasks, list)
    return [task for task in tasks if "firm.core.resctrl" in task]


def _platform_for(title: str) -> Platform:
    for prefix, platform in EXAMPLE_PLATFORMS.items():
        if title.startswith(prefix):
            return platform
    raise AssertionError(f"EXAMPLES entry {title!r} has no platform in EXAMPLE_PLATFORMS")


@pytest.mark.parametrize("example", _examples(), ids=lambda task: task["name"][:40])
def test_every_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Run, example: dict[str, Any]
) -> None:
    platform = _platform_for(example["name"])
    fake = FakeResctrl(tmp_path / platform.name, platform)
    fake.add_process(4242, threads=(4243,))
    args = dict(example["firm.core.resctrl"])
    if args.get("state") == "absent" or "Read" in example["name"]:
        fake.mkdir_group(args["name"])
    before = fake.snapshot()
    checked = run(fake, check_mode=True, **args)
    assert not checked.get("failed"), checked.get("msg")
    assert fake.snapshot() == before
    first = run(fake, **args)
    assert not first.get("failed"), first.get("msg")
    assert first["changed"] is checked["changed"]
    second = run(fake, **args)
    assert second["changed"] is False


def test_examples_are_all_classified() -> None:
    titles = [task["name"] for task in _examples()]
    assert len(titles) == len(EXAMPLE_PLATFORMS)
    for title in titles:
        _platform_for(title)


# ------------------------------------------------------------------------------------- through Ansible


def test_ansible_doc_loads() -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-doc"), "firm.core.resctrl"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "resctrl_root" in proc.stdout
    assert "[WARNING]" not in proc.stderr


def test_ansible_runs_the_module_and_reports_a_missing_mount(tmp_path: Path) -> None:
    """Through the real ansible command; an empty mount table keeps the real system untouched."""
    empty = tmp_path / "mounts"
    empty.write_text("")
    result = run_ansible_module("firm.core.resctrl", {"name": "web", "mounts_file": str(empty)}, check=True)
    assert result["failed"] is True
    assert "/sys/fs/resctrl is not a mounted resctrl file system" in result["msg"]
