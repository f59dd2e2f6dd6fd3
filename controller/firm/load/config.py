"""What a load run is: typed, frozen, validated on construction.

Every field carries its unit. Errors name the field and say what to write instead, e.g.
``rate.rps: -5 is negative. Fix: give requests per second above 0``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from firm.load.errors import LoadSpecError
from firm.textfiles import kind_of
from firm.urls import http_url_problem, redact_url

__all__ = [
    "ConstantRate",
    "LoadSpec",
    "Mix",
    "RedisOutput",
    "RequestType",
    "Slo",
    "TraceRate",
    "parse_mix",
    "parse_slos",
]


class RequestType(enum.Enum):
    """The request types of the Social Network frontend; the value is the name used in records."""

    COMPOSE_POST = "compose-post"
    READ_HOME_TIMELINE = "read-home-timeline"
    READ_USER_TIMELINE = "read-user-timeline"

    @property
    def path(self) -> str:
        """The frontend's path for this type, e.g. ``/compose_post``."""
        return "/" + self.value.replace("-", "_")

    @property
    def short(self) -> str:
        """The short name the CLI takes: ``compose``, ``home`` or ``user``."""
        return _SHORT[self]

    @classmethod
    def parse(cls, name: str, what: str = "request type") -> RequestType:
        """``compose``, ``compose-post``, ``compose_post`` (any case) -> COMPOSE_POST."""
        key = name.strip().lower().replace("_", "-")
        for member in cls:
            if key in (member.value, member.short, member.name.lower().replace("_", "-")):
                return member
        raise LoadSpecError(
            what,
            f"{name!r} is not a request type",
            fix="use compose, home or user (or compose-post, read-home-timeline, read-user-timeline)",
        )


_SHORT = {
    RequestType.COMPOSE_POST: "compose",
    RequestType.READ_HOME_TIMELINE: "home",
    RequestType.READ_USER_TIMELINE: "user",
}


def _positive(name: str, value: float, unit: str, allow_zero: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or math.isinf(value)
    ):
        raise LoadSpecError(name, f"{value!r} is not a finite number", fix=f"give {unit} as a number")
    if value < 0 or (value == 0 and not allow_zero):
        word = "negative" if value < 0 else "zero"
        bound = "at least 0" if allow_zero else "above 0"
        raise LoadSpecError(name, f"{value!r} is {word}", fix=f"give {unit} {bound}")


MAX_RATE_RPS = 100_000.0
"""The highest request rate one load generator is asked for, requests per second: one process
sends at most a few thousand a second, and a schedule of more would only exhaust memory."""


def _at_most(name: str, value: float, bound: float, unit: str) -> None:
    if value > bound:
        raise LoadSpecError(
            name,
            f"{value!r} is more than {bound:g} {unit}",
            fix=f"give at most {bound:g}; for more load run several generators",
        )


def _positive_int(name: str, value: int, unit: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LoadSpecError(name, f"{value!r} is not a whole number", fix=f"give {unit} as an integer")
    if value <= 0:
        raise LoadSpecError(name, f"{value} is not positive", fix=f"give {unit} of at least 1")


@dataclass(frozen=True)
class Mix:
    """Relative weights of the request types (any non-negative numbers; they are normalised).

    The default is DeathStarBench's mix for the Social Network: 10 % compose-post, 60 %
    read-home-timeline, 30 % read-user-timeline.
    """

    compose_post: float = 10.0
    """Weight of compose-post requests (dimensionless, >= 0)."""
    read_home_timeline: float = 60.0
    """Weight of read-home-timeline requests (dimensionless, >= 0)."""
    read_user_timeline: float = 30.0
    """Weight of read-user-timeline requests (dimensionless, >= 0)."""

    def __post_init__(self) -> None:
        for rt in RequestType:
            _positive(f"mix.{rt.short}", self.weight(rt), "a weight", allow_zero=True)
        if sum(self.weight(rt) for rt in RequestType) <= 0:
            raise LoadSpecError(
                "mix",
                "every weight is zero, so no request would be sent",
                fix="give at least one type a weight above 0, e.g. compose=10,home=60,user=30",
            )

    def weight(self, rt: RequestType) -> float:
        """The weight of ``rt`` as given."""
        return float(getattr(self, rt.name.lower()))

    def probabilities(self) -> tuple[float, float, float]:
        """The share of each type, in the order of :class:`RequestType` (sums to 1)."""
        total = sum(self.weight(rt) for rt in RequestType)
        p = [self.weight(rt) / total for rt in RequestType]
        return p[0], p[1], p[2]

    def types(self) -> list[RequestType]:
        """The types that are sent (weight above 0)."""
        return [rt for rt in RequestType if self.weight(rt) > 0]

    @classmethod
    def from_weights(cls, weights: Mapping[RequestType, float]) -> Mix:
        """A mix from explicit weights; types not named get weight 0."""
        return cls(**{rt.name.lower(): float(weights.get(rt, 0.0)) for rt in RequestType})


@dataclass(frozen=True)
class Slo:
    """A latency objective of one request type."""

    request_type: RequestType
    """The request type the objective applies to."""
    p99_ms: float
    """Upper bound of the 99th-percentile latency of a window, in milliseconds (> 0)."""

    def __post_init__(self) -> None:
        _positive(f"slo.{self.request_type.short}", self.p99_ms, "the p99 latency objective in milliseconds")


@dataclass(frozen=True)
class ConstantRate:
    """A constant request rate."""

    rps: float
    """Requests per second (> 0), all types together."""

    def __post_init__(self) -> None:
        _positive("rate.rps", self.rps, "requests per second")
        _at_most("rate.rps", self.rps, MAX_RATE_RPS, "requests per second")


@dataclass(frozen=True)
class TraceRate:
    """A rate that follows a trace file: one integer per line, requests per second for that second.

    The trace is scaled so that its highest second becomes ``peak_rps``, and played ``speedup``
    times faster than real time (each line then lasts ``1 / speedup`` seconds).
    """

    path: Path
    """The trace file (text, one non-negative integer per line)."""
    peak_rps: float
    """Requests per second at the trace's busiest second after scaling (> 0)."""
    speedup: float = 1.0
    """Time compression (dimensionless, > 0): 60 plays an hour of trace in a minute."""

    def __post_init__(self) -> None:
        _positive("rate.peak_rps", self.peak_rps, "the peak rate in requests per second")
        _at_most("rate.peak_rps", self.peak_rps, MAX_RATE_RPS, "requests per second")
        _positive("rate.speedup", self.speedup, "a time compression factor (1 = real time)")
        _at_most(
            "rate.speedup",
            self.speedup * self.peak_rps,
            MAX_RATE_RPS,
            "requests per second at the peak, sped up (peak_rps x speedup)",
        )
        if not Path(self.path).is_file():
            kind = (
                "does not exist"
                if not Path(self.path).exists()
                else f"is {kind_of(Path(self.path).stat().st_mode)}, not a file"
            )
            raise LoadSpecError(
                "rate.path",
                f"trace file {self.path} {kind}",
                fix="give a file with one requests-per-second integer per line, "
                "e.g. ../shared/data/workloads/diurnal.txt",
            )


@dataclass(frozen=True)
class LoadSpec:
    """One open-loop load run against the Social Network frontend."""

    url: str
    """Base URL of the frontend, ``http://HOST:PORT`` (or https, optionally with a path prefix)."""
    rate: ConstantRate | TraceRate
    """The request rate over time."""
    duration_s: float | None = None
    """Length of the run in seconds; None = the trace's length divided by its speedup (a constant
    rate needs a duration)."""
    mix: Mix = field(default_factory=Mix)
    """Weights of the request types."""
    slos: tuple[Slo, ...] = ()
    """p99 objectives per request type; a type without one is never marked violated."""
    users: int = 962
    """Users ids are drawn uniformly from ``[0, users)`` (socfb-Reed98 has 962 users)."""
    seed: int | None = None
    """Seed of the arrival times, request types, users and payloads; None = fresh entropy (the
    seed used is reported in the summary)."""
    connections: int = 16
    """Keep-alive connections to the frontend, i.e. requests on the wire at once."""
    max_in_flight: int = 1024
    """Requests sent or waiting for a connection at once; a request due beyond this is not sent and
    counts as error ``overloaded``."""
    timeout_s: float = 10.0
    """Seconds from a request's intended send time until it counts as error ``timeout``."""
    window_s: float = 1.0
    """Length of a latency window in seconds (windows are by completion time)."""

    def __post_init__(self) -> None:
        problem = http_url_problem(self.url)  # the one check of service URLs (firm.urls)
        if problem is not None:
            raise LoadSpecError(
                "url",
                f"{redact_url(self.url)!r} {problem}",
                fix="give the frontend's base URL, e.g. http://10.0.0.2:8080 or http://[::1]:8080",
            )
        if not isinstance(self.rate, (ConstantRate, TraceRate)):
            raise LoadSpecError(
                "rate", f"{self.rate!r} is not a rate", fix="give ConstantRate(rps) or TraceRate(...)"
            )
        if self.duration_s is None:
            if isinstance(self.rate, ConstantRate):
                raise LoadSpecError(
                    "duration_s",
                    "a constant rate needs a duration",
                    fix="give the run's length in seconds, e.g. duration_s=60",
                )
        else:
            _positive("duration_s", self.duration_s, "the run's length in seconds")
            if isinstance(self.rate, ConstantRate) and self.rate.rps * self.duration_s < 1:
                raise LoadSpecError(
                    "rate",
                    f"{self.rate.rps:g} requests/s for {self.duration_s:g} s plans "
                    f"{self.rate.rps * self.duration_s:.3g} requests, less than one",
                    fix="give a rate and a duration whose product is at least 1",
                )
        if not isinstance(self.mix, Mix):
            raise LoadSpecError(
                "mix", f"{self.mix!r} is not a Mix", fix="give Mix(...) or parse_mix('home=60,...')"
            )
        seen: set[RequestType] = set()
        for slo in self.slos:
            if slo.request_type in seen:
                raise LoadSpecError(
                    f"slo.{slo.request_type.short}", "is given twice", fix="give one SLO per type"
                )
            seen.add(slo.request_type)
        _positive_int("users", self.users, "the number of users")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0
        ):
            raise LoadSpecError(
                "seed", f"{self.seed!r} is not a non-negative integer", fix="give e.g. seed=1, or None"
            )
        _positive_int("connections", self.connections, "the number of connections")
        _positive_int("max_in_flight", self.max_in_flight, "the in-flight bound")
        if self.max_in_flight < self.connections:
            raise LoadSpecError(
                "max_in_flight",
                f"{self.max_in_flight} is below connections ({self.connections})",
                fix="give max_in_flight >= connections, or fewer connections",
            )
        _positive("timeout_s", self.timeout_s, "the request timeout in seconds")
        _positive("window_s", self.window_s, "the window length in seconds")

    def slo_ms(self, rt: RequestType) -> float | None:
        """The p99 objective of ``rt`` in milliseconds, or None."""
        for slo in self.slos:
            if slo.request_type is rt:
                return slo.p99_ms
        return None


@dataclass(frozen=True)
class RedisOutput:
    """Where the per-request records and the latency windows go."""

    url: str
    """Redis URL, e.g. ``redis://127.0.0.1:6379/0``."""
    requests_key: str = "firm:requests"
    """Stream of one entry per request."""
    latency_key: str = "firm:latency"
    """Stream of one entry per window and request type."""
    requests_maxlen: int = 1_000_000
    """Approximate bound of the requests stream, in entries (older entries are trimmed)."""
    latency_maxlen: int = 100_000
    """Approximate bound of the latency stream, in entries."""
    max_pending_batches: int = 120
    """Batches (one per window) waiting for Redis before the oldest is dropped and counted."""

    def __post_init__(self) -> None:
        try:
            scheme = urlsplit(self.url).scheme
        except ValueError:  # unbalanced brackets ([::1)
            scheme = ""
        if scheme not in ("redis", "rediss", "unix"):
            raise LoadSpecError(
                "redis.url",
                f"{redact_url(self.url)!r} is not a Redis URL",
                fix="give e.g. redis://127.0.0.1:6379/0",
            )
        for name in ("requests_key", "latency_key"):
            if not getattr(self, name):
                raise LoadSpecError(f"redis.{name}", "is empty", fix="give a stream key, e.g. firm:requests")
        _positive_int("redis.requests_maxlen", self.requests_maxlen, "a stream length")
        _positive_int("redis.latency_maxlen", self.latency_maxlen, "a stream length")
        _positive_int("redis.max_pending_batches", self.max_pending_batches, "a number of batches")


_PAIR = re.compile(r"^\s*([A-Za-z_-]+)\s*[=:]\s*([^\s,]+)\s*$")


def _pairs(text: str, what: str) -> Iterable[tuple[RequestType, float]]:
    for item in text.split(","):
        if not item.strip():
            continue
        match = _PAIR.match(item)
        if not match:
            raise LoadSpecError(
                what, f"{item.strip()!r} is not TYPE=NUMBER", fix="write e.g. compose=10,home=60,user=30"
            )
        rt = RequestType.parse(match.group(1), what)
        try:
            value = float(match.group(2))
        except ValueError:
            raise LoadSpecError(
                f"{what}.{rt.short}",
                f"{match.group(2)!r} is not a number",
                fix="write e.g. compose=10,home=60,user=30",
            ) from None
        yield rt, value


def parse_mix(text: str) -> Mix:
    """``"compose=10,home=60,user=30"`` -> Mix; types not named get weight 0."""
    weights: dict[RequestType, float] = {}
    for rt, value in _pairs(text, "mix"):
        if rt in weights:
            raise LoadSpecError(f"mix.{rt.short}", "is given twice", fix="name each type once")
        weights[rt] = value
    if not weights:
        raise LoadSpecError("mix", "is empty", fix="write e.g. compose=10,home=60,user=30")
    return Mix.from_weights(weights)


def parse_slos(text: str) -> tuple[Slo, ...]:
    """``"compose=500,home=200,user=200"`` (milliseconds) -> Slos; a bare number applies to every type."""
    stripped = text.strip()
    try:
        single = float(stripped)
    except ValueError:
        pass
    else:
        return tuple(Slo(rt, single) for rt in RequestType)
    slos: dict[RequestType, Slo] = {}
    for rt, value in _pairs(stripped, "slo"):
        if rt in slos:
            raise LoadSpecError(f"slo.{rt.short}", "is given twice", fix="name each type once")
        slos[rt] = Slo(rt, value)
    if not slos:
        raise LoadSpecError("slo", "is empty", fix="write e.g. compose=500,home=200,user=200 (milliseconds)")
    return tuple(slos.values())
