# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""One parser for sizes and one for rates, used by every module option, configuration file and command.

Both follow tc(8) (iproute2's ``get_size`` and ``get_rate64``) and agree with Ansible's
``human_to_bytes`` wherever the two agree; where they disagree, the spelling is refused as ambiguous
instead of being read one way silently.

Sizes (bytes): a bare number, ``b`` or ``B`` is bytes; ``k``, ``kb``, ``K``, ``KB``, ``KiB``, ``Ki``
(and ``m``, ``g``, ``t`` likewise) are powers of 1024 bytes, as both tc and Ansible read them;
``kbit``, ``mbit``, ``gbit``, ``tbit`` are 1024-multiples of *bits*, as tc reads them (``32kbit`` is
4096 bytes). ``Kb``, ``Mb``, ``Gb``, ``Tb`` are refused: tc reads ``512Mb`` as megabytes, Ansible and
most people as megabits.

Rates (bits per second): a bare number or ``bit`` is bit/s; ``kbit``, ``mbit``, ``gbit``, ``tbit`` are
SI multiples (1000), ``kibit``... IEC ones (1024); ``bps`` is bytes per second, and ``kbps``,
``mbps``, ``KBps``, ``MBps``... are SI multiples of bytes per second, ``kibps``... IEC ones, as tc reads
them. ``Kbps``, ``Mbps``, ``Gbps``, ``Tbps`` are refused: tc reads ``10Mbps`` as megabytes per second,
most people as megabits.

Numbers may have a fraction and an exponent (``1.5m``, ``1e3kbit``); a float (``2.5e+6`` or ``1514.0`` as
YAML or Jinja give them) is a number of base units, as the same digits in a string are; the result is a
whole number (rounded down). Errors are :class:`UnitError` (an :class:`InvalidInputError`) naming the value, what it
is for and the spellings that work.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal

from ansible_collections.firm.core.plugins.module_utils.errors import InvalidInputError

__all__ = ["RATE_UNITS", "SIZE_UNITS", "UnitError", "parse_quantity", "parse_rate", "parse_size"]


class UnitError(InvalidInputError):
    """A size or rate that cannot be read, is ambiguous or is out of range."""


_NUMBER = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?"
_WITH_UNIT = re.compile(rf"^{_NUMBER}([A-Za-z]*)$")

SIZE_UNITS: Mapping[str, int] = {
    "": 1,
    "b": 1,
    **{f"{p}{s}": 1024**n for n, p in enumerate("kmgt", 1) for s in ("", "b", "i", "ib")},
    **{f"{p}bit": 1024**n // 8 for n, p in enumerate("kmgt", 1)},
}
"""Size suffixes, compared case-insensitively (after the ambiguity check), to bytes."""

RATE_UNITS: Mapping[str, int] = {
    "": 1,
    "bit": 1,
    "bps": 8,
    **{f"{p}bit": 1000**n for n, p in enumerate("kmgt", 1)},
    **{f"{p}ibit": 1024**n for n, p in enumerate("kmgt", 1)},
    **{f"{p}bps": 8 * 1000**n for n, p in enumerate("kmgt", 1)},
    **{f"{p}ibps": 8 * 1024**n for n, p in enumerate("kmgt", 1)},
}
"""Rate suffixes, compared case-insensitively (after the ambiguity check), to bits per second."""

_MAX_EXPONENT = 30  # 1e30 of anything is out of range for every kernel knob; larger ones only cost memory
_PREFIX_NAMES = {"K": "kilo", "M": "mega", "G": "giga", "T": "tera"}
_AMBIGUOUS_SIZE = re.compile(r"^[KMGT]b$")
_AMBIGUOUS_RATE = re.compile(r"^[KMGT]bps$")


def parse_quantity(value: object, units: Mapping[str, int], what: str, example: str) -> int:
    """A whole number of base units from an integer (base units), a float (base units, as YAML and
    Jinja give ``2.5e+6`` or ``1514.0``) or a string of a number and one of ``units`` (compared
    case-insensitively), rounded down. The one reader of numbers with units: sizes, rates and tc's
    times. Raises :class:`UnitError` naming ``what``, with ``example`` in the fix."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UnitError(
            f"{what} {value!r} is neither a number nor a string", fix=f"give {what} like {example}"
        )
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnitError(f"{what} {value!r} is not a finite number", fix=f"give {what} like {example}")
        return int(Decimal(repr(value)))  # 2500000.0 is 2500000, as the string "2500000.0" is
    match = _WITH_UNIT.match(value.strip())
    if not match:
        raise UnitError(
            f"{what} {value!r} cannot be parsed: not a number with a unit", fix=f"give {what} like {example}"
        )
    unit = match.group(3)
    if unit.lower() not in units:
        known = ", ".join(u for u in units if u)
        raise UnitError(
            f"{what} {value!r} cannot be parsed: unknown unit {unit!r}",
            fix=f"give {what} like {example}; units: {known}",
        )
    exponent = int(match.group(2) or 0)
    if abs(exponent) > _MAX_EXPONENT:
        raise UnitError(f"{what} {value!r} is out of range", fix=f"give {what} like {example}")
    try:
        number = Decimal(match.group(1)) * (Decimal(10) ** exponent)
        return int(number * units[unit.lower()])
    except (ArithmeticError, ValueError) as exc:
        raise UnitError(f"{what} {value!r} is out of range", fix=f"give {what} like {example}") from exc


def parse_size(
    value: str | float, what: str = "size", *, minimum: int = 0, maximum: int | None = None
) -> int:
    """A size in bytes from an integer (bytes) or a string such as ``"512M"``, ``"15k"``, ``"32kbit"``.

    Raises :class:`UnitError` when it cannot be read, is ambiguous (``"512Mb"``), or lies outside
    ``[minimum, maximum]``.
    """
    if isinstance(value, str) and _AMBIGUOUS_SIZE.match(_suffix(value)):
        number = value.strip()[: -len(_suffix(value))].strip()
        name = _PREFIX_NAMES[_suffix(value)[0]]
        raise UnitError(
            f"{what} {value!r} is ambiguous: tc reads it as {number} {name}bytes, Ansible and most people "
            f"as {number} {name}bits",
            fix=f"write {number}{_suffix(value)[0]}B or {number}{_suffix(value)[0]}iB for bytes, "
            f"{number}{_suffix(value)[0].lower()}bit for bits",
        )
    size = parse_quantity(value, SIZE_UNITS, what, '4096, "512M", "1.5GiB" or "32kbit" (k = 1024)')
    _check_range(size, what, "bytes", minimum, maximum)
    return size


def parse_rate(
    value: str | float, what: str = "rate", *, minimum: int = 0, maximum: int | None = None
) -> int:
    """A rate in bits per second from an integer (bit/s) or a string such as ``"10mbit"``, ``"125kbps"``.

    Raises :class:`UnitError` when it cannot be read, is ambiguous (``"10Mbps"``), or lies outside
    ``[minimum, maximum]``.
    """
    if isinstance(value, str) and _AMBIGUOUS_RATE.match(_suffix(value)):
        number = value.strip()[: -len(_suffix(value))].strip()
        prefix = _suffix(value)[0]
        raise UnitError(
            f"{what} {value!r} is ambiguous: tc reads it as bytes per second, most people as bits per second",
            fix=f"write {number}{prefix.lower()}bit for bits per second or {number}{prefix}Bps for bytes per second",
        )
    rate = parse_quantity(value, RATE_UNITS, what, '"10mbit", "1gbit", "125kbps" or 10000000 (bit/s)')
    _check_range(rate, what, "bit/s", minimum, maximum)
    return rate


def _suffix(value: str) -> str:
    match = _WITH_UNIT.match(value.strip())
    return match.group(3) if match else ""


def _check_range(number: int, what: str, unit: str, minimum: int, maximum: int | None) -> None:
    if number < minimum:
        raise UnitError(
            f"{what} is {number} {unit}, below the least accepted {minimum} {unit}",
            fix=f"give {what} of at least {minimum} {unit}",
        )
    if maximum is not None and number > maximum:
        raise UnitError(
            f"{what} is {number} {unit}, above the most accepted {maximum} {unit}",
            fix=f"give {what} of at most {maximum} {unit}",
        )
