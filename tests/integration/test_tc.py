"""firm.core.tc on real veths between network namespaces: shaping that measurably caps iperf3.

Each test gets its own pair of namespaces (see netpair.py); deleting them at the end removes the
veth and every qdisc on it, also when the test fails.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import yaml

from ansible_collections.firm.core.plugins.module_utils import tc
from ansible_collections.firm.core.plugins.module_utils.kernel import Kernel
from ansible_collections.firm.core.plugins.modules import tc as tc_module
from tests.helpers.modules import run_ansible_module, run_module
from tests.integration.netpair import NetPair, iperf3_throughput, veth_pair

pytestmark = pytest.mark.integration

RATE = "20mbit"
RATE_BPS = 20_000_000


@pytest.fixture
def pair() -> Iterator[NetPair]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces and qdiscs")
    if shutil.which("tc") is None or shutil.which("ip") is None:
        pytest.skip("iproute2 (tc, ip) is not installed")
    with veth_pair("tc") as created:
        yield created


@pytest.fixture
def iperf3() -> None:
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 is not installed (apt-get install iperf3)")


def module(
    pair: NetPair, capsys: pytest.CaptureFixture[str], check_mode: bool = False, **args: Any
) -> dict[str, Any]:
    """Run firm.core.tc in-process on side a's interface."""
    return run_module(
        tc_module.main,
        {"interface": pair.if_a, "namespace": pair.ns_a, **args},
        check_mode=check_mode,
        capsys=capsys,
    )


def root_qdisc(pair: NetPair) -> tc.RootQdisc | None:
    return tc.read_state(pair.if_a, pair.ns_a).root


@pytest.mark.parametrize("kind", ["tbf", "htb"])
def test_shaping_caps_iperf3_at_the_rate_and_absent_lifts_the_cap(
    pair: NetPair, iperf3: None, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    unshaped = iperf3_throughput(pair)
    applied = module(pair, capsys, kind=kind, rate=RATE)
    # TCP through a shaper backs off below its rate by chance: the best of two runs is what the link
    # lets through, which the rate must cap. (With a burst of one frame, the default before 10 ms,
    # tbf at 20 Mbit/s gave 15.4 to 18.3 Mbit/s in 2 s here: every late wake-up of its timer lost rate.)
    shaped = max(iperf3_throughput(pair), iperf3_throughput(pair))
    removed = module(pair, capsys, state="absent")
    lifted = iperf3_throughput(pair)
    with capsys.disabled():
        print(
            f"\n{kind} {RATE}: unshaped {unshaped / 1e6:.0f} Mbit/s, shaped {shaped / 1e6:.2f} Mbit/s, "
            f"after state=absent {lifted / 1e6:.0f} Mbit/s"
        )

    assert applied["changed"] is True
    assert applied["shaping"]["kind"] == kind
    assert 0.8 * RATE_BPS <= shaped <= 1.1 * RATE_BPS  # capped at the rate, and the rate usable
    assert unshaped > 10 * shaped
    assert removed["changed"] is True
    assert removed["shaping"] is None
    root = root_qdisc(pair)
    assert root is not None and root.is_kernel_default
    assert lifted > 10 * shaped


@pytest.mark.parametrize(
    "args",
    [
        {"kind": "tbf", "rate": "20mbit"},
        {"kind": "tbf", "rate": 12345678, "burst": 3000, "latency": "20ms"},
        {"kind": "tbf", "rate": "1gbit", "burst": "64k"},
        {"kind": "tbf", "rate": "125kbps"},
        {"kind": "htb", "rate": "20mbit", "ceil": "30mbit"},
        {"kind": "htb", "rate": "12345678", "ceil": "100mbit", "burst": 2040},
        {"kind": "htb", "rate": "1gbit", "class_id": "a:ff"},
    ],
    ids=["tbf-20mbit", "tbf-odd", "tbf-1gbit", "tbf-125kbps", "htb-20-30", "htb-odd", "htb-1gbit-a:ff"],
)
def test_a_second_run_reports_no_change(
    pair: NetPair, capsys: pytest.CaptureFixture[str], args: dict[str, Any]
) -> None:
    first = module(pair, capsys, **args)
    second = module(pair, capsys, **args)
    assert first["changed"] is True
    assert second["changed"] is False
    assert second["commands"] == []
    assert second["root_qdisc"] == first["root_qdisc"]  # the same qdisc, not a replaced one
    assert second["diff"]["before"] == second["diff"]["after"] == first["diff"]["after"]


SWEEP_RATES = ["1kbit", "32kbit", "999999bit", "1.5mbit", "12345678bit", "999999999bit", "4gbit", "10gbit"]
SWEEP_BURSTS = [None, "32kbit", "1.5k", "64k", "64m"]


@pytest.mark.parametrize("kind", ["tbf", "htb"])
def test_every_rate_and_burst_tc_rounds_is_idempotent(pair: NetPair, kind: str) -> None:
    """Odd rates and bursts from 1kbit to 10gbit: applied, read back, applied again without a change.

    tc keeps bursts in clock ticks and shows whole microseconds converted back to bytes; at 8gbit and
    above a small HTB burst comes back as "0b". A request tc cannot hold is refused before anything
    runs (TcInputError) and leaves the interface as it was.
    """
    applied = refused = 0
    for rate, burst in itertools.product(SWEEP_RATES, SWEEP_BURSTS):
        extra = {"ceil": "10gbit"} if kind == "htb" and rate == "999999999bit" else {}
        try:
            request = tc.parse_request(kind, rate, burst=burst, **extra)
            first = tc.ensure_shaping(pair.if_a, request, pair.ns_a)
        except tc.TcInputError:
            refused += 1
            continue
        second = tc.ensure_shaping(pair.if_a, request, pair.ns_a)
        assert first.changed is True, (rate, burst)
        assert (second.changed, second.commands) == (False, ()), (rate, burst, second.before, first.after)
        assert second.before == first.after
        assert tc.remove_shaping(pair.if_a, pair.ns_a) is True
        applied += 1
    assert applied >= 25 and refused >= 1  # 1kbit with a 64 MiB burst overflows tc's 32-bit ticks


def test_check_mode_changes_nothing(pair: NetPair, capsys: pytest.CaptureFixture[str]) -> None:
    predicted = module(pair, capsys, check_mode=True, kind="tbf", rate=RATE)
    assert predicted["changed"] is True
    root = root_qdisc(pair)
    assert root is not None and root.is_kernel_default

    applied = module(pair, capsys, kind="tbf", rate=RATE)
    assert applied["shaping"] == predicted["shaping"]  # check mode predicted what tc reports
    shaped, root = tc.read_shaping(pair.if_a, pair.ns_a), root_qdisc(pair)
    for args in ({"kind": "tbf", "rate": "10mbit"}, {"kind": "htb", "rate": RATE}, {"state": "absent"}):
        result = module(pair, capsys, check_mode=True, **args)
        assert result["changed"] is True
        assert result["commands"] != []
        assert (tc.read_shaping(pair.if_a, pair.ns_a), root_qdisc(pair)) == (shaped, root)


def test_an_htb_rate_change_rewrites_only_the_class(
    pair: NetPair, capsys: pytest.CaptureFixture[str]
) -> None:
    module(pair, capsys, kind="htb", rate=RATE, ceil="40mbit")
    changed = module(pair, capsys, kind="htb", rate="10mbit", ceil="40mbit")
    assert changed["changed"] is True
    assert [step[3:5] for step in changed["commands"]] == [["class", "replace"]]
    assert changed["diff"]["before"]["shaping"]["rate_bps"] == RATE_BPS
    assert changed["diff"]["after"]["shaping"]["rate_bps"] == 10_000_000
    # the default burst, 10 ms at 10 Mbit/s (12500 bytes), as tc reports it at 10 and 40 Mbit/s
    # (rounded to whole microseconds)
    assert tc.read_shaping(pair.if_a, pair.ns_a) == tc.Shaping(
        "htb", 10_000_000, 40_000_000, 12500, None, "1:10", 12495
    )


def test_switching_between_tbf_and_htb(pair: NetPair, capsys: pytest.CaptureFixture[str]) -> None:
    for kind in ("tbf", "htb", "tbf"):
        result = module(pair, capsys, kind=kind, rate=RATE)
        assert result["changed"] is True
        shaping = tc.read_shaping(pair.if_a, pair.ns_a)
        assert shaping is not None
        assert (shaping.kind, shaping.rate_bps) == (kind, RATE_BPS)


def test_every_example_runs(pair: NetPair, capsys: pytest.CaptureFixture[str]) -> None:
    """The EXAMPLES of the module's documentation, on this test's veth instead of the examples' names."""
    tasks = yaml.safe_load(tc_module.EXAMPLES)
    assert len(tasks) >= 4
    for task in tasks:
        args = {**task["firm.core.tc"], "interface": pair.if_a, "namespace": pair.ns_a}
        result = module(pair, capsys, **args)
        assert result["changed"] is True, task["name"]
        assert (result["shaping"] is None) == (args.get("state") == "absent"), task["name"]


def test_the_module_runs_through_the_ansible_command(pair: NetPair) -> None:
    args = {"interface": pair.if_a, "namespace": pair.ns_a, "kind": "htb", "rate": RATE, "ceil": "30mbit"}
    first = run_ansible_module("firm.core.tc", args)
    assert first["changed"] is True
    assert first["shaping"]["ceil_bps"] == 30_000_000
    assert run_ansible_module("firm.core.tc", args)["changed"] is False
    checked = run_ansible_module("firm.core.tc", {**args, "rate": "10mbit"}, check=True, diff=True)
    assert checked["changed"] is True
    current = tc.read_shaping(pair.if_a, pair.ns_a)
    assert current is not None and current.rate_bps == RATE_BPS
    removed = run_ansible_module(
        "firm.core.tc", {"interface": pair.if_a, "namespace": pair.ns_a, "state": "absent"}
    )
    assert removed["changed"] is True
    assert tc.read_shaping(pair.if_a, pair.ns_a) is None


def test_bad_input_fails_with_what_and_how_and_changes_nothing(
    pair: NetPair, capsys: pytest.CaptureFixture[str]
) -> None:
    missing_if = module(pair, capsys, interface="firm-nope", rate=RATE)
    assert missing_if["failed"] is True
    assert f"interface 'firm-nope' does not exist in network namespace '{pair.ns_a}'" in missing_if["msg"]
    assert missing_if["rc"] == 1
    assert "does not exist" in missing_if["stderr"]

    missing_ns = module(pair, capsys, namespace=f"{pair.ns_a}-gone", rate=RATE)
    assert missing_ns["failed"] is True
    assert "ip netns add" in missing_ns["fix"]

    subprocess.run(["ip", "-n", pair.ns_a, "link", "set", "dev", pair.if_a, "mtu", "9000"], check=True)
    small = module(pair, capsys, rate=RATE, burst=1514)
    assert small["failed"] is True
    assert "below the minimum of 9014 bytes" in small["msg"]
    assert module(pair, capsys, check_mode=True, rate=RATE)["min_burst_bytes"] == 9014

    refused: list[dict[str, Any]] = [
        {"rate": "0"},
        {"rate": "quick"},
        {"kind": "htb", "rate": RATE, "ceil": "1mbit"},
    ]
    for args in refused:
        assert module(pair, capsys, **args)["failed"] is True
    root = root_qdisc(pair)
    assert root is not None and root.is_kernel_default


def test_a_failed_class_step_restores_the_previous_qdisc(
    pair: NetPair, capsys: pytest.CaptureFixture[str]
) -> None:
    module(pair, capsys, kind="tbf", rate=RATE)
    before = tc.read_shaping(pair.if_a, pair.ns_a)

    class RefuseClasses(Kernel):  # the kernel's tc, except that it refuses HTB classes
        def run(self, argv: Sequence[str]) -> str:
            if "class" in argv and "replace" in argv:
                raise tc.TcCommandError(
                    "refused for the test", command=list(argv), rc=2, stdout="", stderr=""
                )
            return super().run(argv)

    wanted = tc.shaping_for(pair.if_a, "htb", RATE, namespace=pair.ns_a)
    with pytest.raises(tc.TcCommandError) as err:
        tc.ensure_shaping(pair.if_a, wanted, pair.ns_a, kernel=RefuseClasses())
    assert err.value.details["rolled_back"] is True
    assert tc.read_shaping(pair.if_a, pair.ns_a) == before


def test_library_remove_reports_whether_it_removed(pair: NetPair) -> None:
    wanted = tc.shaping_for(pair.if_a, "tbf", RATE, namespace=pair.ns_a)
    assert tc.apply_shaping(pair.if_a, wanted, pair.ns_a) != ()
    assert tc.apply_shaping(pair.if_a, wanted, pair.ns_a) == ()
    assert tc.remove_shaping(pair.if_a, pair.ns_a) is True
    assert tc.remove_shaping(pair.if_a, pair.ns_a) is False
    assert tc.read_shaping(pair.if_a, pair.ns_a) is None


def test_the_pair_and_its_processes_are_removed_even_when_the_test_fails() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    with pytest.raises(RuntimeError, match="body failed"), veth_pair("cleanup") as created:
        sleeper = subprocess.Popen(["ip", "netns", "exec", created.ns_b, "sleep", "60"])
        subprocess.run(
            [
                "tc",
                "-n",
                created.ns_a,
                "qdisc",
                "replace",
                "dev",
                created.if_a,
                "root",
                "tbf",
                "rate",
                "1mbit",
                "burst",
                "1514",
                "latency",
                "50ms",
            ],
            check=True,
        )
        raise RuntimeError("body failed")
    assert sleeper.wait(timeout=10) == -9
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert created.ns_a not in namespaces
    assert created.ns_b not in namespaces
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout
    assert created.if_a not in links and created.if_b not in links
