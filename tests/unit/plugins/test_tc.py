"""firm's tc library and module: parsing, validation and planning against real tc output.

Every fixture below marked "captured" was printed by iproute2 6.1 (tc utility, iproute2-6.1.0) on
Debian 12 for a veth pair between two network namespaces, kernel with high-resolution timers
(/proc/net/psched ``000003e8 00000040 000f4240 3b9aca00``), after the command quoted beside it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.firm.core.plugins.module_utils import tc
from ansible_collections.firm.core.plugins.module_utils.kernel import Kernel
from ansible_collections.firm.core.plugins.modules import tc as tc_module
from tests.helpers.modules import run_module

PSCHED_HIGHRES = "000003e8 00000040 000f4240 3b9aca00\n"  # captured: this machine
PSCHED_HZ100 = "000003e8 00000040 000f4240 00000064\n"  # a kernel without high-resolution timers, HZ=100
PSCHED_NS_CLOCK = "000003e8 00000040 3b9aca00 3b9aca00\n"  # third field 10^9: tc's compatibility case

# captured: ip -n A -j link show dev cap0
LINK_VETH = (
    '[{"ifindex":2,"link_index":2,"ifname":"cap0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],'
    '"mtu":1500,"qdisc":"noqueue","operstate":"UP","linkmode":"DEFAULT","group":"default",'
    '"txqlen":1000,"link_type":"ether","address":"8a:dd:9a:77:1b:02","broadcast":"ff:ff:ff:ff:ff:ff",'
    '"link_netnsid":0}]\n'
)
# captured: ip -n A -j link show dev lo
LINK_LO = (
    '[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue",'
    '"operstate":"UNKNOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"loopback",'
    '"address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00"}]\n'
)
# captured: ip -n A -j link show dev nope (rc 1)
LINK_MISSING_STDERR = 'Device "nope" does not exist.\n'

# captured: tc -n A -j qdisc show dev cap0, fresh veth
QDISC_NOQUEUE = '[{"kind":"noqueue","handle":"0:","root":true,"refcnt":2,"options":{}}]\n'
# captured: tc -j qdisc show dev eth0
QDISC_PFIFO_FAST = (
    '[{"kind":"pfifo_fast","handle":"0:","root":true,"refcnt":2,"options":{"bands":3,'
    '"priomap":[1,2,2,2,1,2,0,0,1,1,1,1,1,1,1,1],"multiqueue":false}}]\n'
)
# captured: tc -j qdisc show dev ifb0 (a down ifb has no qdisc)
QDISC_NONE = "[]\n"
# captured: after tc qdisc replace dev cap0 root tbf rate 20mbit burst 1514 latency 50ms
QDISC_TBF_20MBIT = (
    '[{"kind":"tbf","handle":"8002:","root":true,"refcnt":3,'
    '"options":{"rate":2500000,"burst":1512,"lat":50000}}]\n'
)
# captured: after tc qdisc replace dev cap0 root tbf rate 20000000bit burst 25000 latency 50000us
# (firm's default burst at 20 Mbit/s: 10 ms of traffic)
QDISC_TBF_20MBIT_DEFAULT_BURST = (
    '[{"kind":"tbf","handle":"84c3:","root":true,"refcnt":3,'
    '"options":{"rate":2500000,"burst":25000,"lat":50000}}]\n'
)
# captured: after ... tbf rate 1000000000bit burst 1514 latency 50000us
QDISC_TBF_1GBIT = (
    '[{"kind":"tbf","handle":"8003:","root":true,"refcnt":3,'
    '"options":{"rate":125000000,"burst":1500,"lat":50000}}]\n'
)
# captured: after ... tbf rate 500000bit burst 1514 latency 50000us
QDISC_TBF_500KBIT = (
    '[{"kind":"tbf","handle":"8003:","root":true,"refcnt":3,'
    '"options":{"rate":62500,"burst":1514,"lat":50000}}]\n'
)
# captured: after ... tbf rate 1000000bit burst 2048 latency 50000us
QDISC_TBF_1MBIT = (
    '[{"kind":"tbf","handle":"8003:","root":true,"refcnt":3,'
    '"options":{"rate":125000,"burst":2048,"lat":50000}}]\n'
)
# captured: after ... tbf rate 12345678bit burst 3000 latency 20000us
QDISC_TBF_ODD = (
    '[{"kind":"tbf","handle":"8003:","root":true,"refcnt":3,'
    '"options":{"rate":1543209,"burst":2999,"lat":19999}}]\n'
)
# captured: after tc qdisc replace dev cap0 root handle 1: htb default 10
QDISC_HTB_1_DEFAULT_10 = (
    '[{"kind":"htb","handle":"1:","root":true,"refcnt":3,"options":{"r2q":10,'
    '"default":"0x10","direct_packets_stat":0,"direct_qlen":1000}}]\n'
)

# captured: tc -n A -j class show dev cap0 after
#   tc class replace dev cap0 parent 1: classid 1:10 htb rate 20mbit ceil 30mbit burst 1514 cburst 1514
# (iproute2 6.1 prints text here although -j was given)
CLASS_HTB_20_30 = "class htb 1:10 root prio 0 rate 20Mbit ceil 30Mbit burst 1510b cburst 1507b \n"
# captured: tc -n A -j -s class show dev cap0, same class
CLASS_HTB_20_30_STATS = (
    "class htb 1:10 root prio 0 rate 20Mbit ceil 30Mbit burst 1510b cburst 1507b \n"
    " Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0) \n"
    " backlog 0b 0p requeues 0\n"
    " lended: 0 borrowed: 0 giants: 0\n"
    " tokens: 9453 ctokens: 6296\n\n"
)
# captured: tc -n A -d class show dev cap0, same class
CLASS_HTB_20_30_DETAILS = (
    "class htb 1:10 root prio 0 quantum 200000 rate 20Mbit ceil 30Mbit linklayer ethernet "
    "burst 1510b/1 mpu 0b cburst 1507b/1 mpu 0b level 0 \n"
)
# captured: tc -n A -j class show dev cap0 after
#   ... classid 1:10 htb rate 12345678bit ceil 100mbit burst 2040 cburst 20000
#   ... classid 1:20 htb rate 1gbit
CLASS_HTB_TWO = (
    "class htb 1:10 root prio 0 rate 12345Kbit ceil 100Mbit burst 2Kb cburst 20000b \n"
    "class htb 1:20 root prio 0 rate 1Gbit ceil 1Gbit burst 1375b cburst 1375b \n"
)
# Not captured (iproute2 6.1 cannot print it): the JSON newer iproute2 prints for the class above,
# written from iproute2's htb_print_opt (rates in bytes per second, exact sizes).
CLASS_HTB_20_30_JSON = (
    '[{"class":"htb","handle":"1:10","root":true,"prio":0,"rate":2500000,"ceil":3750000,'
    '"burst":1510,"cburst":1507}]\n'
)

REAL = tc.Psched.parse(PSCHED_HIGHRES)
VETH = tc.parse_link(LINK_VETH)


# --------------------------------------------------------------------------------------------------
# A fake tc/ip: answers reads with captured output, records writes, changes state as scripted


class FakeTc(Kernel):
    """The kernel as tc and ip show it: answers reads with captured output, changes state as scripted."""

    def __init__(
        self,
        qdisc: str = QDISC_NOQUEUE,
        classes: str = "",
        link: str | None = LINK_VETH,
        writes: dict[tuple[str, ...], tuple[str, str] | tc.TcCommandError] | None = None,
    ) -> None:
        super().__init__()
        self.qdisc, self.classes, self.link = qdisc, classes, link
        self.scripted = writes or {}
        self.calls: list[tuple[str, ...]] = []

    @property
    def writes(self) -> list[tuple[str, ...]]:
        return [c for c in self.calls if "show" not in c]

    def run(self, argv: Sequence[str]) -> str:
        command = tuple(argv)
        self.calls.append(command)
        words = command[3:] if command[1:2] == ("-n",) else command[1:]
        if command[0] == "ip":
            if self.link is None:
                raise tc.TcCommandError(
                    "ip failed", command=list(command), rc=1, stdout="", stderr=LINK_MISSING_STDERR
                )
            return self.link
        if words[:3] == ("-j", "qdisc", "show"):
            return self.qdisc
        if words[:3] == ("-j", "class", "show"):
            return self.classes
        outcome = self.scripted.get(command)
        if isinstance(outcome, tc.TcCommandError):
            raise outcome
        if outcome is not None:
            self.qdisc, self.classes = outcome
        return ""


def tbf(rate: str, burst: int, latency_us: int = 50_000) -> tc.Shaping:
    return tc.Shaping("tbf", tc.parse_rate(rate), None, burst, latency_us, None)


def htb(rate: str, ceil: str, burst: int, cburst: int, class_id: str = "1:10") -> tc.Shaping:
    return tc.Shaping("htb", tc.parse_rate(rate), tc.parse_rate(ceil), burst, None, class_id, cburst)


# --------------------------------------------------------------------------------------------------
# Units


@pytest.mark.parametrize(
    ("value", "bps"),
    [
        ("10mbit", 10_000_000),
        ("1gbit", 1_000_000_000),
        ("500kbit", 500_000),
        ("125kbps", 1_000_000),
        ("20Mbit", 20_000_000),
        ("12345Kbit", 12_345_000),
        ("1Gbit", 1_000_000_000),  # as tc prints them
        ("1kibit", 1024),
        ("1mibit", 1_048_576),
        ("1.5mbit", 1_500_000),
        ("2.4kbit", 2400),
        ("2.3kbit", 2296),
        ("1e6bit", 1_000_000),
        ("10MBPS", 80_000_000),
        (" 64kbit ", 64_000),
        ("1000000", 1_000_000),
        (1_000_000, 1_000_000),
        ("1000", 1000),
        (8, 8),
        ("1001bit", 1000),  # rounded down to whole bytes per second
    ],
)
def test_rates_are_read_as_tc_reads_them(value: str | int, bps: int) -> None:
    assert tc.parse_rate(value) == bps


@pytest.mark.parametrize(
    "value",
    [
        0,
        "0",
        -5,
        "-1mbit",
        "7bit",
        "fast",
        "10 mbit",
        "10mbits",
        "",
        "mbit",
        "1e99999",
        True,
        1.5,
        None,
        "nan",
    ],
)
def test_unparsable_or_non_positive_rates_are_refused(value: Any) -> None:
    with pytest.raises(tc.TcInputError) as err:
        tc.parse_rate(value)
    assert "rate" in str(err.value)
    assert err.value.fix


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1514, 1514),
        ("1514", 1514),
        ("1514b", 1514),
        ("2KB", 2048),
        ("15k", 15360),
        ("1mb", 1_048_576),
        ("32kbit", 4096),
        ("1510b/1", None),
        ("2Kb", None),  # tc reads "2Kb" as bytes, Ansible as bits: refused
    ],
)
def test_sizes_use_tc_binary_units(value: str | int, size: int | None) -> None:
    if size is None:
        with pytest.raises(tc.TcInputError):
            tc.parse_size(value)
    else:
        assert tc.parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "usecs"),
    [
        ("50ms", 50_000),
        ("200us", 200),
        ("1s", 1_000_000),
        ("0.5ms", 500),
        (50_000, 50_000),
        ("20000", 20_000),
    ],
)
def test_times_are_microseconds(value: str | int, usecs: int) -> None:
    assert tc.parse_time(value) == usecs


@pytest.mark.parametrize("value", [0, "0ms", "soon", "5min", -1])
def test_bad_latencies_are_refused(value: Any) -> None:
    with pytest.raises(tc.TcInputError, match="latency"):
        tc.parse_time(value)


@pytest.mark.parametrize(("value", "parsed"), [("1:10", (1, 16)), ("a:ff", (10, 255)), ("01:0010", (1, 16))])
def test_class_ids_are_hexadecimal(value: str, parsed: tuple[int, int]) -> None:
    assert tc.parse_class_id(value) == parsed


@pytest.mark.parametrize("value", ["1:0", "0:10", "ffff:1", "1", "1:10000", "x:1", "1:10:2", ""])
def test_bad_class_ids_are_refused(value: str) -> None:
    with pytest.raises(tc.TcInputError, match="class_id"):
        tc.parse_class_id(value)


@pytest.mark.parametrize("name", ["", "a/b", "eth0:1", "has space", ".", "sixteen-chars-xx"])
def test_invalid_interface_names_are_refused(name: str) -> None:
    with pytest.raises(tc.TcInputError, match="interface"):
        tc.check_interface_name(name)


def test_a_missing_namespace_is_reported_with_how_to_create_it(tmp_path: Path) -> None:
    (tmp_path / "present").touch()
    assert tc.check_namespace("present", str(tmp_path)) == "present"
    assert tc.check_namespace(None, str(tmp_path)) is None
    with pytest.raises(tc.TcNotFoundError) as err:
        tc.check_namespace("absent", str(tmp_path))
    assert "ip netns add absent" in err.value.fix
    with pytest.raises(tc.TcInputError):
        tc.check_namespace("../etc", str(tmp_path))


# --------------------------------------------------------------------------------------------------
# HZ and the burst rule


def test_hz_is_read_as_tc_get_hz_reads_it() -> None:
    assert REAL.hz == 1_000_000_000
    assert REAL.tick_in_usec == 15.625
    assert tc.Psched.parse(PSCHED_HZ100).hz == 100
    compat = tc.Psched.parse(PSCHED_NS_CLOCK)
    assert compat.hz == tc.TC_DEFAULT_HZ
    assert compat.tick_in_usec == 1000.0


@pytest.mark.parametrize("text", ["", "garbage", "000003e8 00000040", "000003e8 00000000 000f4240 3b9aca00"])
def test_a_broken_psched_is_refused(text: str) -> None:
    with pytest.raises(tc.TcInputError):
        tc.Psched.parse(text)


@pytest.mark.parametrize(
    ("psched", "rate", "link", "minimum"),
    [
        (
            PSCHED_HIGHRES,
            "20mbit",
            LINK_VETH,
            1514,
        ),  # high HZ: rate/HZ is a fraction of a byte, the frame decides
        (PSCHED_HIGHRES, "10gbit", LINK_VETH, 1514),
        (PSCHED_HZ100, "20mbit", LINK_VETH, 25_000),  # HZ=100: 2.5 MB/s / 100
        (PSCHED_HZ100, "1gbit", LINK_VETH, 1_250_000),
        (PSCHED_HZ100, "1mbit", LINK_VETH, 1514),
        (PSCHED_HIGHRES, "1mbit", LINK_LO, 65_550),
    ],
)
def test_minimum_burst_is_one_frame_or_rate_over_hz(psched: str, rate: str, link: str, minimum: int) -> None:
    hz = tc.Psched.parse(psched).hz
    assert tc.min_burst(tc.parse_rate(rate), tc.parse_link(link), hz) == minimum


@pytest.mark.parametrize(
    ("kind", "rate", "psched", "burst"),
    [
        ("tbf", "20mbit", PSCHED_HIGHRES, 25_000),  # 10 ms at 2.5 MB/s
        ("htb", "1gbit", PSCHED_HZ100, 1_250_000),  # 10 ms = rate/HZ at HZ=100
        ("tbf", "1mbit", PSCHED_HIGHRES, 1514),  # 10 ms is 1250 bytes: one frame is the least
        ("tbf", "1kbit", PSCHED_HIGHRES, 1514),
        ("htb", "10gbit", PSCHED_HIGHRES, 12_500_000),
    ],
)
def test_the_default_burst_holds_10_ms_at_the_rate_and_never_less_than_the_minimum(
    kind: str, rate: str, psched: str, burst: int
) -> None:
    assert tc.resolve(tc.parse_request(kind, rate), VETH, tc.Psched.parse(psched)).burst_bytes == burst


def test_a_burst_below_the_minimum_is_refused() -> None:
    hz100 = tc.Psched.parse(PSCHED_HZ100)
    with pytest.raises(tc.TcInputError) as err:
        tc.resolve(tc.parse_request("tbf", "20mbit", burst=1500), VETH, REAL)
    assert "minimum of 1514 bytes" in str(err.value)
    assert "at least 1514" in err.value.fix
    with pytest.raises(tc.TcInputError, match="1250000"):
        tc.resolve(tc.parse_request("tbf", "1gbit", burst="1mb"), VETH, hz100)


def test_htb_cburst_covers_the_ceil() -> None:
    hz100 = tc.Psched.parse(PSCHED_HZ100)
    shaping = tc.resolve(tc.parse_request("htb", "20mbit", ceil="1gbit"), VETH, hz100)
    assert (shaping.burst_bytes, shaping.cburst_bytes, shaping.ceil_bps) == (25_000, 1_250_000, 1_000_000_000)
    assert shaping.class_id == "1:10"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "htb", "rate": "20mbit", "ceil": "10mbit"}, "below rate"),
        ({"kind": "tbf", "rate": "20mbit", "ceil": "30mbit"}, "ceil applies to kind=htb"),
        ({"kind": "tbf", "rate": "20mbit", "class_id": "1:10"}, "class_id applies to kind=htb"),
        ({"kind": "htb", "rate": "20mbit", "latency": "50ms"}, "latency applies to kind=tbf"),
        ({"kind": "netem", "rate": "20mbit"}, "not supported"),
        ({"kind": "tbf", "rate": 0}, "at least 8 bit/s"),
        ({"kind": "tbf", "rate": "lots"}, "cannot be parsed"),
        ({"kind": "tbf", "rate": "20mbit", "burst": 0}, "must be positive"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(kwargs: dict[str, Any], message: str) -> None:
    kind, rate = kwargs.pop("kind"), kwargs.pop("rate")
    with pytest.raises(tc.TcInputError, match=message):
        tc.parse_request(kind, rate, **kwargs)


def test_a_burst_too_long_for_tc_32_bit_ticks_is_refused() -> None:
    with pytest.raises(tc.TcInputError, match="32-bit"):
        tc.resolve(tc.parse_request("tbf", "8bit", burst="1mb"), VETH, REAL)


# --------------------------------------------------------------------------------------------------
# Reading tc's output


@pytest.mark.parametrize(
    ("text", "kind", "handle", "default"),
    [
        (QDISC_NOQUEUE, "noqueue", "0:", True),
        (QDISC_PFIFO_FAST, "pfifo_fast", "0:", True),
        (QDISC_TBF_20MBIT, "tbf", "8002:", False),
        (QDISC_HTB_1_DEFAULT_10, "htb", "1:", False),
    ],
)
def test_the_root_qdisc_is_read_from_tc_json(text: str, kind: str, handle: str, default: bool) -> None:
    root = tc.parse_qdiscs(text)
    assert root is not None
    assert (root.kind, root.handle, root.is_kernel_default) == (kind, handle, default)


def test_an_interface_without_qdisc_has_no_root() -> None:
    assert tc.parse_qdiscs(QDISC_NONE) is None
    assert tc.shaping_of(tc.TcState(None)) is None


def test_links_give_mtu_and_link_layer_overhead() -> None:
    assert (VETH.name, VETH.mtu, VETH.link_type, VETH.overhead) == ("cap0", 1500, "ether", 14)
    assert tc.parse_link(LINK_LO).overhead == 14
    assert tc.Link("wg0", 1420, "none").overhead == 0


@pytest.mark.parametrize(
    "text", [CLASS_HTB_20_30, CLASS_HTB_20_30_STATS, CLASS_HTB_20_30_DETAILS, CLASS_HTB_20_30_JSON]
)
def test_htb_classes_are_read_from_text_and_json(text: str) -> None:
    (found,) = tc.parse_classes(text)
    assert found.class_id == "1:10"
    assert found.parent is None
    assert (found.rate_bps, found.ceil_bps, found.burst_bytes, found.cburst_bytes) == (
        20_000_000,
        30_000_000,
        1510,
        1507,
    )
    assert found.exact is text.startswith("[")


def test_rounded_text_values_are_read_as_shown() -> None:
    first, second = tc.parse_classes(CLASS_HTB_TWO)
    assert (first.rate_bps, first.ceil_bps, first.burst_bytes, first.cburst_bytes) == (
        12_345_000,
        100_000_000,
        2048,
        20_000,
    )
    assert (second.class_id, second.rate_bps, second.burst_bytes) == ("1:20", 1_000_000_000, 1375)


def test_a_class_under_another_class_keeps_its_parent() -> None:
    (found,) = tc.parse_classes(
        "class htb 1:10 parent 1:1 prio 0 rate 20Mbit ceil 30Mbit burst 1510b cburst 1507b \n"
    )
    assert found.parent == "1:1"


@pytest.mark.parametrize(
    ("qdisc", "classes", "expected"),
    [
        (QDISC_NOQUEUE, "", None),
        (QDISC_PFIFO_FAST, "", None),
        (QDISC_TBF_20MBIT, "", tc.Shaping("tbf", 20_000_000, None, 1512, 50_000, None)),
        (
            QDISC_HTB_1_DEFAULT_10,
            CLASS_HTB_20_30,
            tc.Shaping("htb", 20_000_000, 30_000_000, 1510, None, "1:10", 1507),
        ),
        (QDISC_HTB_1_DEFAULT_10, "", None),  # default class missing: traffic is not shaped
        (QDISC_HTB_1_DEFAULT_10, CLASS_HTB_TWO.splitlines()[1], None),  # only 1:20, default is 1:10
    ],
)
def test_current_shaping_from_captured_state(
    qdisc: str, classes: str, expected: tc.Shaping | None, tmp_path: Path
) -> None:
    (tmp_path / "ns1").touch()
    fake = FakeTc(qdisc, classes)
    assert tc.read_shaping("cap0", "ns1", netns_dir=str(tmp_path), kernel=fake) == expected
    assert all(call[:3] == ("tc", "-n", "ns1") for call in fake.calls)
    assert fake.writes == []


def test_a_missing_interface_is_not_found_with_the_command_output() -> None:
    with pytest.raises(tc.TcNotFoundError) as err:
        tc.read_link("nope", "ns1", kernel=FakeTc(link=None))
    assert "interface 'nope' does not exist in network namespace 'ns1'" in str(err.value)
    assert err.value.details["rc"] == 1
    assert err.value.details["stderr"] == LINK_MISSING_STDERR
    assert "ip -n ns1 link" in err.value.fix


# --------------------------------------------------------------------------------------------------
# What tc will report: tc's and the kernel's rounding, checked against captured output


@pytest.mark.parametrize(
    ("wanted", "qdisc"),
    [
        (tbf("20mbit", 1514), QDISC_TBF_20MBIT),
        (tbf("1gbit", 1514), QDISC_TBF_1GBIT),
        (tbf("500kbit", 1514), QDISC_TBF_500KBIT),
        (tbf("1mbit", 2048), QDISC_TBF_1MBIT),
        (tbf("12345678bit", 3000, 20_000), QDISC_TBF_ODD),
    ],
)
def test_tbf_report_matches_what_tc_printed(wanted: tc.Shaping, qdisc: str) -> None:
    reported = tc.shaping_of(tc.TcState(tc.parse_qdiscs(qdisc)))
    assert tc.expected_report(wanted, REAL) == reported
    assert tc.state_matches(tc.TcState(tc.parse_qdiscs(qdisc)), wanted, REAL)


def test_htb_report_matches_what_tc_printed() -> None:
    state = tc.TcState(tc.parse_qdiscs(QDISC_HTB_1_DEFAULT_10), tc.parse_classes(CLASS_HTB_20_30))
    assert tc.state_matches(state, htb("20mbit", "30mbit", 1514, 1514), REAL)
    assert not tc.state_matches(state, htb("20mbit", "30mbit", 1514, 1700), REAL)
    assert not tc.state_matches(state, htb("20mbit", "40mbit", 1514, 1514), REAL)
    rounded = tc.TcState(tc.parse_qdiscs(QDISC_HTB_1_DEFAULT_10), tc.parse_classes(CLASS_HTB_TWO))
    assert tc.state_matches(rounded, htb("12345678bit", "100mbit", 2040, 20_000), REAL)
    assert tc.expected_report(htb("1gbit", "1gbit", 1600, 1600), REAL).burst_bytes == 1375


# captured: tc class replace dev IF parent 1: classid 1:10 htb rate R ceil R burst B cburst B, then
# tc class show dev IF; at high rates a small burst lasts under a microsecond and tc shows "0b".
CLASS_HTB_HIGH_RATES = [
    ("999999999bit", 1514, "rate 999999Kbit ceil 999999Kbit burst 1374b cburst 1374b"),
    ("1gbit", 1514, "rate 1Gbit ceil 1Gbit burst 1375b cburst 1375b"),
    ("4gbit", 1514, "rate 4Gbit ceil 4Gbit burst 1000b cburst 1000b"),
    ("6gbit", 1514, "rate 6Gbit ceil 6Gbit burst 750b cburst 750b"),
    ("8gbit", 1514, "rate 8Gbit ceil 8Gbit burst 0b cburst 0b"),
    ("10gbit", 1514, "rate 10Gbit ceil 10Gbit burst 0b cburst 0b"),
    ("10gbit", 2000, "rate 10Gbit ceil 10Gbit burst 0b cburst 0b"),
    ("10gbit", 3000, "rate 10Gbit ceil 10Gbit burst 1250b cburst 1250b"),
    ("10gbit", 64000, "rate 10Gbit ceil 10Gbit burst 62500b cburst 62500b"),
    ("40gbit", 1514, "rate 40Gbit ceil 40Gbit burst 0b cburst 0b"),
    ("40gbit", 100000, "rate 40Gbit ceil 40Gbit burst 95000b cburst 95000b"),
]


@pytest.mark.parametrize(("rate", "burst", "shown"), CLASS_HTB_HIGH_RATES)
def test_htb_at_high_rates_matches_what_tc_printed_even_a_zero_burst(
    rate: str, burst: int, shown: str
) -> None:
    """tc's "burst 0b" is read as 0 bytes (it was refused, so the interface could no longer be read,
    changed or cleaned up), and the expectation comes out the same: a second run changes nothing."""
    text = f"class htb 1:10 root prio 0 {shown} \n"
    state = tc.TcState(tc.parse_qdiscs(QDISC_HTB_1_DEFAULT_10), tc.parse_classes(text))
    wanted = htb(rate, rate, burst, burst)
    found = state.find_class("1:10")
    assert found is not None
    expected = tc.expected_report(wanted, REAL)
    assert (found.burst_bytes, found.cburst_bytes) == (expected.burst_bytes, expected.cburst_bytes)
    assert tc.state_matches(state, wanted, REAL)
    assert tc.plan(state, wanted, "veth0", None, REAL) == ()
    assert tc.shaping_of(state) is not None


def test_a_negative_or_unreadable_size_in_tc_output_is_still_refused() -> None:
    for token in ("-1b", "lots"):
        with pytest.raises(tc.TcInputError, match="size in tc output"):
            tc.parse_classes(f"class htb 1:10 root prio 0 rate 1Gbit ceil 1Gbit burst {token} cburst 1b \n")


@pytest.mark.parametrize(
    ("bps", "shown"),
    [
        (20_000_000, 20_000_000),
        (12_345_678, 12_345_000),
        (999_992, 999_992),
        (1_000_000_000, 1_000_000_000),
        (1_500_000, 1_500_000),
    ],
)
def test_rates_are_rounded_as_tc_prints_them(bps: int, shown: int) -> None:
    assert tc.shown_rate(bps) == shown


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (2040, 2048),
        (2037, 2048),
        (1510, 1510),
        (20_000, 20_000),
        (1_049_000, 1_048_576),
        (1_048_000, 1_048_000),
        (2010, 2010),
    ],
)
def test_sizes_are_rounded_as_tc_prints_them(size: int, shown: int) -> None:
    assert tc.shown_size(size) == shown


# --------------------------------------------------------------------------------------------------
# Planning: which commands for which current state


def _tc(*words: str) -> tuple[str, ...]:
    return ("tc", "-n", "ns1", *words)


TBF_20 = _tc(
    "qdisc",
    "replace",
    "dev",
    "cap0",
    "root",
    "tbf",
    "rate",
    "20000000bit",
    "burst",
    "1514",
    "latency",
    "50000us",
)
TBF_20_DEFAULT_BURST = (*TBF_20[:-3], "25000", *TBF_20[-2:])
HTB_QDISC = _tc("qdisc", "replace", "dev", "cap0", "root", "handle", "1:", "htb", "default", "10")


def class_step(class_id: str = "1:10", rate: str = "20000000bit") -> tuple[str, ...]:
    parent = class_id.partition(":")[0] + ":"
    return _tc(
        "class",
        "replace",
        "dev",
        "cap0",
        "parent",
        parent,
        "classid",
        class_id,
        "htb",
        "rate",
        rate,
        "ceil",
        "30000000bit",
        "burst",
        "1514",
        "cburst",
        "1514",
    )


HTB_CLASS_20_30 = class_step()
DELETE = _tc("qdisc", "del", "dev", "cap0", "root")


@pytest.mark.parametrize(
    ("qdisc", "classes", "wanted", "steps"),
    [
        (QDISC_NOQUEUE, "", tbf("20mbit", 1514), [TBF_20]),
        (QDISC_NONE, "", tbf("20mbit", 1514), [TBF_20]),
        (QDISC_TBF_20MBIT, "", tbf("20mbit", 1514), []),  # unchanged: not rewritten
        (QDISC_TBF_1GBIT, "", tbf("20mbit", 1514), [TBF_20]),  # a tbf is changed in place
        (QDISC_TBF_20MBIT, "", tbf("20mbit", 1514, 40_000), [(*TBF_20[:-1], "40000us")]),
        (QDISC_HTB_1_DEFAULT_10, CLASS_HTB_20_30, tbf("20mbit", 1514), [TBF_20]),
        (QDISC_NOQUEUE, "", htb("20mbit", "30mbit", 1514, 1514), [HTB_QDISC, HTB_CLASS_20_30]),
        (QDISC_TBF_20MBIT, "", htb("20mbit", "30mbit", 1514, 1514), [HTB_QDISC, HTB_CLASS_20_30]),
        (QDISC_HTB_1_DEFAULT_10, CLASS_HTB_20_30, htb("20mbit", "30mbit", 1514, 1514), []),
        (QDISC_HTB_1_DEFAULT_10, CLASS_HTB_20_30_STATS, htb("20mbit", "30mbit", 1514, 1514), []),
        (QDISC_HTB_1_DEFAULT_10, CLASS_HTB_20_30_JSON, htb("20mbit", "30mbit", 1514, 1514), []),
        # only the class changes: the qdisc (and its other classes) stay
        (
            QDISC_HTB_1_DEFAULT_10,
            CLASS_HTB_20_30,
            htb("10mbit", "30mbit", 1514, 1514),
            [class_step(rate="10000000bit")],
        ),
        (QDISC_HTB_1_DEFAULT_10, "", htb("20mbit", "30mbit", 1514, 1514), [HTB_CLASS_20_30]),
        # the default must point elsewhere: htb cannot change it in place
        (
            QDISC_HTB_1_DEFAULT_10,
            CLASS_HTB_20_30,
            htb("20mbit", "30mbit", 1514, 1514, "1:20"),
            [
                DELETE,
                _tc("qdisc", "add", "dev", "cap0", "root", "handle", "1:", "htb", "default", "20"),
                class_step("1:20"),
            ],
        ),
        (
            QDISC_HTB_1_DEFAULT_10,
            CLASS_HTB_20_30,
            htb("20mbit", "30mbit", 1514, 1514, "2:10"),
            [
                _tc("qdisc", "replace", "dev", "cap0", "root", "handle", "2:", "htb", "default", "10"),
                class_step("2:10"),
            ],
        ),
        (QDISC_TBF_20MBIT, "", None, [DELETE]),
        (QDISC_HTB_1_DEFAULT_10, CLASS_HTB_20_30, None, [DELETE]),
        (QDISC_NOQUEUE, "", None, []),
        (QDISC_PFIFO_FAST, "", None, []),
        (QDISC_NONE, "", None, []),
    ],
)
def test_plan(qdisc: str, classes: str, wanted: tc.Shaping | None, steps: list[tuple[str, ...]]) -> None:
    state = tc.read_state("cap0", "ns1", kernel=FakeTc(qdisc, classes))
    assert list(tc.plan(state, wanted, "cap0", "ns1", REAL)) == steps


def test_without_namespace_commands_run_in_the_host_namespace() -> None:
    (step,) = tc.plan(tc.TcState(tc.parse_qdiscs(QDISC_NOQUEUE)), tbf("20mbit", 1514), "veth1", None, REAL)
    assert step[:4] == ("tc", "qdisc", "replace", "dev")


def test_a_class_under_another_parent_gets_a_fresh_root() -> None:
    state = tc.TcState(
        tc.parse_qdiscs(QDISC_HTB_1_DEFAULT_10),
        tc.parse_classes(
            "class htb 1:10 parent 1:1 prio 0 rate 20Mbit ceil 30Mbit burst 1510b cburst 1507b \n"
        ),
    )
    steps = tc.plan(state, htb("20mbit", "30mbit", 1514, 1514), "cap0", "ns1", REAL)
    assert [s[3:5] for s in steps] == [("qdisc", "del"), ("qdisc", "add"), ("class", "replace")]


# --------------------------------------------------------------------------------------------------
# Applying, and rolling back


@pytest.fixture
def netns_dir(tmp_path: Path) -> str:
    (tmp_path / "ns1").touch()
    return str(tmp_path)


@pytest.fixture
def psched_path(tmp_path: Path) -> str:
    path = tmp_path / "psched"
    path.write_text(PSCHED_HIGHRES)
    return str(path)


def test_apply_runs_the_plan_and_nothing_when_already_there(netns_dir: str, psched_path: str) -> None:
    fake = FakeTc(QDISC_NOQUEUE, writes={TBF_20: (QDISC_TBF_20MBIT, "")})
    assert tc.apply_shaping(
        "cap0", tbf("20mbit", 1514), "ns1", netns_dir=netns_dir, psched_path=psched_path, kernel=fake
    ) == (TBF_20,)
    assert (
        tc.apply_shaping(
            "cap0", tbf("20mbit", 1514), "ns1", netns_dir=netns_dir, psched_path=psched_path, kernel=fake
        )
        == ()
    )
    assert fake.writes == [TBF_20]


def test_a_failed_class_step_restores_the_previous_tbf(netns_dir: str, psched_path: str) -> None:
    refused = tc.TcCommandError(
        "class refused",
        command=list(HTB_CLASS_20_30),
        rc=2,
        stdout="",
        stderr="Error: something refused the class.\n",
    )
    fake = FakeTc(
        QDISC_TBF_20MBIT,
        writes={
            HTB_QDISC: (QDISC_HTB_1_DEFAULT_10, ""),
            HTB_CLASS_20_30: refused,
            TBF_20: (QDISC_TBF_20MBIT, ""),
        },
    )
    with pytest.raises(tc.TcCommandError) as err:
        tc.apply_shaping(
            "cap0",
            htb("20mbit", "30mbit", 1514, 1514),
            "ns1",
            netns_dir=netns_dir,
            psched_path=psched_path,
            kernel=fake,
        )
    # the tbf is rebuilt with a burst of at least one frame, although tc reported 1512
    assert fake.writes == [HTB_QDISC, HTB_CLASS_20_30, TBF_20]
    assert err.value.details["rolled_back"] is True
    assert err.value.details["rollback_failures"] == []
    assert err.value.details["rc"] == 2
    assert fake.qdisc == QDISC_TBF_20MBIT


def test_a_failed_class_step_on_a_default_qdisc_removes_the_new_root(
    netns_dir: str, psched_path: str
) -> None:
    refused = tc.TcCommandError(
        "class refused", command=list(HTB_CLASS_20_30), rc=2, stdout="", stderr="Error\n"
    )
    fake = FakeTc(
        QDISC_NOQUEUE,
        writes={
            HTB_QDISC: (QDISC_HTB_1_DEFAULT_10, ""),
            HTB_CLASS_20_30: refused,
            DELETE: (QDISC_NOQUEUE, ""),
        },
    )
    with pytest.raises(tc.TcCommandError):
        tc.apply_shaping(
            "cap0",
            htb("20mbit", "30mbit", 1514, 1514),
            "ns1",
            netns_dir=netns_dir,
            psched_path=psched_path,
            kernel=fake,
        )
    assert fake.writes == [HTB_QDISC, HTB_CLASS_20_30, DELETE]
    assert fake.qdisc == QDISC_NOQUEUE


def test_a_failed_first_step_changes_nothing_and_restores_nothing(netns_dir: str, psched_path: str) -> None:
    refused = tc.TcCommandError("refused", command=list(TBF_20), rc=2, stdout="", stderr="Error\n")
    fake = FakeTc(QDISC_HTB_1_DEFAULT_10, CLASS_HTB_20_30, writes={TBF_20: refused})
    with pytest.raises(tc.TcCommandError) as err:
        tc.apply_shaping(
            "cap0", tbf("20mbit", 1514), "ns1", netns_dir=netns_dir, psched_path=psched_path, kernel=fake
        )
    assert fake.writes == [TBF_20]
    assert "rolled_back" not in err.value.details


def test_remove_deletes_only_firm_shaping(netns_dir: str) -> None:
    fake = FakeTc(QDISC_TBF_20MBIT, writes={DELETE: (QDISC_NOQUEUE, "")})
    assert tc.remove_shaping("cap0", "ns1", netns_dir=netns_dir, kernel=fake) is True
    assert tc.remove_shaping("cap0", "ns1", netns_dir=netns_dir, kernel=fake) is False
    assert fake.writes == [DELETE]
    prio = '[{"kind":"prio","handle":"5:","root":true,"refcnt":2,"options":{}}]'
    assert tc.remove_shaping("cap0", "ns1", netns_dir=netns_dir, kernel=FakeTc(prio)) is False


def test_run_command_reports_rc_stdout_stderr_and_the_command() -> None:
    with pytest.raises(tc.TcCommandError) as err:
        tc.run_command(
            ["sh", "-c", "echo out; echo 'RTNETLINK answers: Operation not permitted' >&2; exit 2"]
        )
    details = err.value.details
    assert (details["rc"], details["stdout"], details["command"]) == (
        2,
        "out\n",
        ["sh", "-c", details["command"][2]],
    )
    assert "Operation not permitted" in details["stderr"]
    assert "run as root" in err.value.fix
    assert tc.run_command(["sh", "-c", "echo $LC_ALL"]) == "C\n"
    with pytest.raises(tc.TcCommandError, match="not installed"):
        tc.run_command(["firm-no-such-command"])


# --------------------------------------------------------------------------------------------------
# The module, with tc and ip replaced by the fake


@pytest.fixture
def module_env(netns_dir: str, psched_path: str) -> dict[str, Any]:
    fake = FakeTc(
        QDISC_NOQUEUE,
        writes={
            TBF_20_DEFAULT_BURST: (QDISC_TBF_20MBIT_DEFAULT_BURST, ""),
            DELETE: (QDISC_NOQUEUE, ""),
        },
    )
    return {
        "fake": fake,
        "args": {"interface": "cap0", "namespace": "ns1", "netns_dir": netns_dir, "psched_path": psched_path},
    }


def run(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str], check_mode: bool = False, **args: Any
) -> dict[str, Any]:
    return run_module(
        functools.partial(tc_module.main, env["fake"]),
        {**env["args"], **args},
        check_mode=check_mode,
        capsys=capsys,
    )


def test_module_check_mode_predicts_and_writes_nothing(
    module_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(module_env, capsys, check_mode=True, rate="20mbit")
    assert result["changed"] is True
    assert result["commands"] == [list(TBF_20_DEFAULT_BURST)]
    assert result["diff"]["before"]["shaping"] is None
    assert result["diff"]["after"]["shaping"]["burst_bytes"] == 25000  # as tc will report it
    assert (result["requested"]["burst_bytes"], result["min_burst_bytes"]) == (25000, 1514)
    assert module_env["fake"].writes == []


def test_module_applies_then_reports_no_change(
    module_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    first = run(module_env, capsys, rate="20mbit")
    assert (first["changed"], first["root_qdisc"], first["shaping"]["rate_bps"]) == (
        True,
        "tbf 84c3:",
        20_000_000,
    )
    second = run(module_env, capsys, rate=20_000_000, latency="50ms")
    assert second["changed"] is False
    assert second["commands"] == []
    assert second["diff"]["before"] == second["diff"]["after"]
    removed = run(module_env, capsys, state="absent")
    assert (removed["changed"], removed["shaping"], removed["root_qdisc"]) == (True, None, "noqueue 0:")
    assert module_env["fake"].writes == [TBF_20_DEFAULT_BURST, DELETE]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"rate": "fast"}, "rate 'fast' cannot be parsed"),
        ({"rate": 0}, "at least 8 bit/s"),
        ({"rate": "-10mbit"}, "cannot be parsed"),
        ({"kind": "htb", "rate": "20mbit", "ceil": "10mbit"}, "is below rate"),
        ({"rate": "20mbit", "burst": 1000}, "below the minimum of 1514 bytes"),
        ({"rate": "20mbit", "namespace": "missing"}, "network namespace 'missing' does not exist"),
        ({"rate": "20mbit", "interface": "bad/name"}, "not a valid interface name"),
        ({"state": "present"}, "rate"),
    ],
)
def test_module_refuses_bad_input_before_writing(
    module_env: dict[str, Any], capsys: pytest.CaptureFixture[str], args: dict[str, Any], message: str
) -> None:
    result = run(module_env, capsys, **args)
    assert result["failed"] is True
    assert message in result["msg"]
    assert module_env["fake"].writes == []


def test_module_bad_namespace_is_refused_before_any_command(
    module_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(module_env, capsys, rate="20mbit", namespace="missing")
    assert result["failed"] is True
    assert "ip netns add missing" in result["fix"]
    assert module_env["fake"].calls == []


def test_module_missing_interface_fails_with_the_command_output(
    module_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    module_env["fake"].link = None
    result = run(module_env, capsys, rate="20mbit", interface="nope")
    assert result["failed"] is True
    assert "interface 'nope' does not exist" in result["msg"]
    assert (result["rc"], result["stderr"]) == (1, LINK_MISSING_STDERR)
    assert result["command"] == ["ip", "-n", "ns1", "-j", "link", "show", "dev", "nope"]


def test_module_takes_hz_from_psched_path(
    module_env: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    hz100 = tmp_path / "psched-hz100"
    hz100.write_text(PSCHED_HZ100)
    result = run(module_env, capsys, check_mode=True, rate="1gbit", psched_path=str(hz100))
    assert (result["hz"], result["min_burst_bytes"]) == (100, 1_250_000)
    refused = run(module_env, capsys, rate="1gbit", burst="64k", psched_path=str(hz100))
    assert "minimum of 1250000 bytes" in refused["msg"]
