"""firm's resctrl layer against the real /sys/fs/resctrl (opt in: FIRM_REAL_RESCTRL=1).

Needs root, a CPU with Intel RDT or AMD PQoS, and resctrl mounted at /sys/fs/resctrl
(``mount -t resctrl resctrl /sys/fs/resctrl``). Each test creates its own group, named after
this process, puts a sleeping child process in it and removes both at the end, also on failure.
The default group and other groups are never written. Without the opt-in or the mount, the
tests skip and print why.

    FIRM_REAL_RESCTRL=1 .venv/bin/pytest -m real_resctrl tests/integration/test_resctrl_real.py -rs
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from ansible_collections.firm.core.plugins.module_utils import resctrl
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from tests.helpers.modules import run_ansible_module

pytestmark = [pytest.mark.integration, pytest.mark.real_resctrl]


def _skip_reason() -> str | None:
    if os.environ.get("FIRM_REAL_RESCTRL") != "1":
        return (
            "set FIRM_REAL_RESCTRL=1 to run against the real /sys/fs/resctrl "
            "(it creates and removes a group; needs root and RDT/PQoS hardware)"
        )
    if os.geteuid() != 0:
        return "needs root to create resctrl groups and move tasks"
    try:
        info = resctrl.read_info()
    except FirmError as exc:
        return f"resctrl is not usable here: {exc}"
    if not info.caches and info.mba is None:
        return "resctrl is mounted but offers no allocation (monitoring only)"
    return None


@pytest.fixture
def info() -> resctrl.ResctrlInfo:
    reason = _skip_reason()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return resctrl.read_info()


@pytest.fixture
def group() -> Iterator[str]:
    name = f"firm-test-{os.getpid()}"
    try:
        yield name
    finally:
        resctrl.remove_group(resctrl.RESCTRL_ROOT, name)


@pytest.fixture
def sleeper() -> Iterator[int]:
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=10)


def valid_request(info: resctrl.ResctrlInfo) -> dict[str, dict[int, int]]:
    """The top min_cbm_bits ways of each cache and a mid-range bandwidth in this platform's unit."""
    request: dict[str, dict[int, int]] = {}
    for cache in info.caches.values():
        bits = max(cache.min_cbm_bits, 1)
        mask = ((1 << bits) - 1) << (cache.cbm_len - bits)
        request[cache.resource] = dict.fromkeys(cache.domains, mask)
    if info.mba is not None:
        if info.mba.unit == resctrl.UNIT_PERCENT:
            gran = info.mba.bandwidth_gran
            value = min(100, -(-max(info.mba.min_bandwidth, 50) // gran) * gran)
        else:
            value = 1024  # 128 GB/s on AMD, 1024 MiB/s with mba_MBps
        request["MB"] = dict.fromkeys(info.mba.domains, value)
    return request


def test_group_lifecycle(info: resctrl.ResctrlInfo, group: str, sleeper: int) -> None:
    request = valid_request(info)
    tasks = resctrl.task_ids([sleeper])
    change = resctrl.ensure_group(info, group, request, tasks)
    assert change.created
    assert group in resctrl.list_groups()
    after = resctrl.read_schemata(resctrl.RESCTRL_ROOT, group)
    for resource, domains in request.items():
        for domain, value in domains.items():
            assert after.get(resource, domain) == value, f"{resource}:{domain}"
    assert sleeper in resctrl.read_tasks(resctrl.RESCTRL_ROOT, group)

    again = resctrl.ensure_group(info, group, request, tasks)
    assert not again.changed

    monitoring = resctrl.read_monitoring(resctrl.RESCTRL_ROOT, group)
    if info.mon is not None:
        assert monitoring, "L3_MON exists but the group has no mon_data"
        for events in monitoring.values():
            assert set(events) <= set(info.mon.features)
            assert all(
                isinstance(v, int) or v in ("Unavailable", "Error", "Unassigned") for v in events.values()
            )
    print(f"monitoring of {group}: {monitoring}")

    assert resctrl.remove_group(resctrl.RESCTRL_ROOT, group)
    assert group not in resctrl.list_groups()
    assert sleeper in resctrl.read_tasks(resctrl.RESCTRL_ROOT, resctrl.DEFAULT_GROUP)


def test_kernel_rejection_is_rolled_back(info: resctrl.ResctrlInfo, group: str) -> None:
    """A line the kernel refuses (bypassing validation) leaves the group as it was."""
    cache = next(iter(info.caches.values()), None)
    if cache is None or cache.sparse_masks or cache.cbm_len < 3:
        pytest.skip("needs a cache that refuses non-contiguous masks")
    resctrl.create_group(resctrl.RESCTRL_ROOT, group)
    before = resctrl.read_schemata(resctrl.RESCTRL_ROOT, group)
    domain = cache.domains[0]
    with pytest.raises(resctrl.ResctrlWriteError) as caught:
        resctrl.write_schemata(resctrl.RESCTRL_ROOT, group, {cache.resource: f"{cache.resource}:{domain}=5"})
    print(f"kernel said: {caught.value}")
    assert caught.value.details["last_cmd_status"]
    assert resctrl.read_schemata(resctrl.RESCTRL_ROOT, group) == before


def test_module_through_ansible(info: resctrl.ResctrlInfo, group: str, sleeper: int) -> None:
    cache = next(iter(info.caches.values()), None)
    args: dict[str, object] = {"name": group, "pids": [sleeper]}
    if cache is not None:
        args["l3"] = f"{(1 << max(cache.min_cbm_bits, 1)) - 1:x}"
    checked = run_ansible_module("firm.core.resctrl", args, check=True, diff=True)
    assert checked["changed"] is True
    assert group not in resctrl.list_groups()
    applied = run_ansible_module("firm.core.resctrl", args, diff=True)
    assert applied["changed"] is True, applied.get("msg")
    assert group in resctrl.list_groups()
    again = run_ansible_module("firm.core.resctrl", args)
    assert again["changed"] is False, again
    removed = run_ansible_module("firm.core.resctrl", {"name": group, "state": "absent"})
    assert removed["changed"] is True
    assert group not in resctrl.list_groups()
