"""Text from inputs made safe to print: control characters and direction overrides escaped.

Names, reasons and messages firm prints come from traces, audit logs, query-API answers and file
names that anyone may have written. Printed raw, an escape sequence in a service name recolours or
clears a terminal or sets its title, a bell rings, a carriage return or a line feed forges a row or a
``warning:`` line, and a right-to-left override reverses what follows it. :func:`safe` writes each such
character as a Python-style escape (``\\x1b``, ``\\u202e``), so the text stays readable and can be
traced to its input; everything else is unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_UNSAFE_CLASS = (
    "\x00-\x1f\x7f-\x9f"  # C0 and C1 control characters, DEL (ESC, BEL, CR, LF, TAB ...)
    "\u061c\u200e\u200f"  # direction marks
    "\u2028\u2029"  # line and paragraph separators
    "\u202a-\u202e\u2066-\u2069"  # direction embeddings, overrides and isolates
)
_UNSAFE = re.compile(f"[{_UNSAFE_CLASS}]")
_UNSAFE_BEYOND_ASCII = re.compile(
    rb"\x7f|\xc2[\x80-\x9f]|\xd8\x9c|\xe2\x80[\x8e\x8f\xa8-\xae]|\xe2\x81[\xa6-\xa9]"
)
"""The UTF-8 bytes of each character of ``_UNSAFE`` from DEL on (JSON text escapes C0 itself; a
test keeps the two sets equal)."""
_LINE_BREAK_KEPT = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character (C0, DEL, C1), direction mark, override, embedding or
    isolate and line separator written as an escape (``"\\x1b[31m"`` for ESC ``[31m``).
    ``keep_newlines``: line feeds stay (a message of several lines that firm itself wrote)."""
    pattern = _LINE_BREAK_KEPT if keep_newlines else _UNSAFE
    return pattern.sub(_escape, text) if pattern.search(text) else text


def safe_json(text: bytes) -> bytes:
    """UTF-8 JSON ``text`` with every unsafe character of :func:`safe` that JSON allows raw (DEL, C1,
    direction marks, overrides, embeddings and isolates, line separators) written as a JSON escape
    (``\\u202e``): the document decodes to the same values, and printing it (``firm critical-path``
    to a terminal) neither reverses nor forges what follows. JSON's structure is ASCII, so such bytes
    are inside strings; UTF-8 never matches a character's bytes inside another's."""

    def escape(match: re.Match[bytes]) -> bytes:
        return f"\\u{ord(match.group().decode()):04x}".encode()

    return _UNSAFE_BEYOND_ASCII.sub(escape, text)


def safe_tree(value: Any) -> Any:
    """``value`` (decoded JSON: dicts, lists, strings, numbers) with every string, keys included,
    made :func:`safe`; other values unchanged."""
    if isinstance(value, str):
        return safe(value)
    if isinstance(value, Mapping):
        return {safe_tree(k): safe_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [safe_tree(v) for v in value]
    return value
