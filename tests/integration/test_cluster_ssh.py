"""The ansible executor over SSH, for real: a molecule-style test host (a network namespace with its own
address and sshd, made by molecule/shared/netns_hosts.py), reached by ansible-runner with the host's key
checked. A step of CPU, memory and network actions changes a real cgroup and the host's own interface
(the module runs inside the namespace's network stack, as on a node); the host's sshd then goes away
mid-run, and the step on it and on this machine is rolled back and audited. The host is destroyed after.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ansible_collections.firm.core.plugins.module_utils import cgroup
from firm.actuate.executor import Action
from firm.cluster.ansible import AnsibleExecutor, AnsibleTarget

REPO = Path(__file__).resolve().parents[2]
HOSTS_SCRIPT = REPO / "molecule" / "shared" / "netns_hosts.py"
INDEX = 24
"""The test host's /30 in netns_hosts' range (the molecule scenarios use 1 to 5)."""
MI = 2**20


def _netns_hosts() -> ModuleType:
    spec = importlib.util.spec_from_file_location("firm_netns_hosts", HOSTS_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ssh_host(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A test host named ``firm-ssh`` and an inventory that reaches it over SSH (host key checked)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    for tool in ("/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen", "/usr/bin/python3"):
        if not os.path.exists(tool):
            pytest.skip(f"{tool} is not installed (openssh-server, openssh-client, python3)")
    hosts = _netns_hosts()
    # sshd's StrictModes refuses keys below a world-writable directory such as /tmp
    state = Path(tempfile.mkdtemp(prefix="firm-ssh-test-", dir=Path.home()))
    try:
        made = hosts.create(state, "firm-ssh", INDEX)["instance_config"]
        entry = hosts.load_state(state)["firm-ssh"]
        host_key = (state / "ssh_host_ed25519_key.pub").read_text().split()
        known = tmp_path / "known_hosts"
        known.write_text(f"{made['address']} {host_key[0]} {host_key[1]}\n")
        inventory = tmp_path / "hosts.yml"
        inventory.write_text(
            json.dumps(
                {
                    "all": {
                        "hosts": {
                            "localhost": {
                                "ansible_connection": "local",
                                "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                            },
                            "ssh-node": {
                                "ansible_host": made["address"],
                                "ansible_user": made["user"],
                                "ansible_ssh_private_key_file": made["identity_file"],
                                "ansible_python_interpreter": "/usr/bin/python3",
                                "ansible_ssh_common_args": f"-o UserKnownHostsFile={known} "
                                "-o StrictHostKeyChecking=yes -o ConnectTimeout=5 -o BatchMode=yes",
                            },
                        }
                    }
                }
            )
        )
        yield {"inventory": str(inventory), "state": state, **made, **entry}
    finally:
        hosts.destroy(state)
        shutil.rmtree(state, ignore_errors=True)


def _tc(netns: str, interface: str) -> str:
    return subprocess.run(
        ["tc", "-n", netns, "qdisc", "show", "dev", interface, "root"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _host_goes_away(netns: str) -> None:
    """Every process of the host ends: its sshd and the sessions ansible keeps open (ControlPersist)."""
    _netns_hosts().kill_namespace_processes(netns)


def test_a_step_over_ssh_and_a_host_that_goes_away(
    layout: cgroup.Layout, group_path: str, ssh_host: dict[str, Any], tmp_path: Path
) -> None:
    if "memory" not in layout.hierarchies:
        pytest.skip("this machine has no memory controller")
    group = cgroup.group_at(layout, group_path)
    cgroup.create_group(group)
    audit = tmp_path / "audit.jsonl"
    executor = AnsibleExecutor(
        [
            AnsibleTarget(
                "web-0", "web", "ssh-node", cgroup=group_path, interface=ssh_host["ns_if"], memory=True
            ),
            AnsibleTarget("local-0", "local", "localhost", cgroup=group_path),
        ],
        ssh_host["inventory"],
        audit_path=str(audit),
    )
    baseline = executor.snapshot(["web-0"])
    assert baseline.limits["web-0"]["network"] == math.inf
    memory_before = cgroup.read_memory_max(group)

    done = executor.apply(
        [
            Action("web-0", "cpu", 0.5),
            Action("web-0", "memory", 64 * MI),
            Action("web-0", "network", 10e6),
        ],
        dry_run=False,
    )
    assert done.ok, done.error
    # the values on the host: its cgroup (the host shares this machine's) and its own interface
    assert cgroup.read_cpu_max(group) == (50_000, 100_000)
    assert cgroup.read_memory_max(group) == 64 * MI
    shaping = _tc(ssh_host["netns"], ssh_host["ns_if"])
    assert "tbf" in shaping and "10Mbit" in shaping
    assert [a.before for a in done.applied] == [
        math.inf,
        math.inf if memory_before < 0 else float(memory_before),
        math.inf,
    ]
    assert {(r["kind"], r["host"]) for r in executor.audit} >= {
        ("snapshot", "ssh-node"),
        ("apply", "ssh-node"),
    }

    # the host's sshd goes away: the step on it and on this machine is rolled back, and audited
    _host_goes_away(ssh_host["netns"])
    failed = executor.apply([Action("local-0", "cpu", 0.3), Action("web-0", "cpu", 0.7)], dry_run=False)
    assert not failed.ok and failed.rolled_back and "unreachable" in (failed.error or "")
    assert cgroup.read_cpu_max(group) == (50_000, 100_000)  # localhost's 0.3 was undone
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert any(
        r["host"] == "ssh-node" and any(t["status"] == "unreachable" for t in r["tasks"]) for r in records
    )
    assert any(r["kind"] == "rollback" and r["host"] == "localhost" for r in records)
