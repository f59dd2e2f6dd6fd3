"""Labelled runs recorded on the embedded testbed, kept so that their windows can be ranked again.

One *run* is one anomaly on the testbed under load: a reference window read from the trace store
before the anomaly started, and a window read while it lasted. :func:`save_run` keeps both windows
(Jaeger JSON), the anomaly's record, the instances sharing the contended resource and the
instances' telemetry samples of both windows in a folder; :func:`load_runs` reads them back and
:func:`run_rows` turns one run into labelled dataset rows. A dataset rebuilt from kept runs
(``firm localize-dataset --runs DIR``) therefore has the labels of the recording and the features
of the current code: features can change without recording again.

Files per run ``ID`` in the folder: ``ID-window.json``, ``ID-reference.json`` (Jaeger JSON) and
``ID-run.json``::

    {"format": "firm-localize-testbed-run", "version": 1, "id": ID, "campaign": NAME,
     "kind": KIND, "target": SERVICE, "instance": INSTANCE, "intensity": 0-100,
     "placement": "inside" | "beside", "record": {... the anomaly's record ...},
     "window": [start_us, end_us], "reference": [start_us, end_us],
     "shared": [[service, instance], ...], "telemetry": {"window": {...}, "reference": {...}}}

``telemetry`` maps instance names to the samples of :class:`firm.telemetry.model.Sample` (as
dicts) of each window; it is empty when firm's Redis held none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from firm import schema
from firm.localize.errors import DatasetError
from firm.localize.labels import injections, label_window, to_us
from firm.localize.telemetry_features import telemetry_features
from firm.localize.train import rows_of_window
from firm.tracing.culprit_features import CulpritFeatureConfig, culprit_features
from firm.tracing.model import Trace

__all__ = ["RUN_FORMAT", "KeptRun", "load_runs", "run_rows", "save_run", "slo_violated"]

RUN_FORMAT = "firm-localize-testbed-run"
RUN_VERSION = 1

Telemetry = Mapping[str, Sequence[Mapping[str, Any]]]
"""Instance name -> its telemetry samples (``Sample.as_dict()``) of one window."""


@dataclass(frozen=True)
class KeptRun:
    """One recorded anomaly with its two windows' bounds and its ground truth."""

    id: str
    campaign: str
    """The campaign (recording session) the run belongs to: datasets are split by it."""
    kind: str
    target: str
    """Service the anomaly was aimed at."""
    instance: str
    """Instance the anomaly was aimed at."""
    intensity: int
    """Intensity, 0..100."""
    placement: str
    """``inside`` (the target alone is affected) or ``beside`` (every instance in ``shared``)."""
    record: Mapping[str, Any]
    """The anomaly's record (``started_at``, ``ended_at``, ... as the injector wrote them)."""
    window: tuple[int, int]
    """The window during the anomaly, [start, end) in microseconds since the epoch."""
    reference: tuple[int, int]
    """The reference window before it, microseconds since the epoch."""
    shared: tuple[tuple[str, str], ...] = ()
    """(service, instance) of every instance sharing the contended resource with the target."""
    telemetry: Mapping[str, Telemetry] = field(default_factory=dict)
    """``{"window": ..., "reference": ...}``: each instance's telemetry samples (may be empty)."""

    def as_dict(self) -> dict[str, Any]:
        """The ``ID-run.json`` content."""
        return {
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "id": self.id,
            "campaign": self.campaign,
            "kind": self.kind,
            "target": self.target,
            "instance": self.instance,
            "intensity": self.intensity,
            "placement": self.placement,
            "record": dict(self.record),
            "window": list(self.window),
            "reference": list(self.reference),
            "shared": [list(k) for k in self.shared],
            "telemetry": {k: dict(v) for k, v in self.telemetry.items()},
        }

    @classmethod
    def from_dict(cls, doc: Any, source: str) -> KeptRun:
        """The inverse of :meth:`as_dict`; :class:`DatasetError` names what is wrong."""
        if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT:
            raise DatasetError(
                f"{source}: not a kept testbed run (format is not {RUN_FORMAT!r})",
                "give the folder firm localize-testbed-dataset --keep-traces wrote",
            )
        if not isinstance(doc.get("version"), int) or doc["version"] > RUN_VERSION:
            raise DatasetError(
                f"{source}: run version {doc.get('version')!r} is not one this firm reads ({RUN_VERSION})",
                "record the run again with this version of firm",
            )
        try:
            checked = _KeptRunDoc.model_validate(doc)
        except ValidationError as err:
            raise DatasetError(
                f"{source}: not a usable kept run: {schema.describe(err, _KeptRunDoc)}",
                "record the run again (firm localize-testbed-dataset --keep-traces), or remove its files",
            ) from None
        return cls(
            id=checked.id,
            campaign=checked.campaign,
            kind=checked.kind,
            target=checked.target,
            instance=checked.instance,
            intensity=checked.intensity,
            placement=checked.placement,
            record=dict(checked.record),
            window=checked.window,
            reference=checked.reference,
            shared=tuple(checked.shared),
            telemetry={k: dict(v) for k, v in (checked.telemetry or {}).items()},
        )


_Micros = Annotated[int, Field(ge=0)]
_Text = Annotated[str, Field(min_length=1)]


class _KeptRunDoc(BaseModel):
    """The schema of ``ID-run.json`` (see the module's docstring)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    id: _Text
    campaign: _Text
    kind: _Text
    target: _Text
    instance: _Text
    intensity: Annotated[int, Field(ge=0, le=100)]
    placement: Literal["inside", "beside"]
    record: dict[str, Any]
    window: tuple[_Micros, _Micros]
    """[start_us, end_us]."""
    reference: tuple[_Micros, _Micros]
    shared: list[tuple[str, str]] = Field(default_factory=list)
    telemetry: dict[str, dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> _KeptRunDoc:
        for name, (start, end) in (("window", self.window), ("reference", self.reference)):
            if end < start:
                raise ValueError(f"{name} ends ({end}) before it starts ({start})")
        return self


def describe_input_error(err: BaseException) -> str:
    """A file's error in words: ``No such file or directory: X``, ``not JSON (line 1, column 2)``."""
    if isinstance(err, json.JSONDecodeError):
        return f"not JSON: {err.msg} at line {err.lineno}, column {err.colno}"
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text (byte {err.start})"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror + (f": {err.filename}" if err.filename is not None else "")
    return str(err)


def save_run(folder: Path, run: KeptRun, window: Sequence[Trace], reference: Sequence[Trace]) -> None:
    """Keep ``run`` and its two windows of traces in ``folder`` (created if missing)."""
    from firm.tracing.export import jaeger_document  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{run.id}-window.json").write_text(json.dumps(jaeger_document(window)))
    (folder / f"{run.id}-reference.json").write_text(json.dumps(jaeger_document(reference)))
    (folder / f"{run.id}-run.json").write_text(json.dumps(run.as_dict(), indent=1, sort_keys=True) + "\n")


def load_runs(folder: Path) -> list[tuple[KeptRun, list[Trace], list[Trace]]]:
    """Every run kept in ``folder`` (and its subfolders), with its window and reference traces,
    ordered by id. Raises :class:`DatasetError` for a folder without runs or a damaged file."""
    from firm.tracing import TraceError  # noqa: PLC0415
    from firm.tracing.parse import load_traces  # noqa: PLC0415

    paths = sorted(folder.rglob("*-run.json"))
    if not paths:
        raise DatasetError(
            f"{folder}: no kept testbed runs (*-run.json)",
            "record some with firm localize-testbed-dataset --keep-traces",
        )
    out = []
    for path in paths:
        try:
            run = KeptRun.from_dict(json.loads(path.read_text()), str(path))
            stem = path.name[: -len("-run.json")]
            window = load_traces(path.with_name(f"{stem}-window.json"))
            reference = load_traces(path.with_name(f"{stem}-reference.json"))
        except (OSError, ValueError, TraceError) as err:  # ValueError: JSON, UTF-8
            raise DatasetError(
                f"{path}: cannot read the run or its traces ({describe_input_error(err)})",
                "record the run again (firm localize-testbed-dataset --keep-traces)",
            ) from err
        out.append((run, window, reference))
    return sorted(out, key=lambda r: r[0].id)


def slo_violated(window: Sequence[Trace], slo_ms: Mapping[str, float]) -> bool | None:
    """Whether the window violates an SLO: the p99 of the end-to-end latency of some request type
    is above its SLO (``slo_ms``: request type -> p99 bound in ms, the testbed's ``slo_ms``).

    A request's type is the operation of its root span (the span without a parent; the earliest
    when there are several), ``_`` read as ``-`` (the testbed's spans say ``compose_post``, its
    SLOs ``compose-post``); its latency is the root span's duration. None when no request of the
    window has a type with an SLO."""
    by_type: dict[str, list[float]] = {}
    for trace in window:
        roots = [s for s in trace.spans if s.parent_id is None] or list(trace.spans)
        if not roots:
            continue
        root = min(roots, key=lambda s: s.start)
        name = root.operation.replace("_", "-")
        if name in slo_ms:
            by_type.setdefault(name, []).append(root.duration / 1000.0)
    if not by_type:
        return None
    return any(float(np.percentile(v, 99)) > slo_ms[k] for k, v in by_type.items())


def run_rows(
    run: KeptRun,
    window: Sequence[Trace],
    reference: Sequence[Trace],
    feature_config: CulpritFeatureConfig | None = None,
    slo_ms: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Labelled dataset rows of one run: every instance of its window, compared with its
    reference, labelled from the anomaly's record (positive when it covered at least half of the
    window; a beside anomaly labels every instance of ``run.shared``). ``graph`` is the run's
    campaign. With ``slo_ms`` (request type -> p99 SLO in ms), every row also carries the window's
    ``slo_violated`` (see :func:`slo_violated`; None when no request type has an SLO). No rows for
    a run with an empty window or reference."""
    if not window or not reference:
        return []
    entry = {
        "event": "started",
        **run.record,
        "kind": run.kind,
        "labels": {
            **(run.record.get("labels") or {}),
            "service": run.target,
            "instance": run.instance,
            "placement": run.placement,
        },
    }
    entries: list[Mapping[str, Any]] = [entry]
    if run.record.get("ended_at") is not None:  # it really ended then (stopped, or expired)
        entries.append({**entry, "event": "ended"})
    recorded = injections(entries)
    shared = set(run.shared)
    cw = culprit_features(window, reference, feature_config or CulpritFeatureConfig())
    keys = [(i.service, i.instance) for i in cw.instances]
    lab = label_window(run.window[0], run.window[1], keys, recorded, sharing=lambda _i: shared)
    rows = rows_of_window(
        run.id,
        cw,
        {k: v.positive for k, v in lab.items()},
        source="campaign",
        graph=run.campaign,
        kind=run.kind,
        targets=[k for k, v in lab.items() if v.target],
        telemetry=telemetry_features(run.telemetry.get("window", {}), run.telemetry.get("reference", {}))
        if run.telemetry.get("window")
        else None,
    )
    if slo_ms is not None:
        violated = slo_violated(window, slo_ms)
        for row in rows:
            row["slo_violated"] = violated
    return rows


def started_us(record: Mapping[str, Any]) -> int:
    """When the anomaly of ``record`` started, microseconds since the epoch."""
    return to_us(float(record["started_at"]))
