"""The testbed's configuration: services and their limits, network, storage, social graph, SLOs.

Defaults fit a 2-core machine; a YAML file (``firm testbed up --config FILE``) overrides any of them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, Strict, TypeAdapter, ValidationError

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm import schema
from firm.load.config import MAX_RATE_RPS, RequestType
from firm.load.errors import LoadSpecError
from firm.urls import redact_url


class ConfigError(FirmError, ValueError):
    """The configuration names a field wrongly or gives it a value out of range."""


CPU_PERIOD_US = 100_000
"""The CFS period of every instance's cgroup, microseconds (the kernel's default, 100 ms)."""

MAX_CPU_QUOTA_US = 1000 * CPU_PERIOD_US
"""The largest CPU quota, microseconds per period: 1000 CPUs' worth (the kernel's own ceiling, about
2^44 us, is far above any machine's CPUs; a larger quota limits nothing)."""

MAX_MEMORY_BYTES = cgroup.MEMORY_V1_UNLIMITED_FLOOR - 4096
"""The largest memory limit, bytes: 4 EiB less a page (2^62 - 4096). The kernel keeps at most 2^63 - 1
bytes in whole pages, and cgroup v1 reads back any limit from 2^62 up as no limit at all; give -1 for
that."""


def _quota(value: int) -> int:
    if value != -1 and value < cgroup.CPU_QUOTA_MIN_US:
        raise ValueError(
            f"use -1 for unlimited or at least {cgroup.CPU_QUOTA_MIN_US} us (1 ms of each 100 ms)"
        )
    return value


def _memory(value: object) -> object:
    """Bytes, or a size such as ``512M`` (the one parser of sizes); -1 or ``max`` for no limit."""
    if isinstance(value, str):
        try:
            return cgroup.parse_size(value)
        except cgroup.CgroupInputError as exc:
            raise ValueError(exc.message) from None
    return value


def _memory_range(value: int) -> int:
    if value != -1 and value < 16 << 20:
        raise ValueError("give at least 16M (a service process needs that much), or -1 for no limit")
    return value


def _cpu_list(value: str) -> str:
    try:
        numbers = cgroup.parse_list(value, "cpus")
    except cgroup.CgroupInputError as exc:
        raise ValueError(exc.message) from None
    if not numbers:  # blank, or only commas: no CPU at all
        raise ValueError("names no CPU; give at least one CPU, e.g. 0 or 0-1")
    return value


MAX_SECONDS = 3600.0
"""The longest interval, window or timeout of the configuration, seconds."""

MAX_SLO_MS = 3_600_000.0
"""The largest p99 objective, milliseconds (an hour)."""

MAX_WORK_MS = 1000.0
"""The most CPU time of business logic per request, milliseconds."""

MAX_USERS = 100_000
"""The most users of the social graph (the graph is built in memory when the testbed starts)."""

MAX_FRIENDS = 1000
"""The most edges a new user brings into the social graph."""

MAX_SEED_POSTS = 100_000
"""The most posts composed when the testbed starts."""

MAX_SPAN_RETENTION = 100_000_000
"""The most spans the trace store keeps."""

_MAPPINGS = ("services", "redis", "slo_ms", "mix")
"""Settings that are mappings (of services, of a service's settings, of request types)."""


# Field types with their constraints: pydantic checks a configuration against them (types and
# ranges) before anything is built. Every number is strict: ``port: true``, ``instances: "2"``,
# ``rate_rps: "40"`` or ``sampling: true`` is refused rather than read as a number; a whole number is
# a number (``rate_rps: 40``). Only ``memory_max`` takes text, a size with its unit (``512M``).
_Int = Annotated[int, Strict()]
_Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
_Count = Annotated[int, Strict(), Field(ge=1, le=8)]
_Share = Annotated[_Number, Field(gt=0, le=1)]
_Quota = Annotated[int, Strict(), Field(le=MAX_CPU_QUOTA_US), AfterValidator(_quota)]
_Weight = Annotated[int, Strict(), Field(ge=cgroup.CPU_WEIGHT_MIN, le=cgroup.CPU_WEIGHT_MAX)]
_Memory = Annotated[
    int, BeforeValidator(_memory), Strict(), Field(le=MAX_MEMORY_BYTES), AfterValidator(_memory_range)
]
_Cpus = Annotated[str, AfterValidator(_cpu_list)]
_Port = Annotated[int, Strict(), Field(ge=1, le=65535)]
_Rate = Annotated[_Number, Field(gt=0, le=MAX_RATE_RPS)]
_Weights = Mapping[str, Annotated[_Number, Field(ge=0)]]
_Slos = Mapping[str, Annotated[_Number, Field(gt=0, le=MAX_SLO_MS)]]
_Seconds = Annotated[_Number, Field(gt=0, le=MAX_SECONDS)]

_FIXES = {
    "port": "give a TCP port from 1 to 65535, e.g. 8080",
    "rate_rps": f"give a number of requests per second above 0 and at most {MAX_RATE_RPS:g}, e.g. 40",
    "cpu_quota_us": (
        "give whole microseconds of CPU per 100 ms period: -1 (unlimited) or 1000 to "
        f"{MAX_CPU_QUOTA_US} (1000 CPUs; 50000 is half a CPU)"
    ),
    "cpu_weight": f"give a cgroup v2 weight from {cgroup.CPU_WEIGHT_MIN} to {cgroup.CPU_WEIGHT_MAX} (100 is the default)",
    "memory_max": (
        "give whole bytes or a size such as 256M or 1G (powers of 1024), from 16M to "
        f"{MAX_MEMORY_BYTES} (4 EiB less a page), or -1 for no limit"
    ),
    "telemetry_interval_s": f"give a number of seconds above 0 and at most {MAX_SECONDS:g}, e.g. 1",
    "slo_window_s": f"give a number of seconds above 0 and at most {MAX_SECONDS:g}, e.g. 5",
    "cpus": "give at least one CPU in the kernel's list format, e.g. 0, 1 or 0-1",
    "instances": "give 1 to 8",
    "max_instances": "give 1 to 8",
    "sampling": "give a number above 0 and at most 1, e.g. 1.0 to trace every request",
    "mix": "give a weight per request type, a number of 0 or more, e.g. compose: 10, home: 60, user: 30",
    "slo_ms": f"give a p99 objective per request type, a number of milliseconds above 0 and at most {MAX_SLO_MS:.0f}",
    "work_ms": f"give a number of milliseconds from 0 to {MAX_WORK_MS:g}, e.g. 0.5",
    "scale_timeout_s": f"give a number of seconds above 0 and at most {MAX_SECONDS:g}, e.g. 30",
    "users": f"give 2 to {MAX_USERS} users, e.g. 962",
    "friends_per_user": f"give 1 to {MAX_FRIENDS}, e.g. 20",
    "seed_posts": f"give 0 to {MAX_SEED_POSTS}, e.g. 300",
    "span_retention": f"give 1000 to {MAX_SPAN_RETENTION} spans, e.g. 300000",
    "graph_seed": "give a whole number, e.g. 1",
    "services": "give a mapping of service names to their settings, e.g. services: {text: {cpus: '1'}}",
    "redis": "give a mapping of settings, e.g. redis: {memory_max: 512M}",
    "subnet": "give an IPv4 network in CIDR form, e.g. 198.51.100.0/24",
    "telemetry_redis": "give a Redis URL such as redis://127.0.0.1:6379/0, or '' for no sampler",
}


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the application and the limits of each of its instances."""

    name: str
    """Service name (also the RPC target name)."""
    instances: _Count = 1
    """Number of instances; callers spread requests over them round robin."""
    cpus: _Cpus = "0-1"
    """cpuset of each instance, in the kernel's list format."""
    cpu_quota_us: _Quota = 50000
    """CPU time per 100 ms period, microseconds; -1 for unlimited."""
    cpu_weight: _Weight = 100
    """Relative CPU weight, cgroup v2 units (1..10000)."""
    memory_max: _Memory = 256 << 20
    """Memory limit, bytes; a YAML file may give a size such as ``512M`` (powers of 1024), -1: none."""
    work_ms: Annotated[_Number, Field(ge=0, le=MAX_WORK_MS)] = 0.3
    """CPU time of the business logic of each request it handles, milliseconds (it takes longer when
    the CPU is contended, which is the point)."""
    max_instances: _Count = 4
    """Most instances scale-out may run (``firm testbed scale``), 1 to 8; a service configured with more
    ``instances`` keeps those."""


# Placement on two CPUs, balanced by measured load (at the default 40 requests/s, RPC and tracing cost
# about as much CPU as the business logic): the frontend, compose and post storage share CPU 0; the
# timelines, the helpers of compose and the social graph run on CPU 1.
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
    ServiceSpec("user-timeline", cpus="1", work_ms=1.5),
    ServiceSpec("home-timeline", cpus="1", work_ms=2.5),
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
    """Host ends of the veths are <prefix><n> (an interface name: at most 15 bytes in all), so 1 to 12
    ASCII letters and digits."""
    cgroup_parent: str = "firm-testbed"
    """Instances' cgroups are <parent>/<instance> in every hierarchy."""
    port: _Port = 8080
    """Port every service listens on, in its own namespace."""
    state_dir: str = "/run/firm/testbed"
    """State file, logs and PIDs; an absolute path, not ``/`` (``firm testbed down`` deletes it)."""
    data_dir: str = "/var/lib/firm/testbed"
    """Post storage's files (on disk, fsynced on every post); an absolute path, not ``/`` (``firm
    testbed down`` deletes it)."""
    users: Annotated[int, Strict(), Field(ge=2, le=MAX_USERS)] = 962
    """Users of the social network (socfb-Reed98 has 962)."""
    friends_per_user: Annotated[int, Strict(), Field(ge=1, le=MAX_FRIENDS)] = 20
    """Edges each new user brings in the preferential-attachment graph (about 19K edges for 962 users)."""
    graph_seed: _Int = 1
    """Seed of the social graph."""
    seed_posts: Annotated[int, Strict(), Field(ge=0, le=MAX_SEED_POSTS)] = 300
    """Posts composed (and reads made) when the testbed starts, so timelines are not empty and the
    services are warm before the first measurement."""
    sampling: _Share = 1.0
    """Share of requests traced (1.0: every request)."""
    span_retention: Annotated[int, Strict(), Field(ge=1000, le=MAX_SPAN_RETENTION)] = 300000
    """Spans kept in the trace store (about five minutes at the default load)."""
    slo_ms: _Slos = field(
        default_factory=lambda: {
            "compose-post": 250.0,
            "read-home-timeline": 120.0,
            "read-user-timeline": 120.0,
        }
    )
    """SLO per request type (compose-post, read-home-timeline, read-user-timeline): p99 latency, ms."""
    telemetry_redis: str = "redis://127.0.0.1:6379/0"
    """firm's Redis, where the telemetry sampler writes ``firm:telemetry:<instance>`` (empty: no sampler)."""
    telemetry_interval_s: _Seconds = 1.0
    """Seconds between telemetry samples of every instance."""
    slo_window_s: _Seconds = 5.0
    """Length of the windows whose p99 is held to the SLO, seconds (long enough for a stable p99)."""
    scale_timeout_s: _Seconds = 30.0
    """Seconds scale-out waits for a new instance to answer and for every caller to route to it, and
    scale-in for every caller to stop routing to an instance and for its requests under way to end."""
    rate_rps: _Rate = 40.0
    """Default load, requests per second."""
    mix: _Weights = field(
        default_factory=lambda: {"compose-post": 10.0, "read-home-timeline": 60.0, "read-user-timeline": 30.0}
    )
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
            result.append(
                Instance(
                    spec.name,
                    name,
                    str(self.network.network_address + 2 + index),
                    self.namespace_prefix + name,
                    f"{self.cgroup_parent}/{name}",
                    f"{self.veth_prefix}{index}",
                    spec,
                )
            )
        return result

    def service(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise ConfigError(
            f"no service named {name!r}; the services are {', '.join(s.name for s in self.services)}"
        )


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
    """The defaults, overridden by a YAML file's top-level keys (services by name); an empty file (or
    one of comments only) keeps every default. Raises :class:`ConfigError` naming the file, the
    setting and the fix for a file that cannot be read (missing, a directory, not UTF-8, not YAML) or
    whose settings are wrong."""
    config = TestbedConfig()
    if path is None:
        return validate(config)
    data = schema.read_yaml_mapping(path, what="testbed config", doc="docs/testbed.md", error=ConfigError)
    applied = _apply(config, data, str(path))
    try:
        return validate(applied)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", fix=exc.fix) from None


def _mapping(value: object, where: str, fix: str) -> Mapping[Any, Any]:
    """``value`` when it is a mapping, ``{}`` when it is null (nothing overridden); else ConfigError."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} is {schema.yaml_kind(value)}, not a mapping", fix=fix)
    return value


def _unknown(keys: Any, known: set[str]) -> list[str]:
    return sorted(str(k) for k in keys if not isinstance(k, str) or k not in known)


def _apply(config: TestbedConfig, data: Mapping[Any, Any], source: str) -> TestbedConfig:
    known = {f.name for f in fields(TestbedConfig)}
    unknown = _unknown(data, known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown settings {', '.join(unknown)}",
            fix=f"use only the settings {', '.join(sorted(known))} (see docs/testbed.md)",
        )
    for key in _MAPPINGS:
        if key in data:
            _mapping(data[key], f"{source}: {key}", _FIXES[key])
    changes = {k: v for k, v in data.items() if k != "services"}
    if "redis" in changes:
        changes["redis"] = _service(config.redis, changes["redis"], f"{source}: redis")
    for key in ("slo_ms", "mix"):
        if key in changes:
            given: dict[str, Any] = {}
            for name, value in _mapping(changes[key], key, _FIXES[key]).items():
                kind = _request_type(name, f"{source}: {key}")
                if kind in given:
                    raise ConfigError(
                        f"{source}: {key} names {kind} twice", fix="give each request type once"
                    )
                given[kind] = value
            changes[key] = {**getattr(config, key), **given}
    services = config.services
    if "services" in data:
        by_name = {s.name: s for s in services}
        for name, overrides in _mapping(data["services"], "services", _FIXES["services"]).items():
            if name not in by_name:
                raise ConfigError(
                    f"{source}: no service named {name!r}",
                    fix=f"name one of the services {', '.join(by_name)}",
                )
            by_name[name] = _service(by_name[name], overrides, f"{source}: services.{name}")
        services = tuple(by_name[s.name] for s in services)
    return replace(config, services=services, **changes)


def _request_type(name: object, where: str) -> str:
    try:
        return RequestType.parse(str(name)).value
    except LoadSpecError:
        raise ConfigError(
            f"{where}: unknown request type {name!r}",
            fix="use compose-post, read-home-timeline or read-user-timeline (or compose, home, user)",
        ) from None


def _service(spec: ServiceSpec, overrides: object, where: str) -> ServiceSpec:
    known = {f.name for f in fields(ServiceSpec)} - {"name"}
    given = _mapping(
        overrides, where, f"give a mapping of the service's settings ({', '.join(sorted(known))})"
    )
    unknown = _unknown(given, known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown settings {', '.join(unknown)}", fix=f"use {', '.join(sorted(known))}"
        )
    return replace(spec, **given)


def _schema_checked(config: TestbedConfig) -> TestbedConfig:
    """``config`` checked against its field types and ranges (pydantic), sizes read as bytes."""
    raw = {f.name: getattr(config, f.name) for f in fields(TestbedConfig)}
    raw["services"] = [dataclasses.asdict(spec) for spec in config.services]
    raw["redis"] = dataclasses.asdict(config.redis)
    try:
        checked: TestbedConfig = _SCHEMA.validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(_schema_message(exc, config), fix=_schema_fix(exc)) from None
    return replace(
        checked, services=tuple(checked.services), slo_ms=dict(checked.slo_ms), mix=dict(checked.mix)
    )


def _by_name(loc: tuple[int | str, ...], config: TestbedConfig) -> tuple[int | str, ...]:
    """A location with a service's index replaced by its name: ``services.text.cpus``."""
    parts = list(loc)
    if (
        len(parts) > 1
        and parts[0] == "services"
        and isinstance(parts[1], int)
        and parts[1] < len(config.services)
    ):
        parts[1] = config.services[parts[1]].name
    return tuple(parts)


def _schema_message(exc: ValidationError, config: TestbedConfig) -> str:
    """Each problem in firm's words (:func:`firm.schema.problems`): the field, the value, what it wants."""
    errors = [{**error, "loc": _by_name(error["loc"], config)} for error in exc.errors()]
    shown = schema.problems(errors)  # type: ignore[arg-type]
    if len(shown) > schema.MAX_SHOWN:
        shown = [*shown[: schema.MAX_SHOWN], f"and {len(shown) - schema.MAX_SHOWN} more"]
    return "; ".join(shown)


def _schema_fix(exc: ValidationError) -> str:
    fixes = []
    for error in exc.errors():
        names = [str(p) for p in error["loc"] if isinstance(p, str)]
        fix = next((_FIXES[n] for n in reversed(names) if n in _FIXES), "see the settings in docs/testbed.md")
        if fix not in fixes:
            fixes.append(fix)
    return "; ".join(fixes)


_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
"""A network interface's name as the kernel accepts it (at most 15 bytes, no '/' or space); ASCII
only, so that characters are bytes."""

_VETH_PREFIX = re.compile(r"[A-Za-z0-9]{1,12}")
"""The start of the veths' host-side names, ``<prefix><n>``: ASCII, so that 12 characters are 12
bytes and leave 3 for the instance's number within the kernel's 15."""


def _check_directory(key: str, value: str) -> None:
    """``state_dir`` / ``data_dir``: an absolute path the kernel can take, and not the root directory
    (``firm testbed down`` deletes both); ConfigError naming the setting and the fix."""
    example = getattr(TestbedConfig, key)
    if not value.strip():
        raise ConfigError(f"{key} is empty", fix=f"give an absolute directory path, e.g. {example}")
    if "\x00" in value:
        raise ConfigError(
            f"{key} is {schema.shown(value)}, which holds a NUL character no path can hold",
            fix=f"give an absolute directory path, e.g. {example}",
        )
    if not os.path.isabs(value):
        raise ConfigError(
            f"{key} is {schema.shown(value)}, a relative path (it would depend on the directory firm is "
            "started from)",
            fix=f"give an absolute directory path, e.g. {example}",
        )
    if not os.path.normpath(value).strip("/"):
        raise ConfigError(
            f"{key} is {schema.shown(value)}, the root directory, which `firm testbed down` would delete",
            fix=f"give a directory of the testbed's own, e.g. {example}",
        )


def _check_names(config: TestbedConfig) -> None:
    """The subnet, the names given to the kernel and the telemetry Redis URL; ConfigError naming the
    setting and the fix."""
    try:
        ipaddress.IPv4Network(config.subnet)
    except ValueError as exc:
        raise ConfigError(f"subnet is {config.subnet!r}: {exc}", fix=_FIXES["subnet"]) from None
    if not _IFNAME.fullmatch(config.bridge) or config.bridge in (".", ".."):
        raise ConfigError(
            f"bridge is {config.bridge!r}, not a network interface name",
            fix="give 1 to 15 letters, digits, '-', '_' or '.', e.g. firmtb0",
        )
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", config.namespace_prefix):
        raise ConfigError(
            f"namespace_prefix is {config.namespace_prefix!r}",
            fix="give 1 to 40 letters, digits, '-', '_' or '.', e.g. firmtb-",
        )
    parts = config.cgroup_parent.split("/")
    if config.cgroup_parent.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ConfigError(
            f"cgroup_parent is {config.cgroup_parent!r}, not a path below the cgroup root",
            fix="give a relative path without '.' or '..' parts, e.g. firm-testbed",
        )
    for key in ("state_dir", "data_dir"):
        _check_directory(key, getattr(config, key))
    if not _VETH_PREFIX.fullmatch(config.veth_prefix):
        raise ConfigError(
            f"veth_prefix is {schema.shown(config.veth_prefix)}, not the start of a network interface name "
            "(at most 15 bytes with the instance's number)",
            fix="give 1 to 12 ASCII letters and digits, e.g. ftb",
        )
    wrong = schema.redis_url_problem(config.telemetry_redis) if config.telemetry_redis else None
    if wrong:
        raise ConfigError(
            f"telemetry_redis is {schema.shown(redact_url(config.telemetry_redis))}: {wrong}",
            fix=_FIXES["telemetry_redis"],
        )


def validate(config: TestbedConfig) -> TestbedConfig:
    """Refuse values the testbed cannot build, naming the setting and what would work.

    First the schema (every field's type and range, :data:`_SCHEMA`), then what spans fields.
    Raises :class:`ConfigError`.
    """
    config = _schema_checked(config)
    _check_names(config)
    network = config.network
    needed = 2 + len(config.instances())
    if network.num_addresses - 2 < needed:
        raise ConfigError(
            f"subnet {config.subnet} has {network.num_addresses - 2} usable addresses; the testbed needs "
            f"{needed} (2 + one per instance, Redis included)",
            fix="give a larger network, e.g. a /24 such as 198.51.100.0/24",
        )
    for spec in (config.redis, *config.services):
        if not 1 <= spec.instances <= 8:
            raise ConfigError(f"services.{spec.name}.instances is {spec.instances}; use 1 to 8")
        if not 1 <= spec.max_instances <= 8:
            raise ConfigError(f"services.{spec.name}.max_instances is {spec.max_instances}; use 1 to 8")
        if spec.instances > spec.max_instances:
            raise ConfigError(
                f"services.{spec.name}.instances is {spec.instances}, above its max_instances "
                f"{spec.max_instances}",
                fix="start at most max_instances instances, or raise max_instances",
            )
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
        raise ConfigError(
            f"users ({config.users}) must exceed friends_per_user ({config.friends_per_user})",
            fix="give more users or fewer friends_per_user",
        )
    if not any(config.mix.values()):
        raise ConfigError(
            "mix gives every request type a weight of 0, so no request would be sent", fix=_FIXES["mix"]
        )
    return config


_SCHEMA = TypeAdapter(TestbedConfig)
