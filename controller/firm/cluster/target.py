"""Targets of the control loop built from the cluster pieces.

- :class:`AnsibleOverride`: any loop target (the embedded testbed's) with its instances driven
  through :class:`firm.cluster.ansible.AnsibleExecutor` instead of its own executor
  (``firm run --executor ansible -i INVENTORY``).

(:class:`firm.cluster.app.ClusterTarget` is the application on Kubernetes.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from firm.actuate.executor import Executor
from firm.cluster.ansible import AnsibleExecutor, targets_from_local
from firm.telemetry.cpus import CpuLoad
from firm.telemetry.model import Sample
from firm.tracing.model import Trace


class _LocalTargets(Protocol):
    @property
    def targets(self) -> dict[str, Any]: ...


class _Inner(Protocol):
    @property
    def executor(self) -> Any: ...

    def refresh(self) -> tuple[list[str], list[str]]: ...

    def names(self) -> list[str]: ...

    def service_of(self, name: str) -> str: ...

    def cpu_capacity(self, name: str) -> float: ...

    def read_traces(self, start_us: int, end_us: int) -> list[Trace]: ...

    def latest_telemetry(self, names: Sequence[str]) -> dict[str, Sample | None]: ...

    def cpu_load(self) -> Mapping[int, CpuLoad] | None: ...


class AnsibleOverride:
    """``inner``'s instances, traces and telemetry; its local executor's targets driven through
    ansible on ``host`` of ``inventory`` (``localhost`` of ``inventory/local``: connection local).
    Instances that appear later (scale-out) are added to the ansible executor on refresh."""

    def __init__(
        self, inner: _Inner, inventory: str | None, *, host: str = "localhost", audit_path: str | None = None
    ) -> None:
        self.inner = inner
        self.host = host
        local: _LocalTargets = inner.executor
        self.ansible = AnsibleExecutor(
            targets_from_local(list(local.targets.values()), host), inventory, audit_path=audit_path
        )

    @property
    def executor(self) -> Executor:
        return self.ansible

    @property
    def prefetch(self) -> bool:
        """As the wrapped target's: whether its trace reads are incremental, so the loop may read and
        ingest a quarter interval before each step (``ControlLoop._prefetches``)."""
        return bool(getattr(self.inner, "prefetch", False))

    def refresh(self) -> tuple[list[str], list[str]]:
        added, removed = self.inner.refresh()
        local: _LocalTargets = self.inner.executor
        for target in targets_from_local([local.targets[n] for n in added if n in local.targets], self.host):
            self.ansible.add_target(target)
        for name in removed:
            self.ansible.remove_target(name)
        return added, removed

    def names(self) -> list[str]:
        return self.inner.names()

    def service_of(self, name: str) -> str:
        return self.inner.service_of(name)

    def cpu_capacity(self, name: str) -> float:
        return self.inner.cpu_capacity(name)

    def read_traces(self, start_us: int, end_us: int) -> list[Trace]:
        return self.inner.read_traces(start_us, end_us)

    def latest_telemetry(self, names: Sequence[str]) -> dict[str, Sample | None]:
        return self.inner.latest_telemetry(names)

    def cpu_load(self) -> Mapping[int, CpuLoad] | None:
        return self.inner.cpu_load()
