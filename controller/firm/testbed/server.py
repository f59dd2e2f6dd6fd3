"""One service instance of the testbed: ``python -m firm.testbed.server --state-dir DIR --instance NAME``.

``firm testbed up`` starts it inside the instance's network namespace and cgroups. It reads the
testbed's layout from ``DIR/testbed.json`` (and notices when ``peers.json`` changes, so that a
scaled-out service is used at once), serves its operations over RPC, and traces every request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from redis import asyncio as aioredis

from firm.testbed import rpc, services, spans

log = logging.getLogger("firm.testbed.server")


@dataclass
class Peers:
    """The instances of every service, reloaded when ``peers.json`` changes; round robin per service."""

    path: str
    port: int
    pools: dict[str, list[rpc.Pool]] = field(default_factory=dict)
    turns: dict[str, itertools.count[int]] = field(default_factory=dict)
    mtime: float = -1.0

    def refresh(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return
        if mtime == self.mtime:
            return
        try:
            with open(self.path, encoding="utf-8") as handle:
                addresses: Mapping[str, list[str]] = json.load(handle)
        except (OSError, ValueError) as exc:
            log.warning("keeping the known peers: cannot read %s: %s", self.path, exc)
            return
        old = {(p.host, service): p for service, pools in self.pools.items() for p in pools}
        self.pools = {service: [old.pop((a, service)) if (a, service) in old else rpc.Pool(a, self.port)
                                for a in sorted(hosts)]
                      for service, hosts in addresses.items()}
        for pool in old.values():
            pool.close()
        self.mtime = mtime

    def pick(self, service: str) -> rpc.Pool:
        pools = self.pools.get(service)
        if not pools:
            raise rpc.RpcError(f"no instance of {service} is known", 503)
        return pools[next(self.turns.setdefault(service, itertools.count())) % len(pools)]


async def run(state_dir: str, instance_name: str) -> None:
    with open(os.path.join(state_dir, "testbed.json"), encoding="utf-8") as layout_file:
        layout = json.load(layout_file)
    me = next(i for i in layout["instances"] if i["name"] == instance_name)
    redis_address = layout["redis_address"]
    store = redis.Redis(host=redis_address, port=6379, socket_timeout=5)
    tracer, provider = spans.tracer_for(me["service"], me["name"], store, layout["span_retention"], layout["sampling"])
    peers = Peers(os.path.join(state_dir, "peers.json"), layout["port"])
    peers.refresh()

    async def call(service: str, operation: str, payload: Any) -> Any:
        with tracer.start_as_current_span(operation, kind=trace.SpanKind.CLIENT,
                                          attributes={"peer.service": service}) as span:
            headers: dict[str, str] = {}
            spans.inject(headers)
            try:
                result, _ = await peers.pick(service).call(operation, payload, headers)
            except rpc.RpcError as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise
            return result

    service = services.Service(me["service"], me["name"], call,
                               aioredis.Redis(host=redis_address, port=6379, socket_timeout=10), layout["data_dir"],
                               me["spec"]["work_ms"])
    operations = services.OPERATIONS[me["service"]]

    async def handle(operation: str, headers: Mapping[str, str], payload: Any) -> tuple[int, Any, Mapping[str, str]]:
        if operation == "health":
            return 200, {"ok": True, "instance": me["name"]}, {}
        handler = operations.get(operation)
        if handler is None:
            return 404, {"error": f"{me['service']} has no operation {operation!r}"}, {}
        with tracer.start_as_current_span(operation, context=spans.extract(headers), kind=trace.SpanKind.SERVER) as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            try:
                services.burn(service.work_ms)
                result = await handler(service, payload)
            except (rpc.RpcError, KeyError, ValueError, TypeError, redis.RedisError) as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                log.warning("%s failed: %s", operation, exc)
                status = (exc.status or 502) if isinstance(exc, rpc.RpcError) else 500
                return status, {"error": str(exc)}, {"X-Trace-Id": trace_id}
            return 200, result, {"X-Trace-Id": trace_id}

    server = await rpc.serve(me["address"], layout["port"], handle)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    log.info("%s serving on %s:%s", me["name"], me["address"], layout["port"])
    while not stopping.is_set():
        peers.refresh()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=1.0)
    server.close()
    await server.wait_closed()
    provider.shutdown()  # flushes the last spans


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one service instance of the firm testbed.")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--instance", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {args.instance} %(levelname)s %(message)s")
    asyncio.run(run(args.state_dir, args.instance))


if __name__ == "__main__":
    main()
