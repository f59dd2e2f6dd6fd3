"""The one parser for sizes and the one for rates: tc(8)'s spellings, Ansible's where they agree,
ambiguous spellings refused; the same results through every caller (cgroup, tc)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.firm.core.plugins.module_utils import cgroup, tc, units
from ansible_collections.firm.core.plugins.module_utils.errors import InvalidInputError


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("1514b", 1514),
        ("1514B", 1514),
        ("15k", 15 * 1024),
        ("15kb", 15 * 1024),
        ("15K", 15 * 1024),
        ("15KB", 15 * 1024),
        ("15KiB", 15 * 1024),
        ("15Ki", 15 * 1024),
        ("512M", 512 << 20),
        ("512mb", 512 << 20),
        ("512MiB", 512 << 20),
        ("1.5G", 3 << 29),
        ("1g", 1 << 30),
        ("2T", 2 << 40),
        ("32kbit", 4096),
        ("1mbit", 131072),
        ("1e3", 1000),
        ("0.5k", 512),
        (" 64k ", 65536),
    ],
)
def test_sizes_as_tc_reads_them(text: str | int, size: int) -> None:
    assert units.parse_size(text) == size
    if size > 0 and size < 1 << 32:
        assert tc.parse_size(text) == size
    assert cgroup.parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        (10_000_000, 10_000_000),
        ("10mbit", 10_000_000),
        ("10Mbit", 10_000_000),
        ("1gbit", 10**9),
        ("500kbit", 500_000),
        ("1kibit", 1024),
        ("1mibit", 1 << 20),
        ("125kbps", 1_000_000),
        ("125KBps", 1_000_000),
        ("10MBps", 80_000_000),
        ("1kibps", 8192),
        ("100bit", 100),
        ("100", 100),
        ("1bps", 8),
        ("1e3kbit", 1_000_000),
    ],
)
def test_rates_as_tc_reads_them(text: str | int, bps: int) -> None:
    assert units.parse_rate(text) == bps
    assert tc.parse_rate(text) == bps // 8 * 8


@pytest.mark.parametrize(
    ("text", "fix"), [("512Mb", "512MB"), ("4Gb", "4gbit"), ("16Kb", "16KiB"), ("1Tb", "1TB")]
)
def test_sizes_that_tc_and_ansible_read_differently_are_refused(text: str, fix: str) -> None:
    with pytest.raises(units.UnitError, match="ambiguous") as info:
        units.parse_size(text)
    assert fix in str(info.value)
    with pytest.raises(InvalidInputError, match="ambiguous"):
        cgroup.parse_size(text)
    with pytest.raises(InvalidInputError, match="ambiguous"):
        tc.parse_size(text)


@pytest.mark.parametrize("text", ["10Mbps", "1Gbps", "100Kbps"])
def test_rates_that_people_and_tc_read_differently_are_refused(text: str) -> None:
    with pytest.raises(units.UnitError, match="ambiguous") as info:
        units.parse_rate(text)
    assert "bit for bits per second" in str(info.value)
    with pytest.raises(InvalidInputError, match="ambiguous"):
        tc.parse_rate(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "k",
        "-5",
        "12 parsecs",
        "10 mbit",
        "1e999999999k",
        "1e40",
        "NaN",
        "inf",
        "0x10",
        "1,5k",
        "\uff11\uff12k",
        "5\x00k",
        True,
        float("nan"),
        float("inf"),
        None,
    ],
)
def test_nonsense_is_refused_naming_the_value(text: object) -> None:
    for parse in (units.parse_size, units.parse_rate):
        try:
            parse(text, "burst")  # type: ignore[arg-type]
        except units.UnitError as err:
            assert "burst" in str(err)
        else:
            assert text == "1e40"  # in range of nothing a kernel holds, but a number: callers bound it


def test_bounds_name_the_unit() -> None:
    with pytest.raises(units.UnitError, match="above the most accepted 100 bytes"):
        units.parse_size("1k", maximum=100)
    with pytest.raises(units.UnitError, match="below the least accepted 8 bit/s"):
        units.parse_rate("1bit", minimum=8)


def test_tc_output_sizes_are_bytes() -> None:
    # tc prints "15Kb" for 15 kilobytes (print_size); firm reads its own tool's output as tc meant it.
    assert tc._parse_text_size("15Kb") == 15 * 1024
    assert tc._parse_text_size("1600b/8") == 1600


@given(st.one_of(st.integers(min_value=0, max_value=1 << 70), st.text(max_size=12)))
def test_never_anything_but_a_number_or_a_unit_error(value: int | str) -> None:
    for parse in (units.parse_size, units.parse_rate):
        try:
            result = parse(value)
        except units.UnitError:
            continue
        assert isinstance(result, int) and result >= 0
