# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""Processes that firm starts and later stops, identified so that a reused PID is never signalled."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessRef:
    """A process by PID and start time (in clock ticks since boot, from /proc/PID/stat)."""

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        return cls(pid, _start_ticks(pid))

    def alive(self) -> bool:
        """True while this very process runs (not a later one with the same PID, not a zombie)."""
        try:
            return _start_ticks(self.pid) == self.start_ticks and _state(self.pid) != "Z"
        except (OSError, ValueError, IndexError):
            return False


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        text = handle.read()
    return text[text.rindex(")") + 2 :].split()  # the fields after "pid (comm) "


def _start_ticks(pid: int) -> int:
    return int(_stat_fields(pid)[19])


def _state(pid: int) -> str:
    return _stat_fields(pid)[0]


def kill_group(ref: ProcessRef, sig: int = signal.SIGKILL) -> None:
    """Signal a process and everything it forked (it leads its own process group)."""
    if ref.alive():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ref.pid, sig)


def stop_group(ref: ProcessRef, grace_s: float = 3.0) -> None:
    """SIGTERM the group, then SIGKILL it if it is still there after ``grace_s``."""
    kill_group(ref, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while ref.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    kill_group(ref, signal.SIGKILL)
