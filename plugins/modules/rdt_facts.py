#!/usr/bin/python
# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rdt_facts
short_description: Report what firm can control on a node (RDT, kernel, resctrl, cgroups, tc, libpqos)
version_added: "0.1.0"
description:
  - Reads the CPU's RDT flags (Intel CAT, CDP, MBA, CMT, MBM; the same flags name AMD's QoS
    features, plus C(smba) and C(bmec)), the kernel version, whether the kernel has resctrl and where
    it is mounted, the cgroup version of each controller, whether C(tc) is installed and whether
    libpqos initialises.
  - Derives one capability per resource firm manages (CPU, cpuset, memory, disk I/O, network, LLC,
    memory bandwidth and their monitoring), with how it is controlled or why it cannot be.
  - libpqos is probed in a child process, in OS (resctrl) mode, because initialising it in MSR or
    AUTO mode aborts the interpreter on machines without RDT.
  - Changes nothing.
author:
  - firm developers
extends_documentation_fragment:
  - firm.core.common
  - firm.core.common.cgroup_root
  - firm.core.common.proc_root
  - firm.core.common.resctrl_root
options:
  probe_pqos:
    description:
      - Whether to try initialising libpqos.
    type: bool
    default: true
  pqos_python:
    description:
      - Python interpreter that has the C(pqos) package; the module's own interpreter by default.
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
"""

EXAMPLES = r"""
- name: Read the node's RDT facts
  firm.core.rdt_facts:

- name: Show what firm can control here
  ansible.builtin.debug:
    var: ansible_facts.firm_rdt.capabilities

- name: Read the facts without probing libpqos
  firm.core.rdt_facts:
    probe_pqos: false
"""

RETURN = r"""
ansible_facts:
  description: Facts under the key C(firm_rdt).
  returned: always
  type: dict
  contains:
    firm_rdt:
      description: The node's facts.
      type: dict
      returned: always
      contains:
        vendor:
          description: CPU vendor from /proc/cpuinfo, C(intel), C(amd) (AMD and Hygon) or C(unknown).
          type: str
          sample: intel
        cpu_flags:
          description: Each RDT-related CPU flag and whether the CPU has it.
          type: dict
          sample: {"cat_l3": true, "cdp_l3": true, "mba": true, "cqm_occup_llc": true}
        kernel:
          description: Kernel release.
          type: str
          sample: 6.1.0-18-amd64
        kernel_supported:
          description: Whether the kernel is at least 4.12.
          type: bool
        resctrl_in_kernel:
          description: Whether the kernel lists resctrl in /proc/filesystems.
          type: bool
        resctrl_mount:
          description: Where resctrl is mounted, or null.
          type: str
          sample: /sys/fs/resctrl
        resctrl_mount_options:
          description: resctrl's mount options (C(cdp), C(mba_MBps), ...).
          type: list
          elements: str
        resctrl_mount_problem:
          description: Why resctrl is not usable at O(resctrl_root) and how to mount it; empty when it is mounted.
          type: str
        cgroup_versions:
          description: The cgroup version of each controller firm manages.
          type: dict
          sample: {"cpu": 1, "blkio": 1, "memory": 2}
        tc_path:
          description: Path of the tc command, or null.
          type: str
        pqos:
          description: What the libpqos probe found (C(available), C(interface), C(capabilities), C(error)).
          type: dict
          sample: {"available": false, "error": "pqos init in OS mode: ('pqos_init returned 8', 8)"}
        capabilities:
          description: Per resource, C(available) and C(how) it is controlled or why it cannot be.
          type: dict
          sample: {"cpu": {"available": true, "how": "CFS bandwidth and weight (cgroup v1)"},
                   "llc": {"available": false, "how": "the CPU has no cat_l3 flag (no cache allocation (CAT) hardware)"}}
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.firm.core.plugins.module_utils import rdt


def argument_spec() -> dict[str, Any]:
    return {
        "probe_pqos": {"type": "bool", "default": True},
        "pqos_python": {"type": "path"},
        "cgroup_root": {"type": "path", "default": "/sys/fs/cgroup"},
        "proc_root": {"type": "path", "default": "/proc"},
        "resctrl_root": {"type": "path", "default": "/sys/fs/resctrl"},
    }


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    facts = rdt.gather(
        params["cgroup_root"],
        params["proc_root"],
        params["resctrl_root"],
        params["probe_pqos"],
        params["pqos_python"],
    )
    module.exit_json(changed=False, ansible_facts={"firm_rdt": facts.as_dict()})


if __name__ == "__main__":
    main()
