# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""Egress shaping of a network interface with tc: a TBF root qdisc, or an HTB class.

firm shapes what an interface sends (its egress; on a container's host-side veth that is what the
container receives), optionally inside a network namespace (``ip netns``). Two shapes exist:

- ``tbf``: the root qdisc is a token bucket filter with ``rate``, ``burst`` and ``latency``.
- ``htb``: the root qdisc is ``htb`` with handle ``MAJOR:`` whose ``default`` points to the class
  ``MAJOR:MINOR`` (``class_id``, 1:10 by default), and that class has ``rate``, ``ceil``, ``burst``
  and ``cburst``. Unclassified traffic therefore goes through the class.

Rates are in bits per second (the kernel keeps bytes per second, so a rate is rounded down to a
multiple of 8 bit/s), sizes in bytes, times in microseconds. The burst must hold at least one
full frame (MTU plus the link-layer header) and what the rate sends in one timer tick (rate/HZ,
with HZ read from /proc/net/psched exactly as tc's get_hz() does); anything smaller is refused,
and that minimum is the default.

tc does not report the values it was given: it reports the token buffer (a time, rounded to clock
ticks) converted back to bytes, and prints HTB classes as rounded text. To stay idempotent the
wanted shaping is passed through the same arithmetic as tc and the kernel (``expected_report``)
and compared with what tc reports; nothing is written when they agree, because rewriting a qdisc
or class resets its state.

Every command is an argument list run with LC_ALL=C through a :class:`kernel.Kernel` (``kernel.run``);
functions that run commands take it as the ``kernel`` keyword, so tests give a fake tc. The entry
point is :func:`ensure_shaping`: read, compare, plan, run only what differs, restore on failure,
verify what tc reports, return a :class:`ShapingChange`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ansible_collections.firm.core.plugins.module_utils import units
from ansible_collections.firm.core.plugins.module_utils.errors import (
    CommandError,
    InvalidInputError,
    NotFoundError,
)
from ansible_collections.firm.core.plugins.module_utils.kernel import KERNEL, Change, Kernel
from ansible_collections.firm.core.plugins.module_utils.sysfs import Rollback

KINDS = ("tbf", "htb")
DEFAULT_LATENCY_US = 50_000
DEFAULT_BURST_S = 0.01
"""Seconds of traffic at the rate a burst holds when none is given (see ``default_burst``)."""
DEFAULT_CLASS_ID = "1:10"
NETNS_DIR = "/run/netns"
PSCHED_PATH = "/proc/net/psched"
# tc's compiled-in HZ, used by get_hz() when /proc/net/psched does not give one.
TC_DEFAULT_HZ = 100
# Bytes a frame carries on top of the MTU when it reaches the qdisc, by `ip link` link_type.
LINK_OVERHEAD = {"ether": 14, "loopback": 14, "none": 0}
DEFAULT_LINK_OVERHEAD = 14
_U32_MAX = (1 << 32) - 1
_USEC_PER_SEC = 1_000_000
_NSEC_PER_SEC = 1_000_000_000
# The default qdisc the kernel attaches has handle 0: and is not shaping.
_KERNEL_DEFAULT_HANDLE = "0:"

Command = tuple[str, ...]


class TcInputError(InvalidInputError):
    """A shaping request was rejected before anything was run."""


class TcNotFoundError(NotFoundError):
    """The interface, the network namespace or /proc/net/psched does not exist."""


class TcCommandError(CommandError):
    """tc or ip failed; ``details`` carry its command, rc, stdout and stderr."""


# --------------------------------------------------------------------------------------------------
# Running commands


def _fix_for(stderr: str) -> str:
    text = stderr.lower()
    if "operation not permitted" in text or "permission denied" in text:
        return "run as root (tc needs CAP_NET_ADMIN in the interface's network namespace)"
    if "cannot find device" in text or "does not exist" in text:
        return "check the interface name with `ip link` (`ip -n NAMESPACE link` inside a namespace)"
    if "cannot open network namespace" in text:
        return "check the namespace with `ip netns list`"
    if "unknown qdisc" in text or "specified qdisc kind is unknown" in text:
        return "load the qdisc's kernel module (modprobe sch_tbf or sch_htb)"
    return "read tc's message above; `tc qdisc show dev IF` shows the interface's current qdiscs"


def _run(kernel: Kernel, argv: Sequence[str]) -> str:
    """Run ``argv`` through ``kernel``; a failure is a TcCommandError whose fix fits tc and ip."""
    try:
        return kernel.run(argv)
    except TcCommandError:
        raise
    except CommandError as exc:
        stderr = str(exc.details.get("stderr", ""))
        fix = (
            "install iproute2"
            if exc.details.get("rc") is None and "not installed" in exc.message
            else (exc.fix if exc.details.get("rc") is None else _fix_for(stderr))
        )
        raise TcCommandError(exc.message, fix=fix, **exc.details) from exc


def run_command(argv: Sequence[str]) -> str:
    """Run ``argv`` with LC_ALL=C on the real system and return its stdout; TcCommandError when it fails."""
    return _run(KERNEL, argv)


def _tc(namespace: str | None) -> list[str]:
    return ["tc", "-n", namespace] if namespace else ["tc"]


def _ip(namespace: str | None) -> list[str]:
    return ["ip", "-n", namespace] if namespace else ["ip"]


# --------------------------------------------------------------------------------------------------
# Parsing user input (tc's units)

_TIME_UNITS = {
    "": 1,
    "us": 1,
    "usec": 1,
    "usecs": 1,
    "ms": 1000,
    "msec": 1000,
    "msecs": 1000,
    "s": _USEC_PER_SEC,
    "sec": _USEC_PER_SEC,
    "secs": _USEC_PER_SEC,
}
_MAX_RATE_BPS = 8 * ((1 << 64) - 1)


def _parse_quantity(value: object, units_of: Mapping[str, int], what: str, example: str) -> int:
    try:
        return units.parse_quantity(value, units_of, what, example)
    except units.UnitError as exc:
        raise TcInputError(exc.message, fix=exc.fix) from None


def parse_rate(value: str | float, what: str = "rate") -> int:
    """A rate in bits per second, from an integer (bit/s) or a tc-style string (:mod:`units`).

    "10mbit", "1gbit", "500kbit" are bits per second (SI multiples), "1kibit" is 1024 bit/s, and
    "125kbps" is 125 kilo*bytes* per second = 1 Mbit/s, exactly as tc reads them; "10Mbps" is refused
    as ambiguous. The result is rounded down to a multiple of 8 bit/s, because the kernel keeps rates
    in bytes per second.
    """
    try:
        bps = units.parse_rate(value, what, minimum=8)
    except units.UnitError as exc:
        raise TcInputError(exc.message, fix=exc.fix) from None
    if bps < 8:
        raise TcInputError(
            f"{what} {value!r} is {bps} bit/s; it must be at least 8 bit/s (1 byte/s)",
            fix=f"give a positive {what} such as 10mbit",
        )
    if bps > _MAX_RATE_BPS:
        raise TcInputError(
            f"{what} {value!r} is larger than the kernel can hold (2^64 - 1 bytes per second)",
            fix=f"give a {what} of at most {_MAX_RATE_BPS} bit/s, e.g. 100gbit",
        )
    return bps // 8 * 8


def parse_size(value: str | float, what: str = "burst") -> int:
    """A size in bytes, from an integer (bytes) or a tc-style string ("1514", "15k" = 15360, "1mb", "32kbit")."""
    try:
        size = units.parse_size(value, what)
    except units.UnitError as exc:
        raise TcInputError(exc.message, fix=exc.fix) from None
    if size <= 0:
        raise TcInputError(f"{what} {value!r} must be positive", fix=f"give {what} in bytes, e.g. 15k")
    if size > _U32_MAX:
        raise TcInputError(f"{what} {value!r} does not fit in 32 bits", fix=f"give {what} below 4gb")
    return size


def parse_time(value: str | float, what: str = "latency") -> int:
    """A time in microseconds, from an integer (microseconds) or a tc-style string ("50ms", "1s")."""
    usecs = _parse_quantity(value, _TIME_UNITS, what, '"50ms", "200us", "1s" or 50000 (microseconds)')
    if usecs <= 0:
        raise TcInputError(f"{what} {value!r} must be positive", fix=f"give {what} like 50ms")
    if usecs > _U32_MAX:
        raise TcInputError(f"{what} {value!r} is too long", fix=f"give {what} below an hour")
    return usecs


_CLASS_ID = re.compile(r"^([0-9a-fA-F]{1,4}):([0-9a-fA-F]{1,4})$")


def parse_class_id(value: str) -> tuple[int, int]:
    """(major, minor) of an HTB class id in tc's hexadecimal notation ("1:10" is major 1, minor 0x10)."""
    match = _CLASS_ID.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise TcInputError(
            f"class_id {value!r} is not MAJOR:MINOR in hexadecimal",
            fix='give class_id like "1:10" (tc notation, hexadecimal)',
        )
    major, minor = int(match.group(1), 16), int(match.group(2), 16)
    if major in (0, 0xFFFF) or minor == 0:
        raise TcInputError(
            f"class_id {value!r} is reserved (major 0 or ffff, or minor 0 is the qdisc itself)",
            fix='use a major of 1 to fffe and a non-zero minor, e.g. "1:10"',
        )
    return major, minor


def _class_id(major: int, minor: int) -> str:
    return f"{major:x}:{minor:x}"


def check_interface_name(interface: str) -> str:
    """Refuse names the kernel would refuse (dev_valid_name): 1-15 bytes, no '/', ':' or space."""
    if (
        not isinstance(interface, str)
        or not 0 < len(interface.encode()) <= 15
        or interface in (".", "..")
        or any(c in interface for c in "/:\x00")
        or any(c.isspace() for c in interface)
    ):
        raise TcInputError(
            f"interface {interface!r} is not a valid interface name",
            fix="give the name `ip link` shows: 1 to 15 bytes (UTF-8) without '/', ':', NUL or spaces",
        )
    return interface


def check_namespace(namespace: str | None, netns_dir: str = NETNS_DIR) -> str | None:
    """Refuse a namespace name with '/' and one that ``ip netns`` does not know (no netns_dir/NAME)."""
    if namespace is None:
        return None
    if not namespace or "/" in namespace or namespace in (".", ".."):
        raise TcInputError(
            f"namespace {namespace!r} is not a valid network namespace name",
            fix="give the name `ip netns list` shows",
        )
    path = os.path.join(netns_dir, namespace)
    if not os.path.exists(path):
        raise TcNotFoundError(
            f"network namespace {namespace!r} does not exist ({path} is missing)",
            fix=f"create it with `ip netns add {namespace}`, or give one `ip netns list` shows",
        )
    return namespace


# --------------------------------------------------------------------------------------------------
# The kernel's clock, as tc sees it


@dataclass(frozen=True)
class Psched:
    """The four hexadecimal fields of /proc/net/psched.

    The kernel writes: nanoseconds per microsecond (1000), nanoseconds per tick (64), 1000000, and
    NSEC_PER_SEC / hrtimer resolution (1000000000 with high-resolution timers).
    """

    t2us: int
    us2t: int
    clock_res: int
    hz_field: int

    @classmethod
    def parse(cls, text: str) -> Psched:
        fields = text.split()
        try:
            values = [int(f, 16) for f in fields[:4]]
        except ValueError:
            values = []
        if len(values) != 4 or values[1] == 0 or values[2] == 0:
            raise TcInputError(
                f"/proc/net/psched content {text.strip()!r} is not four hexadecimal fields",
                fix="give the path of the kernel's /proc/net/psched",
            )
        return cls(*values)

    @property
    def hz(self) -> int:
        """tc's get_hz(): the fourth field when the third is 1000000, else tc's default of 100."""
        if self.clock_res == 1_000_000 and self.hz_field:
            return self.hz_field
        return TC_DEFAULT_HZ

    @property
    def tick_in_usec(self) -> float:
        """Ticks per microsecond, as tc_core_init() computes it."""
        t2us = self.us2t if self.clock_res == 1_000_000_000 else self.t2us
        clock_factor = self.clock_res / _USEC_PER_SEC
        return t2us / self.us2t * clock_factor

    @property
    def ns_per_tick(self) -> int:
        """PSCHED_TICKS2NS(1): the kernel's tick in nanoseconds (the second field)."""
        return self.us2t

    def xmittime(self, rate_bytes: int, size: int) -> int:
        """tc_calc_xmittime(): ticks to send ``size`` bytes at ``rate_bytes`` per second."""
        usecs = int(_USEC_PER_SEC * (size / rate_bytes))
        return int(usecs * self.tick_in_usec)

    def xmitsize(self, rate_bytes: int, ticks: int) -> int:
        """tc_calc_xmitsize(): bytes sent in ``ticks`` at ``rate_bytes`` per second."""
        usecs = int(ticks / self.tick_in_usec)
        return int((rate_bytes * usecs) / _USEC_PER_SEC)

    def tick2time(self, ticks: int) -> int:
        return int(ticks / self.tick_in_usec)


def read_psched(path: str = PSCHED_PATH) -> Psched:
    try:
        with open(path, encoding="ascii") as handle:
            return Psched.parse(handle.read())
    except OSError as exc:
        raise TcNotFoundError(
            f"cannot read {path}: {exc.strerror}",
            fix="give the path of the kernel's /proc/net/psched (psched_path)",
        ) from exc


def _kernel_l2t_ns(rate_bytes: int, size: int) -> int:
    """psched_l2t_ns(): nanoseconds to send ``size`` bytes, with the kernel's mult/shift rounding."""
    factor, shift = _NSEC_PER_SEC, 0
    while True:
        mult = factor // rate_bytes
        if mult & (1 << 31) or factor & (1 << 63):
            break
        factor <<= 1
        shift += 1
    return (size * mult) >> shift


# --------------------------------------------------------------------------------------------------
# What is shaped, and what is wanted


@dataclass(frozen=True)
class Link:
    """An interface as ``ip -j link show`` describes it."""

    name: str
    mtu: int
    link_type: str

    @property
    def overhead(self) -> int:
        """Bytes on top of the MTU in a frame the qdisc sees (the Ethernet header on veths)."""
        return LINK_OVERHEAD.get(self.link_type, DEFAULT_LINK_OVERHEAD)


@dataclass(frozen=True)
class Shaping:
    """Egress shaping of one interface.

    ``rate_bps`` and ``ceil_bps`` in bits per second, ``burst_bytes`` and ``cburst_bytes`` in bytes,
    ``latency_us`` in microseconds. A tbf has ``latency_us`` and no ``ceil_bps``, ``class_id`` or
    ``cburst_bytes``; an htb has ``ceil_bps``, ``class_id`` and ``cburst_bytes`` and no latency.
    Read from the kernel, the values are what tc reports (bursts rounded to clock ticks).
    """

    kind: str
    rate_bps: int
    ceil_bps: int | None
    burst_bytes: int
    latency_us: int | None
    class_id: str | None
    cburst_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Request:
    """A validated shaping request whose burst may still be unset (it needs the interface's MTU)."""

    kind: str
    rate_bps: int
    ceil_bps: int | None
    burst_bytes: int | None
    latency_us: int | None
    class_id: str | None


def parse_request(
    kind: str,
    rate: str | float,
    *,
    ceil: str | float | None = None,
    burst: str | float | None = None,
    latency: str | float | None = None,
    class_id: str | None = None,
) -> Request:
    """Validate everything that does not depend on the interface; nothing is run."""
    if kind not in KINDS:
        raise TcInputError(f"kind {kind!r} is not supported", fix=f"use one of {', '.join(KINDS)}")
    rate_bps = parse_rate(rate, "rate")
    burst_bytes = None if burst is None else parse_size(burst, "burst")
    if kind == "tbf":
        for name, value in (("ceil", ceil), ("class_id", class_id)):
            if value is not None:
                raise TcInputError(f"{name} applies to kind=htb only", fix=f"drop {name}, or use kind=htb")
        latency_us = DEFAULT_LATENCY_US if latency is None else parse_time(latency, "latency")
        return Request("tbf", rate_bps, None, burst_bytes, latency_us, None)
    if latency is not None:
        raise TcInputError(
            "latency applies to kind=tbf only (an htb class queues in its leaf qdisc)",
            fix="drop latency, or use kind=tbf",
        )
    ceil_bps = rate_bps if ceil is None else parse_rate(ceil, "ceil")
    if ceil_bps < rate_bps:
        raise TcInputError(
            f"ceil {ceil!r} ({ceil_bps} bit/s) is below rate {rate!r} ({rate_bps} bit/s)",
            fix="give a ceil at least equal to the rate, or leave it unset (ceil = rate)",
        )
    major, minor = parse_class_id(DEFAULT_CLASS_ID if class_id is None else class_id)
    return Request("htb", rate_bps, ceil_bps, burst_bytes, None, _class_id(major, minor))


def min_burst(rate_bps: int, link: Link, hz: int) -> int:
    """The smallest burst firm accepts: max(MTU + link-layer overhead, rate/HZ) in bytes.

    A TBF drops every frame larger than its burst, and a burst below rate/HZ cannot reach the rate
    when the qdisc is woken once per tick. HZ is tc's get_hz(); with high-resolution timers it is
    10^9, so rate/HZ is a fraction of a byte and the frame size decides.
    """
    return max(link.mtu + link.overhead, -(-(rate_bps // 8) // hz))


def default_burst(rate_bps: int, link: Link, hz: int) -> int:
    """The burst used when none is given: DEFAULT_BURST_S of traffic at the rate, and at least
    ``min_burst``, in bytes.

    A bucket of one frame holds no tokens across a late wake-up of the qdisc's timer, so every
    late wake-up is lost rate: TCP through a 20 Mbit/s TBF with a 1514-byte burst got 15.4 to
    18.3 Mbit/s on this project's 2-vCPU test machine. tc-tbf(8) asks for at least rate/HZ of the
    kernel's tick (HZ 100: 10 ms), whatever the timers' resolution."""
    return max(min_burst(rate_bps, link, hz), int(rate_bps // 8 * DEFAULT_BURST_S))


def resolve(request: Request, link: Link, psched: Psched) -> Shaping:
    """The full shaping for ``link``: the burst defaults to ``default_burst`` and may not be below
    ``min_burst``."""
    minimum = min_burst(request.rate_bps, link, psched.hz)
    burst = (
        default_burst(request.rate_bps, link, psched.hz)
        if request.burst_bytes is None
        else request.burst_bytes
    )
    if burst < minimum:
        raise TcInputError(
            f"burst {burst} bytes is below the minimum of {minimum} bytes for {link.name} "
            f"(MTU {link.mtu} + {link.overhead} bytes of link-layer header, rate/HZ = "
            f"{request.rate_bps // 8 / psched.hz:.3f} bytes at HZ={psched.hz})",
            fix=f"give a burst of at least {minimum} bytes, or leave it unset",
        )
    cburst = None
    if request.kind == "htb":
        assert request.ceil_bps is not None
        cburst = max(burst, min_burst(request.ceil_bps, link, psched.hz))
    shaping = Shaping(
        request.kind, request.rate_bps, request.ceil_bps, burst, request.latency_us, request.class_id, cburst
    )
    _check_fits(shaping, psched)
    return shaping


def _check_fits(shaping: Shaping, psched: Psched) -> None:
    """tc keeps the buffer in 32-bit ticks and a TBF's queue limit in 32-bit bytes."""
    pairs = [(shaping.rate_bps, shaping.burst_bytes, "burst")]
    if shaping.ceil_bps is not None and shaping.cburst_bytes is not None:
        pairs.append((shaping.ceil_bps, shaping.cburst_bytes, "burst (for ceil)"))
    for rate_bps, size, what in pairs:
        if size / (rate_bps // 8) * _USEC_PER_SEC * psched.tick_in_usec > _U32_MAX:
            raise TcInputError(
                f"{what} of {size} bytes lasts too long at {rate_bps} bit/s for tc's 32-bit buffer",
                fix="give a smaller burst or a higher rate",
            )
    if shaping.latency_us is not None:
        limit = (shaping.rate_bps // 8) * shaping.latency_us / _USEC_PER_SEC + shaping.burst_bytes
        if limit > _U32_MAX:
            raise TcInputError(
                f"latency {shaping.latency_us} us at {shaping.rate_bps} bit/s makes a queue over 4 GiB",
                fix="give a shorter latency",
            )


# --------------------------------------------------------------------------------------------------
# What tc reports


@dataclass(frozen=True)
class RootQdisc:
    """The root qdisc of an interface, from ``tc -j qdisc show``."""

    kind: str
    handle: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_kernel_default(self) -> bool:
        """The qdisc the kernel attaches by itself (noqueue, pfifo_fast, mq...), handle 0:."""
        return self.handle == _KERNEL_DEFAULT_HANDLE

    @property
    def major(self) -> int:
        return int(self.handle.split(":")[0] or "0", 16)

    def describe(self) -> str:
        return f"{self.kind} {self.handle}"


@dataclass(frozen=True)
class HtbClass:
    """An HTB class as tc reports it; ``exact`` is False when read from tc's rounded text output."""

    class_id: str
    parent: str | None
    rate_bps: int
    ceil_bps: int
    burst_bytes: int
    cburst_bytes: int
    exact: bool


@dataclass(frozen=True)
class TcState:
    """The root qdisc of an interface (None when it has none, e.g. a down ifb) and its HTB classes."""

    root: RootQdisc | None
    classes: tuple[HtbClass, ...] = ()

    def find_class(self, class_id: str) -> HtbClass | None:
        return next((c for c in self.classes if c.class_id == class_id), None)


def _json_list(text: str, what: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as exc:
        raise TcInputError(
            f"{what} is not JSON: {text[:200]!r}", fix="use iproute2 4.19 or newer (tc -j)"
        ) from exc
    if not isinstance(data, list):
        raise TcInputError(
            f"{what} is not a JSON list: {text[:200]!r}", fix="use iproute2 4.19 or newer (tc -j)"
        )
    return [entry for entry in data if isinstance(entry, dict)]


def parse_qdiscs(text: str) -> RootQdisc | None:
    """The root qdisc in the output of ``tc -j qdisc show dev IF`` (None when the list is empty)."""
    for entry in _json_list(text, "tc qdisc output"):
        if entry.get("root"):
            options = entry.get("options") or {}
            return RootQdisc(str(entry["kind"]), str(entry["handle"]), dict(options))
    return None


def parse_link(text: str) -> Link:
    """Name, MTU and link type from ``ip -j link show dev IF``."""
    entries = _json_list(text, "ip link output")
    if not entries or "mtu" not in entries[0]:
        raise TcInputError(f"ip link printed no interface: {text[:200]!r}", fix="check the interface name")
    entry = entries[0]
    return Link(str(entry.get("ifname", "")), int(entry["mtu"]), str(entry.get("link_type", "ether")))


def _parse_text_size(token: str) -> int:
    """A size from tc's text output: "1600b", "15Kb", "1Mb" are bytes (print_size), so lower case reads
    them as tc meant. "0b" is a real report: at high rates a small burst lasts under a microsecond,
    and tc converts the whole microseconds back to bytes (an HTB class of 8gbit with a 1514-byte
    burst shows "burst 0b")."""
    try:
        return units.parse_size(token.split("/", maxsplit=1)[0].lower(), "size in tc output")
    except units.UnitError as exc:
        raise TcInputError(exc.message, fix=exc.fix) from None


def _parse_rate_value(value: Any) -> int:
    """A rate from tc output: bytes per second in JSON, "20Mbit" in text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value * 8
    return parse_rate(str(value), "rate in tc output")


def parse_classes(text: str) -> tuple[HtbClass, ...]:
    """HTB classes from ``tc -j class show dev IF``.

    iproute2 6.1 ignores -j here and prints text, one class per line with its statistics indented
    below; newer iproute2 prints a JSON list whose rates are in bytes per second. Both are read.
    """
    if text.lstrip().startswith("["):
        return tuple(
            _class_from_json(entry)
            for entry in _json_list(text, "tc class output")
            if entry.get("class") == "htb"
        )
    classes = []
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) >= 3 and tokens[0] == "class" and tokens[1] == "htb" and not line[:1].isspace():
            classes.append(_class_from_tokens(tokens[2], tokens[3:]))
    return tuple(classes)


def _class_from_json(entry: Mapping[str, Any]) -> HtbClass:
    parent = None if entry.get("root") else str(entry.get("parent")) if entry.get("parent") else None
    return HtbClass(
        str(entry["handle"]),
        parent,
        _parse_rate_value(entry["rate"]),
        _parse_rate_value(entry["ceil"]),
        int(entry["burst"]),
        int(entry["cburst"]),
        exact=True,
    )


def _class_from_tokens(handle: str, tokens: list[str]) -> HtbClass:
    values: dict[str, str] = {}
    parent: str | None = None
    index = 0
    while index < len(tokens):
        key = tokens[index]
        if key == "root":
            index += 1
            continue
        if index + 1 >= len(tokens):
            break
        if key == "parent":
            parent = tokens[index + 1]
        values.setdefault(key, tokens[index + 1])
        index += 2
    try:
        return HtbClass(
            handle,
            parent,
            parse_rate(values["rate"]),
            parse_rate(values["ceil"]),
            _parse_text_size(values["burst"]),
            _parse_text_size(values["cburst"]),
            exact=False,
        )
    except KeyError as exc:
        raise TcInputError(
            f"tc printed an htb class {handle} without {exc.args[0]}: {' '.join(tokens)!r}",
            fix="use iproute2 6.1 or a version with the same class output",
        ) from exc


def shaping_of(state: TcState) -> Shaping | None:
    """The shaping the state amounts to, or None when nothing firm recognises limits the interface.

    A tbf root is shaping; an htb root is shaping when its default class exists under it. Any other
    root qdisc (the kernel's default, or someone else's, e.g. prio or fq_codel) is not.
    """
    root = state.root
    if root is None or root.is_kernel_default:
        return None
    if root.kind == "tbf":
        options = root.options
        return Shaping(
            "tbf", int(options["rate"]) * 8, None, int(options["burst"]), int(options.get("lat", 0)), None
        )
    if root.kind == "htb":
        default = _default_minor(root)
        found = state.find_class(_class_id(root.major, default)) if default else None
        if found is not None and found.parent is None:
            return Shaping(
                "htb",
                found.rate_bps,
                found.ceil_bps,
                found.burst_bytes,
                None,
                found.class_id,
                found.cburst_bytes,
            )
    return None


def _default_minor(root: RootQdisc) -> int:
    value = root.options.get("default", 0)
    return int(value, 16) if isinstance(value, str) else int(value)


def expected_report(shaping: Shaping, psched: Psched) -> Shaping:
    """What tc will report for ``shaping`` once applied, by tc's and the kernel's own arithmetic.

    TBF: tc passes the burst to the kernel, which turns it into a token buffer in nanoseconds
    (psched_l2t_ns) and reports it in ticks; tc converts the ticks back to bytes, truncating to
    whole microseconds. The latency comes back from the queue limit tc derived from it.
    HTB: tc itself converts the burst to ticks (tc_calc_xmittime) and back.
    """
    rate_bytes = shaping.rate_bps // 8
    if shaping.kind == "tbf":
        assert shaping.latency_us is not None
        ticks = _kernel_l2t_ns(rate_bytes, shaping.burst_bytes) // psched.ns_per_tick
        limit = int(rate_bytes * float(shaping.latency_us) / _USEC_PER_SEC + shaping.burst_bytes)
        latency = int(_USEC_PER_SEC * (limit / rate_bytes) - psched.tick2time(ticks))
        return replace(
            shaping,
            rate_bps=rate_bytes * 8,
            burst_bytes=psched.xmitsize(rate_bytes, ticks),
            latency_us=latency,
        )
    assert shaping.ceil_bps is not None and shaping.cburst_bytes is not None
    ceil_bytes = shaping.ceil_bps // 8
    return replace(
        shaping,
        rate_bps=rate_bytes * 8,
        ceil_bps=ceil_bytes * 8,
        burst_bytes=psched.xmitsize(rate_bytes, psched.xmittime(rate_bytes, shaping.burst_bytes)),
        cburst_bytes=psched.xmitsize(ceil_bytes, psched.xmittime(ceil_bytes, shaping.cburst_bytes)),
    )


def shown_rate(rate_bps: int) -> int:
    """The rate tc's text output shows for ``rate_bps`` ("12345Kbit" for 12345678), in bit/s."""
    rate, scale = rate_bps // 8 * 8, 1
    for _ in range(4):
        if rate < 1000 or (rate % 1000 != 0 and rate < 1000 * 1000):
            break
        rate //= 1000
        scale *= 1000
    return rate * scale


def shown_size(size: int) -> int:
    """The size tc's text output shows for ``size`` ("2Kb" for 2040), in bytes."""
    for unit, slack in ((1024**3, 1024), (1024**2, 1024), (1024, 16)):
        if size >= unit and abs(unit * round(size / unit) - size) < slack:
            return unit * round(size / unit)
    return size


def _close(a: int | None, b: int | None, slack: int = 1) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= slack


def state_matches(state: TcState, wanted: Shaping, psched: Psched) -> bool:
    """Whether the interface already has ``wanted`` (compared as tc reports it, within tc's rounding)."""
    root = state.root
    if root is None or root.is_kernel_default or root.kind != wanted.kind:
        return False
    expected = expected_report(wanted, psched)
    if wanted.kind == "tbf":
        current = shaping_of(state)
        return (
            current is not None
            and current.rate_bps == expected.rate_bps
            and _close(current.burst_bytes, expected.burst_bytes)
            and _close(current.latency_us, expected.latency_us)
        )
    assert wanted.class_id is not None
    major, minor = parse_class_id(wanted.class_id)
    if root.major != major or _default_minor(root) != minor:
        return False
    found = state.find_class(wanted.class_id)
    if found is None or found.parent is not None:
        return False
    assert expected.ceil_bps is not None and expected.cburst_bytes is not None
    rates = (expected.rate_bps, expected.ceil_bps)
    sizes = (expected.burst_bytes, expected.cburst_bytes)
    if not found.exact:  # tc's text output rounds for display; round the expectation the same way
        rates = (shown_rate(rates[0]), shown_rate(rates[1]))
        sizes = (shown_size(sizes[0]), shown_size(sizes[1]))
    return (
        (found.rate_bps, found.ceil_bps) == rates
        and _close(found.burst_bytes, sizes[0])
        and _close(found.cburst_bytes, sizes[1])
    )


# --------------------------------------------------------------------------------------------------
# Reading the interface


def read_link(interface: str, namespace: str | None = None, kernel: Kernel = KERNEL) -> Link:
    """MTU and link type of ``interface``; TcNotFoundError when it does not exist."""
    command = [*_ip(namespace), "-j", "link", "show", "dev", interface]
    try:
        return parse_link(_run(kernel, command))
    except TcCommandError as exc:
        stderr = str(exc.details.get("stderr", ""))
        if "does not exist" in stderr or "Cannot find device" in stderr:
            where = f"network namespace {namespace!r}" if namespace else "the host's network namespace"
            raise TcNotFoundError(
                f"interface {interface!r} does not exist in {where}",
                fix=f"check the name with `{' '.join([*_ip(namespace), 'link'])}`",
                **exc.details,
            ) from exc
        raise


def read_state(interface: str, namespace: str | None = None, kernel: Kernel = KERNEL) -> TcState:
    """The root qdisc of ``interface`` and, when it is htb, its classes."""
    root = parse_qdiscs(_run(kernel, [*_tc(namespace), "-j", "qdisc", "show", "dev", interface]))
    if root is None or root.kind != "htb":
        return TcState(root)
    return TcState(
        root, parse_classes(_run(kernel, [*_tc(namespace), "-j", "class", "show", "dev", interface]))
    )


def read_shaping(
    interface: str, namespace: str | None = None, *, netns_dir: str = NETNS_DIR, kernel: Kernel = KERNEL
) -> Shaping | None:
    """The current shaping of ``interface`` as tc reports it, or None (see ``shaping_of``)."""
    check_interface_name(interface)
    check_namespace(namespace, netns_dir)
    return shaping_of(read_state(interface, namespace, kernel))


# --------------------------------------------------------------------------------------------------
# Planning and applying


def _tbf_command(interface: str, namespace: str | None, shaping: Shaping) -> Command:
    return (
        *_tc(namespace),
        "qdisc",
        "replace",
        "dev",
        interface,
        "root",
        "tbf",
        "rate",
        f"{shaping.rate_bps}bit",
        "burst",
        str(shaping.burst_bytes),
        "latency",
        f"{shaping.latency_us}us",
    )


def _htb_class_command(interface: str, namespace: str | None, shaping: Shaping) -> Command:
    assert shaping.class_id is not None
    major, _ = parse_class_id(shaping.class_id)
    return (
        *_tc(namespace),
        "class",
        "replace",
        "dev",
        interface,
        "parent",
        f"{major:x}:",
        "classid",
        shaping.class_id,
        "htb",
        "rate",
        f"{shaping.rate_bps}bit",
        "ceil",
        f"{shaping.ceil_bps}bit",
        "burst",
        str(shaping.burst_bytes),
        "cburst",
        str(shaping.cburst_bytes),
    )


def _delete_root(interface: str, namespace: str | None) -> Command:
    return (*_tc(namespace), "qdisc", "del", "dev", interface, "root")


def removal(state: TcState, interface: str, namespace: str | None) -> tuple[Command, ...]:
    """Delete the root qdisc when it is a tbf or htb; the kernel then attaches its default again."""
    root = state.root
    if root is None or root.is_kernel_default or root.kind not in KINDS:
        return ()
    return (_delete_root(interface, namespace),)


def plan(
    state: TcState, wanted: Shaping | None, interface: str, namespace: str | None, psched: Psched
) -> tuple[Command, ...]:
    """The tc commands that take ``interface`` from ``state`` to ``wanted`` (None = no shaping).

    Empty when nothing has to change. A tbf is one ``qdisc replace`` (changed in place when the
    root is already a tbf). An htb class whose root qdisc is right is one ``class replace``, which
    keeps the qdisc. Otherwise the root is replaced by ``htb default MINOR`` first: in one step
    when it has another handle, or deleted and added when it has the wanted handle already (the
    kernel cannot change an htb's default, nor a qdisc's kind, in place).
    """
    if wanted is None:
        return removal(state, interface, namespace)
    root = state.root
    shaped_root = root is not None and not root.is_kernel_default
    if state_matches(state, wanted, psched):
        return ()
    if wanted.kind == "tbf":
        return (_tbf_command(interface, namespace, wanted),)
    assert wanted.class_id is not None
    major, minor = parse_class_id(wanted.class_id)
    qdisc_args = ("root", "handle", f"{major:x}:", "htb", "default", f"{minor:x}")
    class_step = _htb_class_command(interface, namespace, wanted)
    if not shaped_root or root is None or root.major != major:
        return ((*_tc(namespace), "qdisc", "replace", "dev", interface, *qdisc_args), class_step)
    found = state.find_class(wanted.class_id)
    if root.kind == "htb" and _default_minor(root) == minor and (found is None or found.parent is None):
        return (class_step,)
    return (
        _delete_root(interface, namespace),
        (*_tc(namespace), "qdisc", "add", "dev", interface, *qdisc_args),
        class_step,
    )


def _restore_target(previous: TcState, link: Link, psched: Psched) -> tuple[Shaping | None, list[str]]:
    """What a failed change rolls back to, and what of the previous state cannot be rebuilt."""
    shaping = shaping_of(previous)
    root = previous.root
    if shaping is None:
        if root is not None and not root.is_kernel_default:
            return None, [
                f"the previous root qdisc {root.describe()} is not firm's shaping and was not rebuilt; "
                "the kernel's default qdisc is in place"
            ]
        return None, []
    # tc reports bursts rounded down; never restore a burst below what a frame needs.
    floor = link.mtu + link.overhead
    shaping = replace(
        shaping,
        burst_bytes=max(shaping.burst_bytes, floor),
        cburst_bytes=None if shaping.cburst_bytes is None else max(shaping.cburst_bytes, floor),
    )
    return shaping, []


def execute(
    steps: Sequence[Command],
    previous: TcState,
    *,
    interface: str,
    namespace: str | None,
    psched: Psched,
    link: Link,
    kernel: Kernel = KERNEL,
) -> None:
    """Run ``steps``; when one fails after others changed the interface, restore ``previous``.

    The raised error then carries ``rolled_back`` (True when the restore worked) and
    ``rollback_failures``.
    """
    for index, step in enumerate(steps):
        try:
            _run(kernel, step)
        except TcCommandError as exc:
            if index > 0:
                failures = _restore(
                    previous,
                    interface=interface,
                    namespace=namespace,
                    psched=psched,
                    link=link,
                    kernel=kernel,
                )
                exc.details["rolled_back"] = not failures
                exc.details["rollback_failures"] = failures
            raise


def _restore(
    previous: TcState, *, interface: str, namespace: str | None, psched: Psched, link: Link, kernel: Kernel
) -> list[str]:
    target, failures = _restore_target(previous, link, psched)
    try:
        for step in plan(read_state(interface, namespace, kernel), target, interface, namespace, psched):
            _run(kernel, step)
    except TcCommandError as exc:
        failures.append(str(exc))
    return failures


@dataclass(frozen=True, kw_only=True)
class ShapingChange(Change[Shaping]):
    """What :func:`ensure_shaping` did: ``before`` / ``after`` the shaping tc reports (None: none;
    in check mode ``after`` is :func:`expected_report` of the request), ``commands`` the commands run.

    ``requested`` is the shaping asked for, resolved against the interface (None: removal),
    ``link`` and ``psched`` what it was resolved against, ``root_qdisc`` the root qdisc after the
    change (before it, in check mode or when nothing ran).
    """

    requested: Shaping | None
    link: Link
    psched: Psched
    root_qdisc: str | None


def ensure_shaping(
    interface: str,
    desired: Shaping | Request | None,
    namespace: str | None = None,
    *,
    check_mode: bool = False,
    netns_dir: str = NETNS_DIR,
    psched_path: str = PSCHED_PATH,
    kernel: Kernel = KERNEL,
    rollback: Rollback | None = None,
) -> ShapingChange:
    """Make ``desired`` the egress shaping of ``interface`` (None: no shaping), replacing whatever
    root qdisc it has.

    ``desired`` is a :class:`Request` (from :func:`parse_request`; resolved here against the
    interface's MTU and the kernel's clock) or a :class:`Shaping` already resolved (from
    :func:`shaping_for`). Reads the interface, plans the tc commands and runs them only when tc
    does not already report the wanted shaping. If a step fails after another changed the
    interface, the previous root qdisc is restored (the error carries ``rolled_back`` and
    ``rollback_failures``). Afterwards tc's report is read back: when it does not match, the
    previous shaping is restored and TcCommandError says what tc reports. With ``rollback``
    given, a step that restores the previous shaping is recorded there once the change is made,
    for the caller to undo together with its other changes.
    """
    check_interface_name(interface)
    check_namespace(namespace, netns_dir)
    psched = read_psched(psched_path)
    link = read_link(interface, namespace, kernel)
    wanted = resolve(desired, link, psched) if isinstance(desired, Request) else desired
    before = read_state(interface, namespace, kernel)
    steps = plan(before, wanted, interface, namespace, psched)
    target = f"{namespace}/{interface}" if namespace else interface
    if steps and not check_mode:
        execute(
            steps, before, interface=interface, namespace=namespace, psched=psched, link=link, kernel=kernel
        )
        after_state = read_state(interface, namespace, kernel)
        try:
            _verify(after_state, wanted, psched, steps)
        except TcCommandError as exc:
            failures = _restore(
                before, interface=interface, namespace=namespace, psched=psched, link=link, kernel=kernel
            )
            exc.details["rolled_back"] = not failures
            exc.details["rollback_failures"] = failures
            raise
        if rollback is not None:
            rollback.record(
                lambda: _restore_or_raise(
                    before, interface=interface, namespace=namespace, psched=psched, link=link, kernel=kernel
                )
            )
        after = shaping_of(after_state)
        root = after_state.root
    else:
        after = (
            shaping_of(before)
            if not steps
            else (expected_report(wanted, psched) if wanted is not None else None)
        )
        root = before.root
    return ShapingChange(
        target=target,
        before=shaping_of(before),
        after=after,
        changed=bool(steps),
        commands=tuple(steps),
        requested=wanted,
        link=link,
        psched=psched,
        root_qdisc=root.describe() if root is not None else None,
        check_mode=check_mode,
    )


def _verify(state: TcState, wanted: Shaping | None, psched: Psched, steps: Sequence[Command]) -> None:
    """tc accepted the commands; check that it now reports what was asked for."""
    ok = shaping_of(state) is None if wanted is None else state_matches(state, wanted, psched)
    if not ok:
        reported = shaping_of(state)
        raise TcCommandError(
            "tc accepted the change but reports "
            f"{reported.as_dict() if reported is not None else 'no shaping'} instead of "
            f"{expected_report(wanted, psched).as_dict() if wanted is not None else 'no shaping'}",
            fix="check whether another tool manages this interface's qdiscs",
            commands=[list(step) for step in steps],
        )


def _restore_or_raise(
    previous: TcState, *, interface: str, namespace: str | None, psched: Psched, link: Link, kernel: Kernel
) -> None:
    failures = _restore(
        previous, interface=interface, namespace=namespace, psched=psched, link=link, kernel=kernel
    )
    if failures:
        raise TcCommandError(
            f"could not restore the previous shaping of {interface}: {failures[0]}",
            fix=f"check the interface with `tc qdisc show dev {interface}`",
            failures=failures,
        )


def apply_shaping(
    interface: str,
    shaping: Shaping,
    namespace: str | None = None,
    *,
    netns_dir: str = NETNS_DIR,
    psched_path: str = PSCHED_PATH,
    kernel: Kernel = KERNEL,
) -> tuple[Command, ...]:
    """:func:`ensure_shaping` of ``shaping``; returns the commands run (empty when the interface had it)."""
    return ensure_shaping(
        interface, shaping, namespace, netns_dir=netns_dir, psched_path=psched_path, kernel=kernel
    ).commands


def remove_shaping(
    interface: str,
    namespace: str | None = None,
    *,
    netns_dir: str = NETNS_DIR,
    psched_path: str = PSCHED_PATH,
    kernel: Kernel = KERNEL,
) -> bool:
    """Delete a tbf or htb root qdisc (the kernel re-attaches its default); True when one was deleted.

    :func:`ensure_shaping` of None."""
    return ensure_shaping(
        interface, None, namespace, netns_dir=netns_dir, psched_path=psched_path, kernel=kernel
    ).changed


def shaping_for(
    interface: str,
    kind: str,
    rate: str | float,
    *,
    ceil: str | float | None = None,
    burst: str | float | None = None,
    latency: str | float | None = None,
    class_id: str | None = None,
    namespace: str | None = None,
    netns_dir: str = NETNS_DIR,
    psched_path: str = PSCHED_PATH,
    kernel: Kernel = KERNEL,
) -> Shaping:
    """Validate a request and resolve its burst against ``interface``'s MTU: ready for ensure_shaping."""
    check_interface_name(interface)
    check_namespace(namespace, netns_dir)
    request = parse_request(kind, rate, ceil=ceil, burst=burst, latency=latency, class_id=class_id)
    return resolve(request, read_link(interface, namespace, kernel), read_psched(psched_path))


def apply_netem_delay(
    interface: str,
    delay_us: int,
    jitter_us: int,
    namespace: str | None = None,
    *,
    netns_dir: str = NETNS_DIR,
    kernel: Kernel = KERNEL,
) -> None:
    """Replace the root qdisc with netem adding ``delay_us`` (+- ``jitter_us``) to every egress packet.

    Needs a kernel with sch_netem; whatever shaping was there before is the caller's to restore.
    """
    check_interface_name(interface)
    check_namespace(namespace, netns_dir)
    if delay_us <= 0 or jitter_us < 0:
        raise TcInputError(
            f"netem delay {delay_us} us (jitter {jitter_us} us) is not positive",
            fix="give a delay above 0 and a jitter of at least 0",
        )
    _run(
        kernel,
        (
            *_tc(namespace),
            "qdisc",
            "replace",
            "dev",
            interface,
            "root",
            "netem",
            "delay",
            f"{delay_us}us",
            f"{jitter_us}us",
        ),
    )


def remove_netem(
    interface: str, namespace: str | None = None, *, netns_dir: str = NETNS_DIR, kernel: Kernel = KERNEL
) -> bool:
    """Delete a netem root qdisc; True when there was one."""
    check_interface_name(interface)
    check_namespace(namespace, netns_dir)
    root = read_state(interface, namespace, kernel).root
    if root is None or root.kind != "netem":
        return False
    _run(kernel, _delete_root(interface, namespace))
    return True
