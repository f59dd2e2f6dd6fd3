"""The kubernetes role's first tasks refuse a bad inventory with one message per condition, naming the fix.

ansible-playbook runs roles/kubernetes/tasks/validate.yml on this machine (connection local) against a
generated inventory; nothing is changed (the tasks only assert and set facts).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
VALIDATE = ROOT / "roles" / "kubernetes" / "tasks" / "validate.yml"


def run_validate(tmp_path: Path, control_plane: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    hosts = {
        name: {"ansible_connection": "local", "ansible_python_interpreter": str(ROOT / ".venv/bin/python")}
        for name in ["worker", *control_plane]
    }
    inventory = {
        "all": {"hosts": hosts, "children": {"kube_control_plane": {"hosts": dict.fromkeys(control_plane)}}}
    }
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    defaults = yaml.safe_load((ROOT / "roles" / "kubernetes" / "defaults" / "main.yml").read_text())
    play = [
        {
            "hosts": "all",
            "gather_facts": False,
            "vars": {**defaults, **extra},
            "tasks": [{"ansible.builtin.import_tasks": str(VALIDATE)}],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    return subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "ansible-playbook"),
            "-i",
            str(tmp_path / "inventory.yml"),
            str(tmp_path / "play.yml"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": f"{ROOT / '.venv' / 'bin'}:/usr/bin:/bin",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
            "HOME": str(tmp_path),
        },
    )


def test_a_good_inventory_passes(tmp_path: Path) -> None:
    result = run_validate(tmp_path, ["cp1"])
    assert result.returncode == 0, result.stdout[-2000:]


@pytest.mark.parametrize(
    ("control_plane", "extra", "message"),
    [
        ([], {}, "has no host in the group kube_control_plane"),
        (["cp1", "cp2"], {}, "set kubernetes_control_plane_endpoint"),
        (["cp1"], {"kubernetes_version": "1.35"}, "must be a full release such as 1.35.0 (got 1.35)"),
    ],
)
def test_each_bad_condition_fails_once_with_its_own_fix(
    tmp_path: Path, control_plane: list[str], extra: dict[str, str], message: str
) -> None:
    result = run_validate(tmp_path, control_plane, **extra)
    assert result.returncode != 0
    assert message in " ".join(result.stdout.split())
    assert result.stdout.count("FAILED!") == 1, "an inventory-wide check fails once, not once per host"
