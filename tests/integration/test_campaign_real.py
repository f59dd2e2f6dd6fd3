"""playbooks/inject.yml and revert.yml on this machine, recorded in a real Redis and a campaign file.

Needs the Redis that `make test` starts on 127.0.0.1 (FIRM_REDIS_PORT, default 6379); the tests use
database 15 and delete their keys afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from ansible_collections.firm.core.plugins.filter.campaign_schedule import campaign_schedule
from ansible_collections.firm.core.plugins.module_utils import anomaly, cgroup
from tests.helpers.modules import REPO_ROOT, VENV_BIN, run_ansible_module
from tests.helpers.redis_db import REDIS_URL, connect


@pytest.fixture
def store() -> Iterator[redis.Redis]:
    client = connect()
    yield client
    for key in client.scan_iter("firm:*test-*"):
        client.delete(key)
    members = [str(m) for m in client.zrange("firm:injections", 0, -1)]
    stale = [m for m in members if ":test-" in m]
    if stale:
        client.zrem("firm:injections", *stale)


def playbook(
    name: str, extra: dict[str, Any], tmp_path: Path, succeed: bool = True
) -> subprocess.CompletedProcess[str]:
    variables = tmp_path / f"{name}.vars.yml"
    variables.write_text(yaml.safe_dump(extra))
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), f"playbooks/{name}.yml", "-e", f"@{variables}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg")),
    )
    assert (proc.returncode == 0) is succeed, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


class GroupWatcher:
    """Observes, independently of any record, when each anomaly's cgroup exists (every 20 ms)."""

    def __init__(self, layout: cgroup.Layout) -> None:
        self.parent = Path(layout.hierarchy("cpu").mount, anomaly.CGROUP_PARENT)
        self.seen: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            names = [p.name for p in self.parent.iterdir() if p.is_dir()] if self.parent.exists() else []
            for name in names:
                self.seen.setdefault(name, [now, now])[1] = now
            time.sleep(0.02)

    def __enter__(self) -> GroupWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_seeded_campaign_runs_as_planned_and_its_record_matches_what_ran(
    tmp_path: Path, store: redis.Redis, layout: cgroup.Layout, group_path: str
) -> None:
    cgroup.create_group(cgroup.group_at(layout, group_path))
    targets = [{"service": "victim", "cgroup": group_path}]
    definition = {
        "id": "test-seeded",
        "random": {
            "seed": 11,
            "rounds": 2,
            "kinds": ["cpu", "llc"],
            "intensity": [20, 60],
            "duration": [2, 3],
            "gap": [1, 1],
        },
    }
    state_dir, records = tmp_path / "state", tmp_path / "campaigns"
    with GroupWatcher(layout) as watcher:
        playbook(
            "inject",
            {
                "firm_campaign": definition,
                "anomaly_targets": targets,
                "firm_redis_url": REDIS_URL,
                "firm_anomaly_state_dir": str(state_dir),
                "firm_campaign_dir": str(records),
            },
            tmp_path,
        )

    lines = [json.loads(line) for line in (records / "test-seeded.jsonl").read_text().splitlines()]
    planned = next(line for line in lines if line["event"] == "planned")["schedule"]
    assert planned == campaign_schedule(
        definition, ["localhost"], {"localhost": {"anomaly_targets": targets}}
    )
    names = [i["name"] for r in planned for i in r["injections"]]
    started = {line["name"]: line for line in lines if line["event"] == "started"}
    ended = {line["name"]: line for line in lines if line["event"] == "ended"}
    assert sorted(started) == sorted(ended) == sorted(names)

    for name in names:
        observed_start, observed_end = watcher.seen[name]
        assert abs(started[name]["started_at"] - observed_start) < 1.0, name
        assert abs(ended[name]["ended_at"] - observed_end) < 1.0, name
        assert ended[name]["target"]["cgroup"] == group_path
        assert ended[name]["inventory_host"] == "localhost"
        saved = store.hgetall(f"firm:injection:test-seeded:{name}")
        assert saved["event"] == "ended" and abs(float(saved["ended_at"]) - observed_end) < 1.0
    rounds = {started[n]["labels"]["round"] for n in names}
    first = max(ended[n]["ended_at"] for n in names if started[n]["labels"]["round"] == "0")
    second = min(started[n]["started_at"] for n in names if started[n]["labels"]["round"] == "1")
    assert rounds == {"0", "1"} and second >= first  # rounds follow one another, with the gap
    assert store.lrange("firm:campaign:test-seeded:injections", 0, -1) == [
        f"firm:injection:test-seeded:{n}" for n in sorted(names, key=lambda n: started[n]["started_at"])
    ]
    assert anomaly.Store(str(state_dir)).all() == []


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[str]:
    """Anomalies' state; whatever a failed test left running there is stopped afterwards."""
    path = str(tmp_path / "state")
    yield path
    env = anomaly.Environment(state_dir=path)
    for record in anomaly.Store(path).all():
        anomaly.stop(record.spec.name, env)


def test_revert_stops_every_anomaly_and_records_the_end_of_campaign_ones(
    tmp_path: Path, store: redis.Redis, state_dir: str
) -> None:
    records = tmp_path / "campaigns"
    for name, labels in (("test-rv-1", {"campaign": "test-revert", "round": "0"}), ("loose", {})):
        started = run_ansible_module(
            "firm.core.anomaly",
            {
                "name": name,
                "kind": "cpu",
                "intensity": 10,
                "duration": 120,
                "labels": labels,
                "state_dir": state_dir,
            },
        )
        assert started["changed"] is True
    playbook(
        "revert",
        {"firm_redis_url": REDIS_URL, "firm_anomaly_state_dir": state_dir, "firm_campaign_dir": str(records)},
        tmp_path,
    )
    assert anomaly.Store(state_dir).all() == []
    lines = [json.loads(line) for line in (records / "test-revert.jsonl").read_text().splitlines()]
    assert [(line["event"], line["name"]) for line in lines] == [("ended", "test-rv-1")]
    assert lines[0]["ended_at"] < lines[0]["expires_at"]
    assert store.hget("firm:injection:test-revert:test-rv-1", "event") == "ended"


def test_a_round_that_fails_part_way_stops_and_records_what_had_started(
    tmp_path: Path, store: redis.Redis, state_dir: str
) -> None:
    records = tmp_path / "campaigns"
    definition = {
        "id": "test-partial",
        "anomalies": [
            {"host": "localhost", "kind": "cpu", "intensity": 10, "duration": 60, "name": "test-partial-ok"},
            {
                "host": "localhost",
                "service": "ghost",
                "cgroup": "no/such/service",
                "kind": "cpu",
                "intensity": 10,
                "duration": 60,
                "name": "test-partial-bad",
            },
        ],
    }
    proc = playbook(
        "inject",
        {
            "firm_campaign": definition,
            "firm_redis_url": REDIS_URL,
            "firm_anomaly_state_dir": state_dir,
            "firm_campaign_dir": str(records),
        },
        tmp_path,
        succeed=False,
    )
    assert "did not start" in proc.stdout and "no/such/service" in proc.stdout
    assert anomaly.Store(state_dir).all() == []
    lines = [json.loads(line) for line in (records / "test-partial.jsonl").read_text().splitlines()]
    assert [(line["event"], line.get("name")) for line in lines[1:]] == [
        ("started", "test-partial-ok"),
        ("ended", "test-partial-ok"),
    ]
    assert lines[2]["ended_at"] < lines[2]["expires_at"] - 30
