"""The roles' molecule scenarios, each run as `molecule test -s NAME`.

Each scenario creates its test hosts (network namespaces with their own address and sshd, see
molecule/shared), converges its role, converges it again and requires no change (idempotence),
verifies and destroys the hosts. Together they take about four minutes on a 2-core machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# "cluster" provisions a real cluster; it runs only when given one (scripts/molecule-cluster.sh).
SCENARIOS = sorted(
    path.parent.name for path in (ROOT / "molecule").glob("*/molecule.yml") if path.parent.name != "cluster"
)
MOLECULE = ROOT / ".venv" / "bin" / "molecule"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if not MOLECULE.exists():
        return "molecule is not installed in .venv (make venv)"
    for tool in ("ip", "nsenter", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/usr/sbin/sshd").exists():
        return "sshd is not installed (apt-get install openssh-server)"
    return None


def _test_hosts() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("firm-mol-")]


def test_scenarios_exist() -> None:
    assert set(SCENARIOS) >= {"preflight", "redis", "anomaly_tools", "firm_node"}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario: str) -> None:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(
        [str(MOLECULE), "test", "-s", scenario],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
        env=dict(
            os.environ,
            PATH=f"{MOLECULE.parent}:{os.environ.get('PATH', '')}",
            ANSIBLE_NOCOLOR="1",
            NO_COLOR="1",
            PY_COLORS="0",
        ),
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    platforms = yaml.safe_load((ROOT / "molecule" / scenario / "molecule.yml").read_text())["platforms"]
    left = set(_test_hosts()) & {f"firm-mol-{platform['name']}" for platform in platforms}
    assert not left, f"destroy left {left} behind"


@pytest.mark.timeout(7200)
def test_cluster_end_to_end() -> None:
    """Opt-in: provision a real cluster with site.yml, twice, and verify it (molecule/cluster)."""
    inventory, kubeconfig = os.environ.get("FIRM_E2E_INVENTORY"), os.environ.get("KUBECONFIG")
    if not inventory or not kubeconfig:
        pytest.skip("opt-in: set FIRM_E2E_INVENTORY (an inventory of a real cluster) and KUBECONFIG")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "molecule-cluster.sh"), inventory, kubeconfig],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=7000,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
