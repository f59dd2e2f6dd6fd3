"""``firm testbed ...``: bring the embedded application up or down, show it, export its traces."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from ansible_collections.firm.core.plugins.module_utils.process import ProcessRef
from firm.testbed import config as testbed_config
from firm.testbed import lifecycle
from firm.testbed.store import RedisTraceStore
from firm.tracing.export import jaeger_document
from firm.tracing.parse import parse_duration_us

config_option = click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
                             help="YAML file overriding the testbed's defaults (see docs/testbed.md).")


def _load(config_path: str | None) -> testbed_config.TestbedConfig:
    try:
        return testbed_config.load(config_path)
    except testbed_config.ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("testbed")
def testbed() -> None:
    """The embedded default: a traced social network on this machine (needs root)."""


@testbed.command("up")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for Ansible).")
def up_command(config_path: str | None, as_json: bool) -> None:
    """Start every service in its own namespace and cgroups; does nothing when it already runs."""
    config = _load(config_path)
    say = (lambda message: None) if as_json else (lambda message: click.echo(f"  {message}", err=True))
    try:
        changed = lifecycle.up(config, say)
    except (lifecycle.TestbedError, FirmError, OSError) as exc:
        raise click.ClickException(f"testbed did not start: {exc}") from exc
    state = lifecycle.read_state(config) or {}
    if as_json:
        click.echo(json.dumps({"changed": changed, "frontend": state.get("frontend"),
                               "instances": len(state.get("instances", []))}))
    else:
        click.echo(f"testbed {'up' if changed else 'already up'}: frontend at {state.get('frontend')}")


@testbed.command("down")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for Ansible).")
def down_command(config_path: str | None, as_json: bool) -> None:
    """Remove every process, namespace, veth, bridge, cgroup and file of the testbed."""
    removed = lifecycle.down(_load(config_path), progress=lambda message: None)
    if as_json:
        click.echo(json.dumps({"changed": bool(removed), "removed": removed}))
    else:
        click.echo(f"testbed down: removed {len(removed)} things" if removed else "testbed was not up")


@testbed.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status_command(config_path: str | None, as_json: bool) -> None:
    """Each instance: whether it runs and answers, its limits, and the latest latency against the SLO."""
    config = _load(config_path)
    state = lifecycle.read_state(config)
    if state is None:
        raise click.ClickException("the testbed is not up; start it with `firm testbed up`")
    rows = asyncio.run(_instance_rows(config, state))
    if as_json:
        click.echo(json.dumps({"frontend": state["frontend"], "instances": rows}, indent=2))
        return
    table = Table(title=f"firm testbed: frontend {state['frontend']}")
    for column in ("instance", "address", "running", "answers (ms)", "CPUs", "CPU quota", "weight", "memory max",
                   "CPU used"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["address"], "yes" if row["running"] else "[red]no[/red]",
                      f"{row['health_ms']:.1f}" if row["health_ms"] is not None else "[red]no[/red]",
                      row["cpus"], row["cpu_quota"], str(row["cpu_weight"]), row["memory_max"],
                      f"{row['cpu_used_cores']:.2f}")
    Console().print(table)


async def _instance_rows(config: testbed_config.TestbedConfig, state: dict[str, Any]) -> list[dict[str, Any]]:
    layout = cgroup.detect_layout()
    instances = {i.name: i for i in config.instances()}
    before = {e["name"]: _cpu_ns(layout, e["cgroup"]) for e in state["instances"]}
    started = time.monotonic()
    health = {name: await lifecycle.health(config, instance) if name != "redis" else None
              for name, instance in instances.items()}
    await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
    elapsed = time.monotonic() - started
    rows = []
    for entry in state["instances"]:
        group = cgroup.group_at(layout, entry["cgroup"])
        limits = cgroup.read_settings(group, cgroup.CgroupSettings(cpu_quota_us=-1, cpu_weight=100, cpuset_cpus="0",
                                                                   memory_max=-1))
        quota = int(limits["cpu_quota_us"])  # type: ignore[call-overload]
        memory = int(limits["memory_max"])  # type: ignore[call-overload]
        rows.append({
            "name": entry["name"], "service": entry["service"], "address": entry["address"],
            "running": bool(entry.get("process")) and ProcessRef(**entry["process"]).alive(),
            "health_ms": health.get(entry["name"]), "cpus": limits["cpuset_cpus"],
            "cpu_quota": "unlimited" if quota < 0 else f"{quota / int(limits['cpu_period_us']):.2f} CPU",  # type: ignore[call-overload]
            "cpu_weight": limits["cpu_weight"],
            "memory_max": "unlimited" if memory < 0 else f"{memory >> 20} MiB",
            "cpu_used_cores": (_cpu_ns(layout, entry["cgroup"]) - before[entry["name"]]) / 1e9 / elapsed,
        })
    return rows


def _cpu_ns(layout: cgroup.Layout, path: str) -> int:
    return cgroup.read_stats(cgroup.group_at(layout, path)).cpu_usage_ns or 0


@testbed.command("traces")
@config_option
@click.option("--last", "window", default="60s", show_default=True, help="How far back, e.g. 30s, 5m.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="File to write (default: stdout).")
def traces_command(config_path: str | None, window: str, output: str | None) -> None:
    """Export the recent traces as Jaeger JSON (readable by Jaeger UI and `firm critical-path`)."""
    config = _load(config_path)
    state = lifecycle.read_state(config)
    if state is None:
        raise click.ClickException("the testbed is not up; start it with `firm testbed up`")
    try:
        span_us = parse_duration_us(window)
    except FirmError as exc:
        raise click.ClickException(f"--last: {exc}") from exc
    now = int(time.time() * 1e6)
    traces = RedisTraceStore.at(state["redis_address"]).traces(now - span_us, now)
    text = json.dumps(jaeger_document(traces))
    if output:
        Path(output).write_text(text)
        click.echo(f"wrote {len(traces)} traces to {output}", err=True)
    else:
        sys.stdout.write(text + "\n")
