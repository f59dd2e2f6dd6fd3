"""Scaling the testbed: how callers pick up a changed peer list and drain a removed peer, and every
check a scale request passes before it changes anything (on a state file of processes that run)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError, InvalidInputError
from ansible_collections.firm.core.plugins.module_utils.process import ProcessRef
from firm.cli import main
from firm.testbed import config as testbed_config
from firm.testbed import enter, lifecycle, rpc, scale, server
from firm.testbed.state import TestbedState

# --------------------------------------------------------------------------------------------------
# callers' peer list


def write_peers(path: Path, peers: Mapping[str, list[str]]) -> None:
    """As the testbed writes it: a new file renamed over the old one."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(peers))
    os.replace(temporary, path)


def picks(peers: server.Peers, service: str, count: int) -> list[str]:
    return [peers.pick(service).host for _ in range(count)]


def test_callers_pick_up_an_added_peer_and_keep_the_pools_of_the_others(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    write_peers(path, {"text": ["10.0.0.2"], "media": ["10.0.0.5"]})
    peers = server.Peers(str(path), 8080)
    assert peers.refresh() is True
    assert picks(peers, "text", 3) == ["10.0.0.2"] * 3
    first = peers.pools["text"][0]
    assert peers.refresh() is False  # unchanged file: nothing reloaded

    write_peers(path, {"text": ["10.0.0.2", "10.0.0.9"], "media": ["10.0.0.5"]})
    assert peers.refresh() is True
    assert peers.pools["text"][0] is first  # its open connections are kept
    assert sorted(picks(peers, "text", 4)) == ["10.0.0.2", "10.0.0.2", "10.0.0.9", "10.0.0.9"]  # round robin
    assert peers.routes() == {"text": ["10.0.0.2", "10.0.0.9"], "media": ["10.0.0.5"]}


def test_a_rewrite_is_noticed_even_when_the_content_and_mtime_are_the_same(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    write_peers(path, {"text": ["10.0.0.2"]})
    peers = server.Peers(str(path), 8080)
    peers.refresh()
    stamp = os.stat(path).st_mtime_ns
    write_peers(path, {"text": ["10.0.0.3"]})
    os.utime(path, ns=(stamp, stamp))  # a timestamp as coarse as the clock tick
    assert peers.refresh() is True
    assert peers.routes() == {"text": ["10.0.0.3"]}


def test_a_removed_peer_is_picked_no_more_and_drained_before_its_pool_closes(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    write_peers(path, {"text": ["10.0.0.2", "10.0.0.9"]})
    peers = server.Peers(str(path), 8080)
    peers.refresh()
    leaving = next(p for p in peers.pools["text"] if p.host == "10.0.0.9")
    leaving.active = 2  # two calls under way to it

    write_peers(path, {"text": ["10.0.0.2"]})
    peers.refresh()
    assert set(picks(peers, "text", 4)) == {"10.0.0.2"}
    assert peers.draining() == {"10.0.0.9": 2}
    report = {"routes": peers.routes(), "draining": peers.draining()}
    assert not scale.routes_to(report, "text", "10.0.0.9")
    assert not scale.drained_of(report, "text", "10.0.0.9")  # calls still under way

    leaving.active = 0
    peers.refresh()
    assert peers.draining() == {} and peers.retiring == []
    assert scale.drained_of({"routes": peers.routes(), "draining": peers.draining()}, "text", "10.0.0.9")
    assert not scale.drained_of(
        None, "text", "10.0.0.9"
    )  # an instance that does not answer has not confirmed


@pytest.mark.parametrize("content", ["{not json", '["10.0.0.2"]', '{"text": "10.0.0.2"}', '{"text": [1]}'])
def test_a_broken_peer_file_keeps_the_known_peers(tmp_path: Path, content: str) -> None:
    path = tmp_path / "peers.json"
    write_peers(path, {"text": ["10.0.0.2"]})
    peers = server.Peers(str(path), 8080)
    peers.refresh()
    path.write_text(content)
    assert peers.refresh() is False
    assert peers.routes() == {"text": ["10.0.0.2"]}
    path.unlink()
    assert peers.refresh() is False and peers.routes() == {"text": ["10.0.0.2"]}


def test_a_pool_counts_its_calls_until_they_have_answered() -> None:
    release = asyncio.Event()

    async def handler(
        operation: str, headers: Mapping[str, str], payload: Any
    ) -> tuple[int, Any, Mapping[str, str]]:
        await release.wait()
        return 200, {"ok": True}, {}

    async def scenario() -> None:
        listening = await rpc.serve("127.0.0.1", 0, handler)
        pool = rpc.Pool("127.0.0.1", listening.sockets[0].getsockname()[1], size=2)
        calls = [asyncio.ensure_future(pool.call("slow", {})) for _ in range(3)]
        while pool.active < 3:  # all three started (one waits for a connection slot)
            await asyncio.sleep(0)
        assert pool.active == 3
        release.set()
        await asyncio.gather(*calls)
        assert pool.active == 0
        with pytest.raises(rpc.RpcError):
            await rpc.Pool("127.0.0.1", 1, timeout_s=0.5).call("op", {})  # a failed call is counted out too
        pool.close()
        listening.close()
        await listening.wait_closed()

    asyncio.run(scenario())


# --------------------------------------------------------------------------------------------------
# checks before anything changes


def running_state(
    config: testbed_config.TestbedConfig, instances: list[testbed_config.Instance]
) -> TestbedState:
    """A state file naming processes that run (this test's own), as `firm testbed up` writes it."""
    me = dataclasses.asdict(ProcessRef.of(os.getpid()))
    return TestbedState(
        bridge=config.bridge,
        port=config.port,
        frontend="http://198.51.100.3:8080",
        redis_address=instances[0].address,
        instances=tuple(dict(dataclasses.asdict(i), process=me) for i in instances),
    )


@pytest.fixture
def config(tmp_path: Path) -> testbed_config.TestbedConfig:
    defaults = testbed_config.load()
    services = tuple(
        dataclasses.replace(s, instances=2, max_instances=2) if s.name == "text" else s
        for s in defaults.services
    )
    return dataclasses.replace(
        defaults, services=services, state_dir=str(tmp_path / "state"), data_dir=str(tmp_path / "data")
    )


@pytest.fixture
def up(config: testbed_config.TestbedConfig) -> TestbedState:
    os.makedirs(config.state_dir)
    state = running_state(config, config.instances())
    lifecycle.write_state(config, state)
    lifecycle.write_peers(config, scale.peer_map(state.instances))
    return state


def unchanged(config: testbed_config.TestbedConfig, state: TestbedState) -> None:
    assert lifecycle.read_state(config) == state
    peers = json.loads(Path(config.state_dir, "peers.json").read_text())
    assert peers == scale.peer_map(state.instances)


def test_a_testbed_that_is_not_up_is_named_with_the_fix(config: testbed_config.TestbedConfig) -> None:
    for attempt in (
        lambda: scale.scale_out(config, "text"),
        lambda: scale.scale_in(config, "text"),
        lambda: scale.replicas(config, "text"),
    ):
        with pytest.raises(scale.ScaleError, match=r"is not up\. Fix: start it with `firm testbed up`"):
            attempt()


@pytest.mark.usefixtures("up")
def test_an_unknown_service_or_the_entry_point_is_refused(config: testbed_config.TestbedConfig) -> None:
    with pytest.raises(scale.ScaleInputError, match=r"unknown service 'txt'\. Fix: name one of frontend, "):
        scale.scale_out(config, "txt")
    with pytest.raises(scale.ScaleInputError, match="unknown service 'redis'"):
        scale.scale_in(config, "redis")
    with pytest.raises(scale.ScaleInputError, match="frontend is the entry point") as raised:
        scale.scale_out(config, "frontend")
    assert isinstance(raised.value, FirmError) and isinstance(raised.value, InvalidInputError)
    assert scale.replicas(config, "frontend") == ["frontend-0"]  # asking is fine


def test_scaling_past_the_bounds_changes_nothing(
    config: testbed_config.TestbedConfig, up: TestbedState
) -> None:
    with pytest.raises(
        scale.ScaleInputError, match=r"text already runs 2 instances, its max_instances.*Fix: "
    ):
        scale.scale_out(config, "text")
    with pytest.raises(scale.ScaleInputError, match="media runs 1 instance; its last one is never removed"):
        scale.scale_in(config, "media")
    unchanged(config, up)


def test_a_testbed_with_a_dead_instance_or_another_configuration_is_refused(
    config: testbed_config.TestbedConfig, up: TestbedState
) -> None:
    dead = up.with_instances(
        [*up.instances[:-1], {**up.instances[-1], "process": {"pid": 1, "start_ticks": -1}}]
    )
    lifecycle.write_state(config, dead)
    with pytest.raises(scale.ScaleError, match="has instances that no longer run"):
        scale.scale_out(config, "media")
    lifecycle.write_state(config, up)
    with pytest.raises(scale.ScaleError, match=r"was started with bridge 'firmtb0', not 'other0'.*--config"):
        scale.scale_in(dataclasses.replace(config, bridge="other0"), "text")


def test_replicas_are_listed_in_number_order(config: testbed_config.TestbedConfig, up: TestbedState) -> None:
    extra = [
        dataclasses.replace(config.instances()[5], name=f"text-{n}", address=f"198.51.100.{100 + n}")
        for n in (10, 2)
    ]
    lifecycle.write_state(config, up.with_instances([*up.instances, *running_state(config, extra).instances]))
    assert scale.replicas(config, "text") == ["text-0", "text-1", "text-2", "text-10"]


# --------------------------------------------------------------------------------------------------
# the new instance's name and place


def test_a_new_instance_gets_a_fresh_number_address_and_veth(
    config: testbed_config.TestbedConfig, up: TestbedState
) -> None:
    instance, index = scale.plan_instance(config, up, "media")
    assert instance.name == "media-1" and index == len(up.instances)
    assert instance.address == str(config.network.network_address + 2 + index)
    assert instance.namespace == "firmtb-media-1" and instance.cgroup == "firm-testbed/media-1"
    assert instance.host_interface == f"ftb{index}" and len(instance.host_interface) <= 15
    assert instance.address not in {e["address"] for e in up.instances}
    # text is configured with two instances: even with one of them gone, the next is text-2, never text-1
    fewer = up.with_instances([e for e in up.instances if e["name"] != "text-1"])
    assert scale.plan_instance(config, fewer, "text")[0].name == "text-2"


def test_addresses_are_not_reused_until_the_subnet_runs_out(
    config: testbed_config.TestbedConfig, up: TestbedState
) -> None:
    # an instance scaled in frees index 20; the next still takes next_index (no stale neighbour entries)
    assert scale.plan_instance(config, dataclasses.replace(up, next_index=30), "media")[1] == 30
    # past the end of the subnet: the lowest free index
    assert scale.plan_instance(config, dataclasses.replace(up, next_index=253), "media")[1] == len(
        up.instances
    )
    small = dataclasses.replace(config, subnet="198.51.100.0/28")  # 16 addresses: indices 0 to 12
    with pytest.raises(scale.ScaleInputError, match=r"subnet 198\.51\.100\.0/28 has no free address"):
        scale.plan_instance(small, dataclasses.replace(up, next_index=13), "media")


def test_the_peer_list_leaves_redis_out_and_keeps_every_instance_of_a_service(
    config: testbed_config.TestbedConfig, up: TestbedState
) -> None:
    peers = scale.peer_map(up.instances)
    assert "redis" not in peers
    assert peers["text"] == [i.address for i in config.instances() if i.service == "text"]
    assert sum(len(a) for a in peers.values()) == len(config.instances()) - 1


def test_max_replicas_keeps_a_larger_configured_count() -> None:
    spec = testbed_config.ServiceSpec("text", instances=6, max_instances=4)
    assert scale.max_replicas(spec) == 6
    assert scale.max_replicas(dataclasses.replace(spec, instances=1)) == 4


def test_max_instances_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("services:\n  text: {max_instances: 9}\n")
    with pytest.raises(
        testbed_config.ConfigError,
        match=r"services\.text\.max_instances is 9; give at most 8\. Fix: give 1 to 8",
    ):
        testbed_config.load(path)
    path.write_text("scale_timeout_s: 0\n")
    with pytest.raises(testbed_config.ConfigError, match="scale_timeout_s is 0"):
        testbed_config.load(path)


# --------------------------------------------------------------------------------------------------
# the command


def test_the_command_refuses_bad_requests_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "testbed.yml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\ndata_dir: {tmp_path / 'data'}\n")
    runner = CliRunner()
    result = runner.invoke(main, ["testbed", "scale", "text", "--replicas", "2", "--config", str(path)])
    assert result.exit_code == 1 and "is not up" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, ["testbed", "scale", "nosuch", "--replicas", "2", "--config", str(path)])
    assert result.exit_code == 1 and "unknown service 'nosuch'" in result.output
    result = runner.invoke(main, ["testbed", "scale", "text", "--replicas", "9", "--config", str(path)])
    assert result.exit_code == 2 and "--replicas" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --------------------------------------------------------------------------------------------------
# waiting for every instance's confirmation (fake instances answering health checks on loopback)


def test_a_drain_waits_for_every_caller_and_the_leaving_instance(
    config: testbed_config.TestbedConfig,
) -> None:
    leaving = "127.0.0.9"
    reports: dict[str, dict[str, Any]] = {
        "127.0.0.2": {"routes": {"text": ["127.0.0.5", leaving]}, "draining": {}},  # still picks it
        "127.0.0.3": {"routes": {"text": ["127.0.0.5"]}, "draining": {leaving: 1}},  # a call under way to it
        leaving: {"routes": {}, "draining": {}, "in_flight": 2},  # still handling two requests
    }
    asked: Counter[str] = Counter()

    def answering(address: str) -> rpc.Handler:
        async def handle(
            operation: str, headers: Mapping[str, str], payload: Any
        ) -> tuple[int, Any, Mapping[str, str]]:
            asked[address] += 1
            if asked[address] == 3:  # each catches up at its third health check
                reports[address].update(routes={"text": ["127.0.0.5"]}, draining={}, in_flight=0)
            return 200, reports[address], {}

        return handle

    me = dataclasses.asdict(ProcessRef.of(os.getpid()))
    entries = [
        {"name": f"text-{n}", "address": a, "process": me} for n, a in enumerate(("127.0.0.2", "127.0.0.3"))
    ]
    victim = {"name": "text-9", "address": leaving, "process": me}

    async def scenario() -> None:
        first = await rpc.serve("127.0.0.2", 0, answering("127.0.0.2"))
        port = first.sockets[0].getsockname()[1]
        servers = [first, *[await rpc.serve(a, port, answering(a)) for a in ("127.0.0.3", leaving)]]
        try:
            quick = dataclasses.replace(config, port=port, scale_timeout_s=20)
            await scale._await_reports(
                quick, entries, lambda r: scale.drained_of(r, "text", leaving), victim=victim, poll_s=0.01
            )
            assert asked["127.0.0.2"] == 3 and asked["127.0.0.3"] == 3 and asked[leaving] == 3
            # one that never catches up is named when the time is up
            reports["127.0.0.3"]["draining"] = {leaving: 1}
            impatient = dataclasses.replace(quick, scale_timeout_s=0.3)
            with pytest.raises(scale.ScaleError, match=r"after 0\.3 s, text-1 had not caught up"):
                await scale._await_reports(
                    impatient,
                    entries,
                    lambda r: scale.drained_of(r, "text", leaving),
                    victim=victim,
                    poll_s=0.01,
                )
        finally:
            for listening in servers:
                listening.close()
                await listening.wait_closed()

    asyncio.run(scenario())


def test_a_new_server_is_started_through_the_cgroup_trampoline(capsys: pytest.CaptureFixture[str]) -> None:
    line = enter.command_line("firm-testbed/text-1", ["ip", "netns", "exec", "firmtb-text-1", "python"])
    assert line[1:5] == ["-m", "firm.testbed.enter", "firm-testbed/text-1", "--"] and line[5] == "ip"
    assert enter.main(["firm-testbed/text-1", "ip"]) == 2  # no "--": usage, nothing joined or run
    assert "usage" in capsys.readouterr().err
