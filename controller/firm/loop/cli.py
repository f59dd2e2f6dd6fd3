"""``firm run`` (the control loop on the embedded testbed) and ``firm audit`` (why it did what it did)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
import redis
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ansible_collections.firm.core.plugins.module_utils import redis_auth
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.actuate.executor import StepResult
from firm.cli_options import (
    DEFAULT_REDIS_URL,
    config_option,
    describe,
    json_option,
    redis_url_option,
    stop_on_signals,
)
from firm.loop import audit as auditing
from firm.loop import config as loop_config
from firm.loop.deciders import Decider, make_decider
from firm.loop.metrics import Metrics
from firm.loop.runner import ControlLoop
from firm.loop.testbed import TestbedScaler, TestbedTarget
from firm.loop.view import LiveView
from firm.testbed import config as testbed_config


def _redis(url: str | None) -> redis.Redis | None:
    return redis_auth.connect(url, socket_timeout=2, socket_connect_timeout=2) if url else None


@click.command("run")
@config_option(
    "YAML file of loop settings (guardrails, SLOs, decider...; see docs/control-loop.md).", path_type=Path
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1, max=60),
    default=None,
    metavar="S",
    help="Seconds between control steps.  [default: 2]",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="S",
    help="Stop after this many seconds (default: until SIGTERM or Ctrl-C).",
)
@click.option("--dry-run", is_flag=True, help="Decide, audit and log everything; write no limit.")
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Also append every decision to this JSON-lines file.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="N",
    help="Serve Prometheus metrics (firm_*) on this port.",
)
@click.option(
    "--metrics-address", default="0.0.0.0", show_default=True, help="Address the metrics listen on."
)
@click.option(
    "--decider",
    type=click.Choice(["firm", "aimd", "none"]),
    default=None,
    help="Which policy decides (default: the config's, firm).",
)
@click.option(
    "--on-exit",
    type=click.Choice(["keep", "restore"]),
    default=None,
    help="On stop: keep the last good limits, or restore the baselines.  [default: keep]",
)
@redis_url_option(
    "firm's Redis for telemetry and the audit (default: the testbed's telemetry_redis).", metavar="URL"
)
@click.option("--quiet", is_flag=True, help="No live view; print only the summary at the end.")
@click.option(
    "--executor",
    "executor_kind",
    type=click.Choice(["local", "ansible"]),
    default="local",
    show_default=True,
    help="Apply limits directly (local) or through the firm.core modules run by "
    "ansible-runner, one run per node and step (ansible).",
)
@click.option(
    "-i",
    "--inventory",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="With --executor ansible: the inventory, e.g. inventory/local (default: this machine). "
    "With --cluster: the inventory of the nodes site.yml provisioned.",
)
@click.option(
    "--cluster",
    "cluster_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Run on a Kubernetes cluster: YAML of its services, Jaeger and telemetry (docs/cluster.md).",
)
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="With --cluster: the kubeconfig (default: $KUBECONFIG, ~/.kube/config, or the pod's service account).",
)
@click.option("--context", default=None, help="With --cluster: the kubeconfig context.")
def run_command(
    *,
    config_path: Path | None,
    interval: float | None,
    duration: float | None,
    dry_run: bool,
    audit_log: Path | None,
    metrics_port: int | None,
    metrics_address: str,
    decider: str | None,
    on_exit: str | None,
    redis_url: str | None,
    quiet: bool,
    executor_kind: str = "local",
    inventory: Path | None = None,
    cluster_file: Path | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> None:
    """Keep every request type's p99 under its SLO with as few resources as possible (the control loop).

    Every interval: read the window's traces and telemetry, check each request type's p99 against
    its SLO, localize culprits and let the agent set their limits when an SLO is violated or at
    risk, reclaim when every SLO holds with slack; every action bounded by the guardrails, applied
    as one unit and audited. Runs on the embedded testbed (`firm testbed up`). SIGTERM and Ctrl-C
    finish the step under way, then keep or restore the limits (--on-exit) and exit 0.
    With --cluster, on a Kubernetes cluster instead (pods, Jaeger, cAdvisor, in-place resize,
    the ansible executor on the nodes of -i).
    """
    if cluster_file is not None or kubeconfig is not None:
        _run_on_cluster(
            cluster_file,
            kubeconfig=kubeconfig,
            context=context,
            inventory=inventory,
            config_path=config_path,
            interval=interval,
            duration=duration,
            dry_run=dry_run,
            audit_log=audit_log,
            metrics_port=metrics_port,
            metrics_address=metrics_address,
            decider=decider,
            on_exit=on_exit,
            redis_url=redis_url,
            quiet=quiet,
        )
        return
    config, testbed, target, chosen = _setup(
        config_path, interval_s=interval, decider=decider, on_exit=on_exit, redis_url=redis_url
    )
    slo = {**testbed.slo_ms, **config.slo_ms}
    console = Console(stderr=True)
    audit_redis = config.redis_url or target.state.telemetry_redis or testbed.telemetry_redis
    try:
        journal = auditing.AuditLog(
            _redis(audit_redis), key=config.audit_key, retention=config.audit_retention, path=audit_log
        )
    except OSError as exc:
        raise click.ClickException(f"--audit-log {audit_log}: {exc.strerror}") from exc
    metrics = Metrics()
    if metrics_port is not None:
        try:
            metrics.serve(metrics_port, metrics_address)
        except OSError as exc:
            journal.close()
            raise click.ClickException(
                f"--metrics-port {metrics_port}: {exc.strerror}; pick a free port"
            ) from exc
    view = LiveView(decider=chosen.name, dry_run=dry_run, duration_s=duration)
    scaler = None if dry_run else TestbedScaler(testbed)
    stop = threading.Event()
    records: list[dict[str, Any]] = []
    try:
        with nullcontext() if quiet else Live(view.render(), console=console, refresh_per_second=4) as live:

            def on_step(record: dict[str, Any]) -> None:
                records.append({"status": record.get("status"), "result": record.get("result")})
                if live is not None:
                    live.update(view.add(record))

            loop = ControlLoop(
                config,
                _with_executor(target, executor_kind, inventory),
                chosen,
                slo_ms=slo,
                window_s=config.window_s or testbed.slo_window_s,
                dry_run=dry_run,
                audit=journal,
                metrics=metrics,
                on_step=on_step,
                scaler=scaler,
            )
            try:
                loop.start()
            except FirmError as exc:
                raise click.ClickException(f"cannot read the instances' limits: {exc}") from exc
            with stop_on_signals(stop):
                try:
                    loop.run(duration_s=duration, stop=stop)
                finally:
                    if scaler is not None:
                        scaler.wait()
                    restored = loop.finish(on_exit)
    finally:
        metrics.close()
        journal.close()
    console.print(_summary(records, dry_run, restored))


def _run_on_cluster(cluster_file: Path | None, **options: Any) -> None:
    """``firm run --cluster FILE`` (firm.cluster.cli.run_on_cluster), with this command's options."""
    if cluster_file is None:
        raise click.UsageError("--kubeconfig runs on a cluster: give its services with --cluster FILE")
    from firm.cluster.cli import run_on_cluster  # noqa: PLC0415 (kubernetes is slow to import)

    run_on_cluster(cluster_file, **options)


def _setup(
    config_path: Path | None, **overrides: Any
) -> tuple[loop_config.LoopConfig, testbed_config.TestbedConfig, TestbedTarget, Decider]:
    """Configuration, the testbed found from its state, and the decider; ClickException on any error."""
    try:
        config = loop_config.load(config_path, **overrides)
        testbed = testbed_config.load(config.testbed_config)
    except FirmError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        target = TestbedTarget.discover(
            testbed, redis_url=config.redis_url, horizon_s=(config.window_s or testbed.slo_window_s) + 10
        )
    except FirmError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        chosen = make_decider(config, request_types=list(testbed.mix or testbed.slo_ms))
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"the firm decider needs {exc.name}, which is not installed; "
            "use --decider aimd or install firm completely"
        ) from exc
    except (FirmError, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot load the firm decider's models: {describe(exc)}") from exc
    return config, testbed, target, chosen


def _summary(records: list[dict[str, Any]], dry_run: bool, restored: StepResult | None) -> str:
    statuses = Counter(str(r["status"]) for r in records if r["status"] != "exit")
    applied = sum(1 for r in records for a in (r.get("result") or {}).get("actions", []) if a.get("changed"))
    verb = "would have changed" if dry_run else "changed"
    outcome = (
        ""
        if restored is None
        else f"; baselines {'restored' if restored.ok else 'NOT restored: ' + str(restored.error)}"
    )
    counts = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
    return f"firm run: {sum(statuses.values())} steps ({counts}); {verb} {applied} limits{outcome}"


@click.command("audit")
@redis_url_option(
    "firm's Redis, where `firm run` audits.",
    default=DEFAULT_REDIS_URL,
    envvar="FIRM_REDIS_URL",
    show_default=True,
)
@click.option("--key", default="firm:audit", show_default=True, help="The audit stream.")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read a JSON-lines audit log (`firm run --audit-log`) instead of Redis.",
)
@click.option("--last", type=click.IntRange(min=1), default=20, show_default=True, help="How many decisions.")
@json_option("Print the records as JSON lines.")
def audit_command(redis_url: str, key: str, path: Path | None, last: int, as_json: bool) -> None:
    """Show the control loop's recent decisions: what it saw, whom it blamed, what it did and why."""
    try:
        records = auditing.read_recent(
            client=None if path else _redis(redis_url), key=key, path=path, last=last
        )
    except redis.RedisError as exc:
        raise click.ClickException(
            f"cannot read the audit from {redis_url}: {exc}; give --file or a Redis URL"
        ) from exc
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the audit log {path}: {describe(exc)}") from exc
    if as_json:
        for record in records:
            click.echo(json.dumps(record, sort_keys=True))
        return
    if not records:
        click.echo("no decisions recorded yet", err=True)
        return
    table = Table(title=f"last {len(records)} decisions")
    for column in ("time", "step", "status", "worst SLO", "culprits", "actions", "why"):
        table.add_column(column, overflow="fold")
    for row in auditing.recent_rows(records):
        table.add_row(
            row["time"], row["step"], row["status"], row["slo"], row["culprits"], row["actions"], row["why"]
        )
    Console().print(table)


def _with_executor(target: TestbedTarget, kind: str, inventory: Path | None) -> Any:
    """The testbed's target, its limits applied by ``kind`` (``ansible``: see firm.cluster.ansible)."""
    if kind == "local":
        return target
    from firm.cluster.target import AnsibleOverride  # noqa: PLC0415 (ansible-runner is slow to import)

    return AnsibleOverride(target, str(inventory) if inventory is not None else None)


@click.command("explain")
@click.argument("decision", required=False, metavar="[ID]")
@redis_url_option(
    "firm's Redis, where `firm run` audits.",
    default=DEFAULT_REDIS_URL,
    envvar="FIRM_REDIS_URL",
    show_default=True,
)
@click.option("--key", default="firm:audit", show_default=True, help="The audit stream.")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read a JSON-lines audit log (`firm run --audit-log`) instead of Redis.",
)
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="How many of the most recent decisions (without ID).",
)
@click.option(
    "--acted",
    is_flag=True,
    help="Only decisions that changed (or would have changed) a limit or asked for a scale-out or scale-in.",
)
@json_option("Print the explanations as JSON lines.")
def explain_command(
    decision: str | None, redis_url: str, key: str, path: Path | None, last: int, acted: bool, as_json: bool
) -> None:
    """Why the control loop did what it did: for the last decisions, or the one with ID.

    For each decision: the SLO state of every request type, the culprits and their scores, each
    action the decider proposed with its reason, the guardrail that clipped or refused it, and what
    was applied (before -> after). ID is RUN/STEP as `firm explain` prints it (or STEP: the newest
    run's). Reads the audit of `firm run` from Redis or from --file.
    """
    from firm.loop import explain as explaining  # noqa: PLC0415

    window = 10_000 if decision is not None or acted else last
    try:
        records = auditing.read_recent(
            client=None if path else _redis(redis_url), key=key, path=path, last=window
        )
    except redis.RedisError as exc:
        raise click.ClickException(
            f"cannot read the audit from {redis_url}: {exc}; give --file or a Redis URL"
        ) from exc
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the audit log {path}: {describe(exc)}") from exc
    if decision is not None:
        found = explaining.find(records, decision)
        if found is None:
            raise click.ClickException(
                f"no decision {decision} in the last {len(records)} records; "
                "`firm explain --last 20` lists recent ids"
            )
        chosen = [found]
    else:
        chosen = [r for r in records if r.get("status") != "exit"]
        if acted:
            chosen = [r for r in chosen if r.get("status") == "acted" or r.get("scale_requests")]
        chosen = chosen[-last:]
    explanations = [explaining.explain(r) for r in chosen]
    if as_json:
        for item in explanations:
            click.echo(json.dumps(item, sort_keys=True))
        return
    if not explanations:
        click.echo("no decisions recorded yet" if not records else "no decision matches", err=True)
        return
    click.echo(explaining.render(explanations))
