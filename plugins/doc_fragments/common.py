# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""Documentation shared by firm's modules: the check and diff mode attributes and the mount points
of the kernel file systems they read and write (each module's ``argument_spec`` has the same defaults)."""

from __future__ import annotations


class ModuleDocFragment:
    # The attributes every module documents; each module states its own level of support.
    DOCUMENTATION = r"""
attributes:
  check_mode:
    description: Can run in check mode and return the changes it would make without making them.
  diff_mode:
    description: Returns the state before and after the change when run with C(--diff).
"""

    CGROUP_ROOT = r"""
options:
  cgroup_root:
    description:
      - Where the cgroup hierarchies are mounted.
    type: path
    default: /sys/fs/cgroup
"""

    SYSFS_ROOT = r"""
options:
  sysfs_root:
    description:
      - Where sysfs is mounted; used to resolve block devices.
    type: path
    default: /sys
"""

    PROC_ROOT = r"""
options:
  proc_root:
    description:
      - Where procfs is mounted; used to find processes, their threads and the groups they are in.
    type: path
    default: /proc
"""

    RESCTRL_ROOT = r"""
options:
  resctrl_root:
    description:
      - Where resctrl is, or would be, mounted.
    type: path
    default: /sys/fs/resctrl
"""
