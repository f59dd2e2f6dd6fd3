"""One service instance of the testbed: ``python -m firm.testbed.server --state-dir DIR --instance NAME``.

``firm testbed up`` starts it inside the instance's network namespace and cgroups. It reads the
testbed's layout from ``DIR/testbed.json`` (and notices when ``peers.json`` changes, so that a
scaled-out service is used at once), serves its operations over RPC, and traces every request. Its
health check reports the requests it is handling and where its calls go, so that an instance
leaving the peers can be drained before it stops; at SIGTERM it finishes the requests under way.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from redis import asyncio as aioredis

from firm.testbed import rpc, services, spans
from firm.testbed.store import app_redis, app_redis_password

log = logging.getLogger("firm.testbed.server")

DRAIN_S = 2.5
"""At SIGTERM, how long the requests under way may take to finish, seconds (below the 3 s that
``firm testbed down`` waits before SIGKILL)."""


@dataclass
class Peers:
    """The instances of every service, reloaded when ``peers.json`` changes; round robin per service.

    An instance that leaves the file is picked no more at once; its pool is kept (``draining``) until
    the calls already under way to it have answered, then closed. ``firm testbed scale`` reads both
    through the health check to know when an instance may stop without a request being dropped.
    """

    path: str
    port: int
    pools: dict[str, list[rpc.Pool]] = field(default_factory=dict)
    turns: dict[str, itertools.count[int]] = field(default_factory=dict)
    retiring: list[rpc.Pool] = field(default_factory=list)
    version: tuple[int, int] = (-1, -1)
    """(inode, mtime in ns) of the file last read: a rewrite (a new file renamed over it) always changes it."""

    def refresh(self) -> bool:
        """Reload the file if it changed, close drained pools; returns whether the peers changed."""
        changed = False
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            info = None
        if info is not None and (info.st_ino, info.st_mtime_ns) != self.version:
            try:
                with open(self.path, encoding="utf-8") as handle:
                    addresses: Mapping[str, list[str]] = json.load(handle)
                self.pools, retired = updated_pools(self.pools, addresses, lambda a: rpc.Pool(a, self.port))
                self.retiring += retired
                self.version = (info.st_ino, info.st_mtime_ns)
                changed = True
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                log.warning("keeping the known peers: cannot read %s: %s", self.path, exc)
        for pool in [p for p in self.retiring if not p.active]:
            pool.close()
            self.retiring.remove(pool)
        return changed

    def pick(self, service: str) -> rpc.Pool:
        pools = self.pools.get(service)
        if not pools:
            raise rpc.RpcError(f"no instance of {service} is known", 503)
        return pools[next(self.turns.setdefault(service, itertools.count())) % len(pools)]

    def routes(self) -> dict[str, list[str]]:
        """The addresses each service's calls go to now."""
        return {service: [p.host for p in pools] for service, pools in self.pools.items()}

    def draining(self) -> dict[str, int]:
        """Addresses no longer picked whose calls are still under way, with how many."""
        counts: dict[str, int] = {}
        for pool in self.retiring:
            if pool.active:
                counts[pool.host] = counts.get(pool.host, 0) + pool.active
        return counts


def updated_pools(
    pools: Mapping[str, list[rpc.Pool]],
    addresses: Mapping[str, list[str]],
    new_pool: Callable[[str], rpc.Pool],
) -> tuple[dict[str, list[rpc.Pool]], list[rpc.Pool]]:
    """The pools for ``addresses`` ({service: [address, ...]}), keeping the pools (and their open
    connections) of addresses that stay; returns them and the pools of addresses that left."""
    old = {(service, p.host): p for service, service_pools in pools.items() for p in service_pools}
    result: dict[str, list[rpc.Pool]] = {}
    for service, hosts in addresses.items():
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise TypeError(f"the addresses of {service!r} are not a list of strings")
        result[service] = [
            old.pop((service, a)) if (service, a) in old else new_pool(a) for a in sorted(hosts)
        ]
    return result, list(old.values())


async def run(state_dir: str, instance_name: str) -> None:
    with open(os.path.join(state_dir, "testbed.json"), encoding="utf-8") as layout_file:
        layout = json.load(layout_file)
    me = next((i for i in layout["instances"] if i["name"] == instance_name), None)
    if me is None:  # an instance being scaled out is written into the layout once it answers
        with open(os.path.join(state_dir, f"{instance_name}.instance.json"), encoding="utf-8") as description:
            me = json.load(description)
    redis_address = layout["redis_address"]
    store = app_redis(layout, socket_timeout=5)
    tracer, provider = spans.tracer_for(
        me["service"], me["name"], store, layout["span_retention"], layout["sampling"]
    )
    peers = Peers(os.path.join(state_dir, "peers.json"), layout["port"])
    peers.refresh()

    async def call(service: str, operation: str, payload: Any) -> Any:
        with tracer.start_as_current_span(
            operation, kind=trace.SpanKind.CLIENT, attributes={"peer.service": service}
        ) as span:
            headers: dict[str, str] = {}
            spans.inject(headers)
            try:
                result, _ = await peers.pick(service).call(operation, payload, headers)
            except rpc.RpcError as exc:
                span.set_status(Status(StatusCode.ERROR, exc.message))
                raise
            return result

    service = services.Service(
        me["service"],
        me["name"],
        call,
        aioredis.Redis(host=redis_address, port=6379, password=app_redis_password(layout), socket_timeout=10),
        layout["data_dir"],
        me["spec"]["work_ms"],
    )
    operations = services.OPERATIONS[me["service"]]

    requests = InFlight()

    async def handle(
        operation: str, headers: Mapping[str, str], payload: Any
    ) -> tuple[int, Any, Mapping[str, str]]:
        if operation == "health":
            peers.refresh()
            return (
                200,
                {
                    "ok": True,
                    "instance": me["name"],
                    "in_flight": requests.count,
                    "routes": peers.routes(),
                    "draining": peers.draining(),
                },
                {},
            )
        requests.count += 1
        try:
            return await traced(operation, headers, payload)
        finally:
            requests.count -= 1

    async def traced(
        operation: str, headers: Mapping[str, str], payload: Any
    ) -> tuple[int, Any, Mapping[str, str]]:
        handler = operations.get(operation)
        if handler is None:
            return 404, {"error": f"{me['service']} has no operation {operation!r}"}, {}
        with tracer.start_as_current_span(
            operation, context=spans.extract(headers), kind=trace.SpanKind.SERVER
        ) as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            try:
                services.burn(service.work_ms)
                result = await handler(service, payload)
            except (rpc.RpcError, KeyError, ValueError, TypeError, redis.RedisError) as exc:
                error = exc.message if isinstance(exc, rpc.RpcError) else str(exc)  # the caller adds the fix
                span.set_status(Status(StatusCode.ERROR, error))
                log.warning("%s failed: %s", operation, error)
                status = (exc.status or 502) if isinstance(exc, rpc.RpcError) else 500
                return status, {"error": error}, {"X-Trace-Id": trace_id}
            return 200, result, {"X-Trace-Id": trace_id}

    await serve_until_stopped(me["address"], layout["port"], handle, peers, requests)
    provider.shutdown()  # flushes the last spans


@dataclass
class InFlight:
    """Requests this instance is handling now (health checks aside)."""

    count: int = 0


async def serve_until_stopped(
    address: str, port: int, handle: rpc.Handler, peers: Peers, requests: InFlight
) -> None:
    """Serve until SIGTERM or SIGINT, reloading the peers every second; then stop accepting and let the
    requests under way finish (for at most DRAIN_S)."""
    server = await rpc.serve(address, port, handle)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    log.info("serving on %s:%s", address, port)
    while not stopping.is_set():
        peers.refresh()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=1.0)
    server.close()
    deadline = loop.time() + DRAIN_S
    while requests.count and loop.time() < deadline:
        await asyncio.sleep(0.02)
    await server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one service instance of the firm testbed.")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--instance", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=f"%(asctime)s {args.instance} %(levelname)s %(message)s"
    )
    asyncio.run(run(args.state_dir, args.instance))


if __name__ == "__main__":
    main()
