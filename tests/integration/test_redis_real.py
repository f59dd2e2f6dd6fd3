"""firm's Redis for real: password required, loopback only, and records that survive a restart.

Every test here runs a redis-server of its own on a free loopback port (never the shared one that
`make services` started), with a password file in the test's temporary directory that the clients
find through ``FIRM_REDIS_PASSWORD_FILE``, exactly as they find /etc/firm/redis.password. The
restart tests run it with an append-only file fsynced at every write, so that what Redis had before
it was killed is there after, and check that nothing written while it was down is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ansible_collections.firm.core.plugins.module_utils import campaign, redis_auth
from firm.load import ConstantRate, LoadSpec, RedisOutput, run_load
from firm.loop.audit import AuditLog
from firm.telemetry.model import Sample
from firm.telemetry.redis_store import RedisTelemetrySink, RedisTelemetrySource
from tests.helpers.measure import poll
from tests.helpers.modules import REPO_ROOT
from tests.unit.load.frontend import FrontendOptions, running_frontend

START_REDIS = REPO_ROOT / "roles" / "testbed" / "files" / "start-redis.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed (make deps installs it)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def raw_reply(port: int, command: bytes) -> bytes:
    """What Redis answers a client that sends ``command`` without authenticating (the first line)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(command)
        return conn.recv(256).split(b"\r\n")[0]


def stream(client: redis.Redis, key: str) -> list[dict[str, str]]:
    """The fields of every entry of a stream, oldest first, as text."""
    return [{str(k): str(v) for k, v in (fields or {}).items()} for _, fields in client.xrange(key) or []]


def answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class PrivateRedis:
    """A password-protected redis-server on a free loopback port that a test kills and restarts."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.password_file = directory / "redis.password"
        self.password = redis_auth.ensure_password(str(self.password_file))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "-",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "yes",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(f'requirepass "{self.password}"\n'.encode())
        self.process.stdin.close()
        client = redis_auth.connect(self.url, socket_timeout=2)
        assert poll(lambda: answers(client), bool, timeout_s=15).met, "the test's Redis did not start"
        client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no shutdown, no goodbye to clients."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis_auth.connect(self.url, decode_responses=True, socket_timeout=5)


@pytest.fixture
def private_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateRedis]:
    monkeypatch.setenv(redis_auth.PASSWORD_FILE_ENV, str(tmp_path / "redis.password"))
    monkeypatch.delenv(redis_auth.PASSWORD_ENV, raising=False)
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


# The password -------------------------------------------------------------------------------------


def run_start_redis(
    tmp_path: Path, port: int, pass_fds: tuple[int, ...] = ()
) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        FIRM_REDIS_PORT=str(port),
        FIRM_REDIS_PASSWORD_FILE=str(tmp_path / "pw" / "redis.password"),
        TMPDIR=str(tmp_path),
    )
    env.pop("REDISCLI_AUTH", None)
    return subprocess.run(
        ["bash", str(START_REDIS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        pass_fds=pass_fds,
    )


def shut_down(port: int, password: str) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=5)
    with contextlib.suppress(redis.ConnectionError):  # the server closes the connection as it exits
        client.shutdown(nosave=True)
    assert poll(lambda: answers(client), lambda up: not up, timeout_s=10).met, f"Redis on {port} did not stop"


def loopback_listeners(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} write them) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_start_redis_generates_a_private_password_that_every_client_needs(tmp_path: Path) -> None:
    port = free_port()
    started = run_start_redis(tmp_path, port)
    assert started.returncode == 0, started.stderr
    password_file = tmp_path / "pw" / "redis.password"
    try:
        assert "generated a password" in started.stdout and "started on 127.0.0.1" in started.stdout
        assert password_file.stat().st_mode & 0o777 == 0o600
        password = password_file.read_text().strip()
        assert len(password) == 48

        assert raw_reply(port, b"PING\r\n").startswith(b"-NOAUTH")  # an unauthenticated client is refused
        assert raw_reply(port, b"AUTH not-the-password\r\n").startswith(b"-WRONGPASS")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port, socket_timeout=5).set("firm:test", "1")
        client = redis.Redis(
            host="127.0.0.1", port=port, password=password, socket_timeout=5, decode_responses=True
        )
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
        assert loopback_listeners(port) == {"0100007F"}  # 127.0.0.1 only, no wildcard, no IPv6
        commands = [
            Path("/proc", p, "cmdline").read_bytes()
            for p in os.listdir("/proc")
            if p.isdigit() and Path("/proc", p, "cmdline").exists()
        ]
        assert not any(password.encode() in c for c in commands), "the password shows on a command line"

        again = run_start_redis(tmp_path, port)  # idempotent: the same server, the same password
        assert again.returncode == 0 and "answering on" in again.stdout
        assert password_file.read_text().strip() == password
    finally:
        shut_down(port, password_file.read_text().strip())


def test_the_started_redis_keeps_nothing_its_starter_had_open(tmp_path: Path) -> None:
    """The server outlives start-redis.sh: a file its caller had open (the lock of `flock -w W LOCK
    make services`) must not stay open in it, or the lock is held as long as Redis runs."""
    port = free_port()
    lock = tmp_path / "held.lock"
    held = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        started = run_start_redis(tmp_path, port, pass_fds=(held,))
    finally:
        os.close(held)
    assert started.returncode == 0, started.stderr
    password = (tmp_path / "pw" / "redis.password").read_text().strip()
    try:
        pid = int((tmp_path / f"firm-redis-{port}.pid").read_text())
        fd_dir = Path("/proc", str(pid), "fd")
        targets = {os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir) if (fd_dir / fd).is_symlink()}
        assert str(lock) not in targets, sorted(targets)
    finally:
        shut_down(port, password)


def test_start_redis_protects_a_redis_that_ran_without_a_password(tmp_path: Path) -> None:
    port = free_port()
    old = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        open_client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        assert poll(lambda: answers(open_client), bool, timeout_s=15).met
        open_client.set("firm:kept", "1")
        started = run_start_redis(tmp_path, port)
        assert started.returncode == 0, started.stderr
        assert "requires the one in" in started.stdout
        assert raw_reply(port, b"PING\r\n").startswith(b"-NOAUTH")
        password = (tmp_path / "pw" / "redis.password").read_text().strip()
        assert redis.Redis(host="127.0.0.1", port=port, password=password).get("firm:kept") == b"1"
    finally:
        old.kill()
        old.wait(timeout=10)


def test_firm_clients_find_the_password_without_being_told(private_redis: PrivateRedis) -> None:
    assert raw_reply(private_redis.port, b"PING\r\n").startswith(b"-NOAUTH")
    assert redis_auth.connect(private_redis.url).ping()  # the URL carries no password
    sink = RedisTelemetrySink(private_redis.url, prefix="firm:test-auth")
    sink.write([sample("a", 1.0)])
    assert RedisTelemetrySource(private_redis.url, prefix="firm:test-auth").latest("a") is not None
    # Another host never gets this machine's password.
    assert redis_auth.password_for(f"redis://192.0.2.1:{private_redis.port}/0") is None


# Records survive a restart ------------------------------------------------------------------------


def sample(instance: str, timestamp: float) -> Sample:
    return Sample(instance, "svc", timestamp, 1.0, 0.5, 0.0, 0.0, 1 << 20, 0.0, 0.0, 0.0, 0.0, 3)


def test_request_records_written_while_redis_restarts_are_resent(private_redis: PrivateRedis) -> None:
    prefix = f"firm:test-restart-{uuid.uuid4().hex[:8]}"
    output = RedisOutput(
        private_redis.url, requests_key=f"{prefix}:requests", latency_key=f"{prefix}:latency"
    )
    result: dict[str, object] = {}
    with running_frontend(FrontendOptions(delay_s=0.001)) as frontend:
        spec = LoadSpec(
            f"http://127.0.0.1:{frontend.port}", ConstantRate(100), duration_s=8, seed=3, window_s=0.5
        )
        runner = threading.Thread(target=lambda: result.update(summary=run_load(spec, redis=output)))
        runner.start()
        try:
            assert poll(lambda: len(frontend.received), lambda n: n >= 100, timeout_s=30).met, (
                "the load never started"
            )
            private_redis.kill()
            at_kill = len(frontend.received)
            # Down for at least 2 s of load (200 requests at 100/s: four windows) before it comes back.
            down = poll(lambda: len(frontend.received), lambda n: n >= at_kill + 200, timeout_s=30)
            assert down.met and runner.is_alive(), "the run ended while Redis was down; nothing to resend"
            private_redis.start()
        finally:
            runner.join(timeout=60)
    summary = result["summary"]
    sent = {r.trace_id for r in frontend.received}
    stored = {fields["trace_id"] for fields in stream(private_redis.client(), output.requests_key)}
    print(
        f"sent {summary.overall.sent}, written {summary.records_written}, "  # type: ignore[attr-defined]
        f"dropped {summary.records_dropped}, received {len(sent)}, stored {len(stored)}"  # type: ignore[attr-defined]
    )
    assert summary.records_dropped == 0  # type: ignore[attr-defined]
    assert stored == sent  # every request's record, those sent while Redis was down included
    assert summary.records_written >= len(sent)  # type: ignore[attr-defined]


def test_telemetry_audit_and_campaign_records_wait_for_a_restarted_redis(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    sink = RedisTelemetrySink(private_redis.url, prefix="firm:test-telemetry")
    audit = AuditLog(
        redis_auth.connect(private_redis.url, socket_timeout=2, socket_connect_timeout=2),
        key="firm:test-audit",
    )
    sink.write([sample("a", 1.0), sample("b", 1.0)])
    assert audit.write({"step": 1})

    private_redis.kill()
    for t in (2.0, 3.0, 4.0):
        sink.write([sample("a", t), sample("b", t)])  # never raises: the samples wait
    assert len(sink.pending) == 6
    assert not audit.write({"step": 2}) and not audit.write({"step": 3})
    jsonl = tmp_path / "campaign.jsonl"
    entry = {"name": "c1-a", "host": "node", "kind": "cpu", "started_at": time.time()}
    recorder = threading.Thread(
        target=campaign.record,
        args=(
            "started",
            "c1",
            [entry],
            str(jsonl),
            redis_auth.connect(private_redis.url, socket_timeout=2),
            None,
        ),
        kwargs={"redis_wait_s": 60, "retry_on": (redis.ConnectionError, redis.TimeoutError)},
    )
    recorder.start()
    assert poll(jsonl.exists, bool, timeout_s=10).met  # the file first, then Redis is retried
    private_redis.start()
    recorder.join(timeout=60)
    assert not recorder.is_alive()

    sink.write([sample("a", 5.0), sample("b", 5.0)])
    assert audit.write({"step": 4})
    client = private_redis.client()
    for instance in ("a", "b"):
        stamps = [float(f["timestamp"]) for f in stream(client, f"firm:test-telemetry:{instance}")]
        assert stamps == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [json.loads(f["r"])["step"] for f in stream(client, "firm:test-audit")] == [1, 2, 3, 4]
    assert client.hget("firm:injection:c1:c1-a", "event") == "started"
    assert sink.dropped == 0 and audit.pending.dropped == 0


def test_the_bound_drops_the_oldest_and_counts_them(private_redis: PrivateRedis) -> None:
    sink = RedisTelemetrySink(private_redis.url, prefix="firm:test-bound", backlog=4)
    private_redis.kill()
    for t in (1.0, 2.0, 3.0):
        sink.write([sample("a", t), sample("b", t)])
    assert len(sink.pending) == 4 and sink.dropped == 2
    private_redis.start()
    sink.write([])
    stamps = [float(f["timestamp"]) for f in stream(private_redis.client(), "firm:test-bound:a")]
    assert stamps == [2.0, 3.0]
