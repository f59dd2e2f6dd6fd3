"""Scaling a service of the running testbed out and in, without dropping a request.

``scale_out`` starts another instance of a service the way ``firm testbed up`` starts the first ones:
a network namespace of its own with a veth on the bridge, cgroups of its own with the service's
configured (baseline) limits, the same server process. Once it answers, it is written into the
testbed's state file (discovery sees it: name, address, cgroup, veth, process), a telemetry sampler
of its own starts writing ``firm:telemetry:<instance>``, and it is added to ``peers.json``. The call
returns when every other instance reports (in its health check) that it routes calls to it.

``scale_in`` drains the newest instance of a service: it leaves ``peers.json`` first; the call waits
until every other instance reports that it no longer picks it and that none of its calls to it is
still under way (a caller keeps the pool of a removed peer until its last call has answered); only
then is the instance stopped and its namespace and cgroups removed. It never removes a service's
last instance, and when the drain does not finish within ``scale_timeout_s`` the instance is put
back into ``peers.json`` and nothing else changes.

Each step that changes the machine registers its undo before it runs; a failure runs the undos in
reverse order (process, sampler, state entry, peers, namespace and veth, cgroups), so a half-started
instance never stays behind. ``firm testbed down`` removes scaled-out instances like the others.

Callers run these functions from a thread without a running event loop (they use ``asyncio.run``);
concurrent scale requests on one testbed are serialised by a lock file in its state directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError, InvalidInputError
from ansible_collections.firm.core.plugins.module_utils.process import ProcessRef, stop_group
from firm.testbed import enter, lifecycle, network, rpc
from firm.testbed.config import ConfigError, Instance, ServiceSpec, TestbedConfig
from firm.testbed.state import TestbedState, instance_of

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

Progress = Callable[[str], None]
Report = Mapping[str, Any] | None
"""An instance's health-check answer (``in_flight``, ``routes``, ``draining``), None when it did not answer."""

ENTRY_POINTS = frozenset({"frontend"})
"""Services reached from outside at one fixed address (the load generator's URL): no caller balances them."""


class ScaleError(FirmError):
    """A scale request was refused before anything changed, or failed and was rolled back."""


class ScaleInputError(ScaleError, InvalidInputError):
    """The request names something the testbed cannot scale (unknown service, at a bound)."""


# --------------------------------------------------------------------------------------------------
# the API


def replicas(config: TestbedConfig, service: str) -> list[str]:
    """Names of the running instances of ``service``, oldest first (e.g. ``["text-0", "text-1"]``).

    Raises ScaleInputError for an unknown service, ScaleError when the testbed is not up.
    """
    _known(config, service)
    return [e["name"] for e in _entries_of(_state(config, running=False), service)]


def scale_out(config: TestbedConfig, service: str, *, progress: Progress = log.info) -> Instance:
    """Start one more instance of ``service`` and add it to its callers' round robin.

    Returns the new instance (its name, address, namespace, cgroup path and host-side veth). Raises
    ScaleInputError (unknown service, the frontend, at ``max_instances``, no free address) before
    anything changes, ScaleError when the testbed is not up or a step fails (everything it had made
    is removed again).
    """
    spec = _spec(config, service)
    with _locked(config):
        state = _state(config, running=True)
        present = _entries_of(state, service)
        if len(present) >= max_replicas(spec):
            raise ScaleInputError(
                f"{service} already runs {len(present)} instances, its max_instances",
                fix=f"scale another service, or raise services.{service}.max_instances (at most 8) in the "
                "testbed configuration and bring the testbed up again",
            )
        instance, index = plan_instance(config, state, service)
        _preflight()
        progress(f"starting {instance.name} at {instance.address} ({instance.namespace}, {instance.cgroup})")
        undo: list[tuple[str, Callable[[], object]]] = []
        try:
            _start_instance(config, state, instance, index, undo, progress)
        except BaseException as exc:
            progress(f"scale-out of {service} failed; removing {instance.name} again")
            failures = _run_each(reversed(undo))
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: rolled back, passed on
                raise
            left = f"; and {'; '.join(failures)} (`firm testbed down` removes everything)" if failures else ""
            fix = (
                exc.fix
                if isinstance(exc, FirmError) and exc.fix
                else f"see {os.path.join(config.state_dir, instance.name + '.log')}"
            )
            raise ScaleError(
                f"scale-out of {service} failed and was rolled back: "
                f"{exc.message if isinstance(exc, FirmError) else exc}{left}",
                fix=fix,
            ) from exc
        progress(f"{instance.name} takes requests: {service} runs {len(present) + 1} instances")
        return instance


def scale_in(config: TestbedConfig, service: str, *, progress: Progress = log.info) -> str:
    """Drain the newest instance of ``service``, stop it and remove it; returns its name.

    Raises ScaleInputError (unknown service, the frontend, its last instance) before anything
    changes, ScaleError when the testbed is not up or the instance does not drain within
    ``scale_timeout_s`` (it then goes back into the peers and keeps running).
    """
    _spec(config, service)
    try:
        return _scale_in(config, service, progress)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:  # the state directory, ip, a process
        raise ScaleError(
            f"scale-in of {service} failed: {exc}",
            fix="check `firm testbed status`; `firm testbed down` removes everything",
        ) from exc


def _scale_in(config: TestbedConfig, service: str, progress: Progress) -> str:
    with _locked(config):
        state = _state(config, running=True)
        present = _entries_of(state, service)
        if len(present) <= 1:
            raise ScaleInputError(
                f"{service} runs {len(present)} instance; its last one is never removed",
                fix="scale in only a service that runs two or more instances",
            )
        _preflight()
        victim = present[-1]
        others = [e for e in state.instances if e["name"] != victim["name"] and e["service"] != "redis"]
        progress(f"draining {victim['name']}: out of the peers, waiting for the calls under way to it")
        lifecycle.write_peers(config, peer_map(e for e in state.instances if e is not victim))
        try:
            asyncio.run(
                _await_reports(
                    config, others, lambda r: drained_of(r, service, victim["address"]), victim=victim
                )
            )
        except BaseException as exc:
            lifecycle.write_peers(config, peer_map(state.instances))
            if isinstance(exc, ScaleError):
                raise ScaleError(
                    f"{victim['name']} did not drain ({exc.message}); it is back in the peers and "
                    "keeps running",
                    fix=exc.fix,
                ) from exc
            raise
        samplers = dict(state.scaled_telemetry)
        sampler = samplers.pop(victim["name"], None)
        lifecycle.write_state(
            config,
            state.with_instances([e for e in state.instances if e is not victim], scaled_telemetry=samplers),
        )
        progress(f"{victim['name']} drained; stopping it and removing its namespace and cgroups")
        failures = _run_each(
            [
                ("stop the process", lambda: stop_group(ProcessRef(**victim["process"]))),
                ("stop its telemetry sampler", lambda: _stop(sampler)),
                ("delete its namespace and veth", lambda: network.detach(_instance_of(victim))),
                ("remove its cgroups", lambda: _remove_cgroup(victim["cgroup"])),
                (
                    "remove its description",
                    lambda: _remove_file(os.path.join(config.state_dir, f"{victim['name']}.instance.json")),
                ),
            ]
        )
        if failures:
            raise ScaleError(
                f"{victim['name']} was drained and left the testbed, but {'; '.join(failures)}",
                fix="run `firm testbed down` to remove what is left",
            )
        return str(victim["name"])


# --------------------------------------------------------------------------------------------------
# pure parts (unit-tested)


def max_replicas(spec: ServiceSpec) -> int:
    """Most instances of the service scale-out may run: its ``max_instances``, or its configured
    ``instances`` when those are more."""
    return max(spec.max_instances, spec.instances)


def peer_map(entries: Iterator[Mapping[str, Any]] | Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """``peers.json``'s content for the given state entries: {service: [address, ...]}, Redis left out."""
    peers: dict[str, list[str]] = {}
    for entry in entries:
        if entry["service"] != "redis":
            peers.setdefault(entry["service"], []).append(entry["address"])
    return peers


def routes_to(report: Report, service: str, address: str) -> bool:
    """Whether an instance's health report says its calls to ``service`` go to ``address`` among others."""
    return report is not None and address in (report.get("routes") or {}).get(service, [])


def drained_of(report: Report, service: str, address: str) -> bool:
    """Whether an instance neither picks ``address`` for ``service`` nor has a call to it under way."""
    return (
        report is not None
        and not routes_to(report, service, address)
        and not (report.get("draining") or {}).get(address)
    )


def instance_number(name: str, service: str) -> int | None:
    """3 for ``text-3`` of ``text``; None for a name not of that form."""
    prefix = f"{service}-"
    suffix = name[len(prefix) :]
    return int(suffix) if name.startswith(prefix) and suffix.isdigit() else None


def plan_instance(config: TestbedConfig, state: TestbedState, service: str) -> tuple[Instance, int]:
    """The next instance of ``service`` and its address index (address = subnet + 2 + index).

    Its number is one above any its service has used (a configured instance's name is never given
    to another process). Its index comes from ``state.next_index``, which only grows, so an address
    (and a veth name) is not reused while neighbours may still cache the old MAC; when the subnet is
    exhausted the lowest free index is taken. Raises ScaleInputError when no address is free.
    """
    spec = config.service(service)
    entries = state.instances
    numbers = {instance_number(e["name"], service) for e in entries if e["service"] == service}
    number = max({n for n in numbers if n is not None} | set(range(spec.instances))) + 1
    network_ = config.network
    used = {int(ipaddress.IPv4Address(e["address"])) - int(network_.network_address) - 2 for e in entries}
    highest = network_.num_addresses - 4  # .1 is the host, the last address the broadcast
    index = int(state.next_index or max(used) + 1)
    if index > highest or index in used:
        free = [i for i in range(1, highest + 1) if i not in used]
        if not free:
            raise ScaleInputError(
                f"subnet {config.subnet} has no free address for another instance",
                fix="scale another service in first, or use a larger subnet",
            )
        index = free[0]
    name = f"{service}-{number}"
    address = str(network_.network_address + 2 + index)
    return Instance(
        service,
        name,
        address,
        config.namespace_prefix + name,
        f"{config.cgroup_parent}/{name}",
        f"{config.veth_prefix}{index}",
        spec,
    ), index


# --------------------------------------------------------------------------------------------------
# steps


def _known(config: TestbedConfig, service: str) -> ServiceSpec:
    try:
        return config.service(service)
    except ConfigError:
        raise ScaleInputError(
            f"unknown service {service!r}", fix=f"name one of {', '.join(s.name for s in config.services)}"
        ) from None


def _spec(config: TestbedConfig, service: str) -> ServiceSpec:
    spec = _known(config, service)
    if service in ENTRY_POINTS:
        raise ScaleInputError(
            f"{service} is the entry point: clients reach it at one address and no caller balances it",
            fix="scale one of the services behind it",
        )
    return spec


def _state(config: TestbedConfig, *, running: bool) -> TestbedState:
    state = lifecycle.read_state(config)
    if state is None or (running and not lifecycle.is_up(config)):
        what = "is not up" if state is None else "has instances that no longer run"
        raise ScaleError(
            f"the testbed at {config.state_dir} {what}",
            fix="start it with `firm testbed up` (with the same --config)",
        )
    if state.bridge != config.bridge:
        raise ScaleError(
            f"the testbed at {config.state_dir} was started with bridge {state.bridge!r}, "
            f"not {config.bridge!r}",
            fix="pass the configuration it was started with (--config)",
        )
    return state


def _entries_of(state: TestbedState, service: str) -> list[dict[str, Any]]:
    entries = [e for e in state.instances if e["service"] == service]
    return sorted(entries, key=lambda e: instance_number(e["name"], service) or 0)


def _instance_of(entry: Mapping[str, Any]) -> Instance:
    return instance_of(entry)


def _preflight() -> None:
    try:
        lifecycle._preflight()
    except lifecycle.TestbedError as exc:
        raise ScaleError(str(exc), fix="run it as root on the machine of the testbed") from exc


@contextlib.contextmanager
def _locked(config: TestbedConfig) -> Iterator[None]:
    """One scale operation at a time on this testbed (a lock file in its state directory)."""
    try:
        handle = open(os.path.join(config.state_dir, "scale.lock"), "a+b")  # noqa: SIM115 - held across the block
    except OSError as exc:
        log.debug("cannot open the scale lock: %s", exc)
        raise ScaleError(
            f"the testbed at {config.state_dir} is not up",
            fix="start it with `firm testbed up` (with the same --config)",
        ) from exc
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _start_instance(
    config: TestbedConfig,
    state: TestbedState,
    instance: Instance,
    index: int,
    undo: list[tuple[str, Callable[[], object]]],
    progress: Progress,
) -> None:
    """Every step of a scale-out, each undo registered before its step runs."""
    layout = cgroup.detect_layout()
    undo.append(("delete its namespace and veth", lambda: network.detach(instance)))
    network.attach(config, instance)
    undo.append(("remove its cgroups", lambda: _remove_cgroup(instance.cgroup)))
    lifecycle._make_cgroup(layout, instance)
    description = os.path.join(config.state_dir, f"{instance.name}.instance.json")
    undo.append(("remove its description", lambda: _remove_file(description)))
    with open(description, "w", encoding="utf-8") as handle:  # read by its server before it is in the state
        json.dump(asdict(instance), handle)
    process = _start_server(config, instance)
    undo.append(("stop its process", lambda: stop_group(process)))
    asyncio.run(lifecycle._wait_healthy(config, [instance], {instance.name: process}, config.scale_timeout_s))
    entry = dict(asdict(instance), process=asdict(process))
    sampler = lifecycle._start_sampler(config, [instance], lambda _: None)
    if sampler is not None:
        undo.append(("stop its telemetry sampler", lambda: stop_group(sampler)))
    samplers = dict(state.scaled_telemetry)
    if sampler is not None:
        samplers[instance.name] = asdict(sampler)
    grown = state.with_instances([*state.instances, entry], next_index=index + 1, scaled_telemetry=samplers)
    # the index stays used up: a caller may still hold the address's old neighbour entry
    undo.append(
        (
            "take it out of the state file",
            lambda: lifecycle.write_state(config, replace(state, next_index=index + 1)),
        )
    )
    lifecycle.write_state(config, grown)
    undo.append(("take it out of the peers and drain it", lambda: _retire(config, state, instance)))
    lifecycle.write_peers(config, peer_map(grown.instances))
    progress(f"{instance.name} answers; waiting until every caller routes to it")
    others = [e for e in grown.instances if e["service"] != "redis"]
    asyncio.run(_await_reports(config, others, lambda r: routes_to(r, instance.service, instance.address)))


def _start_server(config: TestbedConfig, instance: Instance) -> ProcessRef:
    """The instance's server in its namespace and cgroups, detached from this process (which may run threads,
    so the child joins its cgroups by itself before it becomes the server)."""
    command = [
        "ip",
        "netns",
        "exec",
        instance.namespace,
        sys.executable,
        "-m",
        "firm.testbed.server",
        "--state-dir",
        config.state_dir,
        "--instance",
        instance.name,
    ]
    with open(
        os.path.join(config.state_dir, f"{instance.name}.log"), "wb"
    ) as output:  # not an earlier namesake's
        proc = subprocess.Popen(
            enter.command_line(instance.cgroup, command),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
            cwd=config.state_dir,
        )
    return ProcessRef.of(proc.pid)


def _retire(config: TestbedConfig, state: TestbedState, instance: Instance) -> None:
    """Undo of the peers step: the instance leaves the peers; wait (bounded) until its calls have answered."""
    lifecycle.write_peers(config, peer_map(state.instances))
    others = [e for e in state.instances if e["service"] != "redis"]
    with contextlib.suppress(ScaleError):
        asyncio.run(
            _await_reports(config, others, lambda r: drained_of(r, instance.service, instance.address))
        )


def _remove_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _stop(process: Mapping[str, int] | None) -> None:
    if process is not None:
        stop_group(ProcessRef(**process))


def _remove_cgroup(path: str) -> list[str]:
    group = cgroup.group_at(cgroup.detect_layout(), path)
    if not any(os.path.isdir(d) for d in group.distinct_dirs()):
        return []
    cgroup.signal_members(group)
    return cgroup.remove_group_when_empty(group, wait_s=10)


def _run_each(steps: Iterable[tuple[str, Callable[[], object]]]) -> list[str]:
    """Run every step in order, each even when an earlier one failed; returns the failures."""
    failures = []
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            log.warning("could not %s: %s", what, exc)
            failures.append(f"could not {what}: {exc}")
    return failures


async def _health(config: TestbedConfig, address: str) -> Report:
    pool = rpc.Pool(address, config.port, size=1, timeout_s=2.0)
    try:
        result, _ = await pool.call("health", {})
    except rpc.RpcError:
        return None
    finally:
        pool.close()
    return result if isinstance(result, dict) else None


async def _await_reports(
    config: TestbedConfig,
    entries: Sequence[Mapping[str, Any]],
    done: Callable[[Report], bool],
    *,
    victim: Mapping[str, Any] | None = None,
    poll_s: float = 0.05,
) -> None:
    """Poll the health of ``entries`` until ``done`` holds for each that still runs (and, with a ``victim``,
    until it handles no request), for at most ``scale_timeout_s``; raises ScaleError naming the laggards."""
    deadline = time.monotonic() + config.scale_timeout_s
    waiting = list(entries)

    def alive(entry: Mapping[str, Any]) -> bool:
        return bool(entry.get("process")) and ProcessRef(**entry["process"]).alive()

    while True:
        reports: list[Awaitable[Report]] = [_health(config, e["address"]) for e in waiting]
        answers = await asyncio.gather(*reports)
        waiting = [e for e, r in zip(waiting, answers, strict=True) if not done(r) and alive(e)]
        victim_busy = False  # asked only once every other instance has confirmed
        if victim is not None and not waiting:
            report = await _health(config, victim["address"])
            victim_busy = alive(victim) and (report is None or bool(report.get("in_flight")))
        if not waiting and not victim_busy:
            return
        if time.monotonic() > deadline:
            laggards = [e["name"] for e in waiting] + (
                [f"{victim['name']} (requests under way)"] if victim_busy and victim is not None else []
            )
            raise ScaleError(
                f"after {config.scale_timeout_s:g} s, {', '.join(laggards)} had not caught up",
                fix="retry when the instances answer their health checks, or raise scale_timeout_s",
            )
        await asyncio.sleep(poll_s)
