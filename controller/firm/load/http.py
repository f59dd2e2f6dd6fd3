"""A minimal HTTP/1.1 client over asyncio streams, for keep-alive POSTs of small JSON bodies.

Just what the load generator needs, and cheap per request: one pre-built request head per path,
one ``readuntil`` for the response head, ``Content-Length`` or chunked bodies (or a body up to
EOF), and ``Connection: close`` honoured. One request at a time per connection (no pipelining).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

from firm.load.errors import HttpProtocolError

MAX_HEAD_BYTES = 64 * 1024


class HttpResponse(NamedTuple):
    """A response: status code, headers (names in lower case) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: host, port, TLS or not, and a path prefix."""

    host: str
    port: int
    tls: bool = False
    prefix: str = ""

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """``http://host:8080/api`` -> Endpoint("host", 8080, False, "/api")."""
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        if not parts.hostname:
            raise ValueError(f"{url!r} has no host")
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    def post_head(self, path: str) -> bytes:
        """The head of a JSON POST to ``path`` up to (not including) its Content-Length value."""
        return (
            f"POST {self.prefix}{path} HTTP/1.1\r\nHost: {self.authority}\r\n"
            "User-Agent: firm-load\r\nContent-Type: application/json\r\nContent-Length: "
        ).encode("ascii")


class HttpConnection:
    """One keep-alive connection; ``reusable`` turns False once the server closes it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reusable = True
        self.requests = 0

    @classmethod
    async def open(cls, endpoint: Endpoint) -> HttpConnection:
        context = ssl.create_default_context() if endpoint.tls else None
        reader, writer = await asyncio.open_connection(
            endpoint.host, endpoint.port, ssl=context, limit=MAX_HEAD_BYTES
        )
        return cls(reader, writer)

    def usable(self) -> bool:
        """False when the server closed the connection (or said it would) since the last response."""
        return self.reusable and not self.reader.at_eof() and not self.writer.is_closing()

    async def post(self, head: bytes, body: bytes) -> HttpResponse:
        """Send a POST (``head`` from :meth:`Endpoint.post_head`) and read the whole response."""
        self.writer.write(b"%s%d\r\n\r\n%s" % (head, len(body), body))
        await self.writer.drain()
        response = await self.read_response()
        self.requests += 1
        return response

    async def read_response(self) -> HttpResponse:
        reader = self.reader
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise HttpProtocolError(f"response head longer than {MAX_HEAD_BYTES} bytes") from None
            lines = raw[:-4].split(b"\r\n")
            version, _, rest = lines[0].partition(b" ")
            if not version.startswith(b"HTTP/1."):
                raise HttpProtocolError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
            try:
                status = int(rest[:3])
            except ValueError:
                raise HttpProtocolError(f"bad status line: {lines[0][:80]!r}") from None
            if 100 <= status < 200:  # an interim response; the real one follows
                continue
            break
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        connection = headers.get("connection", "").lower()
        if connection == "close" or (version == b"HTTP/1.0" and connection != "keep-alive"):
            self.reusable = False
        if status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._chunked()
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise HttpProtocolError(f"bad Content-Length {headers['content-length']!r}") from None
            body = await reader.readexactly(length)
        else:
            body = await reader.read()
            self.reusable = False
        return HttpResponse(status, headers, body)

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        reader = self.reader
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise HttpProtocolError(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def close(self) -> None:
        self.reusable = False
        if not self.writer.is_closing():
            self.writer.close()
