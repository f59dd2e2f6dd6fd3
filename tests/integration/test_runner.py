"""The controller's ansible-runner executor drives firm.core modules on this machine."""

from __future__ import annotations

from pathlib import Path

from ansible_collections.firm.core.plugins.module_utils import cgroup
from firm.actuate.runner import run_module


def test_runner_applies_checks_and_reports_failures(layout: cgroup.Layout, group_path: str) -> None:
    quota_file = Path(layout.hierarchy("cpu").mount, group_path, "cpu.cfs_quota_us")
    checked = run_module("firm.core.cgroup", {"path": group_path, "cpu_quota_us": 30000}, check=True)[
        "localhost"
    ]
    assert (checked.status, checked.changed) == ("ok", True)
    assert not quota_file.exists()

    applied = run_module("firm.core.cgroup", {"path": group_path, "cpu_quota_us": 30000}, diff=True)[
        "localhost"
    ]
    assert applied.changed and applied.result["settings"]["cpu_quota_us"] == 30000
    assert quota_file.read_text().strip() == "30000"

    refused = run_module("firm.core.cgroup", {"path": group_path, "cpu_quota_us": -7})["localhost"]
    assert refused.failed
    assert "negative" in refused.result["msg"]
    assert quota_file.read_text().strip() == "30000"
