#!/usr/bin/python
# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: anomaly
short_description: Inject real resource contention on a node, for a bounded time
version_added: "0.1.0"
description:
  - Starts contention of one kind (CPU, memory bandwidth, last-level cache, disk I/O, network
    bandwidth, packet loss, and network delay where the kernel has netem) at an intensity from 0 to
    100, for a bounded duration, on the whole node or beside one service.
  - Intensity really changes the contention. V(cpu) and V(memory_bandwidth) run one worker per
    target CPU (stress-ng) at a duty cycle of O(intensity) percent, enforced as the CPU quota of the
    anomaly's own cgroup. V(llc) walks a working set of O(intensity) percent of the last-level cache.
    V(disk_io) runs 1 to 4 sysbench random read/write threads with direct I/O at O(intensity) percent
    of O(disk_iops_at_full). V(network_bandwidth) shapes the interface to (100 - O(intensity)) percent
    of O(link_rate), or floods O(peer) with O(intensity) percent of it (iperf3). V(network_loss)
    drops O(intensity) percent of the interface's packets (nftables). V(network_delay) adds
    O(intensity) milliseconds (netem).
  - Every anomaly expires by itself, even if the run that started it is killed. Each worker has its
    own time limit, and a supervisor in its own session removes kernel changes at expiry. Records
    whose supervisor is gone are cleaned up by the next call.
  - Idempotent by name. The same request under a running name changes nothing; a different one
    replaces it.
  - Ended anomalies are appended to C(history.jsonl) in O(state_dir) with the time they really ended.
author:
  - firm developers
extends_documentation_fragment:
  - firm.core.common
  - firm.core.common.cgroup_root
options:
  name:
    description:
      - Name of the anomaly, unique on the node. Required unless O(state=query).
    type: str
  state:
    description:
      - V(present) starts the anomaly, V(absent) stops it, V(query) lists the active ones.
    type: str
    choices: [present, absent, query]
    default: present
  kind:
    description:
      - The resource to contend for.
    type: str
    choices: [cpu, memory_bandwidth, llc, disk_io, network_bandwidth, network_loss, network_delay]
  intensity:
    description:
      - How hard, from 0 to 100 (see the description for what it means per kind).
    type: int
  duration:
    description:
      - Seconds until the anomaly ends by itself, from 1 to O(max_duration).
    type: int
  max_duration:
    description:
      - Upper bound of O(duration), in seconds, from 1 to 604800 (a week).
    type: int
    default: 3600
  target_cgroup:
    description:
      - Co-locate with a service, by pinning the workers to the CPUs of this cgroup (a path relative to
        the cpuset hierarchy's root, as in M(firm.core.cgroup)).
    type: str
  target_cpus:
    description:
      - Pin the workers to these CPUs (kernel list format, for example C(0) or C(0-1)) instead of
        O(target_cgroup)'s current cpuset, so that the contention stays where it was planned after a
        controller widened the service's cpuset.
    type: str
  target_namespace:
    description:
      - Network namespace (as in C(ip netns)) to run in and whose interface to shape or drop on.
    type: str
  target_interface:
    description:
      - Interface to shape (V(network_bandwidth), V(network_delay)) or drop packets on (V(network_loss)).
    type: str
  link_rate:
    description:
      - Capacity the V(network_bandwidth) intensity is a share of, for example C(1gbit); read from
        sysfs when the interface reports a speed.
    type: str
  peer:
    description:
      - C(host[:port]) of an iperf3 server; V(network_bandwidth) then floods it instead of shaping.
    type: str
  labels:
    description:
      - Labels kept with the anomaly's record and history, for example the campaign and the service it
        targets; part of the request, so other labels under a running name replace it.
    type: dict
    default: {}
  history_since:
    description:
      - With O(state=query), also return the anomalies that ended at or after this time (seconds since
        the epoch) in C(history).
    type: float
  sysbench_dir:
    description:
      - Directory of the files sysbench prepared; by default the one the anomaly_tools role recorded in
        C(/etc/firm/anomaly_tools.json), else C(/var/lib/firm/sysbench).
    type: path
  disk_iops_at_full:
    description:
      - Random I/O operations per second V(disk_io) asks for at intensity 100; set it near the random
        IOPS the node's disk can do, so that intensity is a share of it. From 1 to 2147483647.
    type: int
    default: 40000
  state_dir:
    description:
      - Where the records of active anomalies and the history are kept.
    type: path
    default: /run/firm/anomalies
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - Needs root. The tools come from the anomaly_tools role (stress-ng, sysbench, iperf3, nftables, iproute2).
"""

EXAMPLES = r"""
- name: Burn 60 % of the CPUs of the web service for 30 seconds
  firm.core.anomaly:
    name: web-cpu
    kind: cpu
    intensity: 60
    target_cgroup: firm/web
    duration: 30

- name: Drop 10 % of the packets leaving a service's namespace
  firm.core.anomaly:
    name: storage-loss
    kind: network_loss
    intensity: 10
    target_namespace: firm-storage
    target_interface: eth0
    duration: 20

- name: List the active anomalies
  firm.core.anomaly:
    state: query
  register: active_anomalies

- name: Stop one before it expires
  firm.core.anomaly:
    name: web-cpu
    state: absent
"""

RETURN = r"""
anomaly:
  description: The anomaly's record, the ground truth a campaign keeps; after O(state=absent) it has the
    time the anomaly really ended (C(ended_at)).
  returned: when state is present or absent
  type: dict
  sample: {"name": "web-cpu", "host": "node1", "kind": "cpu", "intensity": 60, "duration_s": 30,
           "target": {"cgroup": "firm/web", "namespace": null, "interface": null},
           "started_at": 1764123456.12, "expires_at": 1764123486.12, "ended_at": null}
plan:
  description: How the intensity was turned into contention (worker commands, quota, CPUs, kernel changes).
  returned: when state is present
  type: dict
  sample: {"commands": [["stress-ng", "--cpu", "2", "--cpu-load", "100", "--timeout", "30", "--quiet"]],
           "cpu_quota_us": 120000, "cpuset_cpus": "0-1", "loss_percent": null, "shaping_rate_bps": null,
           "delay_ms": null}
anomalies:
  description: The active anomalies on the node.
  returned: always
  type: list
  elements: dict
history:
  description: With O(history_since), the anomalies that ended since then, with the time each really ended.
  returned: when state is query and history_since is given
  type: list
  elements: dict
swept:
  description: Names of anomalies whose supervisor had gone and that this call cleaned up.
  returned: always
  type: list
  elements: str
"""

import math
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.firm.core.plugins.module_utils import anomaly, tc
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError


def argument_spec() -> dict[str, Any]:
    return {
        "name": {"type": "str"},
        "state": {"type": "str", "choices": ["present", "absent", "query"], "default": "present"},
        "kind": {"type": "str", "choices": list(anomaly.KINDS)},
        "intensity": {"type": "int"},
        "duration": {"type": "int"},
        "max_duration": {"type": "int", "default": 3600},
        "target_cgroup": {"type": "str"},
        "target_cpus": {"type": "str"},
        "target_namespace": {"type": "str"},
        "target_interface": {"type": "str"},
        "link_rate": {"type": "str"},
        "peer": {"type": "str"},
        "labels": {"type": "dict", "default": {}},
        "history_since": {"type": "float"},
        "sysbench_dir": {"type": "path"},
        "disk_iops_at_full": {"type": "int", "default": 40000},
        "state_dir": {"type": "path", "default": "/run/firm/anomalies"},
        "cgroup_root": {"type": "path", "default": "/sys/fs/cgroup"},
    }


def environment(params: dict[str, Any]) -> anomaly.Environment:
    return anomaly.Environment(
        state_dir=params["state_dir"],
        cgroup_root=params["cgroup_root"],
        sysbench_dir=params["sysbench_dir"],
        max_duration_s=params["max_duration"],
        disk_iops_at_full=params["disk_iops_at_full"],
    )


def spec_from(params: dict[str, Any]) -> anomaly.AnomalySpec:
    target = anomaly.Target(
        params["target_cgroup"], params["target_namespace"], params["target_interface"], params["target_cpus"]
    )
    link = tc.parse_rate(params["link_rate"], "link_rate") if params["link_rate"] else None
    labels = {str(k): str(v) for k, v in params["labels"].items()}
    return anomaly.AnomalySpec(
        params["name"],
        params["kind"],
        params["intensity"],
        params["duration"],
        target,
        link,
        params["peer"],
        labels,
    )


def _state_of(record: anomaly.Record | None) -> dict[str, Any]:
    if record is None:
        return {"active": False}
    return {
        "active": True,
        "kind": record.spec.kind,
        "intensity": record.spec.intensity,
        "target": record.spec.target.describe(),
    }


def present(module: AnsibleModule, env: anomaly.Environment) -> dict[str, Any]:
    spec = spec_from(module.params)
    before = anomaly.Store(env.state_dir).load(spec.name)
    changed, record, work = anomaly.start(spec, env, module.check_mode)
    return {
        "changed": changed,
        "anomaly": record.summary(),
        "plan": work.describe(),
        "diff": {"before": _state_of(before), "after": _state_of(record)},
    }


def absent(module: AnsibleModule, env: anomaly.Environment) -> dict[str, Any]:
    record = anomaly.Store(env.state_dir).load(module.params["name"])
    ended = anomaly.stop(record.spec.name, env) if record is not None and not module.check_mode else None
    summary = ended or (record.summary() if record else {"name": module.params["name"]})
    return {
        "changed": record is not None,
        "anomaly": summary,
        "diff": {"before": _state_of(record), "after": _state_of(None)},
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[
            ["state", "present", ["name", "kind", "intensity", "duration"]],
            ["state", "absent", ["name"]],
        ],
        supports_check_mode=True,
    )
    env = environment(module.params)
    since = module.params["history_since"]
    try:
        anomaly.check_environment(env)
        if since is not None and not math.isfinite(since):
            raise anomaly.AnomalyInputError(
                f"history_since {since!r} is not a time", fix="give seconds since the epoch, e.g. 1764500000"
            )
        swept = [] if module.check_mode else anomaly.sweep(env)
        state = module.params["state"]
        result: dict[str, Any] = (
            {"changed": False}
            if state == "query"
            else (present if state == "present" else absent)(module, env)
        )
        store = anomaly.Store(env.state_dir)
        result["anomalies"] = [r.summary() for r in store.all()]
        if state == "query" and since is not None:
            result["history"] = store.history(since)
            if store.history_unread:
                module.warn(
                    f"{store.history_unread} line(s) of {store.state_dir}/history.jsonl could not be read "
                    "(a write cut short when a process was killed) and were left out"
                )
        result["swept"] = swept
    except FirmError as err:
        module.fail_json(**err.as_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
