"""What firm can control on this machine, as a table for people and JSON for programs."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ansible_collections.firm.core.plugins.module_utils import rdt

RESOURCE_NAMES = {
    "cpu": "CPU quota (CFS bandwidth)",
    "cpu_weight": "CPU weight",
    "cpuset": "CPU pinning",
    "memory": "Memory limit",
    "disk_io": "Disk I/O throttling",
    "network": "Network shaping",
    "llc": "Last-level cache (CAT)",
    "memory_bandwidth": "Memory bandwidth (MBA)",
    "llc_monitoring": "Cache occupancy monitoring",
    "memory_bandwidth_monitoring": "Memory bandwidth monitoring",
}


def gather(probe_pqos: bool = True) -> rdt.NodeFacts:
    return rdt.gather(probe_libpqos=probe_pqos)


def report(facts: rdt.NodeFacts) -> dict[str, Any]:
    """The facts, with a one-line verdict: can firm manage this node, and for what."""
    usable = [name for name, cap in facts.capabilities.items() if cap.available]
    return {**facts.as_dict(), "controllable": usable, "ready": facts.kernel_supported and "cpu" in usable}


def render(facts: rdt.NodeFacts, console: Console) -> None:
    table = Table(title="What firm can control on this machine")
    table.add_column("Resource")
    table.add_column("Available")
    table.add_column("How, or why not")
    for name, capability in facts.capabilities.items():
        mark = "[green]yes[/green]" if capability.available else "[red]no[/red]"
        table.add_row(RESOURCE_NAMES.get(name, name), mark, capability.how)
    console.print(table)
    versions = ", ".join(f"{c} v{v}" for c, v in sorted(facts.cgroup_versions.items())) or "none"
    console.print(
        f"CPU vendor: {facts.vendor}; kernel {facts.kernel} "
        f"({'supported' if facts.kernel_supported else 'older than 4.12: no MBA'})"
    )
    console.print(f"cgroups: {versions}")
    console.print(
        f"resctrl: {facts.resctrl_mount or 'not mounted'}"
        f"{' (kernel has it)' if facts.resctrl_in_kernel else ' (not in this kernel)'}"
    )
    pqos = facts.pqos
    console.print(
        f"libpqos: {'works, ' + str(pqos.get('interface')) + ' interface' if pqos.get('available') else pqos.get('error')}"
    )


CLUSTER_NAMES = {
    "cpu": "CPU limit",
    "memory": "Memory limit",
    "llc": "Last-level cache (CAT)",
    "memory_bandwidth": "Memory bandwidth (MBA)",
    "disk_io": "Disk I/O throttling",
    "network": "Network shaping",
}


def render_cluster(report: dict[str, Any], console: Console) -> None:
    """``firm preflight --cluster``'s report (:func:`firm.cluster.preflight.cluster_report`) as one
    table per node: each resource, whether firm can control it there, and how or why not."""
    for entry in report["nodes"]:
        title = entry["node"] or entry["host"]
        if entry["node"] is not None:
            title += f" (host {entry['host'] or '-'}, kubelet {entry['kubelet_version'] or '?'})"
        table = Table(title=f"What firm can control on {title}")
        table.add_column("Resource")
        table.add_column("Controllable")
        table.add_column("How, or why not")
        for name, label in CLUSTER_NAMES.items():
            if name in entry["controllable"]:
                table.add_row(label, "[green]yes[/green]", entry["controllable"][name])
            elif name in entry["not_controllable"]:
                table.add_row(label, "[red]no[/red]", entry["not_controllable"][name])
        console.print(table)
    if report["hosts_without_node"]:
        console.print(f"inventory hosts that are no node: {', '.join(report['hosts_without_node'])}")
    if not report["api"]:
        console.print("no API server given (--kubeconfig): CPU and memory only through the nodes' cgroups")
    rbac = report.get("rbac")
    if rbac is not None:
        _render_rbac(rbac, console)
    console.print(
        "ready: every node's CPU can be set and firm may make every call it needs"
        if report["ready"]
        else "[red]not ready[/red]: see the tables"
    )


def _render_rbac(rbac: dict[str, Any], console: Console) -> None:
    """The RBAC part of ``firm preflight --cluster`` (:func:`firm.cluster.rbac.rbac_report`)."""
    if rbac["error"]:
        console.print(f"[red]RBAC not checked[/red]: {escape(rbac['error'])}")
        return
    where = (
        f"in namespaces {', '.join(rbac['namespaces'])}"
        if rbac.get("namespaces")
        else "in every namespace (give --cluster-file to check the services' own)"
    )
    table = Table(title=f"What firm may do through the API ({where})")
    table.add_column("Permission")
    table.add_column("Where")
    table.add_column("Allowed")
    table.add_column("For, or the fix")
    for entry in rbac["checked"]:
        scope = "cluster" if entry["namespace"] is None else (entry["namespace"] or "every namespace")
        name = f"{entry['verb']} {entry['group'] + '/' if entry['group'] else ''}{entry['resource']}"
        if entry["allowed"]:
            table.add_row(name, scope, "[green]yes[/green]", entry["why"])
        else:
            mark = "[red]no[/red]" if entry["required"] else "[yellow]no[/yellow] (optional)"
            table.add_row(name, scope, mark, escape(f"{entry['why']}: {entry['fix']}"))
    console.print(table)
