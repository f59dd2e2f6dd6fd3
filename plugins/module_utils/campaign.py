# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""Anomaly campaigns: schedules of concurrent injections, and their record as ground truth.

A campaign is a list of rounds. All injections of a round start together, on several hosts and
beside several services at once, as contention arrives in production; the next round starts when
the longest of them has ended and a gap has passed. The schedule is either given explicitly or drawn
from a seed, so that the same seed always gives the same campaign.

Every injection is recorded twice: when it starts (with its planned end) and when it has ended (with
the time it really ended), as JSON lines in a campaign file and in Redis. That record is what the
culprit classifier learns from:

- ``firm:campaign:<id>``: hash with the campaign's plan (``schedule`` as JSON) and when it was made;
- ``firm:campaign:<id>:injections``: list of the injection keys, in order;
- ``firm:injection:<id>:<name>``: hash of one injection (host, target, kind, intensity, times);
- ``firm:injections``: sorted set of every injection key by start time, to find the injections
  that overlap a window of traces.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ansible_collections.firm.core.plugins.module_utils import anomaly, units
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError, InvalidInputError
from ansible_collections.firm.core.plugins.module_utils.redis_buffer import PendingWrites

NETWORK_KINDS = tuple(anomaly.kind_names(placement="interface"))
DEFAULT_KINDS = tuple(anomaly.kind_names(portable=True))
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}\Z")  # \Z: "$" would let a final newline in


class CampaignInputError(InvalidInputError):
    """A campaign definition was rejected before anything ran."""


class RecordError(FirmError):
    """The campaign's record could not be written."""


@dataclass(frozen=True)
class Injection:
    """One anomaly of a campaign, on one host, beside one service (or on the whole node)."""

    campaign: str
    round: int
    host: str
    name: str
    kind: str
    intensity: int
    duration_s: int
    service: str | None = None
    target_cgroup: str | None = None
    target_namespace: str | None = None
    target_interface: str | None = None
    link_rate: str | None = None

    def module_args(self) -> dict[str, Any]:
        """The arguments of firm.core.anomaly that start it."""
        args: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "intensity": self.intensity,
            "duration": self.duration_s,
            "labels": {
                "campaign": self.campaign,
                "round": str(self.round),
                "service": self.service or "node",
            },
        }
        for option in ("target_cgroup", "target_namespace", "target_interface", "link_rate"):
            if getattr(self, option) is not None:
                args[option] = getattr(self, option)
        return args


@dataclass(frozen=True)
class Round:
    index: int
    length_s: int  # from the round's start to the next round's start
    injections: tuple[Injection, ...]

    def as_dict(self) -> dict[str, Any]:
        longest = max((i.duration_s for i in self.injections), default=0)
        return {
            "index": self.index,
            "length_s": self.length_s,
            "gap_s": self.length_s - longest,
            "injections": [dict(asdict(i), args=i.module_args()) for i in self.injections],
        }


@dataclass(frozen=True)
class RandomPlan:
    """How to draw a campaign: every range is inclusive ``(low, high)``."""

    seed: int
    rounds: int = 5
    kinds: tuple[str, ...] = DEFAULT_KINDS
    intensity: tuple[int, int] = (30, 90)
    duration_s: tuple[int, int] = (10, 30)
    gap_s: tuple[int, int] = (5, 15)
    hosts_per_round: tuple[int, int] = (1, 1)
    services_per_host: tuple[int, int] = (1, 2)


@dataclass(frozen=True)
class Target:
    """A service an anomaly can land beside, as an inventory's ``anomaly_targets`` lists it."""

    service: str
    cgroup: str | None = None
    namespace: str | None = None
    interface: str | None = None
    link_rate: str | None = None
    kinds: tuple[str, ...] = field(default_factory=tuple)  # empty: every kind it can take

    def accepts(self, kind: str) -> bool:
        if self.kinds and kind not in self.kinds:
            return False
        return kind not in NETWORK_KINDS or self.interface is not None


NODE = Target("node")


def check_id(campaign: str) -> str:
    if not _ID.match(campaign):
        raise CampaignInputError(
            f"campaign id {campaign!r} is not a plain name",
            fix="use letters, digits, '_' or '-' (at most 40), starting with a letter or digit",
        )
    return campaign


_WHOLE_TEXT = re.compile(r"^[+-]?[0-9]+$")


def _whole(value: object, what: str, fix: str) -> int:
    """``value`` as a whole number: an integer, an integral float (``50.0``) or its ASCII digits as text
    (what a Jinja expression gives); true/false, fractions, words and lists are refused naming ``what``."""
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        return value
    elif isinstance(value, float) and value.is_integer():
        return int(value)
    elif isinstance(value, str) and _WHOLE_TEXT.match(value.strip()):
        return int(value.strip())
    raise CampaignInputError(f"{what} {value!r} is not a whole number", fix=fix)


def parse_gap(value: object) -> int:
    """The seconds between an explicit campaign's rounds (``gap``), 0 to a day."""
    gap = _whole(value, "gap", "give gap in whole seconds between rounds, e.g. 5")
    if not 0 <= gap <= 86400:
        raise CampaignInputError(f"gap {gap} s is outside 0..86400", fix="give gap in whole seconds, e.g. 5")
    return gap


def _range(
    config: Mapping[str, Any], key: str, default: tuple[int, int], low: int, high: int
) -> tuple[int, int]:
    value = config.get(key, default)
    fix = f"give {key} as [low, high] with {low} <= low <= high <= {high}, or one whole number"
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise CampaignInputError(f"{key} {value!r} is not a range within {low}..{high}", fix=fix)
        pair = (_whole(value[0], f"{key}'s low end", fix), _whole(value[1], f"{key}'s high end", fix))
    else:
        one = _whole(value, key, fix)
        pair = (one, one)
    if not low <= pair[0] <= pair[1] <= high:
        raise CampaignInputError(f"{key} {value!r} is not a range within {low}..{high}", fix=fix)
    return pair


def _kinds(value: object, what: str) -> tuple[str, ...]:
    """Anomaly kinds from a list of names or one name (``kinds: cpu`` in YAML is one kind, not three
    letters); refused naming ``what`` when a kind is not known or the value is no list."""
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)):
        raise CampaignInputError(
            f"{what} {value!r} is not a list of anomaly kinds",
            fix=f"give a list of kinds from {', '.join(anomaly.KINDS)}",
        )
    bad = [k for k in names if not isinstance(k, str) or k not in anomaly.KINDS]
    if bad:
        raise CampaignInputError(
            f"{what} {bad} are not anomaly kinds", fix=f"choose from {', '.join(anomaly.KINDS)}"
        )
    return tuple(names)


def parse_random_plan(config: Mapping[str, Any], max_duration_s: int = 3600) -> RandomPlan:
    """Validate a ``random`` campaign definition (as a playbook gives it)."""
    known = {
        "seed",
        "rounds",
        "kinds",
        "intensity",
        "duration",
        "gap",
        "hosts_per_round",
        "services_per_host",
    }
    if not isinstance(config, Mapping):
        raise CampaignInputError(
            f"random {config!r} is not a mapping of the plan's settings",
            fix="give random: {seed: <integer>, ...}",
        )
    unknown = sorted(str(k) for k in config if k not in known)
    if unknown:
        raise CampaignInputError(
            f"unknown keys in the random campaign: {', '.join(unknown)}",
            fix=f"use only {', '.join(sorted(known))}",
        )
    seed = config.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CampaignInputError("the random campaign has no integer seed", fix="give seed: <integer>")
    kinds = _kinds(config.get("kinds", DEFAULT_KINDS), "kinds")
    if not kinds:
        raise CampaignInputError(
            "kinds [] are not anomaly kinds", fix=f"choose from {', '.join(anomaly.KINDS)}"
        )
    rounds = config.get("rounds", 5)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 10000:
        raise CampaignInputError(
            f"rounds {rounds!r} is not a count from 1 to 10000", fix="give rounds: <count>"
        )
    return RandomPlan(
        seed,
        rounds,
        kinds,
        _range(config, "intensity", (30, 90), 0, 100),
        _range(config, "duration", (10, 30), 1, max_duration_s),
        _range(config, "gap", (5, 15), 0, 86400),
        _range(config, "hosts_per_round", (1, 1), 1, 10000),
        _range(config, "services_per_host", (1, 2), 1, 10000),
    )


def parse_targets(entries: Sequence[Mapping[str, Any]] | None) -> list[Target]:
    """A host's ``anomaly_targets``; without any, anomalies land on the whole node.

    Each is checked here, before any round runs: a mapping with a ``service`` name, text (or nothing)
    for ``cgroup``, ``namespace`` and ``interface``, a ``link_rate`` tc can read and known ``kinds``
    (a kind that is not known made the target silently never chosen)."""
    if entries is None:
        return [NODE]
    if not isinstance(entries, (list, tuple)):
        raise CampaignInputError(
            f"anomaly_targets {entries!r} is not a list of targets",
            fix="give anomaly_targets as a list: - {service: web, cgroup: firm/web}",
        )
    targets = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise CampaignInputError(
                f"anomaly target {entry!r} is not a mapping",
                fix="give each target a service: and its cgroup / namespace / interface",
            )
        if "service" not in entry:
            raise CampaignInputError(
                f"anomaly target {dict(entry)!r} has no service name",
                fix="give each target a service: and its cgroup / namespace / interface",
            )
        service = entry["service"]
        if not isinstance(service, str) or not service.strip():
            raise CampaignInputError(
                f"anomaly target {dict(entry)!r}: service {service!r} is not a name",
                fix="give the service's name as its spans carry it, e.g. service: web",
            )
        for key in ("cgroup", "namespace", "interface", "link_rate"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise CampaignInputError(
                    f"anomaly target {service}: {key} {entry[key]!r} is not text",
                    fix=f"give {key} as text (quote it in YAML), or leave it out",
                )
        if entry.get("link_rate"):
            try:
                units.parse_rate(entry["link_rate"], f"anomaly target {service}'s link_rate", minimum=8)
            except units.UnitError as exc:
                raise CampaignInputError(exc.message, fix=exc.fix) from None
        targets.append(
            Target(
                service,
                entry.get("cgroup"),
                entry.get("namespace"),
                entry.get("interface"),
                entry.get("link_rate"),
                _kinds(entry.get("kinds", ()), f"anomaly target {service}'s kinds"),
            )
        )
    return targets or [NODE]


def random_schedule(campaign: str, plan: RandomPlan, targets: Mapping[str, Sequence[Target]]) -> list[Round]:
    """Draw the campaign from its seed: the same seed, hosts and targets give the same schedule."""
    check_id(campaign)
    hosts = sorted(targets)
    if not hosts:
        raise CampaignInputError(
            "the campaign has no hosts", fix="point firm_campaign_hosts at a non-empty group"
        )
    rng = random.Random(plan.seed)
    rounds = []
    for index in range(plan.rounds):
        chosen_hosts = rng.sample(hosts, min(len(hosts), rng.randint(*plan.hosts_per_round)))
        injections: list[Injection] = []
        for host in sorted(chosen_hosts):
            candidates = [t for t in targets[host] if any(t.accepts(k) for k in plan.kinds)]
            count = min(len(candidates), rng.randint(*plan.services_per_host))
            for target in rng.sample(candidates, count):
                kind = rng.choice([k for k in plan.kinds if target.accepts(k)])
                injections.append(
                    _injection(
                        campaign,
                        index,
                        host,
                        hosts.index(host),
                        len(injections),
                        kind,
                        rng.randint(*plan.intensity),
                        rng.randint(*plan.duration_s),
                        target,
                    )
                )
        longest = max((i.duration_s for i in injections), default=0)
        rounds.append(Round(index, longest + rng.randint(*plan.gap_s), tuple(injections)))
    return rounds


def _injection(
    campaign: str,
    index: int,
    host: str,
    host_number: int,
    number: int,
    kind: str,
    intensity: int,
    duration: int,
    target: Target,
    name: str | None = None,
) -> Injection:
    """An injection named by campaign, round, host number and position: unique, and short enough for
    an anomaly name (the host's own name can be long and share a prefix with others)."""
    injection = Injection(
        campaign,
        index,
        host,
        name or f"{campaign}-r{index}-h{host_number}-{number}",
        kind,
        intensity,
        duration,
        None if target is NODE else target.service,
        target.cgroup,
        target.namespace,
        target.interface,
        target.link_rate,
    )
    try:
        anomaly.check_request(anomaly.AnomalySpec(injection.name, kind, intensity, duration))
    except anomaly.AnomalyInputError as exc:
        raise CampaignInputError(
            f"anomaly {injection.name} of round {index} on {host}: {exc.message}", fix=exc.fix
        ) from exc
    return injection


_TARGET_KEYS = ("service", "cgroup", "namespace", "interface", "link_rate", "kinds")
"""The keys of an explicit campaign's entry that say where its anomaly lands (as a target's)."""


def explicit_schedule(
    campaign: str, entries: Sequence[Mapping[str, Any]], hosts: Sequence[str], gap_s: int = 5
) -> list[Round]:
    """A campaign given as a list: each entry names its host, kind, intensity, duration and round.

    Every entry is checked here, before any round runs, so that a mistake in the last round does not
    leave the campaign half run.
    """
    check_id(campaign)
    if not isinstance(entries, (list, tuple)):
        raise CampaignInputError(
            f"the campaign's anomalies {entries!r} are not a list",
            fix="give anomalies as a list: - {host: node1, kind: cpu, intensity: 50, duration: 20}",
        )
    ordered_hosts = sorted(hosts)
    by_round: dict[int, list[Injection]] = {}
    for number, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise CampaignInputError(
                f"anomaly {number} of the campaign, {entry!r}, is not a mapping",
                fix="give each anomaly host, kind, intensity and duration (round is optional)",
            )
        missing = [k for k in ("host", "kind", "intensity", "duration") if k not in entry]
        if missing:
            raise CampaignInputError(
                f"anomaly {number} of the campaign has no {', '.join(missing)}",
                fix="give each anomaly host, kind, intensity and duration (round is optional)",
            )
        if entry["host"] not in hosts:
            raise CampaignInputError(
                f"anomaly {number} names host {entry['host']!r}, which is not in the campaign",
                fix=f"use one of {', '.join(ordered_hosts)}",
            )
        target = NODE
        if "service" in entry:
            target = parse_targets([{k: entry[k] for k in _TARGET_KEYS if k in entry}])[0]
        where = f"anomaly {number} of the campaign:"
        index = _whole(entry.get("round", 0), f"{where} round", "give round as a whole number from 0")
        if index < 0:
            raise CampaignInputError(
                f"{where} round {index} is negative", fix="give round as a whole number from 0"
            )
        injection = _injection(
            campaign,
            index,
            str(entry["host"]),
            ordered_hosts.index(entry["host"]),
            number,
            str(entry["kind"]),
            _whole(entry["intensity"], f"{where} intensity", "give a percentage from 0 to 100"),
            _whole(entry["duration"], f"{where} duration", "give the duration in whole seconds"),
            target,
            str(entry["name"]) if "name" in entry else None,
        )
        by_round.setdefault(index, []).append(injection)
    names = [i.name for items in by_round.values() for i in items]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CampaignInputError(
            f"anomaly names {duplicates} are used more than once",
            fix="give each anomaly of the campaign its own name",
        )
    return [
        Round(index, max(i.duration_s for i in items) + gap_s, tuple(items))
        for index, items in sorted(by_round.items())
    ]


# --------------------------------------------------------------------------------------------------
# The record


EVENTS = ("planned", "started", "ended")
EARLIEST_EPOCH_S = 946_684_800.0
"""2000-01-01: an injection time before it is a unit mistake (milliseconds read as seconds are after)."""
LATEST_EPOCH_S = 4_102_444_800.0
"""2100-01-01: an injection time after it is a unit mistake (milliseconds or microseconds)."""


def _epoch_seconds(entry: Mapping[str, Any], key: str, index: int) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RecordError(
            f"entry {index} ({entry.get('name', '?')}): {key} {value!r} is not a time",
            fix=f"give {key} as seconds since the epoch, as firm.core.anomaly returns it",
        )
    try:
        seconds = float(value)
    except ValueError:
        raise RecordError(
            f"entry {index} ({entry.get('name', '?')}): {key} {value!r} is not a number of seconds",
            fix=f"give {key} as seconds since the epoch (e.g. 1764500000.5), not a date or a word",
        ) from None
    if not EARLIEST_EPOCH_S <= seconds <= LATEST_EPOCH_S:
        raise RecordError(
            f"entry {index} ({entry.get('name', '?')}): {key} {value!r} is not between 2000 and 2100 "
            "in seconds since the epoch",
            fix=f"give {key} in seconds, not milliseconds or microseconds",
        )
    return seconds


def validate_entries(event: str, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The entries, checked before anything is written: ground truth must be whole and in one unit.

    Every entry of a ``started`` or ``ended`` event is a mapping with a non-empty ``name``, ``host``
    and ``kind`` and a ``started_at`` in seconds since the epoch; ``ended`` entries also have an
    ``ended_at`` no earlier than ``started_at``. Times given as numeric strings become numbers.
    Raises :class:`RecordError` naming the entry and the field.
    """
    if event not in EVENTS:
        raise RecordError(
            f"event {event!r} is not one of {', '.join(EVENTS)}", fix="give planned, started or ended"
        )
    if event == "planned":
        return [dict(e) for e in entries]
    checked = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise RecordError(
                f"entry {index} is a {type(entry).__name__}, not a mapping",
                fix="give anomaly summaries as firm.core.anomaly returns them",
            )
        for key in ("name", "host", "kind"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise RecordError(
                    f"entry {index} ({entry.get('name', '?')}): {key} is missing or empty",
                    fix=f"give every entry a {key} (firm.core.anomaly's result has it)",
                )
        if entry["kind"] not in anomaly.KINDS:
            raise RecordError(
                f"entry {index} ({entry['name']}): kind {entry['kind']!r} is not an anomaly kind, so no "
                "label can say which resource it contended",
                fix=f"give one of {', '.join(anomaly.KINDS)} (firm.core.anomaly's result has it)",
            )
        for key in ("name", "host"):
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in entry[key]):
                raise RecordError(
                    f"entry {index} ({entry['name']!r}): {key} {entry[key]!r} contains a control character",
                    fix=f"give {key} without NUL bytes, newlines or other control characters",
                )
        out = dict(entry)
        out["started_at"] = _epoch_seconds(entry, "started_at", index)
        if event == "ended":
            out["ended_at"] = _epoch_seconds(entry, "ended_at", index)
            if out["ended_at"] < out["started_at"]:
                raise RecordError(
                    f"entry {index} ({entry['name']}): ended_at is before started_at",
                    fix="give the real end, after the start",
                )
        checked.append(out)
    return checked


def injection_key(campaign: str, name: str) -> str:
    return f"firm:injection:{campaign}:{name}"


RETRY_INTERVAL_S = 0.5
"""Seconds between attempts to write a record to a Redis that does not answer."""


def record(
    event: str,
    campaign: str,
    entries: Sequence[Mapping[str, Any]],
    jsonl_path: str | None,
    redis_client: Any = None,
    schedule: Sequence[Mapping[str, Any]] | None = None,
    *,
    redis_wait_s: float = 0.0,
    retry_on: tuple[type[BaseException], ...] = (),
) -> int:
    """Append ``entries`` (anomaly summaries, as firm.core.anomaly returns them) to the record.

    ``event`` is ``planned`` (``schedule`` given, no entries), ``started`` or ``ended``. Returns the
    number of entries written. The campaign file is written first; when Redis fails with one of
    ``retry_on`` (it is down or restarting), the record waits in memory and is resent every
    RETRY_INTERVAL_S for up to ``redis_wait_s`` seconds, after which :class:`RecordError` says so.
    """
    check_id(campaign)
    entries = validate_entries(event, entries)
    now = time.time()
    lines = [{"event": event, "campaign": campaign, "recorded_at": now, **dict(entry)} for entry in entries]
    if event == "planned":
        lines = [
            {"event": "planned", "campaign": campaign, "recorded_at": now, "schedule": list(schedule or [])}
        ]
    if jsonl_path:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(jsonl_path)), exist_ok=True)
            with open(jsonl_path, "a", encoding="utf-8") as handle:
                for line in lines:
                    handle.write(json.dumps(line, sort_keys=True) + "\n")
        except OSError as exc:
            raise RecordError(
                f"cannot append to the campaign file {jsonl_path}: {exc.strerror}",
                fix="give a writable campaign file path",
            ) from exc
    if redis_client is not None:
        pending: PendingWrites[
            tuple[str, str, Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]] | None, float]
        ] = PendingWrites(1)
        pending.add([(event, campaign, entries, schedule, now)])
        deadline = time.monotonic() + redis_wait_s

        def write(
            batch: list[
                tuple[str, str, Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]] | None, float]
            ],
        ) -> None:
            for item in batch:
                _record_redis(redis_client, *item)

        while not pending.flush(write, retry_on):
            if time.monotonic() >= deadline:
                raise RecordError(
                    f"Redis did not take the {event} record of campaign {campaign} within "
                    f"{redis_wait_s:g} s"
                    + (f"; the campaign file {jsonl_path} has it" if jsonl_path else ""),
                    fix="start Redis (the redis role, or make services) and record again",
                )
            time.sleep(RETRY_INTERVAL_S)
    return len(entries)


def _record_redis(
    client: Any,
    event: str,
    campaign: str,
    entries: Sequence[Mapping[str, Any]],
    schedule: Sequence[Mapping[str, Any]] | None,
    now: float,
) -> None:
    pipe = client.pipeline()
    if event == "planned":
        pipe.hset(
            f"firm:campaign:{campaign}",
            mapping={"id": campaign, "planned_at": now, "schedule": json.dumps(list(schedule or []))},
        )
    for entry in entries:
        key = injection_key(campaign, str(entry["name"]))
        fields = {
            k: json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else v)
            for k, v in entry.items()
        }
        pipe.hset(key, mapping={**fields, "campaign": campaign, "event": event})
        if event == "started":
            pipe.rpush(f"firm:campaign:{campaign}:injections", key)
            pipe.zadd("firm:injections", {key: float(entry["started_at"])})
    pipe.execute()
