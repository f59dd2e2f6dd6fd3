"""Ground truth for culprit windows, from recorded anomaly campaigns.

A campaign record (``plugins/module_utils/campaign.py``: JSON lines, or the same entries from
Redis) holds, per injection, a ``started`` entry (with ``started_at`` and ``expires_at``) and, once
it is over, an ``ended`` entry with the time it really ended (``ended_at``). :func:`injections`
turns such entries into :class:`LabelledInjection` intervals in microseconds since the epoch,
whatever unit the record used: times are recognised by magnitude (seconds ~1.7e9, milliseconds
~1.7e12, microseconds ~1.7e15, nanoseconds ~1.7e18 for present-day dates), so a record in seconds
and traces in microseconds line up.

**Who is positive** (DESIGN.md, "ground truth on shared resources"): an injection *inside* an
instance (sharing its cgroup quota, its own network namespace or interface) labels that instance;
one *beside* it (the same CPUs, disk or link) labels every instance sharing the resource with the
target, and the target is marked. The placement comes from the entry (``placement`` or
``labels.placement``); without one, the kinds the anomaly registry places on an interface
(``anomaly.kind_names(placement="interface")``: the network kinds) count as inside (they act on the
instance's own interface) and the others as beside. The instance is ``labels.instance``, else the service's name.

**Time alignment** (where the original went wrong): an instance is positive for a window
``[start, end)`` when the union of the injections labelling it covers at least ``min_cover``
(default half) of the window. Windows are in microseconds since the epoch, like traces.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible_collections.firm.core.plugins.module_utils import anomaly
from firm.localize.errors import DatasetError

__all__ = ["LabelledInjection", "WindowLabel", "injections", "label_window", "read_campaign_file", "to_us"]

InstanceKey = tuple[str, str]


def to_us(t: float) -> int:
    """A time since the epoch in seconds, ms, us or ns (recognised by magnitude), in microseconds.

    Raises ``ValueError`` for a negative, non-finite or implausible (before 1973 or after 2200
    in every unit) value.
    """
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"not a time since the epoch: {t!r}")
    for scale in (1e6, 1e3, 1.0, 1e-3):  # s, ms, us, ns -> us
        us = t * scale
        if 1e14 <= us < 7.3e15:
            return round(us)
    raise ValueError(f"{t!r} is not a present-day time in seconds, ms, us or ns since the epoch")


@dataclass(frozen=True)
class LabelledInjection:
    """One injected anomaly as ground truth."""

    name: str
    campaign: str
    kind: str
    target: InstanceKey
    """(service, instance) the injection was aimed at."""
    placement: str
    """``inside`` or ``beside``."""
    start_us: int
    end_us: int
    """When it really ended (or was planned to, if no end was recorded), us since the epoch."""
    intensity: int = 0


def _get(entry: Mapping[str, Any], key: str, where: str) -> Any:
    labels = entry.get("labels") or {}
    if isinstance(labels, str):  # Redis keeps labels as JSON text
        try:
            labels = json.loads(labels)
        except json.JSONDecodeError:
            labels = {}
    if not isinstance(labels, Mapping):
        raise DatasetError(
            f"{where}: labels is a JSON {_json_kind(labels)}, not an object of labels",
            'give labels as an object, e.g. {"service": "geo", "campaign": "c1"}, as firm\'s campaigns write it',
        )
    value = entry.get(key) if entry.get(key) not in (None, "") else labels.get(key)
    if value is not None and not isinstance(value, str):
        raise DatasetError(
            f"{where}: {key} {value!r} is not text", f"give {key} as text, as firm's campaigns write it"
        )
    return value


def _json_kind(value: object) -> str:
    """The JSON name of ``value``'s type (object, list, text, number, true/false, null)."""
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true/false"
    return "null" if value is None else "number"


def _intensity(entry: Mapping[str, Any], where: str) -> int:
    value = entry.get("intensity")
    if value in (None, ""):
        return 0
    number = value
    if isinstance(value, str):  # Redis keeps every field as text
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, int | float) or not 0 <= number <= 100:
        raise DatasetError(
            f"{where}: intensity {value!r} is not a number from 0 to 100",
            "give intensity as the percentage firm.core.anomaly was asked for, or leave it out",
        )
    return int(number)


def injections(
    entries: Iterable[Mapping[str, Any]], *, entry_names: Sequence[str] | None = None
) -> list[LabelledInjection]:
    """The injections of campaign record ``entries`` (``started`` and ``ended`` events; others are
    ignored), one per (campaign, name, start); an ``ended`` entry fixes the end.

    Raises :class:`DatasetError` naming the entry (``entry_names[k]``, e.g. ``FILE:LINE``, else
    its index) when an entry is not an object, or a started injection lacks its service or times,
    or holds a field of the wrong type (labels that are not an object, a service that is not text, an
    intensity outside 0..100, an endless duration).
    """
    started: dict[tuple[str, str, int], dict[str, Any]] = {}
    ended: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for k, entry in enumerate(entries):
        where = entry_names[k] if entry_names is not None else f"campaign record entry {k}"
        if not isinstance(entry, Mapping):
            raise DatasetError(
                f"{where} is a JSON {_json_kind(entry)}, not an entry of the record",
                "give the record written by firm's campaign: one JSON object per line",
            )
        event = entry.get("event")
        if event not in ("started", "ended"):
            continue
        name, campaign = str(entry.get("name", "")), str(_get(entry, "campaign", where) or "")
        try:
            start = to_us(float(entry["started_at"]))
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(
                f"{where} ({name or 'unnamed'}): no usable started_at ({err})",
                "give the record written by firm's campaign (JSON lines with started_at)",
            ) from err
        if event == "ended":
            try:
                end = to_us(float(entry["ended_at"]))
            except (KeyError, TypeError, ValueError):
                continue
            ended.setdefault((campaign, name), []).append((start, end))
            continue
        service = _get(entry, "service", where)
        if not service or service == "node":
            raise DatasetError(
                f"{where} ({name or 'unnamed'}): the injection names no service",
                "label injections with the service they target (labels.service), as firm's campaigns do",
            )
        try:
            if entry.get("expires_at") is not None:
                end = to_us(float(entry["expires_at"]))
            else:
                end = start + int(float(entry["duration_s"]) * 1e6)
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise DatasetError(
                f"{where} ({name}): neither expires_at nor duration_s is usable",
                "give the record written by firm's campaign",
            ) from err
        kind = str(entry.get("kind", ""))
        placement = _get(entry, "placement", where) or (
            "inside" if kind in anomaly.kind_names(placement="interface") else "beside"
        )
        if placement not in ("inside", "beside"):
            raise DatasetError(
                f"{where} ({name}): placement {placement!r} is neither 'inside' nor 'beside'",
                "fix the record's placement field",
            )
        instance = str(_get(entry, "instance", where) or service)
        started[(campaign, name, start)] = {
            "name": name,
            "campaign": campaign,
            "kind": kind,
            "target": (str(service), instance),
            "placement": placement,
            "start_us": start,
            "end_us": end,
            "intensity": _intensity(entry, where),
        }
    out: list[LabelledInjection] = []
    for (campaign, name, start), d in sorted(started.items(), key=lambda kv: kv[0][2]):
        for s, e in ended.get((campaign, name), []):
            if s == start:
                d["end_us"] = e
        if d["end_us"] > d["start_us"]:
            out.append(LabelledInjection(**d))
    return out


def read_campaign_file(path: Path) -> list[LabelledInjection]:
    """The injections of a campaign JSON-lines file; errors name the file and line."""
    entries: list[Any] = []
    names: list[str] = []
    try:
        with path.open("rb") as handle:
            for n, raw in enumerate(handle, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DatasetError(
                        f"{path}:{n}: not UTF-8 text, so not a campaign record",
                        "give the campaign's JSON-lines record",
                    ) from err
                if not line.strip():
                    continue
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DatasetError(
                        f"{path}:{n}: not JSON ({err.msg})", "give the campaign's JSON-lines record"
                    ) from err
                except RecursionError as err:
                    raise DatasetError(
                        f"{path}:{n}: JSON nested too deeply for a campaign entry",
                        "give the campaign's JSON-lines record",
                    ) from err
                names.append(f"{path}:{n}")
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the campaign record: {err}", "check the path") from err
    return injections(entries, entry_names=names)


@dataclass(frozen=True)
class WindowLabel:
    """The ground truth of one instance for one window."""

    positive: bool
    target: bool
    """The instance was the aim of an injection that made it positive."""
    cover: float
    """Share of the window covered by the injections labelling it (0..1)."""
    kinds: tuple[str, ...]
    """Kinds of those injections."""


def label_window(
    start_us: int,
    end_us: int,
    instances: Iterable[InstanceKey],
    recorded: Iterable[LabelledInjection],
    *,
    sharing: Callable[[LabelledInjection], Iterable[InstanceKey]] | None = None,
    min_cover: float = 0.5,
) -> dict[InstanceKey, WindowLabel]:
    """Label every instance of the window ``[start_us, end_us)`` (microseconds since the epoch).

    ``sharing(injection)`` names the instances that share the contended resource with a *beside*
    injection's target (the target itself included or not); without it, a beside injection labels
    its target only. Raises ``ValueError`` for an empty window or ``min_cover`` outside (0, 1].
    """
    if end_us <= start_us:
        raise ValueError(f"the window [{start_us}, {end_us}) is empty")
    if not 0.0 < min_cover <= 1.0:
        raise ValueError(f"min_cover must be in (0, 1], not {min_cover}")
    length = end_us - start_us
    spans: dict[InstanceKey, list[tuple[int, int, bool, str]]] = {}
    for inj in recorded:
        lo, hi = max(inj.start_us, start_us), min(inj.end_us, end_us)
        if hi <= lo:
            continue
        hit = {inj.target}
        if inj.placement == "beside" and sharing is not None:
            hit |= set(sharing(inj))
        for key in hit:
            spans.setdefault(key, []).append((lo, hi, key == inj.target, inj.kind))
    out: dict[InstanceKey, WindowLabel] = {}
    for key in instances:
        parts = sorted(spans.get(key, []))
        covered = 0
        cur_lo = cur_hi = None
        for lo, hi, _, _ in parts:
            if cur_hi is None or lo > cur_hi:
                if cur_hi is not None and cur_lo is not None:
                    covered += cur_hi - cur_lo
                cur_lo, cur_hi = lo, hi
            else:
                cur_hi = max(cur_hi, hi)
        if cur_hi is not None and cur_lo is not None:
            covered += cur_hi - cur_lo
        cover = covered / length
        positive = cover >= min_cover
        out[key] = WindowLabel(
            positive,
            positive and any(t for _, _, t, _ in parts),
            cover,
            tuple(sorted({k for _, _, _, k in parts})),
        )
    return out
