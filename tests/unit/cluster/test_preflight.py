"""``firm preflight --cluster``: the nodes from the API (the recorded v1.35 node, served), the hosts'
answers from a recorded ansible-runner run (this machine, and a host that did not answer), and the
report that says per node what firm can control and why not. The real run over ``inventory/local``
is in tests/integration/test_cluster_preflight.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.cluster.preflight import (
    FACTS_TASK,
    HostFacts,
    NodeInfo,
    cluster_preflight,
    cluster_report,
    gather_facts,
    list_nodes,
    match_hosts,
)
from tests.unit.cluster.fixture_server import FixtureServer
from tests.unit.cluster.kube_api import api, serve_nodes
from tests.unit.cluster.test_cli import kubeconfig

EVENTS = Path(__file__).resolve().parent / "data" / "rdt_facts_events_local_and_unreachable.json"


def recorded_events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(EVENTS.read_text())
    return events


def replay(events: list[dict[str, Any]]) -> Any:
    seen: list[Any] = []

    def run(inventory: Any, play: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen.append((inventory, play))
        return events

    run.seen = seen  # type: ignore[attr-defined]
    return run


def replay_the_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """``firm preflight --cluster``'s ansible-runner run replaced by the recorded one."""
    import firm.cluster.preflight as preflight_module  # noqa: PLC0415

    original = preflight_module.gather_facts
    monkeypatch.setattr(
        preflight_module,
        "gather_facts",
        lambda inventory, pattern="all", **kw: original(inventory, pattern, run=replay(recorded_events())),
    )


def test_the_recorded_node() -> None:
    (node,) = list_nodes_from_recording()
    assert node == NodeInfo(
        "datagen-1-35",
        "192.168.67.2",
        14.0,
        8024304 * 1024,
        "v1.35.0",
        "containerd://2.2.1",
        "6.12.54-linuxkit",
        True,
    )
    assert node.resize  # kubelet 1.35: in-place resize
    assert not NodeInfo("n", None, None, None, "v1.32.4", "", "", True).resize
    assert NodeInfo("n", None, None, None, "v1.33.0-gke.1", "", "", True).resize


def list_nodes_from_recording() -> list[NodeInfo]:
    from tests.unit.cluster.fixture_server import serving  # noqa: PLC0415

    with serving() as server:
        serve_nodes(server)
        return list_nodes(api(server))


def test_hosts_answers_from_a_recorded_run() -> None:
    run = replay(recorded_events())
    hosts = gather_facts("inventory/local", run=run)
    assert set(hosts) == {"gone", "localhost"}
    assert hosts["gone"].facts is None and "Connection refused" in (hosts["gone"].error or "")
    local = hosts["localhost"]
    assert local.error is None and local.facts is not None and local.resctrl is None
    assert local.capability("cpu")[0] and local.capability("network")[0]
    ((inventory, play),) = run.seen
    assert Path(inventory).is_absolute()  # ansible-runner takes a relative path for a host list
    assert play[0]["tasks"][0]["name"] == FACTS_TASK and play[0]["tasks"][1]["check_mode"] is True


def test_without_an_api_server_every_host_is_reported() -> None:
    report = cluster_report(gather_facts(None, run=replay(recorded_events())))
    assert not report["api"] and not report["ready"]  # the host that did not answer has no CPU
    by_host = {e["host"]: e for e in report["nodes"]}
    local = by_host["localhost"]
    assert set(local["controllable"]) == {"cpu", "memory", "disk_io", "network"}
    assert "no --kubeconfig" in local["controllable"]["cpu"]
    assert "no cat_l3 flag" in local["not_controllable"]["llc"]  # this machine has no RDT
    gone = by_host["gone"]
    assert not gone["controllable"] and "did not answer" in gone["not_controllable"]["network"]


def test_nodes_matched_to_hosts_and_resize_from_the_kubelet() -> None:
    (node,) = list_nodes_from_recording()
    hosts = gather_facts(None, run=replay(recorded_events()))
    # the node's name is no host, its InternalIP is nobody's ansible_host: not in the inventory
    assert match_hosts([node], hosts) == {"datagen-1-35": None}
    report = cluster_report(hosts, [node])
    (entry,) = report["nodes"]
    assert entry["controllable"]["cpu"] == "in-place pod resize (kubelet v1.35.0)"
    assert "memory" in entry["controllable"]
    assert (
        "not in the inventory: add it to -i as datagen-1-35 (or with ansible_host 192.168.67.2)"
        in (entry["not_controllable"]["network"])
    )
    assert report["hosts_without_node"] == ["gone", "localhost"] and report["ready"]

    mapped = cluster_report(hosts, [node], {"datagen-1-35": "localhost"})
    (entry,) = mapped["nodes"]
    assert entry["host"] == "localhost"
    assert set(entry["controllable"]) == {"cpu", "memory", "disk_io", "network"}
    assert mapped["hosts_without_node"] == ["gone"]

    by_address = {"localhost": HostFacts("localhost", "192.168.67.2", hosts["localhost"].facts)}
    assert match_hosts([node], by_address) == {"datagen-1-35": "localhost"}


def test_an_older_kubelet_writes_cgroups_with_the_caveat() -> None:
    hosts = gather_facts(None, run=replay(recorded_events()))
    old = NodeInfo("localhost", None, 2.0, None, "v1.29.3", "containerd://1.7.0", "6.1.0", True)
    (entry,) = cluster_report(hosts, [old])["nodes"]
    assert "may rewrite them" in entry["controllable"]["cpu"] and "cgroup v1" in entry["controllable"]["cpu"]
    away = NodeInfo("elsewhere", None, 2.0, None, "v1.29.3", "", "", True)
    (entry,) = cluster_report(hosts, [away])["nodes"]
    assert "no in-place resize" in entry["not_controllable"]["cpu"] and not entry["controllable"]


def test_a_refusal_of_the_api_is_an_error_that_names_rbac(fixture_server: FixtureServer) -> None:
    from tests.unit.cluster.fixture_server import data_file  # noqa: PLC0415

    fixture_server.answer(
        "GET", "/api/v1/nodes", 403, data_file("kubernetes/status-403-forbidden_apiserver-golden.json")
    )
    with pytest.raises(Exception, match="RBAC"):
        cluster_preflight(None, api=api(fixture_server), run=replay(recorded_events()))


def test_the_command(fixture_server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve_nodes(fixture_server)
    replay_the_hosts(monkeypatch)
    config = kubeconfig(tmp_path, fixture_server.url)
    done = CliRunner().invoke(main, ["preflight", "--cluster", "--kubeconfig", config, "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["api"] and report["nodes"][0]["node"] == "datagen-1-35"
    table = CliRunner().invoke(main, ["preflight", "--cluster", "--kubeconfig", config])
    assert table.exit_code == 0 and "What firm can control on datagen-1-35" in table.output
    assert "in-place pod resize" in table.output
    refused = CliRunner().invoke(main, ["preflight", "--cluster", "--kubeconfig", str(tmp_path / "none")])
    assert refused.exit_code == 2 and "does not exist" in refused.output
