"""The Jaeger client against a local HTTP server replaying recorded query-API answers."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.tracing import (
    JaegerClient,
    JaegerConnectionError,
    JaegerError,
    JaegerHTTPError,
    JaegerResponseError,
    TraceSource,
)
from tests.unit.tracing.shared_data import deathstarbench_files


@dataclass
class Behaviour:
    """What the fake query service does; the tests change it between calls."""

    traces: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by service name
    fail_first: int = 0  # answer this many requests with ``fail_status`` first
    fail_status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    body: bytes | None = None  # answer 200 with exactly this
    requests: list[str] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that timed out has gone
            self.wfile.write(body)

    def do_GET(self) -> None:
        b = self.behaviour
        b.requests.append(self.path)
        if b.delay:
            time.sleep(b.delay)
        if b.fail_first > 0:
            b.fail_first -= 1
            headers = {"Retry-After": b.retry_after} if b.retry_after else {}
            self._send(b.fail_status, b'{"data":null,"errors":[{"code":503,"msg":"overloaded"}]}', headers)
            return
        if b.body is not None:
            self._send(200, b.body)
            return
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        all_traces = [t for ts in b.traces.values() for t in ts]
        if url.path == "/api/services":
            self._send(200, json.dumps({"data": sorted(b.traces)}).encode())
        elif url.path == "/api/traces":
            if "service" not in q:
                self._send(
                    400, b'{"data":null,"errors":[{"code":400,"msg":"parameter \'service\' is required"}]}'
                )
                return
            found = b.traces.get(q["service"], [])[: int(q.get("limit", "20"))]
            self._send(
                200, json.dumps({"data": found, "total": 0, "limit": 0, "offset": 0, "errors": None}).encode()
            )
        elif url.path.startswith("/api/traces/"):
            tid = url.path.rsplit("/", 1)[1]
            found = [t for t in all_traces if t["traceID"] == tid]
            if not found:
                self._send(404, b'{"data":null,"errors":[{"code":404,"msg":"trace not found"}]}')
                return
            self._send(200, json.dumps({"data": found}).encode())
        else:
            self._send(404, b"404 page not found\n")


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours proxy variables; the local server must be reached directly."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def jaeger() -> Iterator[tuple[str, Behaviour]]:
    recorded: dict[str, list[dict[str, Any]]] = {}
    for prefix, service in (
        ("compose-post", "compose-post-service"),
        ("read-home-timeline", "home-timeline-service"),
    ):
        for f in deathstarbench_files(prefix):
            recorded.setdefault(service, []).extend(json.loads(f.read_text())["data"])
    behaviour = Behaviour(traces=recorded)
    handler = type("BoundHandler", (Handler,), {"behaviour": behaviour})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", behaviour
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_search_returns_parsed_traces_and_sends_the_window(jaeger: tuple[str, Behaviour]) -> None:
    url, b = jaeger
    client = JaegerClient(url + "/")
    traces = client.search("compose-post-service", 1_000, 2_000, limit=4, operation="compose_post_server")
    assert len(traces) == 4
    assert all(len(t.spans) >= 30 for t in traces)
    assert traces[0].span(traces[0].trace_id).instance == "nginx-thrift"
    sent = urllib.parse.urlsplit(b.requests[-1])
    assert sent.path == "/api/traces"
    assert dict(urllib.parse.parse_qsl(sent.query)) == {
        "service": "compose-post-service",
        "start": "1000",
        "end": "2000",
        "limit": "4",
        "operation": "compose_post_server",
    }


def test_fetch_implements_trace_source(jaeger: tuple[str, Behaviour]) -> None:
    url, _ = jaeger
    source: TraceSource = JaegerClient(url)
    assert isinstance(source, TraceSource)
    assert len(source.fetch("home-timeline-service", 0, 10, limit=100)) == 6
    assert source.fetch("no-such-service", 0, 10) == []


def test_trace_by_id_and_services(jaeger: tuple[str, Behaviour]) -> None:
    url, _ = jaeger
    client = JaegerClient(url)
    assert client.services() == ["compose-post-service", "home-timeline-service"]
    t = client.trace("2b4c83d3fc000dd5")
    assert len(t.spans) == 32
    with pytest.raises(JaegerHTTPError, match=r"HTTP 404 Not Found: trace not found") as info:
        client.trace("ffff")
    assert info.value.status == 404


def test_retries_on_503_with_backoff(jaeger: tuple[str, Behaviour]) -> None:
    url, b = jaeger
    b.fail_first = 2
    sleeps = Sleeps()
    client = JaegerClient(url, retries=3, backoff=0.5, sleep=sleeps)
    assert len(client.search("home-timeline-service", 0, 1)) == 6
    assert len(b.requests) == 3
    assert sleeps == [0.5, 1.0]


def test_gives_up_after_the_retries_naming_url_and_status(jaeger: tuple[str, Behaviour]) -> None:
    url, b = jaeger
    b.fail_first = 10
    sleeps = Sleeps()
    client = JaegerClient(url, retries=2, backoff=1.0, max_backoff=1.5, sleep=sleeps)
    with pytest.raises(
        JaegerHTTPError,
        match=r"Jaeger at http://127\.0\.0\.1:\d+/api/traces\?service=x.* "
        r"HTTP 503 .*overloaded \(gave up after 3 attempts\)",
    ) as info:
        client.search("x", 0, 1)
    assert info.value.status == 503
    assert len(b.requests) == 3
    assert sleeps == [1.0, 1.5]  # capped


def test_retry_after_is_honoured(jaeger: tuple[str, Behaviour]) -> None:
    url, b = jaeger
    b.fail_first, b.fail_status, b.retry_after = 1, 429, "3"
    sleeps = Sleeps()
    JaegerClient(url, backoff=0.1, max_backoff=5, sleep=sleeps).search("x", 0, 1)
    assert sleeps == [3.0]


def test_client_errors_are_not_retried(jaeger: tuple[str, Behaviour]) -> None:
    url, b = jaeger
    sleeps = Sleeps()
    with pytest.raises(JaegerHTTPError, match="HTTP 404") as info:
        JaegerClient(url + "/wrong-prefix", sleep=sleeps).search("x", 0, 1)
    assert "port 16686" in info.value.fix
    assert (len(b.requests), sleeps) == (1, [])


def test_timeout(jaeger: tuple[str, Behaviour]) -> None:
    url, b = jaeger
    b.delay = 1.0
    client = JaegerClient(url, timeout=0.2, retries=1, sleep=Sleeps())
    with pytest.raises(
        JaegerConnectionError, match=r"did not answer within 0\.2 s \(gave up after 2 attempts\)"
    ):
        client.services()
    assert len(b.requests) == 2


def test_bad_json_is_a_clear_error_and_not_retried(jaeger: tuple[str, Behaviour]) -> None:
    url, b = jaeger
    b.body = b"<html>Jaeger UI</html>"
    with pytest.raises(
        JaegerResponseError, match=r"returned invalid JSON .* begins '<html>Jaeger UI</html>'"
    ):
        JaegerClient(url).search("x", 0, 1)
    assert len(b.requests) == 1
    b.body = b'{"spans": 3}'
    with pytest.raises(JaegerResponseError, match='without a "data" field'):
        JaegerClient(url).search("x", 0, 1)


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    sleeps = Sleeps()
    client = JaegerClient(f"http://127.0.0.1:{port}", retries=2, sleep=sleeps)
    with pytest.raises(
        JaegerConnectionError,
        match=rf"cannot reach Jaeger at http://127\.0\.0\.1:{port}/api/services: "
        r"connection refused \(gave up after 3 attempts\)",
    ):
        client.services()
    assert len(sleeps) == 2


def test_arguments_are_checked() -> None:
    with pytest.raises(JaegerError, match="not an http"):
        JaegerClient("localhost:16686")
    client = JaegerClient("http://localhost:16686")
    with pytest.raises(ValueError, match="ends"):
        client.search("s", 10, 5)
    with pytest.raises(ValueError, match="limit"):
        client.search("s", 0, 5, limit=0)


def test_what_the_answer_loses_is_a_warning_of_the_command_not_a_log_line(
    jaeger: tuple[str, Behaviour],
) -> None:
    """The query API's per-trace errors (here with a null message and code) reach `firm features
    --jaeger-url` as the command's own warnings, as a file's do, and never read "None"."""
    url, b = jaeger
    good = b.traces["compose-post-service"][0]
    b.body = json.dumps({"data": [good], "errors": [{"code": None, "msg": None, "traceID": "ab"}]}).encode()
    result = CliRunner().invoke(main, ["features", "--jaeger-url", url, "--service", "x", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["window"]["requests"] == 1
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {url}/api/traces?service=x&"), warnings
    assert warnings[0].endswith(f": the query API reported an error: trace {'0' * 14}ab: no message")
