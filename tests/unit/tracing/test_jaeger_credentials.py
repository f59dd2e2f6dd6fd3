"""A Jaeger query service behind a proxy with basic authentication: ``user:password@`` in the URL is
sent as an Authorization header and never appears in a message."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from firm.tracing import JaegerClient, JaegerError, JaegerHTTPError


class Handler(BaseHTTPRequestHandler):
    seen: list[str | None]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        wanted = "Basic " + base64.b64encode(b"ann:s3cr:et").decode()
        status, body = (200, b'{"data": ["frontend"]}') if self.seen[-1] == wanted else (401, b"")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[str | None]]]:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    seen: list[str | None] = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (Handler,), {"seen": seen}))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_credentials_in_the_url_are_sent_as_basic_authentication(
    server: tuple[int, list[str | None]],
) -> None:
    port, seen = server
    client = JaegerClient(f"http://ann:s3cr%3Aet@127.0.0.1:{port}", retries=0)
    assert client.base_url == f"http://127.0.0.1:{port}"
    assert client.services() == ["frontend"]
    assert seen == ["Basic " + base64.b64encode(b"ann:s3cr:et").decode()]


def test_a_wrong_password_is_named_without_it(server: tuple[int, list[str | None]]) -> None:
    port, _ = server
    client = JaegerClient(f"http://ann:wrong-one@127.0.0.1:{port}", retries=0)
    with pytest.raises(JaegerHTTPError, match="HTTP 401") as raised:
        client.services()
    assert "wrong-one" not in str(raised.value)


@pytest.mark.parametrize(
    "url", ["http://ann:s3cret@a b:1", "http://ann:s3cret@host:99999", "ftp://ann:s3cret@x"]
)
def test_a_bad_url_with_a_password_is_refused_without_it(url: str) -> None:
    with pytest.raises(JaegerError) as raised:
        JaegerClient(url)
    assert "s3cret" not in str(raised.value) and "ann" in str(raised.value)


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 0.0])
def test_a_timeout_must_be_finite_and_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        JaegerClient("http://localhost:16686", timeout=timeout)
