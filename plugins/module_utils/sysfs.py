# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""Reading and writing kernel control files, with path confinement and rollback.

cgroupfs and resctrl share these rules: values are text, a write may be refused with an errno that
means something (EINVAL, EBUSY, ENOSPC), and a change that spans several files must be undone if a
later file refuses.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from ansible_collections.firm.core.plugins.module_utils.errors import (
    InvalidInputError,
    KernelWriteError,
    NotFoundError,
)
from ansible_collections.firm.core.plugins.module_utils.kernel import KERNEL, Kernel


def confined_path(root: str, relative: str, what: str = "path") -> str:
    """Join ``relative`` to ``root`` and refuse anything that would leave ``root``.

    Rejects absolute paths, ``..`` components and symlinks that resolve outside the root, so a
    caller can never write a control file of another hierarchy.
    """
    if "\x00" in relative:
        raise InvalidInputError(
            f"{what} {relative!r} contains a NUL byte", fix=f"give a {what} without NUL bytes"
        )
    control = next((c for c in relative if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if control is not None:
        raise InvalidInputError(
            f"{what} {relative!r} contains the control character {control!r}",
            fix=f"give a {what} without newlines or other control characters (a YAML block scalar "
            "such as `|` ends with a newline: use `>-` or a quoted string)",
        )
    if relative.startswith("/"):
        raise InvalidInputError(
            f"{what} {relative!r} is absolute",
            fix=f"give {what} relative to {root}, e.g. {relative.lstrip('/')!r}",
        )
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidInputError(
            f"{what} {relative!r} contains '..'", fix=f"give a {what} below {root} without '..'"
        )
    joined = os.path.join(root, *parts) if parts else root
    real_root = os.path.realpath(root)
    real = os.path.realpath(joined)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise InvalidInputError(
            f"{what} {relative!r} resolves to {real}, outside {real_root} (a symlink leads out)",
            fix=f"give a {what} whose every component is a real directory below {root}",
        )
    return joined


def read_text(path: str) -> str:
    """The stripped content of a control file."""
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except FileNotFoundError as exc:
        raise NotFoundError(
            f"{path} does not exist", fix="check that the group and controller exist"
        ) from exc
    except OSError as exc:
        raise KernelWriteError(f"cannot read {path}: {exc.strerror}", fix="run as root") from exc


def write_text(path: str, value: str, kernel: Kernel = KERNEL) -> None:
    """Write ``value`` in one ``write(2)`` through ``kernel``, as the kernel expects for control files."""
    try:
        kernel.write(path, value)
    except FileNotFoundError as exc:
        raise NotFoundError(
            f"{path} does not exist", fix="check that the group and controller exist"
        ) from exc
    except OSError as exc:
        raise KernelWriteError(
            f"the kernel refused {value.strip()!r} in {path}: {exc.strerror} ({errno.errorcode.get(exc.errno or 0, exc.errno)})",
            fix="check the value against the controller's documented range",
            errno=exc.errno,
        ) from exc


class Rollback:
    """Undo log for a change that writes several control files.

    ``record`` remembers how to restore a file before it is written; ``undo`` replays the log
    newest first. Used as a context manager, it undoes everything when the block raises.
    """

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def record(self, action: Callable[[], None]) -> None:
        self._undo.append(action)

    def write(self, path: str, value: str, previous: str | None = None) -> None:
        """Write ``value`` to ``path`` after remembering its old content (``previous`` if known)."""
        old = read_text(path) if previous is None else previous
        write_text(path, value)
        self._undo.append(lambda: write_text(path, old))

    def undo(self) -> list[str]:
        """Replay the undo log; returns the errors of steps that could not be undone."""
        failures = []
        while self._undo:
            action = self._undo.pop()
            try:
                action()
            except Exception as exc:
                failures.append(str(exc))
        return failures

    def __enter__(self) -> Rollback:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc is not None:
            failures = self.undo()
            if failures and isinstance(exc, KernelWriteError):
                exc.details["rollback_failures"] = failures
        else:
            self._undo.clear()
