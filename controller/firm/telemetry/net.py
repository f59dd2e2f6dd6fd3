"""Network byte counters of an instance, as the instance sees them (rx = received by it).

- Host-side veth (no namespace): ``/sys/class/net/IF/statistics/{rx,tx}_bytes``, swapped, because
  what the host side receives is what the instance sent.
- A network namespace: ``/proc/PID/net/dev`` of a process that lives in that namespace (found in
  the instance's cgroup and checked against ``/run/netns/NS`` by inode; a few microseconds), or,
  when no such process is known, ``ip -n NS -j -s link show`` (a subprocess, milliseconds).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)


class NetUnavailableError(Exception):
    """The interface or namespace does not exist (now)."""


def read_host_interface(interface: str, sysfs_root: str = "/sys") -> tuple[int, int]:
    """(rx, tx) bytes of the *instance* behind the host-side veth ``interface``."""
    base = os.path.join(sysfs_root, "class", "net", interface, "statistics")
    try:
        with (
            open(os.path.join(base, "rx_bytes"), "rb") as rx,
            open(os.path.join(base, "tx_bytes"), "rb") as tx,
        ):
            host_rx, host_tx = int(rx.read()), int(tx.read())
    except (FileNotFoundError, ValueError) as exc:
        raise NetUnavailableError(f"interface {interface} does not exist") from exc
    return host_tx, host_rx


def parse_proc_net_dev(text: str, interface: str | None) -> tuple[int, int]:
    """(rx, tx) bytes of ``interface`` (or of every interface but ``lo``) from ``/proc/net/dev``."""
    rx = tx = 0
    found = False
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        if (interface is None and name != "lo") or name == interface:
            values = rest.split()
            rx += int(values[0])
            tx += int(values[8])
            found = True
    if interface is not None and not found:
        raise NetUnavailableError(f"interface {interface} is not in the namespace")
    return rx, tx


def parse_ip_link_json(text: str, interface: str | None) -> tuple[int, int]:
    """(rx, tx) bytes from ``ip -j -s link show``."""
    rx = tx = 0
    found = False
    links: list[dict[str, Any]] = json.loads(text or "[]")
    for link in links:
        name = link.get("ifname")
        if (interface is None and name != "lo") or name == interface:
            stats = link.get("stats64") or link.get("stats") or {}
            rx += int(stats.get("rx", {}).get("bytes", 0))
            tx += int(stats.get("tx", {}).get("bytes", 0))
            found = True
    if interface is not None and not found:
        raise NetUnavailableError(f"interface {interface} is not in the namespace")
    return rx, tx


class NamespaceReader:
    """Reads one namespace's counters, through a process in it when one is known."""

    def __init__(
        self,
        namespace: str,
        interface: str | None,
        *,
        netns_dir: str = "/run/netns",
        proc_root: str = "/proc",
        ip_command: str = "ip",
    ) -> None:
        self.namespace = namespace
        self.interface = interface
        self.netns_dir = netns_dir
        self.proc_root = proc_root
        self.ip_command = ip_command
        self._pid: int | None = None
        self.subprocess_reads = 0

    def read(self, candidate_pids: Callable[[], Iterable[int]] = tuple) -> tuple[int, int]:
        """(rx, tx) bytes inside the namespace; ``candidate_pids()`` lists processes that may live in it
        (e.g. the instance's cgroup's), asked only when no process in it is known yet."""
        try:
            inode = os.stat(os.path.join(self.netns_dir, self.namespace)).st_ino
        except FileNotFoundError as exc:
            raise NetUnavailableError(f"network namespace {self.namespace} does not exist") from exc
        if self._pid is not None and not self._in_namespace(self._pid, inode):
            self._pid = None
        if self._pid is None:
            self._pid = next((p for p in candidate_pids() if self._in_namespace(p, inode)), None)
        if self._pid is not None:
            try:
                with open(os.path.join(self.proc_root, str(self._pid), "net", "dev")) as handle:
                    text = handle.read()
            except OSError:
                self._pid = None
            else:
                if self._in_namespace(self._pid, inode):  # not reused by another process meanwhile
                    return parse_proc_net_dev(text, self.interface)
                self._pid = None
        return self._read_with_ip()

    def _in_namespace(self, pid: int, inode: int) -> bool:
        try:
            return os.stat(os.path.join(self.proc_root, str(pid), "ns", "net")).st_ino == inode
        except OSError:
            return False

    def _read_with_ip(self) -> tuple[int, int]:
        argv = [self.ip_command, "-n", self.namespace, "-j", "-s", "link", "show"]
        if self.interface is not None:
            argv += ["dev", self.interface]
        self.subprocess_reads += 1
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=5, check=False, env=dict(os.environ, LC_ALL="C")
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NetUnavailableError(f"{' '.join(argv)} failed: {exc}") from exc
        if proc.returncode != 0:
            raise NetUnavailableError(f"{' '.join(argv)} failed: {proc.stderr.strip()[:200]}")
        return parse_ip_link_json(proc.stdout, self.interface)
