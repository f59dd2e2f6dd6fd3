"""The integration suite's leak sentinel (tests/helpers/leaks.py), on fake trees and snapshots.

A test group, ``firm-test-<pid>-<n>`` at the root of every hierarchy, is what the suite's ``group_path``
fixture makes. One left behind by this session is new, and reported; one left by a session that was
killed before its end (so its own sentinel never ran) and was already there when this session began
is removed when empty and named in a warning, not failed on; the groups of a session still running
beside this one are never reported nor touched.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import leaks

HIERARCHIES = ("blkio", "cpu", "cpuacct", "cpuset", "memory", "pids")
"""The six hierarchies firm's groups are made in on a cgroup v1 machine."""


def snapshot(cgroups: set[str]) -> leaks.Snapshot:
    empty: frozenset[str] = frozenset()
    return leaks.Snapshot(empty, empty, empty, empty, frozenset(cgroups), empty, empty, empty)


def fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    for name in (*HIERARCHIES, "systemd", "unified"):
        (root / name / "user.slice").mkdir(parents=True)
    (root / "cpu,cpuacct").symlink_to(root / "cpu")  # a co-mount's link: not a hierarchy of its own
    return root


def test_a_group_made_at_the_root_of_every_hierarchy_is_seen_in_each(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    for name in HIERARCHIES:
        (root / name / "firm-test-32395-17" / "child").mkdir(parents=True)
    (root / "cpu" / "user.slice" / "firm-test-1-0").mkdir()  # below another group: not firm's top level

    found = leaks.cgroups(str(root), str(tmp_path / "no-resctrl"))

    assert found == {
        *(f"{name}/firm-test-32395-17" for name in HIERARCHIES),
        *(f"{name}/firm-test-32395-17/child" for name in HIERARCHIES),
    }


def test_a_new_test_group_is_reported_in_every_hierarchy_it_is_in() -> None:
    this_session = os.getpid()
    group = f"firm-test-{this_session}-3"
    before = snapshot({"cpu/firm-testbed", "memory/firm-testbed"})
    after = snapshot({*before.cgroups, *(f"{name}/{group}" for name in HIERARCHIES)})

    found = leaks.leaks(before, after, running=lambda pid: pid == this_session)

    assert found == [f"cgroups: {name}/{group}" for name in HIERARCHIES]


def test_a_group_of_a_session_killed_during_this_one_is_reported_with_its_pid() -> None:
    """A session a test started, killed before its end: its group is new, and its PID no longer runs."""
    left = {f"{name}/firm-test-32395-17" for name in HIERARCHIES}
    before = snapshot({"cpu/firm-testbed"})
    after = snapshot({*before.cgroups, *left})

    assert leaks.leaks(before, after, running=lambda pid: False) == [
        f"cgroups: {name}/firm-test-32395-17 (left by test session 32395, which did not end)"
        for name in HIERARCHIES
    ]


def test_a_group_an_earlier_killed_session_left_is_no_leak_of_this_one() -> None:
    """The leftover CI met: ``firm-test-16957-1``, empty, in six hierarchies, there before this session."""
    left = {f"{name}/firm-test-16957-1" for name in HIERARCHIES}
    before = snapshot({*left, "cpu/firm-testbed"})
    after = snapshot(set(before.cgroups))

    assert leaks.leaks(before, after, running=lambda pid: False) == []


def test_earlier_leftovers_removes_the_empty_groups_of_dead_sessions_and_names_them(
    tmp_path: Path,
) -> None:
    root = fake_root(tmp_path)
    resctrl = tmp_path / "resctrl"
    for name in HIERARCHIES:
        (root / name / "firm-test-16957-1").mkdir()
    (root / "cpu" / "firm-test-77-0").mkdir()  # a session still running beside this one
    (root / "memory" / "firm-test-16957-1" / "cgroup.procs").write_text("123\n")  # still holds a process
    before = snapshot(leaks.cgroups(str(root), str(resctrl)))

    message, refused = leaks.earlier_leftovers(before, lambda pid: pid == 77, str(root), str(resctrl))

    assert refused == ["memory/firm-test-16957-1"]
    assert "7 test groups" not in message and "6 test groups" in message and "PIDs 16957" in message
    assert "5 were empty and are removed" in message and "memory/firm-test-16957-1" in message
    left = sorted(str(p.relative_to(root)) for p in root.glob("*/firm-test-*") if not p.parent.is_symlink())
    assert left == ["cpu/firm-test-77-0", "memory/firm-test-16957-1"]
    assert leaks.earlier_leftovers(snapshot(set()), running=lambda pid: False) == ("", [])


def test_what_was_there_before_and_is_no_test_group_is_never_reported() -> None:
    before = snapshot({"cpu/firm-testbed", "cpu/firm-testbed/frontend-0", "resctrl/firm-anomaly"})
    after = snapshot(set(before.cgroups))

    assert leaks.leaks(before, after, running=lambda pid: False) == []


def test_stale_test_groups_names_each_group_and_sub_group_with_its_session() -> None:
    groups = {
        "cpu/firm-test-41-0",
        "cpu/firm-test-41-0/svc1",
        "resctrl/firm-test-41",
        "cpu/firm-test-77-2",
        "cpu/firm-testbed-test",
        "cpu/firm-test-x-1",
    }

    stale = leaks.stale_test_groups(groups, running=lambda pid: pid == 77)

    assert stale == {"cpu/firm-test-41-0": 41, "cpu/firm-test-41-0/svc1": 41, "resctrl/firm-test-41": 41}


def test_session_running_knows_this_session_and_a_pid_that_does_not_exist() -> None:
    assert leaks.session_running(os.getpid())
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert not leaks.session_running(pid_max + 1)


def test_remove_groups_removes_the_empty_deepest_first_and_names_what_it_could_not(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    resctrl = tmp_path / "resctrl"
    (root / "cpu" / "firm-test-41-0" / "svc1").mkdir(parents=True)
    (root / "memory" / "firm-test-41-0").mkdir()
    (root / "memory" / "firm-test-41-0" / "cgroup.procs").write_text("123\n")  # as a group still in use
    (resctrl / "firm-test-41").mkdir(parents=True)
    entries = [
        "cpu/firm-test-41-0",
        "cpu/firm-test-41-0/svc1",
        "memory/firm-test-41-0",
        "resctrl/firm-test-41",
    ]

    removed, refused = leaks.remove_groups([*entries, "pids/firm-test-41-0"], str(root), str(resctrl))

    assert removed == ["cpu/firm-test-41-0/svc1", "cpu/firm-test-41-0", "resctrl/firm-test-41"]
    assert refused == ["memory/firm-test-41-0"]
    assert not (root / "cpu" / "firm-test-41-0").exists() and not (resctrl / "firm-test-41").exists()
    assert (root / "memory" / "firm-test-41-0").is_dir()
