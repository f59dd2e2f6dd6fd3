"""What firm's tests could leave behind on this machine, as a snapshot to compare before and after.

A snapshot holds, as plain strings: network namespaces, links and qdiscs of the host namespace,
qdiscs of namespaces that were there before, nftables tables, cgroups whose top-level directory is
firm's (``firm*`` in every hierarchy, and resctrl groups), files under firm's state directories
(anomaly records, the testbed's state, sysbench's scratch files), anomaly records still on file
under the session's temporary directory, and the processes of this session.

A process belongs to the session when it carries the session's token in its environment: the
sentinel sets it in its own environment first, and every process the tests start inherits it,
including those that leave their parent's session (anomaly supervisors and workers, testbed
services). Processes without the token (another user's stress-ng, a CPU hog beside the run) are
never flagged.

Only what is *new* after the session counts: things that existed before (a developer's own
testbed, the Redis `make services` started) are never reported. The groups the tests make for
themselves, ``firm-test-<pid>-<n>`` (and ``firm-test-<pid>`` in resctrl), carry the PID of the
session that made them. One whose session no longer runs was left by a session that never reached
its end (killed by a timeout, by CI's time limit or by the OOM killer, so its own sentinel never
ran). When it is there before this session begins, it is not this session's leak: the sentinel
removes it if it is empty and says so in a warning (``earlier_leftovers``). When one appears *during*
this session (a session started by a test, killed), it is reported as a leak, with its PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path

TOKEN_VARIABLE = "FIRM_TEST_SESSION"
"""The environment variable whose value marks a process as started by this test session."""

CGROUP_ROOT = "/sys/fs/cgroup"
RESCTRL_ROOT = "/sys/fs/resctrl"
STATE_DIRS = ("/run/firm", "/var/lib/firm", "/etc/firm")
"""firm's state directories: anomaly records, the testbed's state and data, sysbench's files, node facts."""
CGROUP_PREFIX = "firm"
"""Top-level cgroups of this prefix are firm's: firm-anomaly, firm-testbed, firm-test-<pid>-<n>, ..."""
TEST_GROUP = re.compile(r"(?P<top>[^/]+/firm-test-(?P<pid>\d+)(?:-\d+)?)(?:/|$)")
"""A group a test session made for itself, as ``cgroups()`` describes it: ``<hierarchy>/firm-test-<pid>[-<n>]``
(tests/integration/conftest.py's ``group_path``; test_resctrl_real.py in resctrl), below it its sub-groups."""


@dataclass(frozen=True)
class Snapshot:
    """Everything the tests could leave behind, each as a set of printable descriptions."""

    namespaces: frozenset[str]
    links: frozenset[str]
    qdiscs: frozenset[str]
    nft_tables: frozenset[str]
    cgroups: frozenset[str]
    files: frozenset[str]
    anomaly_records: frozenset[str]
    processes: frozenset[str]


def _run(argv: list[str]) -> str:
    """A command's output, or "" when the tool is missing or fails (a missing tool has nothing to leak)."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, check=False, env=dict(os.environ, LC_ALL="C")
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def namespaces() -> set[str]:
    return {line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line.strip()}


def links() -> set[str]:
    """Links of the host namespace by name (``veth0@if3`` -> ``veth0``)."""
    found = set()
    for line in _run(["ip", "-o", "link", "show"]).splitlines():
        match = re.match(r"\d+:\s+([^:@\s]+)", line)
        if match:
            found.add(match.group(1))
    return found


def qdiscs(namespace: str | None = None) -> set[str]:
    """Qdiscs as ``[namespace] dev <if> <kind> <handle> <parent>``, without their statistics."""
    command = ["tc", "qdisc", "show"]
    if namespace is not None:
        command = ["ip", "netns", "exec", namespace, *command]
    found = set()
    for line in _run(command).splitlines():
        match = re.match(r"qdisc (\S+) (\S+) dev (\S+) (root|parent \S+|ingress)", line)
        if match:
            kind, handle, dev, parent = match.groups()
            found.add(f"{namespace + ' ' if namespace else ''}dev {dev} {kind} {handle} {parent}")
    return found


def nft_tables() -> set[str]:
    return {line.strip() for line in _run(["nft", "list", "tables"]).splitlines() if line.strip()}


def cgroups(root: str = CGROUP_ROOT, resctrl_root: str = RESCTRL_ROOT) -> set[str]:
    """Every group below a ``firm*`` top-level group, in every hierarchy, as ``<hierarchy>/<path>``."""
    found = set()
    hierarchies = (
        [p for p in Path(root).iterdir() if p.is_dir() and not p.is_symlink()] if Path(root).is_dir() else []
    )
    for hierarchy in hierarchies:
        try:
            tops = [p for p in hierarchy.iterdir() if p.is_dir() and p.name.startswith(CGROUP_PREFIX)]
        except OSError:
            continue
        for top in tops:
            for directory, _, _ in os.walk(top):
                found.add(f"{hierarchy.name}/{os.path.relpath(directory, hierarchy)}")
    resctrl = Path(resctrl_root)
    if (resctrl / "schemata").exists():
        found |= {
            f"resctrl/{p.name}" for p in resctrl.iterdir() if p.is_dir() and p.name.startswith(CGROUP_PREFIX)
        }
    return found


def session_running(pid: int) -> bool:
    """Whether ``pid``, the owner of ``firm-test-<pid>-*``, may still be a test session: a running
    Python process (pytest, or python -m pytest). Another session's groups are never touched."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]
    except OSError:
        return False
    return any(b"python" in part or b"pytest" in part for part in command)


def stale_test_groups(
    groups: Iterable[str], running: Callable[[int], bool] = session_running
) -> dict[str, int]:
    """The test groups among ``groups`` (as ``cgroups()`` describes them) whose session no longer runs,
    each with that session's PID: what a session that never reached its end left behind."""
    found = {}
    for entry in groups:
        match = TEST_GROUP.match(entry)
        if match and not running(int(match["pid"])):
            found[entry] = int(match["pid"])
    return found


def remove_groups(
    entries: Iterable[str], root: str = CGROUP_ROOT, resctrl_root: str = RESCTRL_ROOT
) -> tuple[list[str], list[str]]:
    """Remove the groups ``entries`` name (as ``cgroups()`` describes them), deepest first; returns those
    removed and those the kernel refused (a group that still holds processes)."""
    removed, refused = [], []
    for entry in sorted(entries, key=lambda e: (-e.count("/"), e)):
        hierarchy, _, path = entry.partition("/")
        directory = Path(resctrl_root, path) if hierarchy == "resctrl" else Path(root, hierarchy, path)
        try:
            directory.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            refused.append(entry)
            continue
        removed.append(entry)
    return removed, refused


def files(directories: Iterable[str] = STATE_DIRS) -> set[str]:
    """Every file (and empty directory) under firm's state directories, with its size."""
    found = set()
    for top in directories:
        for directory, subdirs, names in os.walk(top):
            if not subdirs and not names:
                found.add(f"{directory}/")
            for name in names:
                path = os.path.join(directory, name)
                try:
                    size = os.lstat(path).st_size
                except OSError:
                    continue
                found.add(f"{path} ({size >> 20} MiB)" if size >= 1 << 20 else path)
    return found


def _size_free(description: str) -> str:
    return re.sub(r" \(\d+ MiB\)$", "", description)


def anomaly_records(directory: str | None) -> set[str]:
    """Anomaly records (``<name>.json`` with a spec and an expiry) still on file below ``directory``."""
    found: set[str] = set()
    if directory is None or not os.path.isdir(directory):
        return found
    for path in Path(directory).rglob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):  # other tests' inputs: damaged, deeply nested
            continue
        if isinstance(data, dict) and {"spec", "host", "expires_at"} <= data.keys():
            found.add(str(path))
    return found


def _environ(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _describe(pid: str) -> str:
    try:
        command = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        )
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""
    return f"{pid} (started at tick {start}): {command[:200]}"


def _ancestors() -> set[str]:
    """This process and its ancestors: they carry the token, and they are the session itself."""
    found, pid = set(), str(os.getpid())
    while pid not in ("0", ""):
        found.add(pid)
        try:
            pid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            break
    return found


def processes(token: str) -> set[str]:
    """Live processes (not zombies) whose environment carries ``token``, other than this one and its ancestors."""
    marker = f"{TOKEN_VARIABLE}={token}".encode()
    mine = _ancestors()
    found = set()
    for pid in (p for p in os.listdir("/proc") if p.isdigit() and p not in mine):
        if marker in _environ(pid).split(b"\0"):
            description = _describe(pid)
            if description:
                found.add(description)
    return found


def take(token: str, temp_dir: str | None = None) -> Snapshot:
    """The machine now. ``temp_dir``: the session's temporary directory, searched for anomaly records."""
    names = namespaces()
    return Snapshot(
        namespaces=frozenset(names),
        links=frozenset(links()),
        qdiscs=frozenset(qdiscs().union(*(qdiscs(n) for n in sorted(names)))),
        nft_tables=frozenset(nft_tables()),
        cgroups=frozenset(cgroups()),
        files=frozenset(files()),
        anomaly_records=frozenset(anomaly_records(temp_dir)),
        processes=frozenset(processes(token)),
    )


def earlier_leftovers(
    before: Snapshot,
    running: Callable[[int], bool] = session_running,
    root: str = CGROUP_ROOT,
    resctrl_root: str = RESCTRL_ROOT,
) -> tuple[str, list[str]]:
    """Remove the test groups of sessions that no longer run (``stale_test_groups``) that are in
    ``before``, the machine as this session found it; returns a warning naming them ("" when there
    were none) and those still holding processes, which are left as they are."""
    stale = stale_test_groups(before.cgroups, running)
    if not stale:
        return "", []
    removed, refused = remove_groups(stale, root, resctrl_root)
    sessions = ", ".join(str(pid) for pid in sorted(set(stale.values())))
    message = (
        f"this machine held {len(stale)} test groups of earlier test sessions that did not end "
        f"(PIDs {sessions}); {len(removed)} were empty and are removed"
    )
    if refused:
        message += "; these still hold processes and are left: " + ", ".join(sorted(refused))
    return message, refused


def leaks(before: Snapshot, after: Snapshot, running: Callable[[int], bool] = session_running) -> list[str]:
    """What is in ``after`` and was not in ``before``, one line each, e.g. ``cgroups: cpu/firm-anomaly/a1``;
    a new test group whose session no longer runs (``stale_test_groups``: a session started during this
    one, killed) says so: ``cgroups: cpu/firm-test-41-3 (left by test session 41, which did not end)``.
    Groups of earlier sessions that were there before are ``earlier_leftovers``' business, not leaks.

    Qdiscs of namespaces that are new are not listed again (the namespace is); a file that only grew
    is not new.
    """
    found: list[str] = []
    for item in fields(Snapshot):
        old, new = getattr(before, item.name), getattr(after, item.name)
        if item.name == "cgroups":
            stale = stale_test_groups(new - old, running)
            added = sorted(
                [
                    *(new - old - stale.keys()),
                    *(f"{g} (left by test session {p}, which did not end)" for g, p in stale.items()),
                ]
            )
        elif item.name == "files":
            known = {_size_free(f) for f in old}
            added = sorted(f for f in new if _size_free(f) not in known)
        elif item.name == "qdiscs":
            fresh = after.namespaces - before.namespaces
            added = sorted(q for q in new - old if q.split(" ", 1)[0] not in fresh)
        else:
            added = sorted(new - old)
        found.extend(f"{item.name}: {entry}" for entry in added)
    return found


def settle(before: Snapshot, token: str, temp_dir: str | None, timeout_s: float = 15.0) -> list[str]:
    """The leaks that remain once whatever is still ending has had ``timeout_s`` to end (polled)."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = leaks(before, take(token, temp_dir))
        if not remaining or time.monotonic() >= deadline:
            return remaining
        time.sleep(0.25)


def kill_leaked_processes(token: str) -> list[str]:
    """SIGKILL every process of the session that is still running; returns what was killed."""
    killed = []
    for description in sorted(processes(token)):
        pid = int(description.split(" ", 1)[0])
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(description)
    return killed
