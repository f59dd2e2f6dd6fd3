"""Fixtures for tests that change this machine's kernel state for real.

They need root and writable cgroups; where the machine cannot have them the tests are skipped
with the reason printed (pytest -ra), never silently.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils import cgroup

_counter = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def layout() -> cgroup.Layout:
    if os.geteuid() != 0:
        pytest.skip("needs root to write cgroups")
    found = cgroup.detect_layout("/sys/fs/cgroup")
    missing = [c for c in ("cpu", "cpuacct", "blkio") if c not in found.hierarchies]
    if missing:
        pytest.skip(f"this machine has no {', '.join(missing)} controller")
    return found


@pytest.fixture
def group_path(layout: cgroup.Layout) -> Iterator[str]:
    """A fresh group path; the group, and every process left in it, is removed afterwards."""
    path = f"firm-test-{os.getpid()}-{next(_counter)}"
    yield path
    group = cgroup.group_at(layout, path)
    for directory in group.distinct_dirs():
        procs = Path(directory, "cgroup.procs")
        for pid in procs.read_text().split() if procs.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    cgroup.remove_group_when_empty(group)


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; killed and reaped afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
