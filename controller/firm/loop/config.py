"""The control loop's configuration: timing, SLO checks, guardrails, reclaim, deciders.

Everything is a frozen pydantic model with its unit in each field's description; a YAML file
(``firm run --config FILE``) overrides any field, services' guardrails by service name. Unknown
keys are refused with the list of known ones.

Guardrails bound every action, whichever decider proposed it (:mod:`firm.loop.guard`): per service
and resource a ``min`` and ``max``, a ``max_step`` (largest change per step) and a ``cooldown_s``
(no new change of that resource of that instance sooner); an instance whose previous action is
not yet visible in telemetry gets no new one (``confirm``).

Every model is strict: a number is written as a number (``interval_s: 2``, not ``'2'`` or ``true``),
a switch as ``true`` or ``false`` (not ``'yes'``); a whole number is a number where a field takes
fractions. Paths and lists are read from YAML's text and sequences as usual. Every duration, count
and SLO has an upper bound (:data:`MAX_SECONDS` and the others below), so that a value no run could
mean (a window of 1e308 s) is refused when the file is read, not met in the middle of a run; a
guardrail's limits are finite numbers in the resource's own unit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ansible_collections.firm.core.plugins.module_utils.errors import InvalidInputError
from firm import schema

RESOURCES = ("cpu", "memory_bandwidth", "llc", "disk_io", "network")
"""The resources the loop manages, in the agent's order (FIRM's five)."""


class LoopConfigError(InvalidInputError):
    """The loop's configuration names a field wrongly or gives it a value out of range."""


MAX_SECONDS = 3600.0
"""The longest window, trace lag, cool-down or hold, seconds (an hour)."""

MAX_SLO_MS = 3_600_000.0
"""The largest p99 objective, milliseconds (an hour; as the testbed's)."""

MAX_STALE_INTERVALS = 100.0
"""The most control intervals telemetry may lag before it is stale."""

MAX_COUNT = 100_000_000
"""The most audit records, requests or traces any count of the configuration names."""

MAX_CULPRITS = 1000
"""The most culprits or instances acted on in one step."""

_STRICT = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)
"""Every model's settings: unknown keys refused, numbers finite, and types strict (no number read
from text or from a boolean, no boolean from text); fields that take text or lists from YAML for
other types (paths, lists) say ``strict=False`` themselves."""


class Guard(BaseModel):
    """Bounds of one resource of one service, in the resource's unit (cpu cores, memory_bandwidth
    percent, llc ways, disk_io bytes/s, network bit/s)."""

    model_config = _STRICT

    min: float = Field(gt=0, description="Smallest limit the loop may set, resource unit.")
    max: float = Field(gt=0, description="Largest limit the loop may set, resource unit.")
    max_step: float = Field(gt=0, description="Largest change of the limit in one step, resource unit.")
    cooldown_s: float = Field(
        default=6.0,
        ge=0,
        le=MAX_SECONDS,
        description="Seconds after a change of this resource of an instance before the next one.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Guard:
        if not (math.isfinite(self.min) and math.isfinite(self.max)) or self.max < self.min:
            raise ValueError(f"max ({self.max}) must be finite and at least min ({self.min})")
        return self


def default_guards(cpus: int | None = None) -> dict[str, Guard]:
    """Guardrails that fit a small machine: CPU up to every core, 10 ms of disk or network time
    per step at most (see docs/control-loop.md)."""
    cores = float(cpus or os.cpu_count() or 1)
    return {
        "cpu": Guard(min=0.1, max=cores, max_step=0.5, cooldown_s=6.0),
        "memory_bandwidth": Guard(min=10.0, max=100.0, max_step=30.0, cooldown_s=6.0),
        "llc": Guard(min=1.0, max=20.0, max_step=4.0, cooldown_s=6.0),
        "disk_io": Guard(min=float(1 << 20), max=float(1 << 30), max_step=float(256 << 20), cooldown_s=6.0),
        "network": Guard(min=1e6, max=1e10, max_step=1e9, cooldown_s=6.0),
    }


class Reclaim(BaseModel):
    """Giving resources back when every SLO holds with slack."""

    model_config = _STRICT

    enabled: bool = Field(default=True, description="Reclaim at all.")
    floor: Literal["baseline", "min"] = Field(
        default="baseline",
        description="Down to the limits the instance had when the loop started, or to the "
        "guardrails' min (fewer resources than configured).",
    )
    fraction: float = Field(
        default=0.15,
        gt=0,
        le=1,
        description="Bounded step down when the agent proposes no "
        "decrease: this share of the excess over the "
        "floor, at least min_step of max_step.",
    )
    min_step: float = Field(
        default=0.2, gt=0, le=1, description="Smallest step down, as a share of the guardrail's max_step."
    )
    instances_per_step: int = Field(
        default=1, ge=1, le=MAX_CULPRITS, description="Instances reclaimed from in one step."
    )
    hold_s: float = Field(
        default=10.0,
        ge=0,
        le=MAX_SECONDS,
        description="Seconds every SLO must have held with slack, "
        "without a raise, before anything is reclaimed.",
    )


class ScaleIn(BaseModel):
    """Removing instances a service was scaled out to, when every SLO holds with slack."""

    model_config = _STRICT

    enabled: bool = Field(default=True, description="Scale services back in at all.")
    hold_s: float = Field(
        default=30.0,
        ge=0,
        le=MAX_SECONDS,
        description="Seconds every SLO must have held with slack (no SLO "
        "at risk, no raise) before an instance is removed; "
        "counted again after each removal.",
    )
    cooldown_s: float = Field(
        default=60.0,
        ge=0,
        le=MAX_SECONDS,
        description="Seconds after a scale-out or scale-in of a service "
        "(requested or finished) before it is scaled in.",
    )


class Aimd(BaseModel):
    """The AIMD baseline: multiplicative increase on violation, additive decrease with slack."""

    model_config = _STRICT

    increase: float = Field(
        default=1.5,
        gt=1,
        le=100,
        description="Factor applied to the limit of every instance on a violated request type's traces.",
    )
    decrease: Mapping[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"cpu": 0.05},
        description="Amount taken away per step when every SLO holds with "
        "slack, per resource (one of RESOURCES), resource unit, 0 or more.",
    )

    @field_validator("decrease")
    @classmethod
    def _known(cls, value: Mapping[str, float]) -> Mapping[str, float]:
        unknown = [str(k) for k in value if k not in RESOURCES]
        if unknown:
            raise ValueError(_not_resources(unknown))
        return value


class FirmDecider(BaseModel):
    """The FIRM decider: localize culprits, ask the agent for their limits."""

    model_config = _STRICT

    localizer_model: Path | None = Field(
        default=None, strict=False, description="SVM model file (None: the shipped one)."
    )
    agent_model: Path | None = Field(
        default=None, strict=False, description="Agent model file (None: the shipped one)."
    )
    max_culprits: int = Field(
        default=2, ge=1, le=MAX_CULPRITS, description="Culprits acted on per step, highest score first."
    )
    fallback_top: bool = Field(
        default=True,
        description="When an SLO is violated and no instance is flagged a "
        "culprit, act on the highest-ranked one.",
    )
    reference_traces: int = Field(
        default=2000,
        ge=0,
        le=MAX_COUNT,
        description="Traces of the last healthy window kept as the localizer's reference.",
    )
    raise_only: bool = Field(
        default=True,
        description="While an SLO is violated or at risk, only raises of a "
        "culprit's limits are applied (the agent's cuts wait).",
    )
    unused_cpu: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="A culprit using less than this share of its CPU limit gets the smallest raise "
        "(one that widens where it may run) instead of the agent's: what it lacks is a CPU free to "
        "run on, not quota (0: always the agent's).",
    )
    throttled_cpu: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="A culprit throttled in more than this share of its CFS periods lacks quota, "
        "whatever its average use: it gets the agent's raise, not the smallest one.",
    )
    cpu_wait_s: float | None = Field(
        default=0.05,
        ge=0,
        description="An instance on the window's traces whose tasks wait for a CPU at least this many "
        "seconds per second (schedstat's run delay, from telemetry), and at least cpu_wait_ratio "
        "seconds per CPU-second they run, is contended on its CPUs by a neighbour: while an SLO is "
        "at risk it is raised first, with the smallest raise (one that widens where it may run), "
        "whatever its rank from the traces (None: off).",
    )
    cpu_wait_ratio: float = Field(
        default=1.5,
        ge=0,
        description="Seconds waited per CPU-second run for cpu_wait_s to count (idle instances wait "
        "little in absolute terms; busy ones wait some of the time even without a neighbour).",
    )
    placement: bool = Field(
        default=True,
        description="Where the target reports each CPU's load (the testbed, cgroup v1): a culprit "
        "on a CPU that work outside the managed instances keeps busy (foreign_cpu) is moved off it, "
        "onto CPUs that are not, and a CPU raise widens only onto such CPUs. Off: a raise widens "
        "onto the parent's next CPU, whatever runs there.",
    )
    foreign_cpu: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="A CPU busy this many cores or more with work outside the managed instances "
        "(over the last step) is contended: placement moves culprits off it.",
    )
    placement_busy: float = Field(
        default=0.6,
        gt=0,
        le=1,
        description="Placement moves an instance onto CPUs only while their headroom below this "
        "load (cores busy over the last step, plus what the same step moved there) holds the "
        "instance's CPU use: packing every instance onto the one quiet CPU of a small machine "
        "would make it the contended one.",
    )
    placement_busy_max: float = Field(
        default=0.85,
        gt=0,
        le=1,
        description="An instance that leaves a contended CPU busier than this may be moved onto "
        "CPUs up to this load instead of placement_busy: behind work that saturates its CPU it "
        "waits longer than among the managed instances' short requests on a busier quiet CPU.",
    )
    placement_idle_moves: int = Field(
        default=2,
        ge=0,
        le=MAX_CULPRITS,
        description="While no SLO is at risk, instances moved off contended CPUs per step where "
        "other CPUs have room (placement_busy), so that the next contention finds them elsewhere "
        "(0: only while an SLO is at risk).",
    )
    scale_out: bool = Field(default=True, description="Scale a service out (testbed) when the agent asks.")
    trace_cache: int = Field(
        default=20000,
        ge=1,
        le=MAX_COUNT,
        description="Requests whose per-trace parts (critical path, "
        "own times, gaps) are kept between steps, so that "
        "each is computed once (count).",
    )

    @model_validator(mode="after")
    def _placement_ordered(self) -> FirmDecider:
        if self.placement_busy > self.placement_busy_max:
            raise ValueError(
                f"placement_busy ({self.placement_busy:g}) must be at most placement_busy_max "
                f"({self.placement_busy_max:g}): raise placement_busy_max or lower placement_busy"
            )
        return self


class LoopConfig(BaseModel):
    """Everything ``firm run`` reads besides the testbed's own configuration."""

    model_config = _STRICT

    interval_s: float = Field(default=2.0, gt=0, le=60, description="Seconds between control steps.")
    window_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds of completed requests each step looks at (None: the testbed's slo_window_s).",
    )
    trace_lag_s: float = Field(
        default=1.0,
        ge=0,
        le=MAX_SECONDS,
        description="Seconds the window ends before now: spans reach the trace store in batches.",
    )
    stale_intervals: float = Field(
        default=2.0,
        gt=0,
        le=MAX_STALE_INTERVALS,
        description="Telemetry older than this many intervals is stale: no decision on it.",
    )
    min_requests: int = Field(
        default=5, ge=1, le=MAX_COUNT, description="Requests of a type a window needs before its p99 counts."
    )
    at_risk: float = Field(
        default=0.9, gt=0, le=1, description="An SLO is at risk when p99 exceeds this share of it."
    )
    slack: float = Field(
        default=0.6,
        gt=0,
        lt=1,
        description="Every SLO holds with slack when each p99 is below this share of its SLO.",
    )
    slo_ms: dict[Annotated[str, Field(min_length=1)], Annotated[float, Field(gt=0, le=MAX_SLO_MS)]] = Field(
        default_factory=dict,
        description="SLO per request type, p99 ms (above 0, at most MAX_SLO_MS); overrides the testbed's "
        "or the cluster file's. The request types are those of the application the loop runs on, "
        "which is not known when the file is read: on the testbed (firm run, firm experiment) a type it "
        "does not send is refused before anything starts (check_slo_types); on a cluster it is never "
        "at risk.",
    )
    decider: Literal["firm", "aimd", "none"] = Field(default="firm", description="Which decider runs.")
    confirm: bool = Field(
        default=True,
        description="No new action on an instance until its previous one is "
        "visible in telemetry (a full sample taken after it).",
    )
    deadband: float = Field(
        default=0.02, ge=0, lt=1, description="Relative changes smaller than this are not actions."
    )
    guards: dict[str, Guard] = Field(default_factory=default_guards, description="Guardrails per resource.")
    services: dict[str, dict[str, Guard]] = Field(
        default_factory=dict, description="Guardrails per service and resource, replacing the defaults."
    )
    exclude: tuple[str, ...] = Field(
        default=("redis",), strict=False, description="Services the loop never acts on (a YAML list)."
    )
    reclaim: Reclaim = Field(default_factory=Reclaim)
    scale_in: ScaleIn = Field(default_factory=ScaleIn)
    aimd: Aimd = Field(default_factory=Aimd)
    firm: FirmDecider = Field(default_factory=FirmDecider)
    redis_url: str | None = Field(
        default=None, description="firm's Redis (telemetry, audit); None: the testbed's telemetry_redis."
    )
    audit_key: str = Field(
        default="firm:audit", min_length=1, description="Redis stream of the audit records."
    )
    audit_retention: int = Field(
        default=10000, ge=1, le=MAX_COUNT, description="Audit records kept in Redis."
    )
    testbed_config: Path | None = Field(
        default=None, strict=False, description="The testbed's YAML configuration (None: its defaults)."
    )
    on_exit: Literal["keep", "restore"] = Field(
        default="keep", description="On stop: keep the last good limits or restore the baselines."
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError(
                f"an empty URL names no Redis; {schema.REDIS_URL_HINT}, or leave it out for the testbed's"
            )
        wrong = schema.redis_url_problem(value) if value else None
        if wrong:
            raise ValueError(f"{wrong}; {schema.REDIS_URL_HINT}")
        return value

    def guard(self, service: str, resource: str) -> Guard:
        """The guardrail of ``resource`` for ``service`` (the service's own, else the default)."""
        return self.services.get(service, {}).get(resource) or self.guards[resource]

    @field_validator("guards", mode="before")
    @classmethod
    def _guarded_resources(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            unknown = [str(k) for k in value if k not in RESOURCES]
            if unknown:
                raise ValueError(_not_resources(unknown))
        return value

    @field_validator("guards")
    @classmethod
    def _every_resource(cls, value: dict[str, Guard]) -> dict[str, Guard]:
        missing = [r for r in RESOURCES if r not in value]
        if missing:
            raise ValueError(f"lacks {', '.join(missing)}; give every resource a guardrail")
        return value

    @field_validator("services", mode="before")
    @classmethod
    def _services_resources(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for service, table in value.items():
                unknown = [str(k) for k in table if k not in RESOURCES] if isinstance(table, Mapping) else []
                if unknown:
                    raise ValueError(f"services.{service} {_not_resources(unknown)}")
        return value


def _not_resources(names: Sequence[str]) -> str:
    """Resource names that are not among :data:`RESOURCES`, in words (no Python reprs)."""
    which = "which is not a resource" if len(names) == 1 else "which are not resources"
    return f"names {', '.join(names)}, {which} (the resources are {', '.join(RESOURCES)})"


def _fix(exc: ValidationError) -> str:
    """The fix of a configuration the schema refused: the known settings when one is unknown, else
    where each setting's type and bounds are listed (each problem already says what its field takes)."""
    if any(e["type"] == "extra_forbidden" and len(e["loc"]) == 1 for e in exc.errors()):
        return f"use only the settings {', '.join(LoopConfig.model_fields)} (see docs/control-loop.md)"
    return "give each setting named a value it takes (types and bounds: docs/control-loop.md, Configuration)"


RESOURCE_FIX = f"name only the resources {', '.join(RESOURCES)} (see docs/control-loop.md, Guardrails)"
"""The fix of a guardrail or AIMD decrease under a name that is not a resource."""


def _unknown_resources(data: dict[str, Any]) -> list[str]:
    """The entries of ``data`` (a configuration as read) whose resource is not one of
    :data:`RESOURCES`, in words; those entries are taken out of ``data``, so that what remains is
    checked without a follow-on error (``guards.gpu.max is missing``) about a name that is wrong
    in the first place."""
    found: list[str] = []

    def prune(table: Any, where: str) -> Any:
        if not isinstance(table, Mapping):
            return table
        unknown = [str(k) for k in table if k not in RESOURCES]
        if not unknown:
            return table
        found.append(f"{where} {_not_resources(unknown)}")
        return {k: v for k, v in table.items() if k in RESOURCES}

    if "guards" in data:
        data["guards"] = prune(data["guards"], "guards")
    services = data.get("services")
    if isinstance(services, Mapping):
        data["services"] = {name: prune(table, f"services.{name}") for name, table in services.items()}
    aimd = data.get("aimd")
    if isinstance(aimd, Mapping) and "decrease" in aimd:
        data["aimd"] = {**aimd, "decrease": prune(aimd["decrease"], "aimd.decrease")}
    return found


def _validated(data: dict[str, Any], source: str) -> LoopConfig:
    """``data`` (a configuration as read, with overrides) as a :class:`LoopConfig`; raises
    :class:`LoopConfigError` naming every field at fault, an unknown resource first."""
    data = dict(data)
    unknown = _unknown_resources(data)
    if isinstance(data.get("guards"), Mapping):  # the resources not named keep their defaults
        data["guards"] = {**{r: g.model_dump() for r, g in default_guards().items()}, **data["guards"]}
    try:
        config = LoopConfig.model_validate(data)
    except ValidationError as exc:
        fixes = [RESOURCE_FIX] if unknown else []
        raise LoopConfigError(
            f"{source}: {'; '.join([*unknown, schema.describe(exc, LoopConfig)])}",
            fix="; ".join([*fixes, _fix(exc)]),
        ) from None
    if unknown:
        raise LoopConfigError(f"{source}: {'; '.join(unknown)}", fix=RESOURCE_FIX)
    return config


def load(path: str | Path | None = None, **overrides: Any) -> LoopConfig:
    """The defaults, overridden by a YAML file and then by ``overrides`` (None values ignored).

    The file is checked by itself first, so that a setting the command line overrides (``redis_url``
    under ``--redis``) is still refused when it is wrong. Raises :class:`LoopConfigError` naming the
    field and what would work.
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = schema.read_yaml_mapping(
            path, what="the loop configuration", doc="docs/control-loop.md", error=LoopConfigError
        )
        data.update(loaded)
    given = {k: v for k, v in overrides.items() if v is not None}
    if path is not None and given:
        _validated(data, str(path))
    return _validated({**data, **given}, str(path) if path is not None else "loop configuration")


def check_slo_types(config: LoopConfig, known: Iterable[str], where: str) -> None:
    """Refuse ``slo_ms`` entries that name a request type ``where`` (e.g. "the testbed") never
    sends: such an SLO would be kept for no request while the type it meant keeps its old one.

    Raises :class:`LoopConfigError` naming the unknown types and the known ones."""
    names = sorted(set(known))
    unknown = sorted(set(config.slo_ms) - set(names))
    if unknown:
        raise LoopConfigError(
            f"slo_ms names request type{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}, "
            f"which {where} does not send",
            fix=f"use the request types of {where}: {', '.join(names)}",
        )


def check_services(config: LoopConfig, known: Iterable[str], where: str) -> None:
    """Refuse guardrails (``services``) and exclusions (``exclude``) of services ``where`` (e.g. "the
    testbed", "the cluster file") does not run: such a guardrail would bound nothing, and the service
    meant would be acted on after all. The default ``exclude`` (``[redis]``, the testbed's store) is
    not the user's word: where no service of that name runs, it excludes nothing and is not refused.

    Raises :class:`LoopConfigError` naming the unknown services and the known ones."""
    names = sorted(set(known))
    excluded = config.exclude if "exclude" in config.model_fields_set else ()
    wrong = [
        f"{field} names {'service' if len(unknown) == 1 else 'services'} {', '.join(map(repr, unknown))}, "
        f"which {where} does not run"
        for field, unknown in (
            ("services", [s for s in config.services if s not in names]),
            ("exclude", [s for s in excluded if s not in names]),
        )
        if unknown
    ]
    if wrong:
        raise LoopConfigError("; ".join(wrong), fix=f"name the services of {where}: {', '.join(names)}")


MODEL_FIXES = {
    "localizer_model": "give the path of a file written by firm train-svm",
    "agent_model": "give the path of a file written by firm train-rl (DIR/model.pt of its --out DIR)",
}
"""What to give for each model file of the firm decider (``firm.<name>``)."""


def check_model_files(config: LoopConfig) -> None:
    """Refuse model files of the firm decider that are not files, when it is the decider that runs (a
    model is loaded only then); whether a file holds a model is known when it is loaded.

    Raises :class:`LoopConfigError` naming the field, the path and the fix."""
    if config.decider != "firm":
        return
    for name, fix in MODEL_FIXES.items():
        path: Path | None = getattr(config.firm, name)
        if path is not None and not path.is_file():
            why = (
                "a directory" if path.is_dir() else "not there" if not path.exists() else "not a regular file"
            )
            raise LoopConfigError(
                f"firm.{name} is '{path}', which is {why}",
                fix=f"{fix}, or leave firm.{name} out for the shipped model",
            )
