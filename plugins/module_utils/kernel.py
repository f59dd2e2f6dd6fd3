# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""The one door through which firm's actuators change the kernel, and the shape of what they report.

Every actuator (``cgroup.ensure_cgroup``, ``tc.ensure_shaping``, ``resctrl.ensure_group``) has the
same form: read what the kernel holds, compare it with what is wanted, plan the writes, write only
what differs, roll back on failure, read back and verify, and return a :class:`Change`. The writes
go through a :class:`Kernel`: on a real system the default one, :data:`KERNEL`; in tests a subclass
that models the kernel (a fake cgroup tree whose ``mkdir`` creates the interface files, a fake
resctrl that parses schemata writes, a fake ``tc`` that answers from captured output). Callers pass
it as the ``kernel`` keyword; nothing is swapped behind a module's back.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ansible_collections.firm.core.plugins.module_utils.errors import CommandError

COMMAND_TIMEOUT_S = 30.0
"""How long a command (tc, ip) may run before it is given up, seconds."""

Command = tuple[str, ...]


class Kernel:
    """The calls that change kernel state: write a control file, make or remove a directory, run a
    command. Reads of control files are plain file reads and need no model.

    ``write``, ``mkdir`` and ``rmdir`` raise ``OSError`` exactly as the system calls do (the
    actuators turn the errno into a message with the fix); ``run`` raises :class:`CommandError`
    with the command, its rc, stdout and stderr in ``details``.
    """

    def read(self, path: str) -> str:
        """The content of a control file (raises ``OSError``)."""
        with open(path, encoding="ascii") as handle:
            return handle.read()

    def write(self, path: str, data: str) -> None:
        """One write(2): the kernel parses each write of a control file as one command.

        O_TRUNC is a no-op on kernfs (as for a shell's ``>``) and keeps plain files of a test tree
        holding the last value only.
        """
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, data.encode("ascii"))
        finally:
            os.close(fd)

    def mkdir(self, path: str) -> None:
        """mkdir(2): on cgroupfs and resctrl the kernel populates the new group."""
        os.mkdir(path)

    def rmdir(self, path: str) -> None:
        """rmdir(2): removes a group (EBUSY while it is in use)."""
        os.rmdir(path)

    def run(self, argv: Sequence[str]) -> str:
        """Run ``argv`` with LC_ALL=C; its stdout, or :class:`CommandError` when it fails."""
        command = list(argv)
        env = dict(os.environ, LC_ALL="C")
        try:
            proc = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT_S, check=False
            )
        except FileNotFoundError as exc:
            raise CommandError(
                f"{command[0]} is not installed",
                fix=f"install {command[0]}",
                command=command,
                rc=None,
                stdout="",
                stderr=str(exc),
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandError(
                f"{' '.join(command)} did not finish within {COMMAND_TIMEOUT_S:.0f} s",
                fix="check that the system is not stuck (e.g. on the rtnl lock)",
                command=command,
                rc=None,
                stdout="",
                stderr="",
            ) from exc
        if proc.returncode != 0:
            message = proc.stderr.strip() or proc.stdout.strip() or "no output"
            raise CommandError(
                f"{' '.join(command)} failed with rc={proc.returncode}: {message}",
                fix="read the command's message above",
                command=command,
                rc=proc.returncode,
                stdout=proc.stdout,
                stderr=proc.stderr,
            )
        return proc.stdout


KERNEL = Kernel()
"""The real kernel: the default of every ``kernel`` argument."""


def errno_name(exc: OSError) -> str:
    """``EBUSY`` for an OSError with errno 16 (the number itself when it has no name)."""
    return str(errno.errorcode.get(exc.errno or 0, exc.errno))


@dataclass(frozen=True)
class FileWrite:
    """One control file written (or, in check mode, that would be written) with its value."""

    path: str
    value: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "value": self.value}


StateT = TypeVar("StateT")


@dataclass(frozen=True, kw_only=True)
class Change(Generic[StateT]):
    """What one ``ensure_*`` call did (in check mode: would do), the same for every actuator.

    ``before`` and ``after`` are what the kernel held before and holds after, in the actuator's own
    terms (a cgroup's settings in firm's units, a :class:`tc.Shaping`, a resctrl ``Schemata``);
    ``before`` is None when the target did not exist (or had no shaping), ``after`` is None when it
    is gone. In check mode ``after`` is the prediction. ``writes`` are the control files written,
    ``commands`` the commands run, in order. ``changed`` is True when anything was (or would be)
    written, created, removed or moved.
    """

    target: str
    before: StateT | None
    after: StateT | None
    changed: bool
    writes: tuple[FileWrite, ...] = ()
    commands: tuple[Command, ...] = ()
    created: bool = False
    removed: bool = False
    check_mode: bool = field(default=False, compare=False)

    def diff(self, view: Any = None) -> dict[str, Any]:
        """Ansible's ``diff``: ``before`` and ``after`` passed through ``view`` (identity by default)."""
        show = view if view is not None else (lambda state: state)
        return {"before": show(self.before), "after": show(self.after)}
