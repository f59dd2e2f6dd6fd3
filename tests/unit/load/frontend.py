"""A tiny stand-in for the Social Network frontend: an asyncio HTTP/1.1 server in a thread.

It answers ``POST /compose_post``, ``/read_home_timeline`` and ``/read_user_timeline`` with a JSON
body and an ``X-Trace-Id`` header, keeps connections alive, and can add a fixed delay, serialise
requests (one at a time, like a saturated single-threaded service), stall every response during a
stretch of time, or close the connection after every N responses. It records what it received.

``python -m tests.unit.load.frontend --port 8080`` runs it on its own (for measuring the
generator's CPU cost without the server in the same process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

PATHS = {
    "/compose_post": "compose-post",
    "/read_home_timeline": "read-home-timeline",
    "/read_user_timeline": "read-user-timeline",
}


@dataclass
class Received:
    """One request as the server saw it."""

    type: str
    body: dict[str, object]
    trace_id: str
    arrived: float  # time.monotonic()


@dataclass
class FrontendOptions:
    delay_s: float = 0.0
    """Added to every response."""
    serial: bool = False
    """Handle one request at a time across all connections."""
    stall_after_s: float | None = None
    """Seconds after the first request at which a stall begins."""
    stall_s: float = 0.0
    """Length of the stall: responses due in it wait until it ends."""
    close_every: int = 0
    """Close the connection after this many responses on it (0 = never)."""
    status: int = 200
    chunked: bool = False


@dataclass
class Frontend:
    options: FrontendOptions
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    first_arrival: float | None = None
    port: int = 0
    _lock: asyncio.Lock | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.CancelledError:  # the server stops: end quietly
                    return
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _version = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                now = time.monotonic()
                if self.first_arrival is None:
                    self.first_arrival = now
                trace_id = secrets.token_hex(16)
                self.received.append(
                    Received(PATHS.get(path, path), json.loads(body or b"{}"), trace_id, now)
                )
                await self._wait(now)
                served += 1
                closing = self.options.close_every and served >= self.options.close_every
                payload = json.dumps({"ok": True, "type": PATHS.get(path, path)}).encode()
                status = self.options.status if path in PATHS else 404
                extra = "Connection: close\r\n" if closing else ""
                if self.options.chunked:
                    half = len(payload) // 2
                    data = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
                        half,
                        payload[:half],
                        len(payload) - half,
                        payload[half:],
                    )
                    framing = "Transfer-Encoding: chunked\r\n"
                else:
                    data = payload
                    framing = f"Content-Length: {len(payload)}\r\n"
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nX-Trace-Id: {trace_id}\r\n"
                    f"{framing}{extra}\r\n".encode()
                    + data
                )
                await writer.drain()
                if closing:
                    return
        finally:
            writer.close()

    async def _wait(self, arrived: float) -> None:
        options = self.options
        if self._lock is None:
            self._lock = asyncio.Lock()
        lock = self._lock if options.serial else contextlib.nullcontext()
        async with lock:
            if options.delay_s:
                await asyncio.sleep(options.delay_s)
        if options.stall_after_s is not None and self.first_arrival is not None:
            begin = self.first_arrival + options.stall_after_s
            end = begin + options.stall_s
            if begin <= time.monotonic() < end:
                await asyncio.sleep(end - time.monotonic())


@contextlib.contextmanager
def running_frontend(options: FrontendOptions | None = None) -> Iterator[Frontend]:
    """The server on 127.0.0.1 (a free port) in a thread; stopped and joined afterwards."""
    frontend = Frontend(options or FrontendOptions())
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        server = await asyncio.start_server(frontend.handle, "127.0.0.1", 0)
        frontend.port = server.sockets[0].getsockname()[1]
        ready.set()
        async with server:
            await stop.wait()
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        if not ready.wait(5):
            raise RuntimeError("the test frontend did not start")
        yield frontend
    finally:
        if stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to every response")
    args = parser.parse_args()
    frontend = Frontend(FrontendOptions(delay_s=args.delay))

    async def serve() -> None:
        server = await asyncio.start_server(frontend.handle, "127.0.0.1", args.port)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
