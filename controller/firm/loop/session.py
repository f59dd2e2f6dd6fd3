"""The body of ``firm run`` for any target: the embedded testbed's (:mod:`firm.loop.cli`) and a
Kubernetes cluster's (:func:`firm.cluster.cli.run_on_cluster`).

The caller builds what differs between them: the loop's :class:`firm.loop.runner.Target` (its
instances, their executor, traces and telemetry), its :class:`firm.loop.runner.Scaler`, and the
Redis client the audit goes to. This module does the rest the same way for both, from the options
they share (:class:`RunOptions`): the loop's settings and its decider (:func:`loop_config`,
:func:`choose_decider`), the audit and the metrics (:func:`recording`), the live view and the loop
from its start to its finish under the stop-on-signal handler (:func:`run`), and the closing line
(:func:`summary`).

These are the command's helpers: errors reach the user as :class:`click.ClickException`, naming
the option and the fix.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import redis
from rich.console import Console
from rich.live import Live

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.actuate.executor import StepResult
from firm.cli_options import describe, stop_on_signals
from firm.loop import audit as auditing
from firm.loop import config as config_module
from firm.loop.config import LoopConfig
from firm.loop.deciders import Decider, make_decider
from firm.loop.metrics import Metrics
from firm.loop.runner import ControlLoop, Scaler, Target
from firm.loop.view import LiveView

Outcome = tuple[list[dict[str, Any]], StepResult | None]
"""What :func:`run` returns: each step's status and result, and what :meth:`ControlLoop.finish` did."""


@dataclass(frozen=True)
class RunOptions:
    """The options of ``firm run`` that the testbed and the cluster share (see ``firm run --help``)."""

    config_path: Path | None = None
    """--config: YAML file of loop settings (None: the defaults)."""
    interval: float | None = None
    """--interval: seconds between control steps (None: the config's)."""
    duration: float | None = None
    """--duration: seconds until the loop stops (None: until SIGTERM or SIGINT)."""
    dry_run: bool = False
    """--dry-run: decide and audit, write no limit."""
    audit_log: Path | None = None
    """--audit-log: also append every decision to this JSON-lines file."""
    metrics_port: int | None = None
    """--metrics-port: serve the Prometheus metrics on this port (None: not served)."""
    metrics_address: str = "0.0.0.0"
    """--metrics-address: the address the metrics listen on."""
    decider: str | None = None
    """--decider: firm, aimd or none (None: the config's)."""
    on_exit: str | None = None
    """--on-exit: keep or restore (None: the config's)."""
    redis_url: str | None = None
    """--redis-url: firm's Redis for telemetry and the audit (None: the config's)."""
    quiet: bool = False
    """--quiet: no live view, only the closing line."""


def loop_config(options: RunOptions) -> LoopConfig:
    """``--config`` with the command line's overrides; ClickException naming the field."""
    overrides = {
        "interval_s": options.interval,
        "decider": options.decider,
        "on_exit": options.on_exit,
        "redis_url": options.redis_url,
    }
    try:
        return config_module.load(options.config_path, **overrides)
    except FirmError as exc:
        raise click.ClickException(str(exc)) from exc


def choose_decider(config: LoopConfig, request_types: Sequence[str]) -> Decider:
    """The configured decider; ClickException when its models cannot be loaded."""
    try:
        return make_decider(config, request_types=list(request_types))
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"the firm decider needs {exc.name}, which is not installed; "
            "use --decider aimd or install firm completely"
        ) from exc
    except (FirmError, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot load the firm decider's models: {describe(exc)}") from exc


@contextmanager
def recording(
    client: redis.Redis | None, config: LoopConfig, options: RunOptions
) -> Iterator[tuple[auditing.AuditLog, Metrics]]:
    """The audit (to ``client`` and ``--audit-log``) and the metrics (served on ``--metrics-port``),
    closed on the way out; ClickException when the file cannot be written or the port is taken."""
    audit_log, metrics_port = options.audit_log, options.metrics_port
    try:
        journal = auditing.AuditLog(
            client, key=config.audit_key, retention=config.audit_retention, path=audit_log
        )
    except OSError as exc:
        raise click.ClickException(f"--audit-log {audit_log}: {exc.strerror}") from exc
    metrics = Metrics()
    try:
        if metrics_port is not None:
            try:
                metrics.serve(metrics_port, options.metrics_address)
            except OSError as exc:
                raise click.ClickException(
                    f"{exc.strerror}; pick a free --metrics-port, or give --metrics-address as an address "
                    "of this machine"
                ) from exc
        yield journal, metrics
    finally:
        metrics.close()
        journal.close()


def run(
    config: LoopConfig,
    target: Target,
    decider: Decider,
    options: RunOptions,
    *,
    slo_ms: dict[str, float],
    window_s: float,
    journal: auditing.AuditLog,
    metrics: Metrics,
    scaler: Scaler | None = None,
    started: Callable[[], None] | None = None,
    finished: Callable[[], None] | None = None,
    instances: str = "instances",
) -> Outcome:
    """The control loop over ``target`` until ``--duration`` ends or SIGTERM / SIGINT, with the live
    view unless ``--quiet``; then the limits kept or restored as ``--on-exit`` says.

    ``started`` runs once the loop has read the baselines (e.g. a telemetry sampler that needs the
    instances found); ``finished`` always runs at the end, whether or not the loop started. A
    scaler with a ``wait()`` (the testbed's, which scales in a thread) is let finish before the
    limits are kept or restored. ``instances`` names what is controlled in the error when the
    baselines cannot be read.
    """
    dry_run, duration = options.dry_run, options.duration
    view = LiveView(decider=decider.name, dry_run=dry_run, duration_s=duration)
    stop = threading.Event()
    records: list[dict[str, Any]] = []
    restored: StepResult | None = None
    try:
        with (
            nullcontext()
            if options.quiet
            else Live(view.render(), console=Console(stderr=True), refresh_per_second=4)
        ) as live:

            def on_step(record: dict[str, Any]) -> None:
                records.append({"status": record.get("status"), "result": record.get("result")})
                if live is not None:
                    live.update(view.add(record))

            loop = ControlLoop(
                config,
                target,
                decider,
                slo_ms=slo_ms,
                window_s=window_s,
                dry_run=dry_run,
                audit=journal,
                metrics=metrics,
                on_step=on_step,
                scaler=scaler,
            )
            try:
                loop.start()
            except FirmError as exc:
                raise click.ClickException(f"cannot read the {instances}' limits: {exc}") from exc
            if started is not None:
                started()
            with stop_on_signals(stop):
                try:
                    loop.run(duration_s=duration, stop=stop)
                finally:
                    wait = getattr(scaler, "wait", None)
                    if callable(wait):
                        wait()
                    restored = loop.finish(options.on_exit)
    finally:
        if finished is not None:
            finished()
    return records, restored


def summary(outcome: Outcome, *, dry_run: bool, where: str = "", scope: str = "") -> str:
    """The closing line: ``firm run{where}: N steps (by status){scope}; changed N limits`` and
    whether the baselines were restored."""
    records, restored = outcome
    statuses = Counter(str(r["status"]) for r in records if r["status"] != "exit")
    applied = sum(1 for r in records for a in (r.get("result") or {}).get("actions", []) if a.get("changed"))
    verb = "would have changed" if dry_run else "changed"
    outcome_text = (
        ""
        if restored is None
        else f"; baselines {'restored' if restored.ok else 'NOT restored: ' + str(restored.error)}"
    )
    counts = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
    return (
        f"firm run{where}: {sum(statuses.values())} steps ({counts}){scope}; "
        f"{verb} {applied} limits{outcome_text}"
    )
