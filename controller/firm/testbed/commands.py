"""``firm testbed ...``: bring the embedded application up or down, show it, export its traces."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import redis
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ansible_collections.firm.core.plugins.module_utils import anomaly, cgroup, redis_auth
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from ansible_collections.firm.core.plugins.module_utils.process import ProcessRef
from firm.cli_options import (
    DEFAULT_REDIS_URL,
    OutputFile,
    json_option,
    redis_reason,
    redis_url_option,
    refuse_empty,
)
from firm.cli_options import config_option as shared_config_option
from firm.load.cli import MAX_SEED
from firm.load.config import MAX_RATE_RPS
from firm.load.stats import WindowStats, percentile
from firm.testbed import config as testbed_config
from firm.testbed import experiment, lifecycle, scale
from firm.testbed.state import TestbedState
from firm.testbed.store import RedisTraceStore
from firm.tracing.export import jaeger_document
from firm.tracing.parse import parse_duration_us
from firm.tracing.source import TraceSourceError, check_window_us
from firm.urls import redact_url

config_option = shared_config_option("YAML file overriding the testbed's defaults (see docs/testbed.md).")


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
@redis_url_option("firm's Redis for telemetry (default: the configuration's telemetry_redis).")
@json_option("Print the result as JSON (for Ansible).")
def up_command(config_path: str | None, redis_url: str | None, as_json: bool) -> None:
    """Start every service in its own namespace and cgroups; does nothing when it already runs."""
    config = _load(config_path)
    if redis_url is not None:
        config = dataclasses.replace(config, telemetry_redis=redis_url)
    say = (lambda message: None) if as_json else (lambda message: click.echo(f"  {message}", err=True))
    try:
        changed = lifecycle.up(config, say)
    except (FirmError, OSError, subprocess.SubprocessError) as exc:
        raise click.ClickException(f"testbed did not start: {exc}") from exc
    state = lifecycle.read_state(config)
    frontend = state.frontend if state else None
    if as_json:
        click.echo(
            json.dumps(
                {"changed": changed, "frontend": frontend, "instances": len(state.instances) if state else 0}
            )
        )
    else:
        click.echo(f"testbed {'up' if changed else 'already up'}: frontend at {frontend}")


@testbed.command("down")
@config_option
@json_option("Print the result as JSON (for Ansible).")
def down_command(config_path: str | None, as_json: bool) -> None:
    """Remove every process, namespace, veth, bridge, cgroup and file of the testbed."""
    removed = lifecycle.down(_load(config_path), progress=lambda message: None)
    if as_json:
        click.echo(json.dumps({"changed": bool(removed), "removed": removed}))
    else:
        click.echo(f"testbed down: removed {len(removed)} things" if removed else "testbed was not up")


@testbed.command("status")
@config_option
@json_option("Print the status as JSON.")
def status_command(config_path: str | None, as_json: bool) -> None:
    """Each instance: whether it runs and answers, its limits, and the latest latency against the SLO."""
    config = _load(config_path)
    state = lifecycle.read_state(config)
    if state is None:
        raise click.ClickException("the testbed is not up; start it with `firm testbed up`")
    rows = asyncio.run(_instance_rows(config, state))
    if as_json:
        click.echo(json.dumps({"frontend": state.frontend, "instances": rows}, indent=2))
        return
    table = Table(title=f"firm testbed: frontend {state.frontend}; latency of the last {LATENCY_WINDOW_S} s")
    for column in (
        "instance",
        "running",
        "answers ms",
        "requests",
        "p50 ms",
        "p99 ms",
        "CPUs",
        "CPU quota",
        "weight",
        "memory max",
        "CPU used",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["name"],
            "yes" if row["running"] else "[red]no[/red]",
            f"{row['health_ms']:.1f}" if row["health_ms"] is not None else "-",
            str(row["requests"]),
            _ms(row["p50_ms"]),
            _ms(row["p99_ms"]),
            row["cpus"],
            row["cpu_quota"],
            str(row["cpu_weight"]),
            row["memory_max"],
            f"{row['cpu_used_cores']:.2f}",
        )
    Console().print(table)


LATENCY_WINDOW_S = 30
"""How far back `firm testbed status` looks for each instance's latency (its server spans)."""


def _server_latencies(state: TestbedState) -> dict[str, list[float]]:
    """Per instance, the durations (ms) of the requests it served in the last LATENCY_WINDOW_S."""
    now = int(time.time() * 1e6)
    try:
        records = RedisTraceStore.of(state).records(now - LATENCY_WINDOW_S * 1_000_000, now)
    except redis.RedisError:
        return {}
    latencies: dict[str, list[float]] = {}
    for record in records:
        if record.get("kind") == "server" and record["start_us"] >= now - LATENCY_WINDOW_S * 1_000_000:
            latencies.setdefault(record["instance"], []).append(record["duration_us"] / 1000)
    return latencies


async def _instance_rows(config: testbed_config.TestbedConfig, state: TestbedState) -> list[dict[str, Any]]:
    layout = cgroup.detect_layout()
    instances = {i.name: i for i in lifecycle.state_instances(state)}  # scaled-out instances too
    before = {e["name"]: _cpu_ns(layout, e["cgroup"]) for e in state.instances}
    started = time.monotonic()
    health = {
        name: await lifecycle.health(config, instance) if name != "redis" else None
        for name, instance in instances.items()
    }
    served = _server_latencies(state)
    await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
    elapsed = time.monotonic() - started
    rows = []
    for entry in state.instances:
        group = cgroup.group_at(layout, entry["cgroup"])
        limits = cgroup.read_settings(
            group, cgroup.CgroupSettings(cpu_quota_us=-1, cpu_weight=100, cpuset_cpus="0", memory_max=-1)
        )
        quota = int(limits["cpu_quota_us"])  # type: ignore[call-overload]
        memory = int(limits["memory_max"])  # type: ignore[call-overload]
        rows.append(
            {
                "name": entry["name"],
                "service": entry["service"],
                "address": entry["address"],
                "running": bool(entry.get("process")) and ProcessRef(**entry["process"]).alive(),
                "health_ms": health.get(entry["name"]),
                "requests": len(served.get(entry["name"], [])),
                "p50_ms": percentile(served.get(entry["name"], []), 50),
                "p99_ms": percentile(served.get(entry["name"], []), 99),
                "cpus": limits["cpuset_cpus"],
                "cpu_quota": "unlimited" if quota < 0 else f"{quota / int(limits['cpu_period_us']):.2f} CPU",  # type: ignore[call-overload]
                "cpu_weight": limits["cpu_weight"],
                "memory_max": "unlimited" if memory < 0 else f"{memory >> 20} MiB",
                "cpu_used_cores": (_cpu_ns(layout, entry["cgroup"]) - before[entry["name"]]) / 1e9 / elapsed,
            }
        )
    return rows


def _cpu_ns(layout: cgroup.Layout, path: str) -> int:
    return cgroup.read_stats(cgroup.group_at(layout, path)).cpu_usage_ns or 0


@testbed.command("scale")
@click.argument("service")
@click.option(
    "--replicas",
    "count",
    required=True,
    type=click.IntRange(1, 8),
    help="Instances SERVICE should run (1 to its max_instances).",
)
@config_option
@json_option("Print the result as JSON.")
def scale_command(service: str, count: int, config_path: str | None, as_json: bool) -> None:
    """Start or stop instances of SERVICE at runtime until it runs --replicas of them (needs root).

    A new instance gets its own namespace, veth and cgroups (the service's configured limits) and
    joins its callers' round robin; an instance taken away is drained first (no request is dropped),
    newest first. The last instance of a service is never removed; the frontend is not scaled.
    """
    config = _load(config_path)
    say = (lambda message: None) if as_json else (lambda message: click.echo(f"  {message}", err=True))
    added: list[str] = []
    removed: list[str] = []
    try:
        current = scale.replicas(config, service)
        most = scale.max_replicas(config.service(service))
        if count > most:
            raise click.ClickException(
                f"--replicas {count} is above services.{service}.max_instances ({most}); "
                "ask for fewer or raise max_instances in the testbed configuration"
            )
        while len(current) < count:
            added.append(scale.scale_out(config, service, progress=say).name)
            current = scale.replicas(config, service)
        while len(current) > count:
            removed.append(scale.scale_in(config, service, progress=say))
            current = scale.replicas(config, service)
    except FirmError as exc:
        done = (
            f" (after adding {', '.join(added)})"
            if added
            else f" (after removing {', '.join(removed)})"
            if removed
            else ""
        )
        raise click.ClickException(f"{exc}{done}") from exc
    if as_json:
        click.echo(
            json.dumps(
                {
                    "service": service,
                    "changed": bool(added or removed),
                    "replicas": current,
                    "added": added,
                    "removed": removed,
                }
            )
        )
    else:
        click.echo(
            f"{service}: {len(current)} instance{'s' if len(current) != 1 else ''} ({', '.join(current)})"
        )


@testbed.command("traces")
@config_option
@click.option("--last", "window", default="60s", show_default=True, help="How far back, e.g. 30s, 5m.")
@click.option("--output", "-o", type=OutputFile(), help="File to write (default: stdout).")
def traces_command(config_path: str | None, window: str, output: str | None) -> None:
    """Export the recent traces as Jaeger JSON (readable by Jaeger UI and `firm critical-path`)."""
    try:
        span_us = parse_duration_us(window)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}", param_hint="--last") from exc
    if span_us <= 0:
        raise click.BadParameter(
            f"{window!r} is not a positive duration; give e.g. 30s or 5m", param_hint="--last"
        )
    try:
        check_window_us(span_us, "--last")
    except TraceSourceError as exc:
        raise click.BadParameter(exc.message, param_hint="--last") from exc
    config = _load(config_path)
    state = lifecycle.read_state(config)
    if state is None:
        raise click.ClickException("the testbed is not up; start it with `firm testbed up`")
    now = int(time.time() * 1e6)
    try:
        traces = RedisTraceStore.of(state).traces(now - span_us, now)
    except redis.RedisError as exc:
        raise click.ClickException(
            f"cannot read the trace store at {state.redis_address} ({redis_reason(exc)}). Fix: check the testbed with "
            "`firm testbed status`, or restart it (`firm testbed down` then `firm testbed up`)"
        ) from exc
    text = json.dumps(jaeger_document(traces))
    if output and output != "-":  # '-': stdout, as the default
        Path(output).write_text(text)
        click.echo(f"wrote {len(traces)} traces to {output}", err=True)
    else:
        sys.stdout.write(text + "\n")


@testbed.command("run")
@config_option
@click.option(
    "--duration",
    default=90.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True, max=86400),
    help="Seconds of load.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True, max=MAX_RATE_RPS),
    help="Requests per second (default: the configuration's rate_rps).",
)
@click.option(
    "--anomaly",
    "kind",
    default="cpu",
    show_default=True,
    type=click.Choice(["none", *anomaly.kind_names(portable=True)]),
    help="The contention to inject once.",
)
@click.option(
    "--target",
    default="compose-post",
    show_default=True,
    callback=refuse_empty,
    help="Service (or instance) it lands beside.",
)
@click.option("--intensity", default=60, show_default=True, type=click.IntRange(0, 100))
@click.option(
    "--anomaly-at",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds into the load it starts.",
)
@click.option(
    "--anomaly-for", default=30, show_default=True, type=click.IntRange(1, 3600), help="Seconds it lasts."
)
@click.option(
    "--link-rate", default="100mbit", show_default=True, help="Capacity network_bandwidth takes a share of."
)
@click.option(
    "--seed",
    default=1,
    show_default=True,
    type=click.IntRange(min=0, max=MAX_SEED),
    help="Seed of the load (the same seed, the same requests).",
)
@redis_url_option(
    "firm's Redis, for the requests and latency windows ('' for none).",
    default=DEFAULT_REDIS_URL,
    envvar="FIRM_REDIS_URL",
    show_default=True,
)
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the testbed up at the end (by default it is taken down again if this command started it).",
)
@click.option("--report", type=OutputFile(), help="Write the report as JSON here.")
def run_command(
    config_path: str | None,
    duration: float,
    rate: float | None,
    kind: str,
    target: str,
    intensity: int,
    anomaly_at: float,
    anomaly_for: int,
    link_rate: str,
    seed: int,
    redis_url: str,
    keep: bool,
    report: str | None,
) -> None:
    """Bring the testbed up, load it with one scheduled anomaly, show live p99 against the SLO."""
    config = _load(config_path)
    console = Console(stderr=True)

    def say(message: str) -> None:
        console.print(f"  {message}")

    anomaly_plan = (
        None
        if kind == "none"
        else experiment.AnomalyPlan(kind, target, intensity, anomaly_at, anomaly_for, link_rate)
    )
    if anomaly_plan is not None:  # every option is checked before anything is built
        if anomaly_at >= duration:
            raise click.BadParameter(
                f"{anomaly_at:g} s is not within the {duration:g} s of load", param_hint="--anomaly-at"
            )
        try:
            experiment.anomaly_spec(config, anomaly_plan)
        except FirmError as exc:
            raise click.ClickException(str(exc)) from exc
    plan = experiment.RunPlan(duration, rate, seed, anomaly_plan, _reachable(redis_url, say))
    take_down = not keep and not lifecycle.is_up(config)
    try:
        lifecycle.up(config, say)
        live = LiveView(config, plan)
        with Live(live.render(), console=console, refresh_per_second=2) as screen:
            result = experiment.run(
                config, plan, on_window=lambda batch: screen.update(live.add(batch)), progress=say
            )
    except (FirmError, OSError, subprocess.SubprocessError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if take_down:
            lifecycle.down(config, progress=say)
        else:
            say("the testbed stays up: `firm testbed status` shows it, `firm testbed down` removes it")
    Console().print(summary_table(result, config))
    if report:
        Path(report).write_text(json.dumps(result.as_dict(), indent=2))
        say(f"report written to {report}")


def _reachable(url: str, say: Callable[[str], None]) -> str | None:
    if not url:
        return None
    try:
        redis_auth.connect(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        say(
            f"[yellow]no Redis at {redact_url(url)} ({redis_reason(exc)}): requests and latency windows are "
            "not recorded[/yellow]"
        )
        return None
    return url


class LiveView:
    """The last window of each request type against its SLO, and where the anomaly stands."""

    def __init__(self, config: testbed_config.TestbedConfig, plan: experiment.RunPlan) -> None:
        self.plan = plan
        self.window_s = config.slo_window_s
        self.started = time.time()
        self.last: dict[str, WindowStats] = {}
        self.violated: dict[str, int] = {}
        self.windows: dict[str, int] = {}

    def add(self, batch: Sequence[WindowStats]) -> Table:
        for window in batch:
            name = window.request_type.value
            self.last[name] = window
            if window.p99_ms is not None:
                self.windows[name] = self.windows.get(name, 0) + 1
                self.violated[name] = self.violated.get(name, 0) + bool(window.violated)
        return self.render()

    def _anomaly_state(self, elapsed: float) -> str:
        plan = self.plan.anomaly
        if plan is None:
            return "no anomaly"
        if elapsed < plan.start_s:
            return f"{plan.kind} beside {plan.instance} in {plan.start_s - elapsed:.0f} s"
        if elapsed < plan.start_s + plan.duration_s:
            return f"[bold red]{plan.kind} at {plan.intensity} beside {plan.instance}[/bold red]"
        return f"{plan.kind} ended"

    def render(self) -> Table:
        elapsed = time.time() - self.started
        table = Table(title=f"{elapsed:.0f} / {self.plan.duration_s:.0f} s   {self._anomaly_state(elapsed)}")
        for column in (
            "request type",
            f"requests in {self.window_s:g} s",
            "p50 ms",
            "p99 ms",
            "SLO ms",
            "",
            "windows over SLO",
        ):
            table.add_column(column, justify="right")
        for name, window in sorted(self.last.items()):
            over = window.violated
            table.add_row(
                name,
                str(window.count),
                _ms(window.p50_ms),
                _ms(window.p99_ms),
                _ms(window.slo_ms),
                "[red]over[/red]" if over else "[green]ok[/green]",
                f"{self.violated.get(name, 0)} / {self.windows.get(name, 0)}",
            )
        return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def summary_table(result: experiment.RunReport, config: testbed_config.TestbedConfig) -> Table:
    summary = result.summary
    table = Table(
        title=f"{summary.overall.succeeded} of {summary.overall.sent} requests succeeded; "
        f"the testbed used {result.testbed_cpu_cores:.2f} CPU cores",
        caption=None
        if result.drain_s is None
        else f"the queue the anomaly left drained {result.drain_s:.1f} s after its end; "
        "'after' counts requests sent from then on",
    )
    for column in ("phase", "request type", "requests", "p50 ms", "p99 ms", "SLO ms", "", "windows over SLO"):
        table.add_column(column, justify="right")
    for phase_name in ("run", "before", "during", "after"):
        for type_name in sorted(result.phases.get(phase_name, {})):
            data = result.phase(phase_name, type_name)
            verdict = {True: "[green]met[/green]", False: "[red]missed[/red]", None: ""}[data["meets_slo"]]
            table.add_row(
                phase_name,
                type_name,
                str(data["requests"]),
                _ms(data["p50_ms"]),
                _ms(data["p99_ms"]),
                _ms(data["slo_ms"]),
                verdict,
                f"{data['violated_windows']} / {data['windows']}",
            )
    return table
