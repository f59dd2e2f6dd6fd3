#!/usr/bin/python
# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tc
short_description: Shape the egress of a network interface with a TBF qdisc or an HTB class
version_added: "0.1.0"
description:
  - Limits the rate at which an interface sends, optionally inside a network namespace (as
    C(ip netns) names them). On a container's host-side veth that limits what the container receives.
  - With O(kind=tbf) the root qdisc becomes a token bucket filter with O(rate), O(burst) and
    O(latency).
  - With O(kind=htb) the root qdisc becomes V(htb) with the handle of O(class_id)'s major and its
    C(default) pointing to O(class_id), a class with O(rate), O(ceil), O(burst) and a cburst; all
    unclassified traffic goes through that class.
  - The burst must hold one full frame (MTU plus the link-layer header, read from C(ip link)) and
    what the rate sends in one timer tick (rate/HZ, HZ as tc reads it from C(/proc/net/psched)).
    A smaller O(burst) is refused. The default is 10 ms of traffic at the rate, or that minimum where
    it is larger (a bucket of one frame loses rate every time the qdisc's timer wakes late).
  - Nothing is written when the interface already has the wanted shaping, as tc reports it (tc rounds
    bursts to clock ticks, so the comparison uses tc's own arithmetic). Rewriting an unchanged qdisc
    or class would reset its state.
  - A change to an HTB class whose root qdisc is already right rewrites only the class. When the
    class step fails after the root qdisc was replaced, the previous root qdisc is restored.
  - Every value is validated before anything is run; commands are argument lists run with
    C(LC_ALL=C).
author:
  - firm developers
extends_documentation_fragment:
  - firm.core.common
options:
  interface:
    description:
      - The interface whose egress is shaped, as C(ip link) names it (in O(namespace) when given).
    type: str
    required: true
  namespace:
    description:
      - Name of the network namespace the interface is in, as C(ip netns list) shows it.
      - It must exist as O(netns_dir)/NAME. Unset means the host's namespace.
    type: str
  state:
    description:
      - V(present) applies the shaping.
      - V(absent) deletes a tbf or htb root qdisc, so the kernel's default qdisc takes over again.
        Any other root qdisc is left alone.
    type: str
    choices: [present, absent]
    default: present
  kind:
    description:
      - V(tbf) for a token bucket filter root qdisc, V(htb) for a root V(htb) with one default class.
    type: str
    choices: [tbf, htb]
    default: tbf
  rate:
    description:
      - The rate, in bits per second as a number (a float such as C(2.5e+6) too), or as tc writes it.
        C(10mbit), C(1gbit), C(500kbit) are bits per second (SI multiples), C(1mibit) is 2^20 bit/s, and
        C(125kbps) is 125 kilobytes per second (1 Mbit/s).
      - C(10Mbps), C(1Gbps) are refused as ambiguous (tc reads them as bytes, most people as bits); write
        C(10mbit) for bits or C(10MBps) for bytes per second.
      - Rounded down to a multiple of 8 bit/s (the kernel holds bytes per second). Required when
        O(state=present).
    type: raw
  ceil:
    description:
      - With O(kind=htb), the most the class may borrow up to; same units as O(rate). Defaults to O(rate)
        and may not be below it.
    type: raw
  burst:
    description:
      - Bucket size in bytes as a number, or as tc writes sizes (C(15k) = 15360 bytes, C(1mb)).
      - May not be below max(MTU + link-layer header, rate/HZ); defaults to 10 ms at the rate, or to
        that minimum where it is larger.
      - With O(kind=htb) the class's cburst is the larger of O(burst) and the same minimum for O(ceil).
    type: raw
  latency:
    description:
      - With O(kind=tbf), the longest a packet may wait in the queue, as a number of microseconds or as
        tc writes times (C(50ms), C(200us), C(1s)). Defaults to 50ms.
    type: raw
  class_id:
    description:
      - With O(kind=htb), the class in tc's hexadecimal notation C(MAJOR:MINOR); the root qdisc gets
        handle C(MAJOR:) and C(default MINOR). Defaults to C(1:10).
    type: str
  netns_dir:
    description:
      - Where C(ip netns) keeps its namespaces.
    type: path
    default: /run/netns
  psched_path:
    description:
      - The kernel's packet scheduler clock parameters, from which tc and this module take HZ and the
        tick length.
    type: path
    default: /proc/net/psched
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - Needs root (CAP_NET_ADMIN in the interface's namespace), iproute2 and the C(sch_tbf) or C(sch_htb)
    kernel module.
  - Only egress is shaped. Delay and loss (netem) are not handled by this module.
  - tc reports a TBF's burst only as its token buffer rounded to clock ticks, so bursts that differ by
    less than that rounding (a few bytes) are taken as equal.
seealso:
  - name: tc-tbf(8)
    description: The token bucket filter.
    link: https://man7.org/linux/man-pages/man8/tc-tbf.8.html
  - name: tc-htb(8)
    description: The hierarchy token bucket.
    link: https://man7.org/linux/man-pages/man8/tc-htb.8.html
"""

EXAMPLES = r"""
- name: Cap what the web service's pod receives at 20 Mbit/s
  firm.core.tc:
    interface: veth3f2a1c
    kind: tbf
    rate: 20mbit

- name: Give a service in a network namespace an HTB class of 50 Mbit/s that may borrow up to 100 Mbit/s
  firm.core.tc:
    interface: eth0
    namespace: svc-frontend
    kind: htb
    rate: 50mbit
    ceil: 100mbit
    class_id: "1:10"

- name: Shape at 1 Mbit/s with a 64 KiB burst and at most 20 ms of queueing
  firm.core.tc:
    interface: veth3f2a1c
    kind: tbf
    rate: 1000000
    burst: 64k
    latency: 20ms

- name: Remove the shaping
  firm.core.tc:
    interface: veth3f2a1c
    state: absent
"""

RETURN = r"""
interface:
  description: The interface.
  returned: always
  type: str
  sample: veth3f2a1c
namespace:
  description: The network namespace, or null for the host's.
  returned: always
  type: str
  sample: svc-frontend
shaping:
  description:
    - The interface's shaping after the run as tc reports it (bursts rounded to clock ticks; HTB values
      rounded as tc prints them), or null when none. In check mode, what tc would report.
    - Rates in bit/s, sizes in bytes, latency in microseconds.
  returned: always
  type: dict
  sample: {"kind": "tbf", "rate_bps": 20000000, "ceil_bps": null, "burst_bytes": 25000,
           "latency_us": 50000, "class_id": null, "cburst_bytes": null}
requested:
  description: The shaping asked for, with the burst (and cburst) resolved, before tc's rounding.
  returned: when state is present
  type: dict
  sample: {"kind": "tbf", "rate_bps": 20000000, "ceil_bps": null, "burst_bytes": 25000,
           "latency_us": 50000, "class_id": null, "cburst_bytes": null}
root_qdisc:
  description: Kind and handle of the root qdisc after the run (before it, in check mode), or null.
  returned: always
  type: str
  sample: "tbf 8002:"
min_burst_bytes:
  description: The smallest burst accepted for O(rate), max(MTU + link-layer header, rate/HZ).
  returned: when state is present
  type: int
  sample: 1514
mtu:
  description: The interface's MTU.
  returned: always
  type: int
  sample: 1500
hz:
  description: HZ as tc reads it from O(psched_path) (10^9 with high-resolution timers).
  returned: always
  type: int
  sample: 1000000000
commands:
  description: The commands run (that would be run, in check mode), each an argument list.
  returned: always
  type: list
  elements: list
  sample: [["tc", "-n", "svc-frontend", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "20000000bit",
            "burst", "25000", "latency", "50000us"]]
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from ansible_collections.firm.core.plugins.module_utils.kernel import KERNEL, Kernel
from ansible_collections.firm.core.plugins.module_utils.tc import (
    Shaping,
    check_interface_name,
    check_namespace,
    ensure_shaping,
    min_burst,
    parse_request,
)


def argument_spec() -> dict[str, Any]:
    return {
        "interface": {"type": "str", "required": True},
        "namespace": {"type": "str"},
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "kind": {"type": "str", "choices": ["tbf", "htb"], "default": "tbf"},
        "rate": {"type": "raw"},
        "ceil": {"type": "raw"},
        "burst": {"type": "raw"},
        "latency": {"type": "raw"},
        "class_id": {"type": "str"},
        "netns_dir": {"type": "path", "default": "/run/netns"},
        "psched_path": {"type": "path", "default": "/proc/net/psched"},
    }


def build_module() -> AnsibleModule:
    return AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[["state", "present", ["rate"]]],
        supports_check_mode=True,
    )


def _view(shaping: Shaping | None) -> dict[str, Any] | None:
    return shaping.as_dict() if shaping is not None else None


def run(params: dict[str, Any], check_mode: bool, kernel: Kernel = KERNEL) -> dict[str, Any]:
    """Argument spec -> :func:`tc.ensure_shaping` -> the module's result."""
    check_interface_name(params["interface"])  # names first, as before any other check
    check_namespace(params["namespace"], params["netns_dir"])
    request = None
    if params["state"] == "present":
        request = parse_request(
            params["kind"],
            params["rate"],
            ceil=params["ceil"],
            burst=params["burst"],
            latency=params["latency"],
            class_id=params["class_id"],
        )
    change = ensure_shaping(
        params["interface"],
        request,
        params["namespace"],
        check_mode=check_mode,
        netns_dir=params["netns_dir"],
        psched_path=params["psched_path"],
        kernel=kernel,
    )
    link, psched, wanted = change.link, change.psched, change.requested
    result: dict[str, Any] = {
        "interface": params["interface"],
        "namespace": params["namespace"],
        "mtu": link.mtu,
        "hz": psched.hz,
        "commands": [list(step) for step in change.commands],
    }
    if wanted is not None:
        result["requested"] = wanted.as_dict()
        result["min_burst_bytes"] = min_burst(wanted.rate_bps, link, psched.hz)
    target = {"interface": params["interface"], "namespace": params["namespace"]}
    result["root_qdisc"] = change.root_qdisc
    result["shaping"] = _view(change.after)
    result["changed"] = change.changed
    result["diff"] = {
        "before": dict(target, shaping=_view(change.before)),
        "after": dict(target, shaping=_view(change.after)),
    }
    return result


def main(kernel: Kernel = KERNEL) -> None:
    module = build_module()
    try:
        result = run(module.params, module.check_mode, kernel)
    except FirmError as err:
        module.fail_json(**err.as_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
