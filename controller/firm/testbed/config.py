"""The testbed's configuration: services and their limits, network, storage, social graph, SLOs.

Defaults fit a 2-core machine; a YAML file (``firm testbed up --config FILE``) overrides any of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from firm.load.config import RequestType
from firm.load.errors import LoadSpecError


class ConfigError(ValueError):
    """The configuration names a field wrongly or gives it a value out of range."""


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the application and the limits of each of its instances."""

    name: str
    """Service name (also the RPC target name)."""
    instances: int = 1
    """Number of instances; callers spread requests over them round robin."""
    cpus: str = "0-1"
    """cpuset of each instance, in the kernel's list format."""
    cpu_quota_us: int = 50000
    """CPU time per 100 ms period, microseconds; -1 for unlimited."""
    cpu_weight: int = 100
    """Relative CPU weight, cgroup v2 units (1..10000)."""
    memory_max: int = 256 << 20
    """Memory limit, bytes."""
    work_ms: float = 0.3
    """CPU time of the business logic of each request it handles, milliseconds (it takes longer when
    the CPU is contended, which is the point)."""
    max_instances: int = 4
    """Most instances scale-out may run (``firm testbed scale``), 1 to 8; a service configured with more
    ``instances`` keeps those."""


# Placement on two CPUs: the write path (compose, storage, timelines) shares CPU 0 with the frontend;
# the helpers of compose and the read side's graph lookups run on CPU 1.
DEFAULT_SERVICES = (
    ServiceSpec("frontend", cpus="0", cpu_quota_us=100000, work_ms=1.0),
    ServiceSpec("compose-post", cpus="0", work_ms=4.0),
    ServiceSpec("unique-id", cpus="1", work_ms=0.1),
    ServiceSpec("text", cpus="1", work_ms=2.0),
    ServiceSpec("url-shorten", cpus="1", work_ms=0.3),
    ServiceSpec("user-mention", cpus="1", work_ms=0.3),
    ServiceSpec("media", cpus="1", work_ms=0.2),
    ServiceSpec("user", cpus="1", work_ms=0.5),
    ServiceSpec("post-storage", cpus="0", work_ms=2.5),
    ServiceSpec("user-timeline", cpus="0", work_ms=1.5),
    ServiceSpec("home-timeline", cpus="0", work_ms=2.5),
    ServiceSpec("social-graph", cpus="1", work_ms=1.0),
)


@dataclass(frozen=True)
class TestbedConfig:
    """Everything ``firm testbed up`` builds."""

    services: tuple[ServiceSpec, ...] = DEFAULT_SERVICES
    """The application's services (the call graph between them is fixed)."""
    redis: ServiceSpec = ServiceSpec("redis", cpus="0-1", cpu_quota_us=-1, memory_max=512 << 20)
    """The application's Redis (timelines, social graph, the trace store), a service like the others."""
    subnet: str = "198.51.100.0/24"
    """Bridge subnet (a documentation range: it never leaves this machine); the host takes .1."""
    bridge: str = "firmtb0"
    """Name of the bridge in the host namespace."""
    namespace_prefix: str = "firmtb-"
    """Network namespaces are <prefix><instance>."""
    veth_prefix: str = "ftb"
    """Host ends of the veths are <prefix><n> (at most 15 characters in all)."""
    cgroup_parent: str = "firm-testbed"
    """Instances' cgroups are <parent>/<instance> in every hierarchy."""
    port: int = 8080
    """Port every service listens on, in its own namespace."""
    state_dir: str = "/run/firm/testbed"
    """State file, logs and PIDs."""
    data_dir: str = "/var/lib/firm/testbed"
    """Post storage's files (on disk, fsynced on every post)."""
    users: int = 962
    """Users of the social network (socfb-Reed98 has 962)."""
    friends_per_user: int = 20
    """Edges each new user brings in the preferential-attachment graph (about 19K edges for 962 users)."""
    graph_seed: int = 1
    """Seed of the social graph."""
    seed_posts: int = 300
    """Posts composed (and reads made) when the testbed starts, so timelines are not empty and the
    services are warm before the first measurement."""
    sampling: float = 1.0
    """Share of requests traced (1.0: every request)."""
    span_retention: int = 300000
    """Spans kept in the trace store (about five minutes at the default load)."""
    slo_ms: Mapping[str, float] = field(default_factory=lambda: {
        "compose-post": 250.0, "read-home-timeline": 120.0, "read-user-timeline": 120.0})
    """SLO per request type (compose-post, read-home-timeline, read-user-timeline): p99 latency, ms."""
    telemetry_redis: str = "redis://127.0.0.1:6379/0"
    """firm's Redis, where the telemetry sampler writes ``firm:telemetry:<instance>`` (empty: no sampler)."""
    telemetry_interval_s: float = 1.0
    """Seconds between telemetry samples of every instance."""
    slo_window_s: float = 5.0
    """Length of the windows whose p99 is held to the SLO, seconds (long enough for a stable p99)."""
    scale_timeout_s: float = 30.0
    """Seconds scale-out waits for a new instance to answer and for every caller to route to it, and
    scale-in for every caller to stop routing to an instance and for its requests under way to end."""
    rate_rps: float = 40.0
    """Default load, requests per second."""
    mix: Mapping[str, float] = field(default_factory=lambda: {
        "compose-post": 10.0, "read-home-timeline": 60.0, "read-user-timeline": 30.0})
    """Default request mix, weights per request type (DeathStarBench's 10/60/30)."""

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    def host_address(self) -> str:
        return str(self.network.network_address + 1)

    def instances(self) -> list[Instance]:
        """Every instance, Redis first, with its address, namespace, cgroup and host-side veth."""
        specs = [(self.redis, 0)] + [(s, i) for s in self.services for i in range(s.instances)]
        result = []
        for index, (spec, number) in enumerate(specs):
            name = spec.name if spec is self.redis else f"{spec.name}-{number}"
            result.append(Instance(spec.name, name, str(self.network.network_address + 2 + index),
                                   self.namespace_prefix + name, f"{self.cgroup_parent}/{name}", f"{self.veth_prefix}{index}", spec))
        return result

    def service(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise ConfigError(f"no service named {name!r}; the services are {', '.join(s.name for s in self.services)}")


@dataclass(frozen=True)
class Instance:
    """One running copy of a service."""

    service: str
    name: str
    address: str
    namespace: str
    cgroup: str
    host_interface: str
    spec: ServiceSpec


def load(path: str | Path | None = None) -> TestbedConfig:
    """The defaults, overridden by a YAML file's top-level keys (services by name)."""
    config = TestbedConfig()
    if path is None:
        return validate(config)
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read testbed config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"testbed config {path} is not a mapping of settings")
    return validate(_apply(config, data, str(path)))


def _apply(config: TestbedConfig, data: Mapping[str, Any], source: str) -> TestbedConfig:
    known = {f.name for f in fields(TestbedConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown settings {', '.join(unknown)}; the settings are {', '.join(sorted(known))}")
    changes = {k: v for k, v in data.items() if k != "services"}
    if "redis" in changes:
        changes["redis"] = _service(config.redis, changes["redis"], f"{source}: redis")
    for key in ("slo_ms", "mix"):
        if key in changes:
            changes[key] = {**getattr(config, key), **{_request_type(k, f"{source}: {key}"): v
                                                       for k, v in changes[key].items()}}
    services = config.services
    if "services" in data:
        by_name = {s.name: s for s in services}
        for name, overrides in (data["services"] or {}).items():
            if name not in by_name:
                raise ConfigError(f"{source}: no service named {name!r}; the services are {', '.join(by_name)}")
            by_name[name] = _service(by_name[name], overrides, f"{source}: services.{name}")
        services = tuple(by_name[s.name] for s in services)
    return replace(config, services=services, **changes)


def _request_type(name: str, where: str) -> str:
    try:
        return RequestType.parse(str(name)).value
    except LoadSpecError as exc:
        raise ConfigError(f"{where}: unknown request type {name!r}; use compose, home or user") from exc


def _service(spec: ServiceSpec, overrides: Mapping[str, Any], where: str) -> ServiceSpec:
    known = {f.name for f in fields(ServiceSpec)} - {"name"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown settings {', '.join(unknown)}; use {', '.join(sorted(known))}")
    return replace(spec, **overrides)


def validate(config: TestbedConfig) -> TestbedConfig:
    """Refuse values the testbed cannot build, naming the setting and what would work."""
    network = config.network
    needed = 2 + len(config.instances())
    if network.num_addresses - 2 < needed:
        raise ConfigError(f"subnet {config.subnet} has too few addresses for {needed} instances; use a /24")
    if len(config.veth_prefix) > 12 or not config.veth_prefix.isalnum():
        raise ConfigError(f"veth_prefix {config.veth_prefix!r} must be letters and digits, at most 12 of them")
    for spec in (config.redis, *config.services):
        if not 1 <= spec.instances <= 8:
            raise ConfigError(f"services.{spec.name}.instances is {spec.instances}; use 1 to 8")
        if not 1 <= spec.max_instances <= 8:
            raise ConfigError(f"services.{spec.name}.max_instances is {spec.max_instances}; use 1 to 8")
    if not config.scale_timeout_s > 0:
        raise ConfigError(f"scale_timeout_s is {config.scale_timeout_s!r}; give seconds above 0, e.g. 30")
    if not 0.0 < config.sampling <= 1.0:
        raise ConfigError(f"sampling is {config.sampling}; use a share in (0, 1]")
    for key in ("slo_ms", "mix"):
        for name, value in getattr(config, key).items():
            _request_type(name, key)
            if not isinstance(value, (int, float)) or value < 0 or (key == "slo_ms" and value <= 0):
                raise ConfigError(f"{key}.{name} is {value!r}; give a positive number")
    if config.users < config.friends_per_user + 1:
        raise ConfigError(f"users ({config.users}) must exceed friends_per_user ({config.friends_per_user})")
    return config
