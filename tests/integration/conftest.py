"""Fixtures for tests that change this machine's kernel state for real.

They need root and writable cgroups; where the machine cannot have them the tests are skipped
with the reason printed (pytest -ra), never silently.

``leak_sentinel`` (session, autouse) records what the tests could leave behind before the first of
them (see tests/helpers/leaks.py) and fails the run, naming every leftover, if anything new remains
after the last. ``firm-test-<pid>-<n>`` groups of earlier sessions that were killed before their end
(so their own sentinel never ran) are removed when this session starts, with a warning naming them:
they are the machine's past, not this session's leak.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils import cgroup
from tests.helpers import leaks

_counter = itertools.count()


SLOW = (
    "tests/integration/test_molecule.py::test_scenario[",
    "tests/integration/test_loop_real.py::test_a_cpu_anomaly_beside_compose_post_is_mitigated",
)
"""Suites of several minutes marked ``slow``: ``make test`` leaves them out, ``make test-slow`` runs
them (docs/reliability.md). The molecule scenarios take about 6.5 minutes together (``make molecule``
runs them too); the loop's CPU-anomaly run about 2 minutes."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
        if any(item.nodeid.startswith(prefix) for prefix in SLOW):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def leak_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail the run, naming what leaked, if the integration tests leave anything behind.

    Compares a snapshot taken before the first integration test with one taken after the last
    (polled for up to 15 s, while anything still ending ends): network namespaces, links, qdiscs,
    nftables tables, cgroups under firm's parents, files under firm's state directories, anomaly
    records, and processes the session started (marked by a token in their environment). Before the
    first test, the test groups of earlier sessions that were killed before their end are removed
    when empty and named in a warning (``leaks.earlier_leftovers``). Leaked processes are killed after
    they are reported; everything else is left for inspection (a test group this session leaves is
    removed, if empty, by the next session).
    """
    token = secrets.token_hex(8)
    previous = os.environ.get(leaks.TOKEN_VARIABLE)
    os.environ[leaks.TOKEN_VARIABLE] = token
    temp_dir = str(tmp_path_factory.getbasetemp())
    earlier, _ = leaks.earlier_leftovers(leaks.take(token, temp_dir))
    if earlier:
        warnings.warn(pytest.PytestWarning(earlier), stacklevel=1)
    before = leaks.take(token, temp_dir)
    try:
        yield
        remaining = leaks.settle(before, token, temp_dir)
    finally:
        if previous is None:
            os.environ.pop(leaks.TOKEN_VARIABLE, None)
        else:
            os.environ[leaks.TOKEN_VARIABLE] = previous
    if remaining:
        killed = leaks.kill_leaked_processes(token)
        note = f"\n(the {len(killed)} leaked processes were killed)" if killed else ""
        pytest.fail("the integration tests left behind:\n  " + "\n  ".join(remaining) + note, pytrace=False)


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
