"""JSON over HTTP/1.1 between the testbed's services: a small keep-alive server and client.

The services of the embedded application talk to each other the way microservices on a cluster
do, over TCP through their network namespaces, so every knob (CPU, disk, tc on a veth) shows in
their latency. The protocol is deliberately small: ``POST /<operation>`` with a JSON body, a JSON
response, ``traceparent`` for W3C trace context, keep-alive connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError

log = logging.getLogger(__name__)

MAX_BODY = 4 << 20
Handler = Callable[[str, Mapping[str, str], Any], Awaitable[tuple[int, Any, Mapping[str, str]]]]


class RpcError(FirmError):
    """A call failed: the peer answered with an error status, or the connection broke.

    ``status`` is the HTTP status the peer answered (or an instance's server answers with), 0 when
    there was no answer.
    """

    def __init__(
        self,
        message: str,
        status: int = 0,
        fix: str = "check that the testbed is up and healthy with `firm testbed status`",
    ) -> None:
        super().__init__(message, fix)
        self.status = status


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


async def _read_message(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes] | None:
    """One HTTP message: (start line, lower-cased headers, body); None at a clean end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise RpcError("connection closed in the middle of a message") from exc
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if length > MAX_BODY:
        raise RpcError(f"message body of {length} bytes is over the {MAX_BODY} byte limit", 400)
    body = await reader.readexactly(length) if length else b""
    return lines[0], headers, body


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """Send each message at once: a request or response is one write, and waits for no more."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _encode(start: str, headers: Mapping[str, str], body: bytes) -> bytes:
    head = [start, f"Content-Length: {len(body)}", "Content-Type: application/json"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def serve(host: str, port: int, handler: Handler) -> asyncio.Server:
    """Serve ``POST /<operation>`` requests; ``handler(operation, headers, payload)`` answers them."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _no_delay(writer)
        try:
            while True:
                message = await _read_message(reader)
                if message is None:
                    break
                start, headers, body = message
                parts = start.split()
                operation = parts[1].lstrip("/") if len(parts) >= 2 else ""
                try:
                    payload = json.loads(body) if body else None
                    status, result, extra = await handler(operation, headers, payload)
                except json.JSONDecodeError:
                    status, result, extra = 400, {"error": "body is not JSON"}, {}
                data = json.dumps(result, separators=(",", ":")).encode()
                writer.write(_encode(f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", extra, data))
                await writer.drain()
        except (ConnectionError, RpcError, asyncio.IncompleteReadError) as exc:
            log.debug("connection ended: %s", exc)
        finally:
            writer.close()

    return await asyncio.start_server(connection, host, port, reuse_address=True, backlog=512)


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclass
class Pool:
    """Keep-alive connections to one address, reused across calls; at most ``size`` at once."""

    host: str
    port: int
    size: int = 16
    timeout_s: float = 10.0
    _idle: list[_Connection] = field(default_factory=list)
    _slots: asyncio.Semaphore | None = None
    active: int = 0
    """Calls under way (waiting for a connection or for the answer); a pool being drained is closed at 0."""

    async def call(
        self, operation: str, payload: Any, headers: Mapping[str, str] | None = None
    ) -> tuple[Any, dict[str, str]]:
        """POST ``payload`` to ``/operation``; returns the JSON result and the response headers."""
        self.active += 1
        try:
            return await self._call(operation, payload, headers)
        finally:
            self.active -= 1

    async def _call(
        self, operation: str, payload: Any, headers: Mapping[str, str] | None
    ) -> tuple[Any, dict[str, str]]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            while True:
                reused = bool(self._idle)
                connection = self._idle.pop() if reused else await self._connect()
                try:
                    status, result, response_headers = await asyncio.wait_for(
                        self._exchange(connection, operation, payload, headers or {}), self.timeout_s
                    )
                except (ConnectionError, asyncio.IncompleteReadError, RpcError) as exc:
                    connection.writer.close()
                    if reused:  # the peer closed an idle keep-alive connection: try a fresh one
                        continue
                    cause = exc.message if isinstance(exc, RpcError) else exc  # one fix, not one per hop
                    raise RpcError(f"{self.host}:{self.port}/{operation}: {cause}") from exc
                except TimeoutError:
                    connection.writer.close()
                    raise RpcError(
                        f"{self.host}:{self.port}/{operation} timed out after {self.timeout_s} s"
                    ) from None
                self._idle.append(connection)
                if status >= 300:
                    raise RpcError(f"{self.host}:{self.port}/{operation}: status {status}: {result}", status)
                return result, response_headers

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout_s
            )
        except (TimeoutError, OSError) as exc:
            raise RpcError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        _no_delay(writer)
        return _Connection(reader, writer)

    @staticmethod
    async def _exchange(
        connection: _Connection, operation: str, payload: Any, headers: Mapping[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        body = json.dumps(payload, separators=(",", ":")).encode()
        connection.writer.write(_encode(f"POST /{operation} HTTP/1.1", {"Host": "firm", **headers}, body))
        await connection.writer.drain()
        message = await _read_message(connection.reader)
        if message is None:
            raise ConnectionError("the peer closed the connection")
        start, response_headers, data = message
        return int(start.split()[1]), (json.loads(data) if data else None), response_headers

    def close(self) -> None:
        for connection in self._idle:
            connection.writer.close()
        self._idle.clear()
