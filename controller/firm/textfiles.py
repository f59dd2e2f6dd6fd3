"""Small text inputs read whole (configuration files): only regular files, and only up to a bound.

A device (``/dev/zero`` never ends), a pipe with no writer (blocks for ever) or a socket is refused
before a byte is read, and a file larger than :data:`MAX_TEXT_FILE_BYTES` is refused after reading at
most one byte more than the bound, so that no input makes a command read without end.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_TEXT_FILE_BYTES = 1 << 20
"""The largest configuration file accepted, bytes: a larger one is a data file given by mistake (a 6 MB
trace file takes PyYAML minutes to refuse)."""


class TextFileError(ValueError):
    """What is wrong with a text input, in words that follow its path (``"... is a device"``)."""


def kind_of(mode: int) -> str:
    """What a file of ``mode`` (``os.stat``'s ``st_mode``) is, in words: ``a directory``, ``a device``,
    ``a pipe``, ``a socket``, ``a regular file``."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file"


def read_small_file(path: str | Path, limit: int = MAX_TEXT_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Raises:
        TextFileError: ``path`` is not a regular file (its kind named), or holds more than ``limit``
            bytes.
        OSError: it cannot be opened or read (missing, no permission).
    """
    with open(path, "rb", opener=_nonblocking) as handle:
        kind = kind_of(os.fstat(handle.fileno()).st_mode)
        if kind != "a regular file":
            raise TextFileError(f"is {kind}, not a file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise TextFileError(f"holds more than {limit} bytes")
    return data


def _nonblocking(path: str, flags: int) -> int:
    """Open without waiting for a pipe's writer (a FIFO is refused once open, never read)."""
    return os.open(path, flags | os.O_NONBLOCK)
