"""Two network namespaces joined by a veth pair, for tests that send real traffic.

``veth_pair()`` creates namespaces ``firm-<tag>-<pid>-<n>-a`` / ``-b`` and one veth between them with
an address from 192.0.2.0/24 (TEST-NET-1) on each end. The addresses live only inside the two
namespaces, which have no other interface but ``lo``, so no traffic ever leaves them. On exit (also
when the test fails) every process still running in either namespace is killed and both
namespaces are deleted, which deletes the veth pair with them.

``iperf3_throughput()`` measures TCP throughput from side a to side b with a short, time-bounded
iperf3 run: the client sends, so the data leaves through side a's egress.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

_counter = itertools.count()
IPERF3_PORT = 5201


@dataclass(frozen=True)
class NetPair:
    """Namespace, interface and address of each side of the pair."""

    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    addr_a: str
    addr_b: str
    prefix_len: int


def _run(argv: Sequence[str], timeout: float = 15.0) -> str:
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(os.environ, LC_ALL="C"),
    )
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise RuntimeError(f"{' '.join(argv)} failed with rc={proc.returncode}: {output}")
    return proc.stdout


def _kill_namespace_processes(namespace: str) -> None:
    """Kill what still runs in ``namespace`` (only this test's processes can be in it)."""
    with suppress(RuntimeError, subprocess.TimeoutExpired):
        for pid in _run(["ip", "netns", "pids", namespace]).split():
            with suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


@contextmanager
def veth_pair(
    tag: str = "np", addr_a: str = "192.0.2.1", addr_b: str = "192.0.2.2", prefix_len: int = 24
) -> Iterator[NetPair]:
    """Create the two namespaces and the veth; remove everything afterwards."""
    n = next(_counter)
    pid = os.getpid()
    pair = NetPair(
        ns_a=f"firm-{tag}-{pid}-{n}-a",
        ns_b=f"firm-{tag}-{pid}-{n}-b",
        if_a=f"fa{pid}x{n}"[:15],
        if_b=f"fb{pid}x{n}"[:15],
        addr_a=addr_a,
        addr_b=addr_b,
        prefix_len=prefix_len,
    )
    created: list[str] = []
    try:
        for namespace in (pair.ns_a, pair.ns_b):
            _run(["ip", "netns", "add", namespace])
            created.append(namespace)
        # Each end is created directly inside its namespace: nothing appears in the host's.
        _run(
            [
                "ip",
                "link",
                "add",
                pair.if_a,
                "netns",
                pair.ns_a,
                "type",
                "veth",
                "peer",
                "name",
                pair.if_b,
                "netns",
                pair.ns_b,
            ]
        )
        for namespace, interface, address in ((pair.ns_a, pair.if_a, addr_a), (pair.ns_b, pair.if_b, addr_b)):
            _run(["ip", "-n", namespace, "addr", "add", f"{address}/{prefix_len}", "dev", interface])
            _run(["ip", "-n", namespace, "link", "set", "dev", interface, "up"])
            _run(["ip", "-n", namespace, "link", "set", "dev", "lo", "up"])
        yield pair
    finally:
        for namespace in created:
            _kill_namespace_processes(namespace)
        for namespace in created:
            with suppress(RuntimeError, subprocess.TimeoutExpired):
                _run(["ip", "netns", "del", namespace])


def _wait_listening(namespace: str, port: int, server: subprocess.Popen[str], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"iperf3 server exited early: {server.communicate()[1]}")
        listening = _run(["ip", "netns", "exec", namespace, "ss", "-Hltn", f"sport = :{port}"])
        if listening.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"iperf3 server in {namespace} did not listen on port {port} within {timeout} s")


@contextmanager
def iperf3_server(pair: NetPair, port: int = IPERF3_PORT) -> Iterator[subprocess.Popen[str]]:
    """An iperf3 server on side b serving one test; killed and reaped afterwards."""
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            pair.ns_b,
            "iperf3",
            "--server",
            "--one-off",
            "--bind",
            pair.addr_b,
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_listening(pair.ns_b, port, server)
        yield server
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate(timeout=10)


def iperf3_throughput(pair: NetPair, seconds: int = 2, port: int = IPERF3_PORT) -> float:
    """Bits per second of TCP payload iperf3 delivered from side a to side b in ``seconds``.

    This is the receiver's figure, which a shaper on side a bounds. No warm-up is omitted: with
    ``--omit`` iperf3 3.12 sometimes counts part of the omitted interval in the receiver's total.
    """
    with iperf3_server(pair, port):
        out = _run(
            [
                "ip",
                "netns",
                "exec",
                pair.ns_a,
                "iperf3",
                "--client",
                pair.addr_b,
                "--port",
                str(port),
                "--time",
                str(seconds),
                "--connect-timeout",
                "3000",
                "--json",
            ],
            timeout=seconds + 20,
        )
    report = json.loads(out)
    if "error" in report:
        raise RuntimeError(f"iperf3 failed: {report['error']}")
    return float(report["end"]["sum_received"]["bits_per_second"])
