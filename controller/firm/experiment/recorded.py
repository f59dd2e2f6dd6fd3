"""The files ``firm experiment`` records and reads again (``--report-only``): ``runs/<policy>.json``
and ``report.json``, checked against a schema before a figure is computed from them.

A recorded run is refused, naming the file and the field, when a number is not finite or out of
range (a duration of 1e308 s would make the report allocate an interval per second of it; a NaN
has no place in any figure), a field is missing or unknown, or the run holds no request in its
measured part (it would get a perfect score while measuring nothing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, model_validator

from firm import schema
from firm.experiment import ExperimentInputError
from firm.experiment.report import AnomalyWindow, CpuSample, RecordedRun, Request

MAX_DURATION_S = 7 * 86400.0
"""The longest measured part of one policy's run, seconds (a week; ``--duration`` allows the same)."""

MIN_INTERVAL_S = 0.1
"""The shortest report interval, seconds (``--interval``; the control loop's shortest step)."""

MAX_INTERVAL_S = 3600.0
"""The longest report interval, seconds."""

MAX_COUNT = (1 << 31) - 1
"""The largest count (actions, errors, instances) a recorded run may hold: 2^31 - 1, the bound of
every count on the command line (``firm.cli_options.MAX_WHOLE``)."""

MAX_CORES = 4096.0
"""The most cores of other work a sample may claim (more CPUs than any machine firm runs on)."""

Seconds = Annotated[FiniteFloat, Field(ge=0)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class _Anomaly(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Name
    service: Name
    start_s: FiniteFloat
    end_s: FiniteFloat
    intensity: Annotated[int, Field(ge=0, le=100)] = 0

    @model_validator(mode="after")
    def _ordered(self) -> _Anomaly:
        if self.end_s < self.start_s:
            raise ValueError(f"ends ({self.end_s:g} s) before it starts ({self.start_s:g} s)")
        return self


class RecordedRunFile(BaseModel):
    """``runs/<policy>.json`` (:func:`firm.experiment.runner.recorded_to_json`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    policy: Name
    duration_s: Annotated[FiniteFloat, Field(gt=0, le=MAX_DURATION_S)]
    actions: Count
    scale_events: Count = 0
    notes: list[str] = Field(default_factory=list)
    errors: dict[Name, Count] = Field(default_factory=dict)
    requests: Annotated[
        list[tuple[Name, Seconds, Annotated[FiniteFloat, Field(ge=0)], bool]], Field(min_length=1)
    ]
    """[request type, completed s, latency ms, failed]."""
    cpu: list[
        tuple[Seconds, Annotated[FiniteFloat, Field(ge=0)], Annotated[FiniteFloat, Field(ge=0)] | None, Count]
    ] = Field(default_factory=list)
    """[time s, cores allocated, cores used or null, instances]."""
    anomalies: list[_Anomaly] = Field(default_factory=list)
    other_work: list[tuple[Seconds, Annotated[FiniteFloat, Field(ge=0, le=MAX_CORES)]]] = Field(
        default_factory=list
    )
    """[time s, cores of other work on the machine over the stretch ending then]."""

    @model_validator(mode="after")
    def _within_the_run(self) -> RecordedRunFile:
        late = next((i for i, r in enumerate(self.requests) if r[1] > self.duration_s), None)
        if late is not None:
            raise ValueError(
                f"requests[{late}] completed at {self.requests[late][1]:g} s, after the run's "
                f"duration_s ({self.duration_s:g} s)"
            )
        late = next((i for i, c in enumerate(self.cpu) if c[0] > self.duration_s), None)
        if late is not None:
            raise ValueError(
                f"cpu[{late}] was taken at {self.cpu[late][0]:g} s, after the run's duration_s "
                f"({self.duration_s:g} s)"
            )
        late = next((i for i, o in enumerate(self.other_work) if o[0] > self.duration_s), None)
        if late is not None:
            raise ValueError(
                f"other_work[{late}] was taken at {self.other_work[late][0]:g} s, after the run's "
                f"duration_s ({self.duration_s:g} s)"
            )
        return self

    def run(self) -> RecordedRun:
        return RecordedRun(
            self.policy,
            self.duration_s,
            [Request(t, c, lat, failed) for t, c, lat, failed in self.requests],
            [CpuSample(t, a, u, n) for t, a, u, n in self.cpu],
            [AnomalyWindow(a.kind, a.service, a.start_s, a.end_s, a.intensity) for a in self.anomalies],
            self.actions,
            self.scale_events,
            list(self.notes),
            dict(self.errors),
            [(t, c) for t, c in self.other_work],
        )


class PreviousReport(BaseModel):
    """What ``--report-only`` takes from an earlier ``report.json``: the SLOs, the interval, the seed,
    the policies' order and the run's description (copied into the new report)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    slo_ms: dict[Name, Annotated[FiniteFloat, Field(gt=0)]] | None = None
    interval_s: Annotated[FiniteFloat, Field(ge=MIN_INTERVAL_S, le=MAX_INTERVAL_S)] | None = None
    seed: Annotated[int, Field(ge=0)] = 0
    policies: dict[str, Any] = Field(default_factory=dict)
    duration_s: Annotated[FiniteFloat, Field(gt=0, le=MAX_DURATION_S)] | None = None
    warmup_s: Annotated[FiniteFloat, Field(ge=0)] | None = None
    workload: str | None = None
    rate_rps: Annotated[FiniteFloat, Field(gt=0)] | None = None
    kinds: list[str] | None = None
    schedule: list[dict[str, str | int | FiniteFloat | None]] | None = None

    def meta(self) -> dict[str, Any]:
        """The run's description, as given."""
        keys = ("duration_s", "warmup_s", "workload", "rate_rps", "kinds", "schedule")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def _read_json(path: Path) -> Any:
    """The JSON of ``path`` (NaN and Infinity read as numbers, for the schema to refuse naming the
    field); ExperimentInputError naming the file when it is unreadable or not JSON."""
    fix = "run the experiment again (`firm experiment --out DIR`), or remove the file"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExperimentInputError(f"{path}: cannot read it: {exc.strerror or exc}", fix=fix) from None
    except UnicodeDecodeError as exc:
        raise ExperimentInputError(f"{path}: not UTF-8 text (byte {exc.start})", fix=fix) from None
    except ValueError as exc:  # json.JSONDecodeError
        raise ExperimentInputError(f"{path}: not valid JSON ({exc})", fix=fix) from None


def load_run(path: Path) -> RecordedRun:
    """The recorded run in ``path``; :class:`ExperimentInputError` naming the file and the field."""
    return parse_run(_read_json(path), str(path))


def parse_run(data: Any, source: str = "recorded run") -> RecordedRun:
    """A recorded run from its JSON form; :class:`ExperimentInputError` naming ``source`` and the field."""
    try:
        return RecordedRunFile.model_validate(data).run()
    except ValidationError as exc:
        raise ExperimentInputError(
            f"{source} is not a usable recorded run: {schema.describe(exc, RecordedRunFile)}",
            fix="run that policy again (`firm experiment --policies NAME --out DIR`), or remove the file",
        ) from None


def load_runs(directory: Path) -> list[RecordedRun]:
    """Every ``*.json`` of ``directory``, checked; one run per policy."""
    runs: list[RecordedRun] = []
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.json")):
        run = load_run(path)
        if run.policy in seen:
            raise ExperimentInputError(
                f"{path} and {seen[run.policy]} both record policy {run.policy!r}",
                fix="keep one run per policy in the runs folder",
            )
        seen[run.policy] = path
        runs.append(run)
    return runs


def load_previous_report(path: Path) -> PreviousReport | None:
    """The earlier ``report.json``, None when there is none; ExperimentInputError naming a bad field."""
    if not path.exists():
        return None
    data = _read_json(path)
    try:
        return PreviousReport.model_validate(data)
    except ValidationError as exc:
        raise ExperimentInputError(
            f"{path}: {schema.describe(exc, PreviousReport)}",
            fix="remove report.json (the SLOs then come from the testbed's configuration, the "
            "interval from --interval), or run the experiment again",
        ) from None
