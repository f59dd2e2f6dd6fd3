"""When each request is due: an open-loop arrival process computed ahead of time.

The arrivals are a Poisson process (exponential inter-arrival times, as wrk2 ``-D exp``) whose rate
is piecewise constant: one value for a constant rate, one per line of a rate trace. Points are drawn
with unit-rate exponential gaps on the cumulative-intensity axis and mapped back to time, which is
exact for piecewise-constant rates (segments of rate 0 get no request). The schedule is produced in
chunks of a few seconds, each computed before its first request is due, so an hour of load never
sits in memory at once; the chunking is fixed, so a seed always gives the same schedule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from firm.load.config import ConstantRate, LoadSpec, Mix, RequestType, TraceRate
from firm.load.errors import LoadSpecError
from firm.textfiles import TextFileError, read_small_file

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

TYPES: tuple[RequestType, ...] = tuple(RequestType)
"""Request types by the index :class:`ScheduleChunk` uses."""


MAX_TRACE_RATE = 10**12
"""The largest value of a rate trace file (requests per second); larger ones are refused."""


_DIGITS = re.compile(r"[+-]?[0-9]+")
"""A whole number in ASCII digits (int() also takes other scripts' digits and ``1_000``)."""

MAX_TRACE_FILE_BYTES = 64 << 20
"""The largest rate trace read (64 MiB: years of seconds, one line each)."""


def read_rate_trace(path: Path | str) -> IntArray:
    """The requests-per-second values of a trace file (one non-negative integer per line, ASCII
    digits; UTF-8, a byte-order mark allowed). Raises :class:`LoadSpecError` naming the file (and
    the line) for a file that is missing, not a regular file (a device, a pipe), larger than
    :data:`MAX_TRACE_FILE_BYTES`, not UTF-8 text (e.g. compressed), or holds a line that is not
    such an integer."""
    fix = "give a text file with one requests-per-second integer per line"
    try:
        data = read_small_file(path, MAX_TRACE_FILE_BYTES)
    except FileNotFoundError:
        raise LoadSpecError("rate.path", f"trace file {path} does not exist", fix=fix) from None
    except TextFileError as exc:
        raise LoadSpecError("rate.path", f"trace file {path} {exc}", fix=fix) from None
    except OSError as exc:
        raise LoadSpecError(
            "rate.path", f"cannot read trace file {path}: {exc.strerror}", fix="check the file's permissions"
        ) from None
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        compressed = (
            " (it looks compressed: give it uncompressed, e.g. <(zcat FILE))"
            if data[:2] == b"\x1f\x8b"
            else ""
        )
        raise LoadSpecError(
            "rate.path", f"trace file {path} is not UTF-8 text (byte {exc.start}){compressed}", fix=fix
        ) from None
    values: list[int] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            # (a value of thousands of digits is too large, not "not an integer": int() refuses
            # those as a guard against slow conversions)
            if not _DIGITS.fullmatch(text):
                raise ValueError(text)
            value = MAX_TRACE_RATE + 1 if len(text) > 20 and text.lstrip("+-").isdigit() else int(text)
        except ValueError:
            raise LoadSpecError(
                "rate.path",
                f"{path} line {number}: {text!r} is not an integer",
                fix="write one whole number of requests per second per line",
            ) from None
        if value < 0:
            raise LoadSpecError(
                "rate.path",
                f"{path} line {number}: {value} is negative",
                fix="requests per second must be 0 or more",
            )
        if value > MAX_TRACE_RATE:
            raise LoadSpecError(
                "rate.path",
                f"{path} line {number}: {text[:30]}{'...' if len(text) > 30 else ''} ({len(text)} digits) "
                "is too large",
                fix=f"the trace's values are requests per second, at most {MAX_TRACE_RATE} "
                "(only their shape counts: --peak sets the scale)",
            )
        values.append(value)
    if not values or max(values) == 0:
        raise LoadSpecError(
            "rate.path",
            f"{path} has no second with a rate above 0",
            fix="give a trace with at least one positive line",
        )
    return np.asarray(values, dtype=np.int64)


def scale_trace(values: npt.ArrayLike, peak_rps: float) -> FloatArray:
    """``values`` scaled so that the largest becomes ``peak_rps`` (shape is kept)."""
    array = np.asarray(values, dtype=np.float64)
    top = float(array.max()) if array.size else 0.0
    if top <= 0:
        raise LoadSpecError(
            "rate.path",
            "the trace has no second with a rate above 0",
            fix="give a trace with at least one positive line",
        )
    return array * (peak_rps / top)


@dataclass(frozen=True)
class RateProfile:
    """A piecewise-constant rate: ``rates[i]`` requests per second during segment ``i``."""

    rates: FloatArray
    """Requests per second of each segment."""
    segment_s: float
    """Length of a segment in seconds."""
    duration_s: float
    """Length of the run in seconds (at most ``len(rates) * segment_s``)."""

    def expected_requests(self) -> float:
        """The mean number of requests of the whole run."""
        return float(self.cumulative(self.duration_s))

    def cumulative(self, t: float) -> float:
        """Expected requests in ``[0, t]`` (the integral of the rate)."""
        index = min(int(t / self.segment_s), len(self.rates) - 1)
        head = float(self.rates[:index].sum()) * self.segment_s
        return head + (t - index * self.segment_s) * float(self.rates[index])


def rate_profile(spec: LoadSpec) -> RateProfile:
    """The spec's rate over time: scaled and time-compressed for a trace."""
    rate = spec.rate
    if isinstance(rate, ConstantRate):
        assert spec.duration_s is not None  # LoadSpec checks it
        segments = max(1, math.ceil(spec.duration_s))
        return RateProfile(np.full(segments, float(rate.rps)), 1.0, float(spec.duration_s))
    assert isinstance(rate, TraceRate)
    rates = scale_trace(read_rate_trace(rate.path), rate.peak_rps)
    segment_s = 1.0 / rate.speedup
    length_s = len(rates) * segment_s
    duration = length_s if spec.duration_s is None else float(spec.duration_s)
    if duration > length_s * (1 + 1e-9):
        raise LoadSpecError(
            "duration_s",
            f"{duration:g} s is longer than the trace ({len(rates)} lines at "
            f"speedup {rate.speedup:g} last {length_s:g} s)",
            fix=f"give at most {length_s:g} s, or a larger speedup, or no duration",
        )
    profile = RateProfile(rates, segment_s, duration)
    planned = profile.expected_requests()
    if planned < 1:
        raise LoadSpecError(
            "rate.peak_rps",
            f"{rate.peak_rps:g} requests/s at the trace's peak over {duration:g} s plans {planned:.3g} "
            "requests, less than one",
            fix="give a higher peak, a longer duration or a smaller speedup",
        )
    return profile


def interarrival_times(rate_rps: float, n: int, rng: np.random.Generator) -> FloatArray:
    """``n`` exponential gaps in seconds with mean ``1 / rate_rps`` (a constant-rate Poisson process)."""
    if rate_rps <= 0:
        raise LoadSpecError(
            "rate.rps", f"{rate_rps!r} is not positive", fix="give requests per second above 0"
        )
    return rng.exponential(1.0 / rate_rps, n)


class ScheduleChunk(NamedTuple):
    """Requests due in one stretch of the run, in order."""

    times: FloatArray
    """Intended send times, seconds from the start of the run."""
    types: IntArray
    """Index into :data:`TYPES` of each request."""
    users: IntArray
    """User id of each request."""


class Schedule:
    """The run's requests, chunk by chunk: ``for chunk in Schedule(...)``.

    ``rng`` draws, per chunk, the arrival gaps, then the types, then the users; chunks are
    ``chunk_s`` seconds of the run, so the same seed and profile give the same requests.
    """

    def __init__(
        self, profile: RateProfile, mix: Mix, users: int, rng: np.random.Generator, chunk_s: float = 5.0
    ) -> None:
        self.profile = profile
        self.probabilities = np.asarray(mix.probabilities(), dtype=np.float64)
        self.users = users
        self.rng = rng
        self.chunk_s = chunk_s
        self._cumulative = np.concatenate([[0.0], np.cumsum(profile.rates * profile.segment_s)])

    def __iter__(self) -> Iterator[ScheduleChunk]:
        start = 0.0
        while start < self.profile.duration_s:
            end = min(start + self.chunk_s, self.profile.duration_s)
            times = self._times(start, end)
            types = self.rng.choice(len(TYPES), size=len(times), p=self.probabilities).astype(np.int64)
            users = self.rng.integers(0, self.users, size=len(times), dtype=np.int64)
            yield ScheduleChunk(times, types, users)
            start = end

    def _times(self, start: float, end: float) -> FloatArray:
        """Arrival times in ``(start, end]``: unit-rate points on the cumulative axis, mapped back."""
        low = self.profile.cumulative(start)
        high = self.profile.cumulative(end)
        points: list[FloatArray] = []
        position = low
        while True:
            # Enough gaps to pass ``high`` almost always; the loop draws more when not.
            span = high - position
            n = int(span + 4 * math.sqrt(span) + 16)
            drawn = position + np.cumsum(self.rng.exponential(1.0, n))
            kept = drawn[drawn <= high]
            points.append(kept)
            if len(kept) < n:
                break
            position = float(drawn[-1])
        # Memorylessness: the next chunk may start afresh at ``high``.
        cumulative = np.concatenate(points)
        segment = np.clip(
            np.searchsorted(self._cumulative, cumulative, side="right") - 1, 0, len(self.profile.rates) - 1
        )
        rates = self.profile.rates[segment]
        times = segment * self.profile.segment_s + (cumulative - self._cumulative[segment]) / rates
        return np.asarray(times, dtype=np.float64)


def arrival_times(
    profile: RateProfile, rng: np.random.Generator, mix: Mix | None = None, users: int = 962
) -> ScheduleChunk:
    """The whole schedule at once (for tests and short runs)."""
    chunks = list(Schedule(profile, mix or Mix(), users, rng))
    if not chunks:
        empty = np.zeros(0)
        return ScheduleChunk(empty, empty.astype(np.int64), empty.astype(np.int64))
    return ScheduleChunk(
        np.concatenate([c.times for c in chunks]),
        np.concatenate([c.types for c in chunks]),
        np.concatenate([c.users for c in chunks]),
    )
