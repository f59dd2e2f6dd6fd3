"""The testbed's network: a bridge in the host namespace, a namespace and a veth per instance.

Every command is an argument list. The addresses come from a documentation range and exist only
on this bridge and in these namespaces, so no traffic leaves the machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.testbed.config import Instance, TestbedConfig


class NetworkError(FirmError):
    """An ip command failed; the message carries its output."""


def run(argv: Sequence[str], check: bool = True) -> str:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=30, check=False, env=dict(os.environ, LC_ALL="C")
    )
    if check and proc.returncode != 0:
        raise NetworkError(
            f"{' '.join(argv)} failed (rc {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}",
            fix="run as root with iproute2 installed; `firm testbed down` removes a half-built network",
        )
    return proc.stdout


def create_bridge(config: TestbedConfig) -> None:
    prefix = config.network.prefixlen
    run(["ip", "link", "add", config.bridge, "type", "bridge"])
    run(["ip", "addr", "add", f"{config.host_address()}/{prefix}", "dev", config.bridge])
    run(["ip", "link", "set", config.bridge, "up"])


def attach(config: TestbedConfig, instance: Instance) -> None:
    """The instance's namespace, with ``eth0`` on the bridge through a veth whose host end is named."""
    namespace = instance.namespace
    run(["ip", "netns", "add", namespace])
    run(
        [
            "ip",
            "link",
            "add",
            instance.host_interface,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            namespace,
        ]
    )
    run(["ip", "link", "set", instance.host_interface, "master", config.bridge, "up"])
    run(
        [
            "ip",
            "-n",
            namespace,
            "addr",
            "add",
            f"{instance.address}/{config.network.prefixlen}",
            "dev",
            "eth0",
        ]
    )
    run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
    run(["ip", "-n", namespace, "link", "set", "lo", "up"])


def detach(instance: Instance) -> list[str]:
    """Delete the instance's namespace (its veth goes with it), killing what still runs in it; returns
    what went (nothing when it was not there)."""
    if instance.namespace not in namespaces(instance.namespace):
        return []
    for pid in run(["ip", "netns", "pids", instance.namespace], check=False).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    run(["ip", "netns", "del", instance.namespace])
    return [instance.namespace]


def namespaces(prefix: str) -> list[str]:
    """This machine's network namespaces whose names start with ``prefix``."""
    names = []
    for line in run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(prefix):
            names.append(name)
    return names


def remove(config: TestbedConfig) -> list[str]:
    """Delete the testbed's namespaces (their veths go with them) and the bridge; returns what went."""
    removed = []
    for namespace in namespaces(config.namespace_prefix):
        for pid in run(["ip", "netns", "pids", namespace], check=False).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        run(["ip", "netns", "del", namespace], check=False)
        removed.append(namespace)
    if os.path.exists(f"/sys/class/net/{config.bridge}"):
        run(["ip", "link", "del", config.bridge])
        removed.append(config.bridge)
    # A namespace that something else still holds (an open handle, a mount in another mount
    # namespace) outlives `ip netns del`, and so does its veth: remove the host ends by their names.
    for link in host_links(config.veth_prefix):
        run(["ip", "link", "del", link], check=False)
        removed.append(link)
    return removed


def host_links(prefix: str) -> list[str]:
    """Host-side interfaces named ``<prefix><number>`` (the testbed's veth ends)."""
    try:
        names = os.listdir("/sys/class/net")
    except OSError:
        return []
    return sorted(n for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit())
