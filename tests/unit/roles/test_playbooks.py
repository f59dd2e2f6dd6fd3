"""Every playbook passes ansible-playbook --syntax-check against the sample and the local inventory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOKS = sorted(path.name for path in (ROOT / "playbooks").glob("*.yml"))
INVENTORIES = ("inventory/sample", "inventory/local/hosts.yml")


def syntax_check(playbook: Path, inventory: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "--syntax-check", "-i", inventory, str(playbook)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1"),
    )


def test_site_imports_one_playbook_per_concern() -> None:
    site = (ROOT / "playbooks" / "site.yml").read_text()
    for concern in (
        "preflight",
        "firm_node",
        "kubernetes",
        "jaeger",
        "cadvisor",
        "anomaly_tools",
        "redis",
        "benchmarks",
    ):
        assert f"import_playbook: {concern}.yml" in site
        assert f"{concern}.yml" in PLAYBOOKS


@pytest.mark.parametrize("inventory", INVENTORIES)
@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax(playbook: str, inventory: str) -> None:
    proc = syntax_check(ROOT / "playbooks" / playbook, inventory)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_syntax_check_catches_a_broken_playbook(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "- name: Broken\n  hosts: all\n  tasks:\n    - name: No module\n      no_such_keyword: true\n"
    )
    proc = syntax_check(broken, INVENTORIES[0])
    assert proc.returncode != 0
    assert "broken.yml:4" in proc.stdout + proc.stderr
