#!/usr/bin/python
# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: resctrl
short_description: Manage resctrl groups (L3 cache ways, memory bandwidth, tasks)
version_added: "0.1.0"
description:
  - Creates, changes and removes a resource control group under a mounted resctrl file system
    (Intel RDT CAT/CDP/MBA, AMD PQoS), puts tasks in it, and returns its schemata, the platform
    limits it used and the group's monitoring counters.
  - Only the schemata domains that differ are written, in one write; the kernel resets state on
    every write, so an unchanged value is never written again.
  - Every value is checked against the kernel's rules before anything is written (masks
    contiguous unless C(info/L3/sparse_masks) is 1, within C(cbm_mask), at least C(min_cbm_bits)
    long; bandwidth within range and on the C(bandwidth_gran) step; no more groups than
    CLOSIDs). If the kernel still refuses a step, the earlier steps are undone and the kernel's
    reason from C(info/last_cmd_status) is in the error.
  - The default group (the resctrl root, which owns every task not in another group) is named
    C(/). It can be read and its schemata and tasks changed, but not removed.
author:
  - firm developers
extends_documentation_fragment:
  - firm.core.common
  - firm.core.common.proc_root
  - firm.core.common.resctrl_root
attributes:
  check_mode:
    support: full
  diff_mode:
    description: Returns the group's schemata and requested tasks before and after.
    support: full
  platform:
    description: Linux with resctrl mounted (x86 with RDT or PQoS).
    support: full
    platforms: posix
options:
  name:
    description:
      - Group name, a top-level directory under O(resctrl_root).
      - C(/) is the default group. Names with C(/), C(.), C(..), a newline, or resctrl's own
        C(info), C(mon_groups), C(mon_data) are refused.
    type: str
    required: true
  state:
    description:
      - V(present) creates the group if needed and applies O(l3), O(l3_code), O(l3_data), O(mb)
        and O(pids).
      - V(absent) removes the group; the kernel moves its tasks to the default group.
    type: str
    choices: [present, absent]
    default: present
  l3:
    description:
      - L3 cache way mask, as hex text (V(7f0) or V(0x7f0)) or an integer, for every cache id;
        or a mapping of cache id to mask, which sets only the ids it names.
      - Quote hex masks in YAML. An unquoted V(30) is the integer 30 (V(0x1e)), not V(0x30).
      - When resctrl is mounted with C(cdp), sets both the code and the data mask.
    type: raw
  l3_code:
    description:
      - L3 code mask (CDP), same forms as O(l3). Needs resctrl mounted with C(-o cdp).
    type: raw
  l3_data:
    description:
      - L3 data mask (CDP), same forms as O(l3). Needs resctrl mounted with C(-o cdp).
    type: raw
  mb:
    description:
      - Memory bandwidth limit for every domain (an integer), or a mapping of domain (L3 cache id)
        to limit.
      - The unit depends on the platform, see RV(info.mb.unit). Intel and others use percent,
        from C(info/MB/min_bandwidth) to 100 in steps of C(info/MB/bandwidth_gran). AMD uses
        multiples of 1/8 GB/s, 0 to 2048 (16 is 2 GB/s, 2048 is unthrottled). Mounted with
        C(mba_MBps), the unit is MiB/s.
    type: raw
  pids:
    description:
      - Processes to put in the group. Tasks already in the group stay. Other tasks are not
        taken out.
      - resctrl moves one thread per id written. With O(all_threads), every thread listed under
        C(/proc/<pid>/task) is moved. Threads created later inherit the group.
    type: list
    elements: int
  all_threads:
    description:
      - Move every thread of each process in O(pids). When false, only the ids given are moved.
    type: bool
    default: true
  mounts_file:
    description:
      - The mount table used to check that O(resctrl_root) is a mounted resctrl and to read its
        options (C(cdp), C(mba_MBps)).
    type: path
    default: /proc/mounts
  cpuinfo_file:
    description: Read for C(vendor_id), which decides the unit of O(mb).
    type: path
    default: /proc/cpuinfo
notes:
  - Mount resctrl first, for example with C(mount -t resctrl resctrl /sys/fs/resctrl). Add
    C(-o cdp) for separate code and data masks, or C(-o mba_MBps) for bandwidth in MiB/s.
  - Groups are managed as shareable. Exclusive, pseudo-locked and monitoring-only (MON)
    groups are not managed.
  - A new group starts with every cache way and unthrottled bandwidth. Settings that are not
    given stay as the kernel set them.
seealso:
  - name: resctrl in the Linux kernel documentation
    description: The file system this module drives.
    link: https://docs.kernel.org/filesystems/resctrl.html
"""

EXAMPLES = r"""
- name: Give the web tier 4 of the 11 L3 ways and half the memory bandwidth, and move its process
  firm.core.resctrl:
    name: web
    l3: "0f0"
    mb: 50
    pids: [4242]

- name: Use different ways on each socket (cache ids 0 and 1)
  firm.core.resctrl:
    name: batch
    l3:
      0: "7f0"
      1: "00f"

- name: Keep unclassified tasks out of the ways given to web (the default group is "/")
  firm.core.resctrl:
    name: /
    l3: "00f"

- name: With CDP (mounted with -o cdp), give code and data their own ways
  firm.core.resctrl:
    name: web
    l3_code: "00f"
    l3_data: "7f0"

- name: On AMD, limit memory bandwidth on cache 1 to 2 GB/s (16 x 1/8 GB/s)
  firm.core.resctrl:
    name: batch
    mb:
      1: 16

- name: Mounted with mba_MBps, cap memory bandwidth at 2048 MiB/s on every domain
  firm.core.resctrl:
    name: batch
    mb: 2048

- name: Read the monitoring counters of an existing group (nothing to set, so nothing is written)
  firm.core.resctrl:
    name: web
  register: web_rdt

- name: Remove the group; its tasks go back to the default group
  firm.core.resctrl:
    name: web
    state: absent
"""

RETURN = r"""
group:
  description: The group name (C(/) for the default group).
  returned: always
  type: str
  sample: web
path:
  description: The group's directory.
  returned: always
  type: str
  sample: /sys/fs/resctrl/web
created:
  description: Whether the group was created (or would be, in check mode).
  returned: always
  type: bool
removed:
  description: Whether the group was removed (or would be, in check mode).
  returned: when O(state=absent)
  type: bool
written:
  description: The schemata lines written (or to be written in check mode). Only the changed domains are included.
  returned: when O(state=present)
  type: list
  elements: str
  sample: ["L3:0=f0;1=f0", "MB:0=50;1=50"]
tasks_added:
  description: Thread ids written to the group's C(tasks) (or to be written in check mode).
  returned: when O(state=present)
  type: list
  elements: int
  sample: [4242, 4243]
schemata:
  description:
    - The group's schemata after the change (predicted in check mode). The keys are resource,
      then domain id. Masks are hex strings as the kernel shows them. Bandwidths are integers in
      RV(info.mb.unit).
  returned: when O(state=present)
  type: dict
  sample: {"L3": {"0": "f0", "1": "f0"}, "MB": {"0": 50, "1": 50}}
info:
  description: The platform limits used for validation, read from C(info/), the mount options and C(/proc/cpuinfo).
  returned: always
  type: dict
  contains:
    vendor:
      description: V(intel), V(amd) (AMD and Hygon) or V(unknown).
      type: str
    cdp:
      description: Mounted with C(cdp), so the resources are L3CODE and L3DATA instead of L3.
      type: bool
    mba_mbps:
      description: Mounted with C(mba_MBps).
      type: bool
    num_closids:
      description: How many groups can exist, the default group included.
      type: int
    caches:
      description: For each cache resource, C(cbm_mask), C(cbm_len), C(min_cbm_bits), C(num_closids), C(shareable_bits), C(sparse_masks) and C(domains).
      type: dict
    mb:
      description: C(min_bandwidth), C(bandwidth_gran), C(max_bandwidth), C(unit) (V(percent), V(1/8 GB/s) or V(MiB/s)) and C(domains). Null without memory bandwidth allocation.
      type: dict
    monitoring:
      description: C(features) and C(num_rmids) from C(info/L3_MON). Null without monitoring.
      type: dict
  sample:
    vendor: intel
    cdp: false
    mba_mbps: false
    num_closids: 16
    caches: {"L3": {"cbm_mask": "7ff", "cbm_len": 11, "min_cbm_bits": 1, "num_closids": 16,
                    "shareable_bits": "600", "sparse_masks": false, "domains": [0, 1]}}
    mb: {"min_bandwidth": 10, "bandwidth_gran": 10, "max_bandwidth": 100, "num_closids": 16,
         "delay_linear": true, "unit": "percent", "domains": [0, 1]}
    monitoring: {"features": ["llc_occupancy", "mbm_total_bytes", "mbm_local_bytes"], "num_rmids": 176}
monitoring:
  description:
    - The group's monitoring counters per L3 domain (cache id). C(llc_occupancy) is in bytes.
      C(mbm_total_bytes) and C(mbm_local_bytes) are running byte counts.
    - A counter the hardware could not read is a string, for example V(Unavailable).
    - The result is empty when the group does not exist (yet) or monitoring is off.
  returned: when O(state=present)
  type: dict
  sample: {"0": {"llc_occupancy": 1245184, "mbm_total_bytes": 58720256, "mbm_local_bytes": "Unavailable"}}
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from ansible_collections.firm.core.plugins.module_utils.kernel import KERNEL, Kernel
from ansible_collections.firm.core.plugins.module_utils.resctrl import (
    DEFAULT_GROUP,
    Schemata,
    build_request,
    check_group_name,
    ensure_absent,
    ensure_group,
    group_exists,
    group_path,
    read_info,
    read_monitoring,
    read_schemata,
    read_tasks,
    task_ids,
)


def argument_spec() -> dict[str, Any]:
    return {
        "name": {"type": "str", "required": True},
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "l3": {"type": "raw"},
        "l3_code": {"type": "raw"},
        "l3_data": {"type": "raw"},
        "mb": {"type": "raw"},
        "pids": {"type": "list", "elements": "int"},
        "all_threads": {"type": "bool", "default": True},
        "resctrl_root": {"type": "path", "default": "/sys/fs/resctrl"},
        "mounts_file": {"type": "path", "default": "/proc/mounts"},
        "cpuinfo_file": {"type": "path", "default": "/proc/cpuinfo"},
        "proc_root": {"type": "path", "default": "/proc"},
    }


MUTUALLY_EXCLUSIVE = [("l3", "l3_code"), ("l3", "l3_data")]
SETTINGS = ("l3", "l3_code", "l3_data", "mb", "pids")


def _diff_text(schemata: Schemata | None, tasks: list[int]) -> str:
    """The group as a diff shows it: its schemata, then the requested tasks it holds."""
    if schemata is None:
        return ""
    text = schemata.text()
    if tasks:
        text += "tasks: " + " ".join(str(t) for t in tasks) + "\n"
    return text


def present(params: dict[str, Any], check_mode: bool, kernel: Kernel = KERNEL) -> dict[str, Any]:
    root = params["resctrl_root"]
    name = params["name"]
    info = read_info(root, params["mounts_file"], params["cpuinfo_file"])
    request = build_request(
        info, l3=params["l3"], l3_code=params["l3_code"], l3_data=params["l3_data"], mb=params["mb"]
    )
    tasks = task_ids(params["pids"] or [], params["proc_root"], params["all_threads"])
    held = sorted(read_tasks(root, name) & set(tasks)) if group_exists(root, name) else []
    change = ensure_group(info, name, request, tasks, check_mode=check_mode, kernel=kernel)
    header = group_path(root, name)
    return {
        "changed": change.changed,
        "group": name,
        "path": header,
        "created": change.created,
        "written": list(change.lines.values()),
        "tasks_added": list(change.moved),
        "schemata": change.after.as_dict() if change.after is not None else {},
        "info": info.as_dict(),
        "monitoring": {str(domain): values for domain, values in read_monitoring(root, name).items()}
        if group_exists(root, name)
        else {},
        "diff": {
            "before": _diff_text(change.before, held),
            "after": _diff_text(change.after, sorted(set(held) | set(change.moved))),
            "before_header": header,
            "after_header": header,
        },
    }


def absent(params: dict[str, Any], check_mode: bool, kernel: Kernel = KERNEL) -> dict[str, Any]:
    root = params["resctrl_root"]
    name = params["name"]
    info = read_info(root, params["mounts_file"], params["cpuinfo_file"])
    check_group_name(name)
    given = [option for option in SETTINGS if params[option] is not None]
    if given:
        raise FirmError(
            f"state=absent removes the group; {', '.join(given)} cannot be applied to it",
            fix="drop those options, or use state=present",
        )
    header = group_path(root, name)
    before = _diff_text(read_schemata_if_exists(root, name), [])
    removed = ensure_absent(root, name, check_mode=check_mode, kernel=kernel)
    return {
        "changed": removed,
        "group": name,
        "path": header,
        "created": False,
        "removed": removed,
        "info": info.as_dict(),
        "diff": {"before": before, "after": "", "before_header": header, "after_header": header},
    }


def read_schemata_if_exists(root: str, name: str) -> Schemata | None:
    return read_schemata(root, name) if name != DEFAULT_GROUP and group_exists(root, name) else None


def main(kernel: Kernel = KERNEL) -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    try:
        if module.params["state"] == "absent":
            result = absent(module.params, module.check_mode, kernel)
        else:
            result = present(module.params, module.check_mode, kernel)
    except FirmError as err:
        module.fail_json(**err.as_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
