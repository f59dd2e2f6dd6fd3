"""Bringing the testbed up, taking it down, and saying how it is.

``up`` builds, in order: the bridge; a namespace, veth and cgroups per instance (limits through the
actuation library); the application's Redis with the social graph; every service instance; then it
waits until each answers. Any failure takes down what was built. ``down`` removes every process,
namespace, veth, cgroup and file the testbed made, whether or not its state file survived.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import redis

from ansible_collections.firm.core.plugins.module_utils import anomaly, cgroup, redis_auth
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from ansible_collections.firm.core.plugins.module_utils.process import ProcessRef, stop_group
from firm.testbed import graph, network, rpc
from firm.testbed import state as testbed_state
from firm.testbed.config import Instance, TestbedConfig
from firm.testbed.state import StateFileError, TestbedState
from firm.testbed.store import app_redis

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


class TestbedError(FirmError):
    """The testbed could not be built or reached; the message says what to do."""


@dataclass(frozen=True)
class Running:
    """A started instance."""

    instance: Instance
    process: ProcessRef


def state_file(config: TestbedConfig) -> str:
    return os.path.join(config.state_dir, "testbed.json")


def read_state(config: TestbedConfig) -> TestbedState | None:
    """The testbed's state; None when it has none (not up). Raises :class:`StateFileError` (a FirmError,
    fix: ``firm testbed down`` then ``up``) for a file of another version or a corrupt one."""
    return testbed_state.read(state_file(config))


def is_up(config: TestbedConfig) -> bool:
    """True when the state file names processes that all still run."""
    state = read_state(config)
    if state is None:
        return False
    return all(p is not None and p.alive() for p in state.processes())


OWNER_MARK = ".firm-testbed"
"""The file ``up`` writes into the state and data directories: ``down`` removes only directories
that hold it, so a ``state_dir`` or ``data_dir`` pointed at a directory firm does not own (``/var``,
a home directory) is never emptied."""


def owned(directory: str) -> bool:
    """Whether ``directory`` is one the testbed made: it holds OWNER_MARK."""
    return os.path.isfile(os.path.join(directory, OWNER_MARK))


def check_directories(config: TestbedConfig) -> None:
    """Refuse a ``state_dir`` or ``data_dir`` firm may not take whole, before anything changes.

    Raises:
        TestbedError: the path is in /proc, /sys or /dev, cannot be made (under a file, or in a
            directory this user may not write), is a symbolic link or not a directory, or is a
            directory that holds files without OWNER_MARK (firm would remove them on ``down``).
    """
    for key in ("state_dir", "data_dir"):
        directory = getattr(config, key)
        _check_directory_place(key, directory)
        if os.path.islink(directory) or (os.path.lexists(directory) and not os.path.isdir(directory)):
            kind = "a symbolic link" if os.path.islink(directory) else "not a directory"
            raise TestbedError(
                f"{key} {directory} is {kind}",
                fix=f"set {key} to a new or empty directory (the testbed takes it whole), by its real path",
            )
        if os.path.isdir(directory) and not owned(directory):
            entries = sorted(os.listdir(directory))
            if entries:
                shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
                raise TestbedError(
                    f"{key} {directory} holds files the testbed did not make ({shown}); "
                    "`firm testbed down` removes its directories whole",
                    fix=f"set {key} to a new or empty directory (if it is what a testbed of an earlier "
                    f"firm left, which did not mark its directories, remove it: rm -r {directory})",
                )


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
"""Where no directory of the testbed can be made (the kernel's own file systems)."""


def _check_directory_place(key: str, directory: str) -> None:
    """A ``state_dir`` / ``data_dir`` that does not exist yet must be creatable: its nearest existing
    ancestor a writable directory, outside the kernel's pseudo file systems."""
    real = os.path.realpath(directory)
    pseudo = next((r for r in PSEUDO_FILESYSTEMS if real == r or real.startswith(r + "/")), None)
    if pseudo is not None:
        raise TestbedError(
            f"{key} {directory} is in {pseudo}, a file system of the kernel's where no directory can be made",
            fix=f"set {key} to a directory on a disk, e.g. under /var/lib or /run",
        )
    if os.path.lexists(directory):
        return
    ancestor = _nearest_existing(directory)
    if not os.path.isdir(ancestor):
        raise TestbedError(
            f"{key} {directory} cannot be made: {ancestor} is not a directory",
            fix=f"set {key} to a path under a directory",
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise TestbedError(
            f"{key} {directory} cannot be made: this user may not write to {ancestor}",
            fix=f"set {key} to a path under a writable directory, or run as root",
        )


def check_cpus(config: TestbedConfig) -> None:
    """Refuse, before anything is built, a service (or the application's Redis) pinned to CPUs this
    process may not run on (``os.sched_getaffinity``: the machine's online CPUs, or fewer in a
    container).

    Raises:
        TestbedError: naming the setting (``services.NAME.cpus``) and the CPUs there are.
    """
    allowed = sorted(os.sched_getaffinity(0))
    for key, spec in [(f"services.{s.name}.cpus", s) for s in config.services] + [
        ("redis.cpus", config.redis)
    ]:
        if not spec.cpus:
            continue
        outside = sorted(set(cgroup.parse_list(spec.cpus, key)) - set(allowed))
        if outside:
            raise TestbedError(
                f"{key} is {spec.cpus!r}, but this machine offers CPUs {cgroup.format_list(allowed)} only "
                f"(not {cgroup.format_list(outside)})",
                fix=f"pin {spec.name} to CPUs among {cgroup.format_list(allowed)} (see docs/testbed.md)",
            )


def _claim_directories(config: TestbedConfig) -> None:
    """Make the state and data directories and mark them as the testbed's (see OWNER_MARK)."""
    for directory in (config.state_dir, config.data_dir):
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, OWNER_MARK), "w", encoding="utf-8") as handle:
            handle.write("made by `firm testbed up`; `firm testbed down` removes this directory whole\n")


def up(config: TestbedConfig, progress: Progress = log.info) -> bool:
    """Build the testbed unless it already runs; returns whether anything changed.

    Raises:
        TestbedError: not root, a tool missing, a state or data directory firm may not take
            (``check_directories``), CPUs the machine does not offer (``check_cpus``), or a part
            that would not start (what was built is removed).
    """
    _preflight()
    check_directories(config)
    check_cpus(config)
    try:
        running = is_up(config)
    except StateFileError as exc:
        progress(f"{exc.message}; removing the old testbed and starting again")
        running = False
    if running:
        progress("testbed already up")
        return False
    down(config, progress=lambda _: None)  # whatever a crashed run left
    try:
        _build(config, progress)
    except BaseException:
        progress("start failed; removing what was built")
        down(config, progress=lambda _: None)
        raise
    return True


def _preflight() -> None:
    if os.geteuid() != 0:
        raise TestbedError("the testbed needs root (network namespaces, cgroups)", fix="run it as root")
    for tool in ("ip", "redis-server"):
        if shutil.which(tool) is None:
            raise TestbedError(
                f"{tool} is not installed", fix="run `make deps` (apt-get install iproute2 redis-server)"
            )


def _build(config: TestbedConfig, progress: Progress) -> None:
    layout = cgroup.detect_layout()
    _claim_directories(config)
    instances = config.instances()
    progress(f"network: bridge {config.bridge} {config.subnet}, {len(instances)} namespaces")
    network.create_bridge(config)
    for instance in instances:
        network.attach(config, instance)
        _make_cgroup(layout, instance)
    redis_instance, service_instances = instances[0], instances[1:]
    _write_layout(config, instances, {})
    progress("starting the application's Redis and loading the social graph")
    started = {
        redis_instance.name: _start(config, layout, redis_instance, _redis_command(config, redis_instance))
    }
    store = _wait_for_redis(config, redis_instance, started[redis_instance.name])
    edges = graph.load(
        store, config.users, graph.friendships(config.users, config.friends_per_user, config.graph_seed)
    )
    progress(f"social graph: {config.users} users, {edges} friendships")
    _write_peers(config, service_instances)
    for instance in service_instances:
        command = [
            sys.executable,
            "-m",
            "firm.testbed.server",
            "--state-dir",
            config.state_dir,
            "--instance",
            instance.name,
        ]
        started[instance.name] = _start(config, layout, instance, command)
    progress(f"waiting for {len(service_instances)} service instances to answer")
    asyncio.run(_wait_healthy(config, service_instances, started))
    if config.seed_posts:
        progress(f"seeding {config.seed_posts} posts and warming the services up")
        asyncio.run(_seed(config, next(i for i in service_instances if i.service == "frontend")))
    sampler = _start_sampler(config, instances, progress)
    _write_layout(config, instances, started, sampler)


def _make_cgroup(layout: cgroup.Layout, instance: Instance) -> None:
    spec = instance.spec
    group = cgroup.group_at(layout, instance.cgroup)
    settings = cgroup.CgroupSettings(
        cpu_quota_us=spec.cpu_quota_us,
        cpu_period_us=100000,
        cpu_weight=spec.cpu_weight,
        cpuset_cpus=spec.cpus,
        memory_max=spec.memory_max,
    )
    cgroup.ensure_cgroup(group, settings)


def redis_password_file(config: TestbedConfig) -> str:
    """The application Redis's password, generated at ``up`` (mode 0600, removed by ``down``)."""
    return os.path.join(config.state_dir, "redis.password")


def _redis_command(config: TestbedConfig, instance: Instance) -> list[str]:
    """redis-server on the bridge address only, requiring the password (from a 0600 configuration file,
    so that no command line shows it)."""
    password = redis_auth.ensure_password(redis_password_file(config))
    conf = os.path.abspath(os.path.join(config.state_dir, "redis.conf"))
    descriptor = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(f'requirepass "{password}"\n')
    limit = max(64 << 20, instance.spec.memory_max - (64 << 20))
    return [
        "redis-server",
        conf,
        "--bind",
        instance.address,
        "--port",
        "6379",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
        "--maxmemory",
        str(limit),
        "--maxmemory-policy",
        "noeviction",
        "--daemonize",
        "no",
    ]


def _start(
    config: TestbedConfig, layout: cgroup.Layout, instance: Instance, command: list[str]
) -> ProcessRef:
    """Start ``command`` in the instance's namespace and cgroups, detached from this process."""
    group = cgroup.group_at(layout, instance.cgroup)
    log_path = os.path.join(config.state_dir, f"{instance.name}.log")
    with open(log_path, "ab") as output:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", instance.namespace, *command],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
            cwd=config.state_dir,
            preexec_fn=functools.partial(cgroup.join, group),  # noqa: PLW1509 - no threads run here yet
        )
    return ProcessRef.of(proc.pid)


def _start_sampler(config: TestbedConfig, instances: list[Instance], progress: Progress) -> ProcessRef | None:
    """The telemetry sampler (firm's, like cAdvisor on a cluster: in no testbed cgroup), if firm's Redis answers."""
    if not config.telemetry_redis:
        return None
    try:
        redis_auth.connect(config.telemetry_redis, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        progress(
            f"no telemetry: firm's Redis at {config.telemetry_redis} does not answer ({exc}); "
            "start it with `make services`"
        )
        return None
    command = [
        sys.executable,
        "-m",
        "firm.telemetry",
        "--redis",
        config.telemetry_redis,
        "--quiet",
        "--interval",
        str(config.telemetry_interval_s),
    ]
    for instance in instances:
        command += [
            "--instance",
            f"service={instance.service},name={instance.name},cgroup={instance.cgroup},"
            f"interface={instance.host_interface}",
        ]
    with open(os.path.join(config.state_dir, "telemetry.log"), "ab") as output:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=output, stderr=output, start_new_session=True
        )
    progress(f"telemetry: every {config.telemetry_interval_s:g} s into {config.telemetry_redis}")
    return ProcessRef.of(proc.pid)


def _wait_for_redis(
    config: TestbedConfig, instance: Instance, process: ProcessRef, timeout_s: float = 20.0
) -> redis.Redis:
    client = app_redis(
        {"redis_address": instance.address, "redis_password_file": redis_password_file(config)},
        socket_timeout=5,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            return client
        except redis.RedisError:
            if not process.alive() or time.monotonic() > deadline:
                raise TestbedError(
                    "the application's Redis did not start",
                    fix=f"see {instance.name}.log in {config.state_dir}",
                ) from None
            time.sleep(0.1)


async def _wait_healthy(
    config: TestbedConfig, instances: list[Instance], started: dict[str, ProcessRef], timeout_s: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = list(instances)
    while waiting:
        still = []
        for instance in waiting:
            if not started[instance.name].alive():
                raise TestbedError(
                    f"{instance.name} exited at start: {_log_tail(config, instance)}",
                    fix=f"see {instance.name}.log in {config.state_dir}",
                )
            if await health(config, instance) is None:
                still.append(instance)
        waiting = still
        if waiting and time.monotonic() > deadline:
            raise TestbedError(
                f"{', '.join(i.name for i in waiting)} did not answer within {timeout_s:.0f} s",
                fix="see their logs in the state directory; a busy machine may need a larger start timeout",
            )
        if waiting:
            await asyncio.sleep(0.2)


async def _seed(config: TestbedConfig, frontend: Instance, concurrency: int = 8) -> None:
    """Compose ``seed_posts`` posts from random users (seeded) and read timelines as many times."""
    rng = random.Random(config.graph_seed)
    pool = rpc.Pool(frontend.address, config.port, size=concurrency, timeout_s=30)
    jobs = []
    for n in range(config.seed_posts):
        user = rng.randrange(config.users)
        jobs.append(
            (
                "compose_post",
                {
                    "user_id": user,
                    "text": f"post {n} from user_{user} @user_{rng.randrange(config.users)}",
                    "media": [],
                },
            )
        )
        jobs.append(
            (
                rng.choice(["read_home_timeline", "read_user_timeline"]),
                {"user_id": rng.randrange(config.users), "start": 0, "stop": 10},
            )
        )
    slots = asyncio.Semaphore(concurrency)

    async def one(operation: str, payload: dict[str, Any]) -> None:
        async with slots:
            await pool.call(operation, payload)

    try:
        await asyncio.gather(*(one(op, payload) for op, payload in jobs))
    except rpc.RpcError as exc:
        raise TestbedError(
            f"the application fails its first requests: {exc.message}",
            fix="see the instances' logs in the state directory",
        ) from exc
    finally:
        pool.close()


async def health(config: TestbedConfig, instance: Instance) -> float | None:
    """Round-trip time of the instance's health check in ms, or None when it does not answer."""
    pool = rpc.Pool(instance.address, config.port, size=1, timeout_s=2.0)
    start = time.perf_counter()
    try:
        await pool.call("health", {})
    except rpc.RpcError:
        return None
    finally:
        pool.close()
    return (time.perf_counter() - start) * 1000


def _log_tail(config: TestbedConfig, instance: Instance) -> str:
    try:
        with open(
            os.path.join(config.state_dir, f"{instance.name}.log"), encoding="utf-8", errors="replace"
        ) as f:
            return f.read()[-1500:].strip()
    except OSError:
        return "(no log)"


def _write_layout(
    config: TestbedConfig,
    instances: list[Instance],
    started: dict[str, ProcessRef],
    sampler: ProcessRef | None = None,
) -> None:
    state = TestbedState(
        port=config.port,
        redis_address=instances[0].address,
        data_dir=config.data_dir,
        redis_password_file=redis_password_file(config),
        span_retention=config.span_retention,
        sampling=config.sampling,
        bridge=config.bridge,
        frontend=f"http://{next(i.address for i in instances if i.service == 'frontend')}:{config.port}",
        instances=tuple(
            dict(asdict(i), process=asdict(started[i.name]) if i.name in started else None) for i in instances
        ),
        telemetry=asdict(sampler) if sampler else None,
        telemetry_redis=config.telemetry_redis,
    )
    write_state(config, state)


def write_state(config: TestbedConfig, state: TestbedState) -> None:
    """Replace the state file (written whole and renamed, so a reader never sees half)."""
    testbed_state.write(state_file(config), state)


def state_instances(state: TestbedState) -> list[Instance]:
    """The instances the state file names (Redis first), scaled-out ones included."""
    return state.instance_list()


def _write_peers(config: TestbedConfig, instances: list[Instance]) -> None:
    peers: dict[str, list[str]] = {}
    for instance in instances:
        peers.setdefault(instance.service, []).append(instance.address)
    write_peers(config, peers)


def write_peers(config: TestbedConfig, peers: Mapping[str, list[str]]) -> None:
    """Where each service's instances answer ({service: [address, ...]}); written whole and renamed, so a
    reader never sees half. Every instance reloads it within a second (and at each health check)."""
    path = os.path.join(config.state_dir, "peers.json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(peers, handle)
    os.replace(path + ".tmp", path)


def down(config: TestbedConfig, progress: Progress = log.info) -> list[str]:
    """Remove everything the testbed made; returns what was removed (empty when nothing was there).

    Works from the naming conventions as well as from the state file, so it also cleans up after a
    start whose state file was lost.
    """
    removed: list[str] = []
    try:
        state = read_state(config)
    except (
        StateFileError
    ) as exc:  # down is the fix for an unreadable state: clean up by the naming conventions
        log.debug("ignoring the state file: %s", exc)
        state = None
    anomalies = anomaly.Environment(state_dir=os.path.join(config.state_dir, "anomalies"))
    for record in anomaly.Store(anomalies.state_dir).all():
        anomaly.stop(record.spec.name, anomalies)
        removed.append(f"anomaly {record.spec.name}")
    for pid in _samplers_of(config):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        removed.append("telemetry sampler")
    for entry, process in zip(state.instances, state.processes(), strict=True) if state is not None else ():
        if process is not None and process.alive():
            stop_group(process)
            removed.append(f"process {entry['name']}")
    removed += network.remove(config)
    removed += _remove_cgroups(config)
    removed += _remove_directories(config, progress)
    if removed:
        progress(f"removed {len(removed)} things: processes, namespaces, bridge, cgroups, files")
    return removed


def _remove_directories(config: TestbedConfig, progress: Progress) -> list[str]:
    """The state and data directories, whole, where ``up`` marked them (OWNER_MARK); an empty one
    without the mark too. One that holds files without the mark is left, and said so."""
    removed = []
    for key in ("state_dir", "data_dir"):
        directory = getattr(config, key)
        if not os.path.isdir(directory) or os.path.islink(directory):
            continue
        if owned(directory):
            shutil.rmtree(directory)
        elif not os.listdir(directory):
            os.rmdir(directory)
        else:
            progress(
                f"left {key} {directory}: the testbed did not make it (no {OWNER_MARK} in it); "
                "remove what is the testbed's in it yourself"
            )
            continue
        removed.append(directory)
    return removed


def _samplers_of(config: TestbedConfig) -> list[int]:
    """Telemetry samplers of this testbed (they name its cgroups on their command line)."""
    marker = f"cgroup={config.cgroup_parent}/".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    command = handle.read()
            except OSError:
                continue
            if b"firm.telemetry" in command and marker in command:
                found.append(int(entry))
    return found


def _remove_cgroups(config: TestbedConfig) -> list[str]:
    parent = cgroup.group_at(cgroup.detect_layout(), config.cgroup_parent)
    if not any(os.path.isdir(d) for d in parent.distinct_dirs()):
        return []
    cgroup.signal_members(parent)  # anything a killed instance left behind
    cgroup.remove_group_when_empty(parent, wait_s=10)
    return [f"cgroup {config.cgroup_parent}"]
