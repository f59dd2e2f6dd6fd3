"""The testbed's state file (``<state_dir>/testbed.json``): one versioned record, read and written here.

``firm testbed up`` writes it once every instance answers; scale-out and scale-in replace it whole.
Every instance's server reads the same JSON for its own entry (``firm.testbed.server``), so the keys on
disk are the field names below. A file of another version, or one that is not this record, is refused
with :class:`StateFileError`, whose fix is to rebuild the testbed (``firm testbed down``, then ``up``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from ansible_collections.firm.core.plugins.module_utils.process import ProcessRef
from firm.testbed.config import Instance, ServiceSpec

STATE_VERSION = 1
"""Version of the state file's layout; raised whenever a field changes meaning or is removed."""

REBUILD = "take the testbed down and start it again: `firm testbed down`, then `firm testbed up`"

_INSTANCE_KEYS = ("service", "name", "address", "namespace", "cgroup", "host_interface", "spec")


class StateFileError(FirmError):
    """The state file exists but is not a state this version of firm can read."""


@dataclass(frozen=True)
class TestbedState:
    """What a running testbed is made of, as ``firm testbed up`` (and scaling) recorded it.

    ``instances`` holds one entry per instance, Redis first, scaled-out ones included: the fields of
    :class:`firm.testbed.config.Instance` plus ``process`` (a :class:`ProcessRef` as a dict, or None when it
    was never started). Raises nothing itself; :meth:`from_json` raises :class:`StateFileError`.
    """

    __test__ = False  # not a pytest test class, despite its name

    bridge: str
    """Name of the Linux bridge the instances hang off."""
    port: int
    """TCP port every service instance listens on."""
    redis_address: str
    """IPv4 address of the application's Redis (port 6379)."""
    frontend: str
    """URL of the entry point, ``http://ADDRESS:PORT``."""
    instances: tuple[dict[str, Any], ...]
    """One entry per instance (see the class docstring)."""
    data_dir: str = ""
    """Directory of the application's data (Redis dump, media)."""
    redis_password_file: str | None = None
    """File (mode 0600) holding the application Redis's password; None for a Redis without one."""
    span_retention: int = 300000
    """Spans kept in the span stream (entries)."""
    sampling: float = 1.0
    """Share of requests traced, in (0, 1]."""
    telemetry: dict[str, int] | None = None
    """The telemetry sampler of the configured instances (a ProcessRef as a dict), or None."""
    telemetry_redis: str | None = None
    """URL of the Redis the telemetry samplers write to, or None."""
    next_index: int | None = None
    """Address index the next scaled-out instance gets (only grows); None before the first scale-out."""
    scaled_telemetry: dict[str, dict[str, int]] = field(default_factory=dict)
    """Instance name -> its own telemetry sampler (a ProcessRef as a dict), for scaled-out instances."""
    version: int = STATE_VERSION
    """Layout version of the file (:data:`STATE_VERSION`)."""

    @classmethod
    def from_json(cls, data: object, path: str = "testbed.json") -> TestbedState:
        """The state in ``data`` (the parsed file); raises :class:`StateFileError` naming what is wrong."""
        if not isinstance(data, dict):
            raise StateFileError(f"the testbed state {path} is not a JSON object", fix=REBUILD)
        version = data.get("version")
        if version != STATE_VERSION:
            age = (
                "older"
                if version is None or (isinstance(version, int) and version < STATE_VERSION)
                else "newer"
            )
            raise StateFileError(
                f"the testbed state {path} has version {version!r}, this firm reads version "
                f"{STATE_VERSION} (the testbed was started by an {age} firm)",
                fix=REBUILD,
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        missing = sorted(f.name for f in fields(cls) if f.name not in data and f.name in _REQUIRED)
        if unknown or missing:
            raise StateFileError(
                f"the testbed state {path} has unknown fields {unknown} or lacks {missing}", fix=REBUILD
            )
        entries = data["instances"]
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and all(k in e for k in _INSTANCE_KEYS) for e in entries
        ):
            raise StateFileError(
                f"the testbed state {path} has instances that are not entries with "
                f"{', '.join(_INSTANCE_KEYS)}",
                fix=REBUILD,
            )
        state = cls(
            **{
                **data,
                "instances": tuple(entries),
                "scaled_telemetry": dict(data.get("scaled_telemetry") or {}),
            }
        )
        for name in ("bridge", "redis_address", "frontend"):
            if not isinstance(getattr(state, name), str):
                raise StateFileError(
                    f"the testbed state {path} has {name} {getattr(state, name)!r}, not a string", fix=REBUILD
                )
        if not isinstance(state.port, int) or isinstance(state.port, bool):
            raise StateFileError(
                f"the testbed state {path} has port {state.port!r}, not an integer", fix=REBUILD
            )
        return state

    def to_json(self) -> dict[str, Any]:
        """The file's content (the keys ``firm.testbed.server`` reads among them)."""
        data = asdict(self)
        data["instances"] = [dict(e) for e in self.instances]
        return data

    def with_instances(
        self, instances: list[dict[str, Any]] | tuple[dict[str, Any], ...], **changes: Any
    ) -> TestbedState:
        """A copy naming ``instances`` (and any other ``changes``)."""
        return replace(self, instances=tuple(instances), **changes)

    def instance_list(self) -> list[Instance]:
        """The instances the state names (Redis first), scaled-out ones included."""
        return [instance_of(e) for e in self.instances]

    def processes(self) -> list[ProcessRef | None]:
        """Each instance's process, in ``instances`` order (None for one never started)."""
        return [ProcessRef(**e["process"]) if e.get("process") else None for e in self.instances]


_REQUIRED = ("bridge", "port", "redis_address", "frontend", "instances")


def instance_of(entry: Mapping[str, Any]) -> Instance:
    """The :class:`Instance` a state entry describes."""
    known = {f.name for f in fields(ServiceSpec)}
    return Instance(
        entry["service"],
        entry["name"],
        entry["address"],
        entry["namespace"],
        entry["cgroup"],
        entry["host_interface"],
        ServiceSpec(**{k: v for k, v in entry["spec"].items() if k in known}),
    )


def read(path: str) -> TestbedState | None:
    """The state in ``path``; None when there is no such file. Raises :class:`StateFileError` when the file
    cannot be read or is not a state of this version."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(
            f"cannot read the testbed state {path}: {exc.strerror}",
            fix="run firm as the user that started the testbed (root)",
        ) from exc
    except ValueError as exc:
        raise StateFileError(f"the testbed state {path} is not JSON ({exc})", fix=REBUILD) from exc
    return TestbedState.from_json(data, path)


def write(path: str, state: TestbedState) -> None:
    """Replace ``path`` with ``state`` (written whole and renamed, so a reader never sees half)."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(state.to_json(), handle, indent=1)
    os.replace(temporary, path)
