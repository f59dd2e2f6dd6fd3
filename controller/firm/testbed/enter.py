"""``python -m firm.testbed.enter CGROUP -- COMMAND...``: join a testbed cgroup, then become COMMAND.

A process started from a parent that runs threads (the controller, a load generator) cannot safely
run Python between fork and exec (``preexec_fn``). It starts this small process instead, which moves
itself into ``CGROUP`` (a path under every mounted hierarchy, e.g. ``firm-testbed/text-1``) and then
executes COMMAND in its place: same PID, so COMMAND runs not one instruction outside the group.
"""

from __future__ import annotations

import os
import sys

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError


def command_line(group_path: str, command: list[str]) -> list[str]:
    """The argument list that runs ``command`` inside the group at ``group_path``."""
    return [sys.executable, "-m", "firm.testbed.enter", group_path, "--", *command]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m firm.testbed.enter CGROUP -- COMMAND...", file=sys.stderr)
        return 2
    try:
        cgroup.join(cgroup.group_at(cgroup.detect_layout(), args[0]))
    except (FirmError, OSError) as exc:
        print(f"cannot join cgroup {args[0]}: {exc}", file=sys.stderr)
        return 1
    try:
        os.execvp(args[2], args[2:])
    except OSError as exc:
        print(f"cannot run {args[2]}: {exc}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main())
