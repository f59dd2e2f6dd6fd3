"""Node inputs from the field, fifth round: numbers as YAML and Jinja hand them to a module (floats such
as ``2.5e+6`` or ``1514.0`` where the same digits in a string were taken), and the anomaly module's own
bounds (``max_duration``, ``disk_iops_at_full``, ``history_since``) checked before anything starts."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.firm.core.plugins.module_utils import tc, units


@pytest.mark.parametrize(
    ("parse", "as_float", "as_text"),
    [
        (units.parse_rate, 2.5e6, "2500000"),
        (units.parse_rate, 1e10, "10gbit"),
        (units.parse_size, 1514.0, "1514"),
        (units.parse_size, 1.5, "1.5"),  # rounded down, as the string is
        (tc.parse_rate, 8e6, "8mbit"),
        (tc.parse_size, 65536.0, "64k"),
        (tc.parse_time, 50000.0, "50ms"),
    ],
)
def test_a_float_is_read_as_the_same_digits_in_a_string(parse: Any, as_float: float, as_text: str) -> None:
    """``rate: 2.5e+6`` in YAML, or ``rate: "{{ link * 0.8 }}"`` with native Jinja types, is a float:
    it was refused as 'neither a number nor a string' while "2500000.0" was taken."""
    assert parse(as_float) == parse(as_text) == parse(repr(as_float))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("parse", [units.parse_rate, units.parse_size])
def test_a_float_that_is_no_number_is_refused_naming_the_field(parse: Any, value: float) -> None:
    with pytest.raises(units.UnitError, match=r"burst .* is not a finite number") as caught:
        parse(value, "burst")
    assert caught.value.fix


def test_a_tc_request_with_floats_is_the_request_with_strings() -> None:
    floats = tc.parse_request("htb", 2e7, ceil=3e7, burst=3000.0)
    assert floats == tc.parse_request("htb", "20mbit", ceil="30mbit", burst="3000")


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: tc.parse_rate(-8e6), "below the least accepted 8 bit/s"),
        (lambda: tc.parse_rate(-8_000_000), "below the least accepted 8 bit/s"),
        (lambda: tc.parse_time("2min"), "unknown unit 'min'"),
        (lambda: tc.parse_time(float("nan")), "latency nan is not a finite number"),
    ],
)
def test_tc_values_name_the_bound_or_the_unit(call: Any, words: str) -> None:
    with pytest.raises(tc.TcInputError, match=words):
        call()
