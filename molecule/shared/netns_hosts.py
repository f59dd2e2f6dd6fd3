#!/usr/bin/env python3
# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""Molecule test hosts as network namespaces, each with its own address and sshd.

``create`` makes, for one platform: a network namespace ``firm-mol-<name>``, a veth pair with one
end on this machine (``fmh<index>``) and one in the namespace (``fmn<index>``), a /30 out of
192.0.2.128/25 (TEST-NET-1, never routed) for the pair, and an sshd listening on port 22 of the
namespace's address only. The keys (a host key and a client key) are throwaway files generated in
the scenario's ephemeral directory. It prints, as JSON, whether anything changed and the instance
config entry molecule wants (instance, address, user, port, identity_file).

``destroy`` kills every process that still runs in the recorded namespaces (sshd, and whatever a
role started there, e.g. redis-server), deletes the veth pairs and the namespaces, and removes the
keys and the state file.

sshd is started with ``nsenter --net`` rather than ``ip netns exec``: only the network stack
changes. ``ip netns exec`` also remounts /sys, which hides the cgroup hierarchies under
/sys/fs/cgroup from everything started inside; a test host must see this machine's cgroups.

The namespaces share this machine's filesystem, process table, packages and kernel: they are the
same machine with a different network stack.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SUBNET = ipaddress.ip_network("192.0.2.128/25")
MAX_INDEX = SUBNET.num_addresses // 4 - 1
STATE_FILE = "netns_hosts.json"
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


class HostError(Exception):
    """A step of creating or destroying a test host failed; the message says which and why."""


def run(argv: Sequence[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(os.environ, LC_ALL="C"),
    )
    if check and proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise HostError(f"{' '.join(argv)} failed with rc={proc.returncode}: {output}")
    return proc


def addresses(index: int) -> tuple[str, str]:
    """The host-side and namespace-side address of test host ``index`` (a /30 each)."""
    if not 0 <= index <= MAX_INDEX:
        raise HostError(f"netns_index {index} is outside 0..{MAX_INDEX}")
    base = int(SUBNET.network_address) + 4 * index
    return str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2))


def names(name: str, index: int) -> dict[str, str]:
    return {"netns": f"firm-mol-{name}", "host_if": f"fmh{index}", "ns_if": f"fmn{index}"}


def load_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / STATE_FILE
    if not path.exists():
        return {}
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def save_state(state_dir: Path, state: dict[str, Any]) -> None:
    path = state_dir / STATE_FILE
    if not state:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def ensure_key(path: Path, comment: str) -> bool:
    if path.exists():
        return False
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return True


def netns_exists(netns: str) -> bool:
    return Path("/run/netns", netns).exists()


def link_exists(interface: str, netns: str | None = None) -> bool:
    argv = ["ip", "-n", netns, "link", "show", interface] if netns else ["ip", "link", "show", interface]
    return run(argv, check=False).returncode == 0


def sshd_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "sshd"
    except OSError:
        return False


def wait_for_ssh(address: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, 22), timeout=1.0) as conn:
                if conn.recv(4).startswith(b"SSH-"):
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise HostError(f"sshd did not answer on {address}:22 within {timeout} s: {last}")


def sshd_config(state_dir: Path, name: str, address: str) -> Path:
    config = state_dir / f"sshd_{name}.conf"
    config.write_text(
        "\n".join(
            [
                "# Throwaway sshd of a molecule test host (a network namespace); removed by destroy.",
                f"ListenAddress {address}",
                "Port 22",
                f"HostKey {state_dir / 'ssh_host_ed25519_key'}",
                f"PidFile {state_dir / f'sshd_{name}.pid'}",
                f"AuthorizedKeysFile {state_dir / 'id_ed25519.pub'}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "X11Forwarding no",
                "AllowTcpForwarding no",
                "PrintMotd no",
                "MaxSessions 50",
                "MaxStartups 50:30:100",
                f"Subsystem sftp {SFTP_SERVER}",
                "",
            ]
        )
    )
    config.chmod(0o600)
    return config


def create(state_dir: Path, name: str, index: int) -> dict[str, Any]:
    """Create (or find already created) test host ``name``; return molecule's instance config entry."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(state_dir)
    for other, entry in state.items():
        if other != name and entry["index"] == index:
            raise HostError(f"netns_index {index} is already used by test host {other}")
    host_address, ns_address = addresses(index)
    ids = names(name, index)
    changed = ensure_key(state_dir / "ssh_host_ed25519_key", "firm-molecule-host")
    changed = ensure_key(state_dir / "id_ed25519", "firm-molecule-client") or changed
    state[name] = {"index": index, "address": ns_address, "host_address": host_address, **ids}
    save_state(state_dir, state)  # recorded first, so destroy finds a half-made host too

    if not netns_exists(ids["netns"]):
        run(["ip", "netns", "add", ids["netns"]])
        changed = True
    if not link_exists(ids["host_if"]):
        run(
            [
                "ip",
                "link",
                "add",
                ids["host_if"],
                "type",
                "veth",
                "peer",
                "name",
                ids["ns_if"],
                "netns",
                ids["netns"],
            ]
        )
        run(["ip", "addr", "add", f"{host_address}/30", "dev", ids["host_if"]])
        run(["ip", "-n", ids["netns"], "addr", "add", f"{ns_address}/30", "dev", ids["ns_if"]])
        run(["ip", "link", "set", "dev", ids["host_if"], "up"])
        run(["ip", "-n", ids["netns"], "link", "set", "dev", ids["ns_if"], "up"])
        run(["ip", "-n", ids["netns"], "link", "set", "dev", "lo", "up"])
        changed = True

    pidfile = state_dir / f"sshd_{name}.pid"
    if not sshd_alive(pidfile):
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        config = sshd_config(state_dir, name, ns_address)
        run(
            [
                "nsenter",
                f"--net=/run/netns/{ids['netns']}",
                SSHD,
                "-f",
                str(config),
                "-E",
                str(state_dir / f"sshd_{name}.log"),
            ]
        )
        changed = True
    wait_for_ssh(ns_address)
    return {
        "changed": changed,
        "instance_config": {
            "instance": name,
            "address": ns_address,
            "user": "root",
            "port": 22,
            "identity_file": str(state_dir / "id_ed25519"),
        },
    }


def namespace_pids(netns: str) -> list[int]:
    proc = run(["ip", "netns", "pids", netns], check=False)
    return [int(pid) for pid in proc.stdout.split()] if proc.returncode == 0 else []


def kill_namespace_processes(netns: str, grace: float = 3.0) -> None:
    """SIGTERM what runs in ``netns`` (only what a test put there), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = namespace_pids(netns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and namespace_pids(netns):
            time.sleep(0.05)


def destroy(state_dir: Path) -> dict[str, Any]:
    state = load_state(state_dir)
    removed = []
    errors = []
    for name, entry in sorted(state.items()):
        try:
            if netns_exists(entry["netns"]):
                kill_namespace_processes(entry["netns"])
            if link_exists(entry["host_if"]):
                run(["ip", "link", "del", entry["host_if"]])  # deletes its peer in the namespace too
            if netns_exists(entry["netns"]):
                run(["ip", "netns", "del", entry["netns"]])
        except HostError as exc:
            errors.append(str(exc))
            continue
        for suffix in (".conf", ".pid", ".log"):
            (state_dir / f"sshd_{name}{suffix}").unlink(missing_ok=True)
        removed.append(name)
    remaining = {name: entry for name, entry in state.items() if name not in removed}
    save_state(state_dir, remaining)
    if not remaining:
        for key in ("ssh_host_ed25519_key", "id_ed25519"):
            (state_dir / key).unlink(missing_ok=True)
            (state_dir / f"{key}.pub").unlink(missing_ok=True)
    if errors:
        raise HostError("; ".join(errors))
    return {"changed": bool(removed), "removed": removed}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("create", help="create one test host and print its instance config entry")
    make.add_argument("--state-dir", type=Path, required=True, help="the scenario's ephemeral directory")
    make.add_argument("--name", required=True, help="the platform's name")
    make.add_argument("--index", type=int, required=True, help=f"0..{MAX_INDEX}, unique per test host")
    remove = sub.add_parser("destroy", help="remove every test host recorded in the state directory")
    remove.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print(json.dumps({"failed": True, "msg": "network namespaces need root: run molecule as root"}))
        return 1
    try:
        result = (
            create(args.state_dir, args.name, args.index)
            if args.command == "create"
            else destroy(args.state_dir)
        )
    except (HostError, OSError, subprocess.TimeoutExpired) as exc:
        print(json.dumps({"failed": True, "msg": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
