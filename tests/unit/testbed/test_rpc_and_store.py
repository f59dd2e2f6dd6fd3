"""The services' RPC over real sockets on loopback, and assembling stored spans into traces."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from firm.testbed import rpc
from firm.testbed.store import assemble
from firm.tracing.critical_path import critical_path


async def echo(
    operation: str, headers: Mapping[str, str], payload: Any
) -> tuple[int, Any, Mapping[str, str]]:
    if operation == "fail":
        return 500, {"error": "asked to fail"}, {}
    if operation == "slow":
        await asyncio.sleep(0.5)
    return (
        200,
        {"operation": operation, "payload": payload, "traceparent": headers.get("traceparent")},
        {"X-Trace-Id": "ab" * 16},
    )


def test_calls_reuse_keep_alive_connections_and_carry_headers() -> None:
    async def scenario() -> None:
        server = await rpc.serve("127.0.0.1", 0, echo)
        port = server.sockets[0].getsockname()[1]
        pool = rpc.Pool("127.0.0.1", port, size=4)
        results = await asyncio.gather(
            *(pool.call("op", {"n": n}, {"traceparent": f"00-{n}"}) for n in range(20))
        )
        assert [r["payload"]["n"] for r, _ in results] == list(range(20))
        assert results[3][0]["traceparent"] == "00-3"
        assert results[0][1]["x-trace-id"] == "ab" * 16
        assert len(pool._idle) <= 4  # at most `size` connections were opened
        with pytest.raises(rpc.RpcError, match="status 500") as raised:
            await pool.call("fail", {})
        assert raised.value.status == 500
        pool.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_a_peer_that_goes_away_gives_a_clear_error_and_a_timeout_is_bounded() -> None:
    async def scenario() -> None:
        server = await rpc.serve("127.0.0.1", 0, echo)
        port = server.sockets[0].getsockname()[1]
        slow = rpc.Pool("127.0.0.1", port, timeout_s=0.1)
        with pytest.raises(rpc.RpcError, match="timed out"):
            await slow.call("slow", {})
        server.close()
        await server.wait_closed()
        with pytest.raises(rpc.RpcError, match="cannot connect"):
            await rpc.Pool("127.0.0.1", port).call("op", {})

    asyncio.run(scenario())


def record(
    span_id: str,
    parent: str | None,
    service: str,
    name: str,
    start: int,
    duration: int,
    kind: str = "server",
    trace: str = "t1",
) -> dict[str, Any]:
    return {
        "trace_id": trace,
        "span_id": span_id,
        "parent_id": parent,
        "name": name,
        "kind": kind,
        "start_us": start,
        "duration_us": duration,
        "service": service,
        "instance": f"{service}-0",
        "error": False,
        "attributes": {},
    }


def test_stored_spans_assemble_into_traces_whose_critical_path_follows_the_sequential_writes() -> None:
    records = [
        record("a", None, "frontend", "compose_post", 0, 100),
        record("b", "a", "compose-post", "compose_post", 5, 90),
        record("c", "b", "unique-id", "compose_unique_id", 10, 5),  # parallel fan-out
        record("d", "b", "text", "compose_text", 10, 20),
        record("e", "b", "post-storage", "store_post", 35, 30),  # then sequential writes
        record("f", "b", "home-timeline", "write_home_timeline", 70, 20),
        record("x", None, "frontend", "read_home_timeline", 500, 10, trace="t2"),
        record("e", "b", "post-storage", "store_post", 35, 30),  # delivered twice: kept once
    ]
    traces = assemble(records)
    assert [t.trace_id for t in traces] == ["t1", "t2"]
    assert len(traces[0].spans) == 6
    steps = critical_path(traces[0]).main.steps
    # the parallel unique-id call overlaps the longer text call, so only text is on the path
    assert list(dict.fromkeys(step.span.service for step in steps)) == [
        "frontend",
        "compose-post",
        "text",
        "post-storage",
        "home-timeline",
    ]
