#!/usr/bin/python
# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cgroup
short_description: Set the CPU, cpuset, disk and memory limits of a control group, on cgroup v1 or v2
version_added: "0.1.0"
description:
  - Creates or removes a control group in every mounted hierarchy firm manages (cpu, cpuacct, cpuset,
    blkio, memory, pids), sets its limits and moves processes into it.
  - The cgroup version is detected per controller, so hybrid hosts (v1 controllers beside a unified
    tree) work as well as pure v2 hosts. Values use the same units on both versions.
  - The target is a group path, the groups of a running process, or the group of a Kubernetes pod or
    container (cgroupfs and systemd drivers; containerd, CRI-O and Docker).
  - Only values that differ are written. Every value is validated before anything is written, and a
    change that writes several files is rolled back when the kernel refuses one of them.
  - The kubelet rewrites the limits of pods it manages every few seconds; a limit on a pod that must
    last goes through the Kubernetes API or is re-asserted.
author:
  - firm developers
extends_documentation_fragment:
  - firm.core.common
  - firm.core.common.cgroup_root
  - firm.core.common.sysfs_root
  - firm.core.common.proc_root
options:
  path:
    description:
      - Path of the group relative to each controller's root, for example C(firm/web).
      - Absolute paths, C(..) and symlinks that lead out of the root are refused.
    type: str
  pid:
    description:
      - Target the groups process O(pid) is in (read from C(/proc/PID/cgroup)); they must exist.
    type: int
  pod_uid:
    description:
      - Target the group of the Kubernetes pod with this UID (C(metadata.uid)), whatever its QoS class.
      - Any form the kubelet shows is accepted, for both cgroup drivers - dashed, with underscores (systemd slice
        names), upper case, with the C(pod) prefix of its cgroup - and a static pod's 32-hex-digit
        C(kubernetes.io/config.hash).
    type: str
  container_id:
    description:
      - With O(pod_uid), target one container, for example C(containerd://4f2a...) from
        C(status.containerStatuses[].containerID); the prefix selects the runtime.
      - The container's cgroup name (C(cri-containerd-ID.scope), C(crio-ID), C(docker-ID.scope)) is accepted
        too. An empty string is refused rather than read as the whole pod.
    type: str
  cgroup_driver:
    description:
      - The kubelet's cgroup driver; V(auto) tries both.
    type: str
    choices: [auto, cgroupfs, systemd]
    default: auto
  container_runtime:
    description:
      - The container runtime; V(auto) takes it from the O(container_id) prefix or tries all.
    type: str
    choices: [auto, containerd, cri-o, docker]
    default: auto
  state:
    description:
      - V(present) creates the group where it is missing (only with O(path)) and applies the limits.
      - V(absent) removes the group and its sub-groups; it fails while processes are inside.
    type: str
    choices: [present, absent]
    default: present
  cpu_quota_us:
    description:
      - CPU time the group may use per period, in microseconds (C(cpu.cfs_quota_us) or C(cpu.max)).
      - C(-1) removes the limit. At least 1000 (1 ms), at most 17592186044415 (the kernel's largest quota).
    type: int
  cpu_period_us:
    description:
      - Length of the CPU bandwidth period in microseconds, 1000 to 1000000.
      - When unset, the group's current period is kept (100000 for a new group).
    type: int
  cpu_weight:
    description:
      - Relative CPU share in cgroup v2 units, 1 to 10000 (100 is the default share).
      - On cgroup v1 it is written as C(cpu.shares) = weight * 1024 / 100.
    type: int
  cpuset_cpus:
    description:
      - CPUs the group may run on, in the kernel's list format (C(0-1,3)), within the parent's.
    type: str
  cpuset_mems:
    description:
      - Memory nodes the group may allocate from, in the kernel's list format.
    type: str
  devices:
    description:
      - Disk throttles, one entry per device. A field that is left out means no limit for it;
        devices that are not listed are left as they are.
      - Limits apply to the whole disk, so a partition is resolved to its disk.
      - Byte rates go up to 18446744073709551614 and operation rates up to 4294967294; the kernel reads the next
        value as no limit.
    type: list
    elements: dict
    suboptions:
      device:
        description:
          - Block device path (C(/dev/sda), C(/dev/sda1)) or C(MAJ:MIN).
        type: str
        required: true
      read_bps:
        description: Read bytes per second.
        type: int
      write_bps:
        description: Written bytes per second.
        type: int
      read_iops:
        description: Read operations per second.
        type: int
      write_iops:
        description: Write operations per second.
        type: int
  memory_max:
    description:
      - Memory limit in bytes, or with a K, M, G or T suffix (powers of 1024; C(512M), C(512MB), C(512MiB) and
        C(512mb) are the same); C(max) or C(-1) for none. C(512Mb) is refused as ambiguous (bits or bytes).
      - The kernel holds whole pages, so the limit is compared (and reported) rounded down to a page.
      - At most 4611686018427387903 bytes (2^62 - 1); larger limits read back as none, so give C(max).
    type: str
  pids:
    description:
      - Processes to move into the group (with all their threads), in every hierarchy.
    type: list
    elements: int
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - Needs root, and cgroup hierarchies mounted read-write.
seealso:
  - name: Control Group v2
    description: The kernel's documentation of cgroup v2 interface files.
    link: https://docs.kernel.org/admin-guide/cgroup-v2.html
"""

EXAMPLES = r"""
- name: Give the web service 20 % of one CPU and two cores to run on
  firm.core.cgroup:
    path: firm/web
    cpu_quota_us: 20000
    cpu_period_us: 100000
    cpuset_cpus: "0-1"

- name: Throttle the storage service's writes to 10 MB/s and cap its memory
  firm.core.cgroup:
    path: firm/storage
    devices:
      - device: /dev/vda
        write_bps: 10485760
    memory_max: 512M

- name: Move a process into a group
  firm.core.cgroup:
    path: firm/web
    pids:
      - "{{ web_pid }}"

- name: Raise the CPU quota of a Kubernetes container
  firm.core.cgroup:
    pod_uid: 6f1c1f4e-1e1b-4c57-9d5b-0b6d3c2d9a10
    container_id: containerd://4f2a7c1e9b0d3a6f8e5c2b1a0d9f8e7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e
    cpu_quota_us: 150000

- name: Remove the group
  firm.core.cgroup:
    path: firm/web
    state: absent
"""

RETURN = r"""
paths:
  description: The group's directory in each controller's hierarchy.
  returned: success
  type: dict
  sample: {"cpu": "/sys/fs/cgroup/cpu/firm/web", "blkio": "/sys/fs/cgroup/blkio/firm/web"}
versions:
  description: The cgroup version of each managed controller on this host.
  returned: success
  type: dict
  sample: {"cpu": 1, "cpuacct": 1, "cpuset": 1, "blkio": 1, "memory": 1, "pids": 1}
settings:
  description: The current values of the limits that were asked for, in the module's units.
  returned: when state is present
  type: dict
  sample: {"cpu_quota_us": 20000, "cpu_period_us": 100000, "cpuset_cpus": "0-1"}
writes:
  description: The control files written (or that would be written in check mode), with their values.
  returned: always
  type: list
  elements: dict
  sample: [{"path": "/sys/fs/cgroup/cpu/firm/web/cpu.cfs_quota_us", "value": "20000"}]
attached:
  description: Per hierarchy directory, the processes moved in.
  returned: when state is present
  type: dict
  sample: {"/sys/fs/cgroup/cpu/firm/web": [4242]}
stats:
  description: Usage and throttling counters of the group (nanoseconds, bytes, counts); C(null) for
    controllers that are not mounted.
  returned: when state is present and the group exists
  type: dict
  sample: {"cpu_usage_ns": 123456789, "cpu_periods": 40, "cpu_throttled_periods": 31,
           "cpu_throttled_ns": 2400000000, "memory_bytes": 1048576, "disk_read_bytes": 0,
           "disk_write_bytes": 20971520, "pids": 1}
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from ansible_collections.firm.core.plugins.module_utils.kernel import KERNEL, Kernel


def argument_spec() -> dict[str, Any]:
    return {
        "path": {"type": "str"},
        "pid": {"type": "int"},
        "pod_uid": {"type": "str"},
        "container_id": {"type": "str"},
        "cgroup_driver": {"type": "str", "choices": ["auto", "cgroupfs", "systemd"], "default": "auto"},
        "container_runtime": {
            "type": "str",
            "choices": ["auto", "containerd", "cri-o", "docker"],
            "default": "auto",
        },
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "cpu_quota_us": {"type": "int"},
        "cpu_period_us": {"type": "int"},
        "cpu_weight": {"type": "int"},
        "cpuset_cpus": {"type": "str"},
        "cpuset_mems": {"type": "str"},
        "devices": {
            "type": "list",
            "elements": "dict",
            "options": {
                "device": {"type": "str", "required": True},
                "read_bps": {"type": "int"},
                "write_bps": {"type": "int"},
                "read_iops": {"type": "int"},
                "write_iops": {"type": "int"},
            },
        },
        "memory_max": {"type": "str"},
        "pids": {"type": "list", "elements": "int"},
        "cgroup_root": {"type": "path", "default": "/sys/fs/cgroup"},
        "sysfs_root": {"type": "path", "default": "/sys"},
        "proc_root": {"type": "path", "default": "/proc"},
    }


def build_module() -> AnsibleModule:
    return AnsibleModule(
        argument_spec=argument_spec(),
        required_one_of=[["path", "pid", "pod_uid"]],
        mutually_exclusive=[["path", "pid", "pod_uid"]],
        required_by={"container_id": "pod_uid"},
        required_if=[["state", "absent", ["path"]]],
        supports_check_mode=True,
    )


def settings_from(params: dict[str, Any]) -> cgroup.CgroupSettings:
    disk = tuple(
        cgroup.DiskLimit(d["device"], d["read_bps"], d["write_bps"], d["read_iops"], d["write_iops"])
        for d in params["devices"] or []
    )
    memory = cgroup.parse_size(params["memory_max"]) if params["memory_max"] is not None else None
    return cgroup.CgroupSettings(
        params["cpu_quota_us"],
        params["cpu_period_us"],
        params["cpu_weight"],
        params["cpuset_cpus"],
        params["cpuset_mems"],
        memory,
        disk,
    )


def target_group(params: dict[str, Any], layout: cgroup.Layout) -> cgroup.Group:
    if params["pid"] is not None:
        return cgroup.group_of_pid(layout, params["pid"], params["proc_root"])
    if params["pod_uid"] is not None:
        return cgroup.group_of_pod(
            layout,
            params["pod_uid"],
            params["container_id"],
            params["cgroup_driver"],
            params["container_runtime"],
        )
    return cgroup.group_at(layout, params["path"])


def run(params: dict[str, Any], check_mode: bool, kernel: Kernel = KERNEL) -> dict[str, Any]:
    """Argument spec -> :func:`cgroup.ensure_cgroup` -> the module's result."""
    layout = cgroup.detect_layout(params["cgroup_root"])
    group = target_group(params, layout)
    if params["state"] == "absent":
        change = cgroup.ensure_cgroup(group, None, check_mode=check_mode, kernel=kernel)
        result: dict[str, Any] = {
            "changed": change.changed,
            "writes": [],
            "diff": {"before": {"exists": change.removed}, "after": {"exists": False}},
        }
    else:
        change = cgroup.ensure_cgroup(
            group,
            settings_from(params),
            pids=params["pids"] or [],
            create=params["path"] is not None,
            check_mode=check_mode,
            sysfs_root=params["sysfs_root"],
            proc_root=params["proc_root"],
            kernel=kernel,
        )
        after = change.after or {}
        result = {
            "changed": change.changed,
            "settings": after,
            "writes": [w.as_dict() for w in change.writes],
            "attached": change.attached,
            "diff": {
                "before": dict(change.before or {}, exists=not change.created),
                "after": dict(after, exists=True),
            },
        }
        if group.exists():
            result["stats"] = cgroup.read_stats(group).as_dict()
    result["paths"] = {name: group.dir(name) for name in layout.hierarchies}
    result["versions"] = layout.versions()
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
