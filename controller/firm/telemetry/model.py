"""What is sampled (an :class:`Instance`) and what a sample holds (a :class:`Sample`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError, InvalidInputError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
RESERVED_NAMES = frozenset({"instances"})


class TelemetryError(FirmError):
    """Base class of the telemetry layer's errors."""


class InstanceError(TelemetryError, InvalidInputError):
    """An instance description was rejected."""


@dataclass(frozen=True)
class Instance:
    """One service instance: its cgroup and, optionally, its network interface.

    ``interface`` without ``namespace`` is the host-side end of the instance's veth, read in the
    host's namespace (its rx is what the service sent). With ``namespace`` (a name under
    ``/run/netns``), ``interface`` is an interface inside that namespace, or None for all of its
    interfaces but ``lo``.
    """

    service: str
    """The service the instance belongs to, e.g. ``compose-post``."""
    name: str
    """Unique instance name, e.g. ``compose-post-0`` (letters, digits, ``. _ @ -``)."""
    cgroup_path: str
    """Path of the instance's cgroup below each hierarchy's root (a leading ``/`` is ignored)."""
    interface: str | None = None
    """Network interface (see above); None: no network figures unless ``namespace`` is given."""
    namespace: str | None = None
    """Network namespace name (``ip netns``), or None for the host's."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or self.name in RESERVED_NAMES:
            raise InstanceError(
                f"instance name {self.name!r} is not usable",
                fix="use letters, digits, '.', '_', '@' and '-', not starting with a symbol, "
                f"and none of {sorted(RESERVED_NAMES)}",
            )
        if not self.service:
            raise InstanceError(f"instance {self.name} has no service", fix="give the service it belongs to")
        path = self.cgroup_path.strip("/")
        if not path or ".." in path.split("/"):
            raise InstanceError(
                f"cgroup_path {self.cgroup_path!r} of {self.name} is not a group below the root",
                fix="give the group's path relative to the hierarchy, e.g. firm/testbed/compose-post-0",
            )
        object.__setattr__(self, "cgroup_path", path)
        for attr in ("interface", "namespace"):
            value = getattr(self, attr)
            if value is not None and (not value or "/" in value or value in (".", "..")):
                raise InstanceError(
                    f"{attr} {value!r} of {self.name} is not a name",
                    fix=f"give the {attr}'s name, e.g. veth0, or leave it unset",
                )


@dataclass(frozen=True)
class Sample:
    """Usage of one instance over one sampling interval; None where a figure is not available."""

    instance: str
    """Instance name."""
    service: str
    """Service of the instance."""
    timestamp: float
    """End of the interval, seconds since the epoch."""
    interval_s: float
    """Length of the interval, seconds."""
    cpu_cores: float | None
    """CPU time used per second of the interval, in cores (1.0 = one CPU busy)."""
    cpu_throttled_ratio: float | None
    """Share of the interval's CFS periods in which the group was throttled (0..1; 0 without quota)."""
    cpu_throttled_s_per_s: float | None
    """Seconds spent throttled per second of the interval."""
    memory_bytes: int | None
    """Memory in use at the end of the interval, bytes."""
    disk_read_bps: float | None
    """Bytes read from block devices per second."""
    disk_write_bps: float | None
    """Bytes written to block devices per second."""
    net_rx_bps: float | None
    """Bytes the instance received per second."""
    net_tx_bps: float | None
    """Bytes the instance sent per second."""
    pids: int | None = None
    """Tasks in the group at the end of the interval."""
    cpu_wait_s_per_s: float | None = None
    """Seconds its tasks spent runnable but waiting for a CPU, summed over the tasks, per second of
    the interval (schedstat's run delay): CPU contention from outside its cgroup, such as a noisy
    neighbour on its CPUs, which its own usage and throttling do not show. None where the kernel
    keeps no schedstat or the source has no such figure."""

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_fields(self) -> dict[str, str]:
        """Flat text fields for a Redis stream entry ("" for None)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                out[f.name] = ""
            elif isinstance(value, float):
                out[f.name] = repr(value)
            else:
                out[f.name] = str(value)
        return out

    @classmethod
    def from_fields(cls, data: dict[str, str]) -> Sample:
        """The inverse of :meth:`to_fields`; fields it does not know are ignored."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            text = data.get(f.name, "")
            if f.name in ("instance", "service"):
                values[f.name] = text
            elif text == "":
                values[f.name] = None
            elif f.name in ("memory_bytes", "pids"):
                values[f.name] = int(text)
            else:
                number = float(text)
                values[f.name] = number if math.isfinite(number) else None
        return cls(**values)
