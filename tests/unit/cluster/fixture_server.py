"""A local HTTP server that answers with recorded bodies: the stand-in for an API server, Jaeger
or a kubelet in tests (no such server exists here).

Bodies come from ``../shared/data`` (recorded); the routing (which path gets which body, with which
status) is the test's. Every request is logged (method, path, query, body) so tests can check what
the real clients sent.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parents[4] / "shared" / "data"


def data_file(relative: str) -> Path:
    """A file of the shared recordings, or a skip that says it is missing."""
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"recorded data {path} is absent")
    return path


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Request], Reply]


class FixtureServer:
    """Routes ``(method, path)`` to a handler; unknown routes answer 404 with a v1 Status."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    self.command,
                    parts.path,
                    urllib.parse.parse_qs(parts.query),
                    body,
                    {k.lower(): v for k, v in self.headers.items()},
                )
                with server._lock:
                    server.requests.append(request)
                    handler = server.routes.get((self.command, parts.path))
                reply = (
                    handler(request)
                    if handler is not None
                    else Reply(
                        404,
                        json.dumps(
                            {
                                "kind": "Status",
                                "apiVersion": "v1",
                                "status": "Failure",
                                "reason": "NotFound",
                                "message": f"the server could not find the requested resource ({parts.path})",
                                "code": 404,
                            }
                        ).encode(),
                    )
                )
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(reply.body)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_PATCH = do_PUT = do_POST = _serve  # noqa: N815 - http.server's names

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def route(self, method: str, path: str, handler: Handler) -> None:
        with self._lock:
            self.routes[(method, path)] = handler

    def answer(
        self, method: str, path: str, status: int, body: bytes | Path, content_type: str = "application/json"
    ) -> None:
        """Always answer ``(method, path)`` with ``body`` (a recorded file's bytes)."""
        data = body.read_bytes() if isinstance(body, Path) else body
        self.route(method, path, lambda _: Reply(status, data, content_type))

    def sent(self, method: str | None = None, path: str | None = None) -> list[Request]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            ]


@contextmanager
def serving() -> Iterator[FixtureServer]:
    server = FixtureServer()
    server._thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server._thread.join(10)


@pytest.fixture
def fixture_server() -> Iterator[FixtureServer]:
    with serving() as server:
        yield server
