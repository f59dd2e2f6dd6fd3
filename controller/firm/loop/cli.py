"""``firm run`` (the control loop on the embedded testbed) and ``firm audit`` (why it did what it did)."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import click
import redis
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ansible_collections.firm.core.plugins.module_utils import redis_auth
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.cli_options import (
    DEFAULT_REDIS_URL,
    InputFile,
    OutputFile,
    config_option,
    describe,
    json_option,
    only_with,
    probe_appendable,
    redis_reason,
    redis_url_option,
    refuse_empty,
    typed,
)
from firm.loop import audit as auditing
from firm.loop import config as loop_config
from firm.loop import metrics as loop_metrics
from firm.loop import session
from firm.loop.deciders import Decider
from firm.loop.testbed import TestbedScaler, TestbedTarget
from firm.terminal import safe, safe_tree
from firm.testbed import config as testbed_config
from firm.urls import redact_url

MAX_LAST = 100_000
"""The most decisions ``firm audit`` and ``firm explain`` read at once."""


MAX_DURATION_S = 366 * 86400.0
"""The longest ``--duration``, seconds (a year; leave it out to run until stopped)."""


def _redis(url: str | None) -> redis.Redis | None:
    return redis_auth.connect(url, socket_timeout=2, socket_connect_timeout=2) if url else None


def _check_metrics_address(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse an address the metrics could not listen on (not an IP address or a host name that
    resolves) as a usage error naming --metrics-address, before anything starts."""
    wrong = loop_metrics.address_problem(value)
    if wrong:
        raise click.BadParameter(f"{wrong}; {loop_metrics.ADDRESS_FIX}", ctx, param)
    return value


def _probe_metrics(port: int | None, address: str) -> None:
    """Listen on ``--metrics-address``:``--metrics-port`` for a moment, so that a port taken (or an
    address not of this machine) is refused before the run; ClickException naming both and the fix."""
    if port is None:
        return
    try:
        loop_metrics.probe_listen(port, address)
    except OSError as exc:
        fix = {
            errno.EADDRINUSE: "pick a free --metrics-port (0: any free port)",
            errno.EACCES: "pick a --metrics-port above 1023 (ports below need root)",
            errno.EADDRNOTAVAIL: f"give --metrics-address as an address of this machine ({loop_metrics.ADDRESS_FIX})",
        }.get(exc.errno or 0, "pick another --metrics-port or --metrics-address")
        raise click.ClickException(f"{exc.strerror}; {fix}") from exc


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
    type=click.FloatRange(min=0, min_open=True, max=MAX_DURATION_S),
    default=None,
    metavar="S",
    help="Stop after this many seconds (default: until SIGTERM or Ctrl-C).",
)
@click.option("--dry-run", is_flag=True, help="Decide, audit and log everything; write no limit.")
@click.option(
    "--audit-log",
    type=OutputFile(path_type=Path, append=True),
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
    "--metrics-address",
    default="0.0.0.0",
    show_default=True,
    callback=_check_metrics_address,
    help="Address the metrics listen on: an IP address (IPv6 without brackets) or a host name.",
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
@click.option(
    "--context", default=None, callback=refuse_empty, help="With --cluster: the kubeconfig context."
)
def run_command(
    *,
    executor_kind: str = "local",
    inventory: Path | None = None,
    cluster_file: Path | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    **shared: Any,
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
    if shared.get("redis_url") == "":  # "" means "no Redis" to some commands; here it would mean the default
        raise click.BadParameter(
            "an empty URL names no Redis; give a URL like redis://127.0.0.1:6379/0, or leave --redis out "
            "for the testbed's telemetry_redis",
            param_hint="'--redis'",
        )
    if (
        shared.get("audit_log") is not None
    ):  # before anything starts: the kernel may refuse what looks writable
        probe_appendable(shared["audit_log"], "--audit-log")
    options = session.RunOptions(**shared)
    only_with("--cluster FILE", cluster_file is not None, {"--kubeconfig": kubeconfig, "--context": context})
    only_with(
        "--executor ansible or --cluster FILE",
        executor_kind == "ansible" or cluster_file is not None,
        {"--inventory": inventory},
    )
    _probe_metrics(options.metrics_port, options.metrics_address)
    if cluster_file is not None:
        from firm.cluster.cli import run_on_cluster  # noqa: PLC0415 (kubernetes is slow to import)

        run_on_cluster(cluster_file, options, kubeconfig=kubeconfig, context=context, inventory=inventory)
        return
    config, testbed, target, chosen = _setup(options)
    controlled = _with_executor(target, executor_kind, inventory)
    audit_redis = config.redis_url or target.state.telemetry_redis or testbed.telemetry_redis
    with session.recording(_redis(audit_redis), config, options) as (journal, metrics):
        outcome = session.run(
            config,
            controlled,
            chosen,
            options,
            slo_ms={**testbed.slo_ms, **config.slo_ms},
            window_s=config.window_s or testbed.slo_window_s,
            journal=journal,
            metrics=metrics,
            scaler=None if options.dry_run else TestbedScaler(testbed),
        )
    Console().print(session.summary(outcome, dry_run=options.dry_run))


def _setup(
    options: session.RunOptions,
) -> tuple[loop_config.LoopConfig, testbed_config.TestbedConfig, TestbedTarget, Decider]:
    """Configuration, the testbed found from its state, and the decider; ClickException on any error.

    Everything the testbed's configuration can tell is checked, and the decider's models loaded,
    before the running testbed is looked at: the SLOs' request types, the services named, the model
    files."""
    config = session.loop_config(options)
    try:
        testbed = testbed_config.load(config.testbed_config)
        loop_config.check_slo_types(config, testbed.mix, "the testbed")
        loop_config.check_services(
            config, [testbed.redis.name, *(s.name for s in testbed.services)], "the testbed"
        )
        loop_config.check_model_files(config)
    except FirmError as exc:
        raise click.ClickException(str(exc)) from exc
    chosen = session.choose_decider(config, request_types=list(testbed.mix or testbed.slo_ms))
    try:
        target = TestbedTarget.discover(
            testbed, redis_url=config.redis_url, horizon_s=(config.window_s or testbed.slo_window_s) + 10
        )
    except FirmError as exc:
        raise click.ClickException(str(exc)) from exc
    return config, testbed, target, chosen


@click.command("audit")
@redis_url_option(
    "firm's Redis, where `firm run` audits.",
    default=DEFAULT_REDIS_URL,
    envvar="FIRM_REDIS_URL",
    show_default=True,
    empty_means_none=False,
)
@click.option(
    "--key", default="firm:audit", show_default=True, callback=refuse_empty, help="The audit stream."
)
@click.option(
    "--file",
    "path",
    type=InputFile(path_type=Path),
    default=None,
    help="Read a JSON-lines audit log (`firm run --audit-log`) instead of Redis.",
)
@click.option(
    "--last",
    type=click.IntRange(min=1, max=MAX_LAST),
    default=20,
    show_default=True,
    help="How many decisions.",
)
@json_option("Print the records as JSON lines.")
def audit_command(redis_url: str, key: str, path: Path | None, last: int, as_json: bool) -> None:
    """Show the control loop's recent decisions: what it saw, whom it blamed, what it did and why."""
    _file_or_redis(path)
    try:
        records = auditing.read_recent(
            client=None if path else _redis(redis_url), key=key, path=path, last=last
        )
    except redis.RedisError as exc:
        raise click.ClickException(
            f"cannot read the audit from {redact_url(redis_url)}: {redis_reason(exc)}; "
            "start Redis (make services), or give --redis URL or --file"
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
    for row in auditing.recent_rows(safe_tree(records)):  # text from the log escaped (firm.terminal)
        table.add_row(
            *(
                Text.from_markup(row[c]) if c == "actions" else Text(row[c])  # the log's text is never markup
                for c in ("time", "step", "status", "slo", "culprits", "actions", "why")
            )
        )
    Console().print(table)


def _file_or_redis(path: Path | None) -> None:
    """Refuse --redis or --key typed beside --file: the log is read from the file, and they would be
    silently ignored (FIRM_REDIS_URL in the environment is a standing preference, not refused)."""
    if path is None:
        return
    used = typed(click.get_current_context(), **{"--redis": "redis_url", "--key": "key"})
    if used:
        raise click.UsageError(
            f"{' and '.join(used)} name{'s' if len(used) == 1 else ''} the audit in Redis, --file a log file: give one or the other"
        )


def _with_executor(target: TestbedTarget, kind: str, inventory: Path | None) -> Any:
    """The testbed's target, its limits applied by ``kind`` (``ansible``: see firm.cluster.ansible)."""
    if kind == "local":
        return target
    from firm.cluster.target import AnsibleOverride  # noqa: PLC0415 (ansible-runner is slow to import)

    return AnsibleOverride(target, str(inventory) if inventory is not None else None)


def _check_decision_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``RUN/STEP`` or ``STEP`` as `firm explain` prints it: both parts non-empty, no white space or
    control character; anything else is a usage error naming the form."""
    if value is None:
        return value
    run, slash, step = value.rpartition("/")
    parts = [run, step] if slash else [step]
    if any(not part or not part.isprintable() or part != part.strip() or " " in part for part in parts):
        raise click.BadParameter(
            f"{safe(value)!r} is not a decision id; give RUN/STEP or STEP as `firm explain` prints it, "
            "e.g. 5d1c2f/12 or 12",
            ctx,
            param,
        )
    return value


@click.command("explain")
@click.argument("decision", required=False, metavar="[ID]", callback=_check_decision_id)
@redis_url_option(
    "firm's Redis, where `firm run` audits.",
    default=DEFAULT_REDIS_URL,
    envvar="FIRM_REDIS_URL",
    show_default=True,
    empty_means_none=False,
)
@click.option(
    "--key", default="firm:audit", show_default=True, callback=refuse_empty, help="The audit stream."
)
@click.option(
    "--file",
    "path",
    type=InputFile(path_type=Path),
    default=None,
    help="Read a JSON-lines audit log (`firm run --audit-log`) instead of Redis.",
)
@click.option(
    "--last",
    type=click.IntRange(min=1, max=MAX_LAST),
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

    _file_or_redis(path)
    if decision is not None and "--last" in typed(click.get_current_context(), **{"--last": "last"}):
        raise click.UsageError("--last applies without an ID: give an ID or --last N, not both")

    window = 10_000 if decision is not None or acted else last
    try:
        records = auditing.read_recent(
            client=None if path else _redis(redis_url), key=key, path=path, last=window
        )
    except redis.RedisError as exc:
        raise click.ClickException(
            f"cannot read the audit from {redact_url(redis_url)}: {redis_reason(exc)}; "
            "start Redis (make services), or give --redis URL or --file"
        ) from exc
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the audit log {path}: {describe(exc)}") from exc
    if decision is not None:
        found = explaining.find(records, decision)
        if found is None:
            source = f"--file {path}" if path is not None else f"--redis {redact_url(redis_url)} --key {key}"
            raise click.ClickException(
                f"no decision {safe(decision)} in the last {len(records)} records; "
                f"`firm explain {source} --last 20` lists recent ids"
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
    click.echo(explaining.render(safe_tree(explanations)))  # text from the log escaped (firm.terminal)
