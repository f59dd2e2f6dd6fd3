"""The one wrapper around ansible-runner: run a firm.core module on hosts and return its results.

ansible-runner takes only keyword arguments and can print or exit inside; this function keeps
that at arm's length: quiet, in a private directory, with the collection path set explicitly so
the installed controller finds the same ``firm.core`` it was installed with.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ansible_runner

import ansible_collections.firm.core as firm_core


class RunnerError(RuntimeError):
    """ansible-runner could not run the module at all (not a module failure)."""


@dataclass(frozen=True)
class HostResult:
    host: str
    status: str  # ok, failed or unreachable
    result: dict[str, Any]

    @property
    def changed(self) -> bool:
        return bool(self.result.get("changed"))

    @property
    def failed(self) -> bool:
        return self.status != "ok"


def collections_path() -> str:
    """The directory that holds ``ansible_collections/firm/core`` for this installation."""
    return str(Path(next(iter(firm_core.__path__))).parents[2])


def _search_path() -> str:
    """PATH with this interpreter's bin first: a venv's ``ansible`` need not be on PATH."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])


def run_module(
    module: str,
    args: dict[str, Any],
    *,
    hosts: str = "localhost",
    inventory: str | None = None,
    check: bool = False,
    diff: bool = False,
    timeout: int = 120,
) -> dict[str, HostResult]:
    """Run ``module`` with ``args`` on ``hosts``; returns each host's result.

    ``inventory`` is a path; without one, localhost runs with the local connection.
    """
    cmdline = []
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    env = {
        "ANSIBLE_COLLECTIONS_PATH": collections_path(),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "ANSIBLE_NOCOLOR": "1",
        "PATH": _search_path(),
    }
    with tempfile.TemporaryDirectory(prefix="firm-runner-") as private_dir:
        if inventory is None:
            inventory_arg: Any = {
                "all": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                        }
                    }
                }
            }
        else:
            inventory_arg = inventory
        run = ansible_runner.run(
            private_data_dir=private_dir,
            host_pattern=hosts,
            module=module,
            module_args=json.dumps(args),
            inventory=inventory_arg,
            envvars=env,
            cmdline=" ".join(cmdline) or None,
            quiet=True,
            timeout=timeout,
            suppress_env_files=True,
        )
        results: dict[str, HostResult] = {}
        for event in run.events:
            kind = event.get("event", "")
            if kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
                data = event["event_data"]
                status = {"runner_on_ok": "ok", "runner_on_failed": "failed"}.get(kind, "unreachable")
                results[data["host"]] = HostResult(data["host"], status, data.get("res", {}))
        if not results:
            raise RunnerError(
                f"ansible-runner ran {module} on no host (status {run.status}, rc {run.rc}); "
                f"check the host pattern {hosts!r} and the inventory"
            )
        return results
