"""Campaign schedules: explicit lists, seeded draws, validation, and the record file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.firm.core.plugins.filter.campaign_schedule import campaign_schedule
from ansible_collections.firm.core.plugins.module_utils import campaign
from ansible_collections.firm.core.plugins.module_utils.errors import InvalidInputError

WEB = {
    "service": "web",
    "cgroup": "firm/web",
    "namespace": "firm-web",
    "interface": "eth0",
    "link_rate": "1gbit",
}
STORE = {"service": "post-storage", "cgroup": "firm/post-storage"}
HOSTVARS: dict[str, dict[str, Any]] = {
    "node1": {"anomaly_targets": [WEB, STORE]},
    "node2": {"anomaly_targets": [STORE]},
    "node3": {},
}
RANDOM = {
    "seed": 7,
    "rounds": 20,
    "intensity": [40, 80],
    "duration": [5, 9],
    "gap": [2, 4],
    "hosts_per_round": [1, 2],
    "services_per_host": [1, 2],
}


def draw(seed: int = 7, **changes: Any) -> list[dict[str, Any]]:
    return campaign_schedule(
        {"id": "c1", "random": {**RANDOM, "seed": seed, **changes}}, list(HOSTVARS), HOSTVARS
    )


def test_the_same_seed_gives_the_same_campaign_and_another_seed_another() -> None:
    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_host_order_does_not_change_a_seeded_campaign() -> None:
    forward = campaign_schedule({"id": "c1", "random": RANDOM}, ["node1", "node2", "node3"], HOSTVARS)
    backward = campaign_schedule({"id": "c1", "random": RANDOM}, ["node3", "node2", "node1"], HOSTVARS)
    assert forward == backward


def test_a_seeded_campaign_stays_within_its_ranges() -> None:
    rounds = draw()
    assert len(rounds) == 20
    for entry in rounds:
        injections = entry["injections"]
        assert 1 <= len({i["host"] for i in injections}) <= 2
        for host in {i["host"] for i in injections}:
            assert 1 <= sum(i["host"] == host for i in injections) <= 2
        for injection in injections:
            assert 40 <= injection["intensity"] <= 80
            assert 5 <= injection["duration_s"] <= 9
        longest = max(i["duration_s"] for i in injections)
        assert 2 <= entry["length_s"] - longest <= 4 and entry["gap_s"] == entry["length_s"] - longest


def test_network_kinds_only_land_where_there_is_an_interface() -> None:
    injections = [i for r in draw(rounds=200) for i in r["injections"]]
    network = [i for i in injections if i["kind"].startswith("network_")]
    assert network, "200 rounds drew no network anomaly"
    assert all(i["service"] == "web" and i["target_interface"] == "eth0" for i in network)
    node3 = [i for i in injections if i["host"] == "node3"]
    assert node3 and all(i["service"] is None and not i["kind"].startswith("network_") for i in node3)


def test_injections_carry_the_anomaly_modules_arguments_and_unique_names() -> None:
    injections = [i for r in draw() for i in r["injections"]]
    assert len({i["name"] for i in injections}) == len(injections)
    web = next(i for i in injections if i["service"] == "web")
    assert web["args"]["target_cgroup"] == "firm/web"
    assert web["args"]["labels"] == {"campaign": "c1", "round": str(web["round"]), "service": "web"}


def test_an_explicit_campaign_groups_its_anomalies_by_round() -> None:
    rounds = campaign_schedule(
        {
            "id": "c2",
            "gap": 3,
            "anomalies": [
                {
                    "host": "node1",
                    "service": "web",
                    "cgroup": "firm/web",
                    "kind": "cpu",
                    "intensity": 50,
                    "duration": 20,
                },
                {"host": "node2", "kind": "disk_io", "intensity": 70, "duration": 10},
                {
                    "host": "node1",
                    "kind": "llc",
                    "intensity": 30,
                    "duration": 5,
                    "round": 1,
                    "name": "cache-1",
                },
            ],
        },
        list(HOSTVARS),
        HOSTVARS,
    )
    assert [len(r["injections"]) for r in rounds] == [2, 1]
    assert rounds[0]["length_s"] == 23
    assert rounds[1]["injections"][0]["name"] == "cache-1"
    assert rounds[0]["injections"][1]["args"] == {
        "name": "c2-r0-h1-1",
        "kind": "disk_io",
        "intensity": 70,
        "duration": 10,
        "labels": {"campaign": "c2", "round": "0", "service": "node"},
    }


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"id": "c1"}, "neither anomalies nor random"),
        ({"id": "bad id", "random": RANDOM}, "not a plain name"),
        ({"id": "c1", "random": {**RANDOM, "seed": "x"}}, "no integer seed"),
        ({"id": "c1", "random": {**RANDOM, "kinds": ["gpu"]}}, "not anomaly kinds"),
        ({"id": "c1", "random": {**RANDOM, "intensity": [80, 40]}}, "intensity"),
        ({"id": "c1", "random": {**RANDOM, "duration": [0, 5]}}, "duration"),
        ({"id": "c1", "random": {**RANDOM, "colour": "red"}}, "unknown keys"),
        (
            {"id": "c1", "anomalies": [{"host": "node9", "kind": "cpu", "intensity": 5, "duration": 5}]},
            "not in the campaign",
        ),
        ({"id": "c1", "anomalies": [{"host": "node1", "kind": "cpu"}]}, "no intensity, duration"),
        (
            {
                "id": "c1",
                "anomalies": [{"host": "node1", "kind": "gpu", "intensity": 5, "duration": 5, "round": 3}],
            },
            "kind 'gpu' is not known",
        ),
        (
            {"id": "c1", "anomalies": [{"host": "node1", "kind": "cpu", "intensity": 500, "duration": 5}]},
            "outside 0..100",
        ),
        (
            {
                "id": "c1",
                "anomalies": [
                    {"host": "node1", "kind": "cpu", "intensity": 5, "duration": 5, "name": "x"},
                    {"host": "node2", "kind": "llc", "intensity": 5, "duration": 5, "name": "x"},
                ],
            },
            "used more than once",
        ),
    ],
)
def test_bad_campaigns_are_refused_by_the_filter(definition: dict[str, Any], message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        campaign_schedule(definition, list(HOSTVARS), HOSTVARS)


def test_hosts_whose_names_share_a_long_prefix_get_distinct_injection_names() -> None:
    hosts = {
        f"k8s-worker-node-{n:02d}.prod.example.com": {"anomaly_targets": [STORE, WEB]} for n in range(12)
    }
    rounds = campaign_schedule(
        {"id": "c" * 40, "random": {**RANDOM, "rounds": 150, "hosts_per_round": [3, 6]}}, list(hosts), hosts
    )
    names = [i["name"] for r in rounds for i in r["injections"]]
    assert len(set(names)) == len(names)
    assert max(len(n) for n in names) <= 63


def test_targets_without_a_service_name_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="no service name"):
        campaign.parse_targets([{"cgroup": "firm/web"}])


def test_the_record_file_gets_one_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "records" / "c1.jsonl"
    start = 1_764_500_000.0
    entry = {"name": "c1-r0-node1-0", "host": "node1", "kind": "cpu", "started_at": start, "ended_at": None}
    campaign.record("planned", "c1", [], str(path), schedule=[{"index": 0}])
    assert campaign.record("started", "c1", [entry], str(path)) == 1
    campaign.record("ended", "c1", [{**entry, "ended_at": start + 10}], str(path))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["planned", "started", "ended"]
    assert lines[0]["schedule"] == [{"index": 0}]
    assert lines[2]["ended_at"] == start + 10 and lines[2]["campaign"] == "c1"


@pytest.mark.parametrize(
    ("event", "change", "words"),
    [
        ("started", {"started_at": "yesterday"}, "started_at 'yesterday' is not a number of seconds"),
        ("started", {"started_at": 1_764_500_000_000}, "not milliseconds"),
        ("started", {"started_at": None}, "is not a time"),
        ("started", {"name": ""}, "name is missing"),
        ("started", {"host": None}, "host is missing"),
        ("ended", {"ended_at": None}, "ended_at None is not a time"),
        ("ended", {"ended_at": 1_764_499_999.0}, "ended_at is before started_at"),
        ("exploded", {}, "not one of planned, started, ended"),
    ],
)
def test_bad_ground_truth_is_refused_before_anything_is_written(
    tmp_path: Path, event: str, change: dict[str, Any], words: str
) -> None:
    path = tmp_path / "c1.jsonl"
    good = {
        "name": "c1-r0-node1-0",
        "host": "node1",
        "kind": "cpu",
        "started_at": 1_764_500_000.0,
        "ended_at": 1_764_500_010.0,
    }
    with pytest.raises(campaign.RecordError, match=words):
        campaign.record(event, "c1", [good, {**good, **change}], str(path))
    assert not path.exists()


def test_times_given_as_numeric_strings_become_numbers(tmp_path: Path) -> None:
    path = tmp_path / "c1.jsonl"
    entry = {"name": "a", "host": "node1", "kind": "cpu", "started_at": "1764500000.5"}
    campaign.record("started", "c1", [entry], str(path))
    assert json.loads(path.read_text())["started_at"] == 1764500000.5
