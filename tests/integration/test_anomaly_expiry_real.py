"""Every anomaly expires, whatever else dies or is lost: real workers, real cgroups, real signals.

Beyond test_anomaly_real.py's killed starter and killed supervisor, one at a time:

- the starter *and* the supervisor killed together: the workers' own time limit ends them, and the
  next call of the library files the record and removes the cgroup;
- a reboot-like loss of the state directory (/run) while the anomaly runs and its supervisor is
  gone: the workers still stop on time, and the next call removes the cgroup no record names;
- two campaigns naming the same anomaly, one after the other and at the same moment: one anomaly
  runs under the name at a time, and it expires on its own time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils import anomaly, cgroup
from tests.helpers.measure import poll
from tests.helpers.modules import REPO_ROOT, VENV_BIN

pytestmark = pytest.mark.skipif(
    shutil.which("stress-ng") is None, reason="stress-ng is not installed (make deps)"
)

GRACE_S = 5.0
"""Seconds past an anomaly's expiry by which its workers must be gone (their own time limit fires at expiry)."""


@pytest.fixture
def env(tmp_path: Path, layout: cgroup.Layout) -> Iterator[anomaly.Environment]:
    """A private state directory; every anomaly still in it is stopped and the cgroup parent checked afterwards."""
    environment = anomaly.Environment(
        state_dir=str(tmp_path / "anomalies"), sysbench_dir=str(tmp_path / "sysbench")
    )
    yield environment
    for record in anomaly.Store(environment.state_dir).all():
        anomaly.stop(record.spec.name, environment)
    parent = cgroup.group_at(layout, anomaly.CGROUP_PARENT)
    cgroup.signal_members(parent)  # a failed test must not leave workers behind
    for directory in parent.distinct_dirs():
        for sub, _, _ in sorted(os.walk(directory), key=lambda walked: -len(walked[0])):
            with contextlib.suppress(OSError):  # emptied just now: the kernel may still be reaping
                os.rmdir(sub)


def assert_ended_on_time(ended_at: float, expires_at: float) -> None:
    """The history's end is the anomaly's own expiry: not before it, and within the grace after it.

    Not a tighter bound: on an overcommitted machine, waking the supervisor and killing its workers
    took seconds (4.5 s once in CI), and the grace is what the expiry promises.
    """
    late = ended_at - expires_at
    assert -0.5 <= late <= GRACE_S, f"ended {late:+.2f} s from its expiry, outside [-0.5, {GRACE_S}] s"


def members(layout: cgroup.Layout, name: str) -> set[int]:
    """The processes in the anomaly's cgroup (every hierarchy), empty when it is gone."""
    group = cgroup.group_at(layout, f"{anomaly.CGROUP_PARENT}/{name}")
    found: set[int] = set()
    for directory in group.distinct_dirs():
        procs = Path(directory, "cgroup.procs")
        if procs.exists():
            found |= {int(p) for p in procs.read_text().split()}
    return found


def sessions(pids: set[int]) -> set[int]:
    """The sessions (each worker leads its own, with its stress-ng children in it) of running processes."""
    found = set()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            found.add(os.getsid(pid))
    return found


def group_exists(layout: cgroup.Layout, name: str) -> bool:
    return any(
        os.path.isdir(d) for d in cgroup.group_at(layout, f"{anomaly.CGROUP_PARENT}/{name}").distinct_dirs()
    )


def history(env: anomaly.Environment) -> list[dict[str, object]]:
    path = Path(env.state_dir, "history.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def start(env: anomaly.Environment, name: str, intensity: int, duration: int) -> anomaly.Record:
    changed, record, _ = anomaly.start(anomaly.AnomalySpec(name, "cpu", intensity, duration), env)
    assert changed
    return record


def test_workers_expire_when_the_starter_and_the_supervisor_are_both_killed(
    env: anomaly.Environment, layout: cgroup.Layout
) -> None:
    args = {"name": "both", "kind": "cpu", "intensity": 20, "duration": 3, "state_dir": env.state_dir}
    starter = subprocess.Popen(
        [str(VENV_BIN / "ansible"), "localhost", "-m", "firm.core.anomaly", "-a", json.dumps(args)],
        cwd=REPO_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg")),
    )
    store = anomaly.Store(env.state_dir)
    saved = poll(
        lambda: store.load("both"), lambda r: r is not None and r.supervisor is not None, timeout_s=60
    )
    assert saved.met, "the anomaly never started"
    record = saved.value
    assert record is not None and record.supervisor is not None
    os.killpg(starter.pid, signal.SIGKILL)
    starter.wait()
    os.kill(record.supervisor.pid, signal.SIGKILL)
    gone = poll(
        lambda: members(layout, "both"),
        lambda pids: not pids,
        timeout_s=record.expires_at - time.time() + GRACE_S,
    )
    assert gone.met, f"workers {sorted(gone.value)} outlived the anomaly's expiry by {GRACE_S} s"
    assert anomaly.active(env) == []  # the sweep files the record and removes the cgroup
    assert not group_exists(layout, "both")
    assert [(h["name"], h["note"]) for h in history(env)] == [("both", "its supervisor had gone")]


def test_workers_expire_and_the_cgroup_goes_after_a_reboot_like_loss_of_the_state(
    env: anomaly.Environment, layout: cgroup.Layout
) -> None:
    record = start(env, "lost", 20, 3)
    assert record.supervisor is not None and members(layout, "lost")
    os.kill(record.supervisor.pid, signal.SIGKILL)  # a reboot ends the supervisor...
    shutil.rmtree(
        env.state_dir
    )  # ...and /run with the records (here the workers and the cgroup outlive both)
    gone = poll(
        lambda: members(layout, "lost"),
        lambda pids: not pids,
        timeout_s=record.expires_at - time.time() + GRACE_S,
    )
    assert gone.met, f"workers {sorted(gone.value)} outlived the anomaly's expiry by {GRACE_S} s"
    assert anomaly.active(env) == []
    # A sweep removes an empty group no record names once it is ORPHAN_GROUP_AGE_S old (never one being set up).
    swept = poll(
        lambda: (anomaly.active(env), group_exists(layout, "lost"))[1],
        lambda exists: not exists,
        timeout_s=record.started_at + anomaly.ORPHAN_GROUP_AGE_S - time.time() + GRACE_S,
    )
    assert swept.met, "the library's sweeps left the cgroup no record names"
    again = start(env, "lost", 20, 1)  # the name is free again
    assert sessions(members(layout, "lost")) <= {w.pid for w in again.workers}
    assert poll(
        lambda: anomaly.Store(env.state_dir).load("lost"), lambda r: r is None, timeout_s=1 + GRACE_S
    ).met


def test_a_second_campaign_naming_a_running_anomaly_replaces_it_and_its_own_expiry_holds(
    env: anomaly.Environment, layout: cgroup.Layout
) -> None:
    first = start(env, "shared", 20, 60)  # campaign 1
    same, kept, _ = anomaly.start(
        anomaly.AnomalySpec("shared", "cpu", 20, 60), env
    )  # campaign 1 again: idempotent
    assert not same and kept.started_at == first.started_at
    second = start(env, "shared", 40, 2)  # campaign 2, a different request under the same name
    assert not any(w.alive() for w in first.workers), "the replaced anomaly's workers still run"
    assert sessions(members(layout, "shared")) <= {w.pid for w in second.workers}
    assert [h["note"] for h in history(env)] == ["stopped"]  # campaign 1's end is on record
    ended = poll(
        lambda: anomaly.Store(env.state_dir).load("shared"),
        lambda r: r is None,
        timeout_s=second.expires_at - time.time() + GRACE_S,
    )
    assert ended.met, "the replacement did not expire on its own time"
    assert not members(layout, "shared") and not group_exists(layout, "shared")
    entries = history(env)
    assert [e["intensity"] for e in entries] == [20, 40]
    assert_ended_on_time(float(entries[1]["ended_at"]), second.expires_at)  # type: ignore[arg-type]


STARTER = """
import json, sys
from ansible_collections.firm.core.plugins.module_utils import anomaly
env = anomaly.Environment(state_dir=sys.argv[1], sysbench_dir=sys.argv[2])
sys.stdin.read(1)
changed, record, _ = anomaly.start(anomaly.AnomalySpec("shared", "cpu", int(sys.argv[3]), 6), env)
print(json.dumps({"changed": changed, "started_at": record.started_at, "workers": [w.pid for w in record.workers]}))
"""


def test_two_campaigns_starting_the_same_anomaly_at_once_leave_one_that_expires(
    env: anomaly.Environment, layout: cgroup.Layout
) -> None:
    assert env.sysbench_dir is not None
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, env.state_dir, env.sysbench_dir, str(intensity)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for intensity in (20, 40)
    ]
    for starter in starters:  # released together, so that both are inside start() at the same time
        assert starter.stdin is not None
        starter.stdin.write(b"x")
        starter.stdin.flush()
    results = []
    for starter in starters:
        out, err = starter.communicate(timeout=60)
        assert starter.returncode == 0, err.decode()
        results.append(json.loads(out))
    running = anomaly.Store(env.state_dir).load("shared")
    assert running is not None
    assert running.supervisor is not None and running.supervisor.alive()
    # Only the saved record's workers (and their children) run in the anomaly's cgroup: no orphans of
    # the other start. Not "alive" ones only: a worker that has just finished is a zombie until its
    # supervisor reaps it, while its children may still be in the group.
    assert sessions(members(layout, "shared")) <= {w.pid for w in running.workers}
    assert running.started_at == max(r["started_at"] for r in results)
    ended = poll(
        lambda: anomaly.Store(env.state_dir).load("shared"),
        lambda r: r is None,
        timeout_s=running.expires_at - time.time() + GRACE_S,
    )
    assert ended.met, "the anomaly did not expire on its own time"
    assert not members(layout, "shared") and not group_exists(layout, "shared")
    assert anomaly.active(env) == []
    finished = history(env)
    assert len(finished) == 2 and finished[-1]["started_at"] == running.started_at
    assert_ended_on_time(float(finished[-1]["ended_at"]), running.expires_at)  # type: ignore[arg-type]
