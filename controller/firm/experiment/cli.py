"""``firm experiment``: FIRM against the baselines on the embedded testbed, with a report."""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.cli_options import (
    MAX_SEED,
    FiniteFloatRange,
    InputFile,
    OutputDirectory,
    TextFile,
    config_option,
    describe,
    json_option,
    probe_directory,
)
from firm.experiment import ExperimentError, ExperimentInputError
from firm.experiment.policies import POLICIES, parse_policies
from firm.experiment.recorded import (
    MAX_DURATION_S,
    MAX_INTERVAL_S,
    MIN_INTERVAL_S,
    load_previous_report,
    load_runs,
)
from firm.experiment.render import plots, table
from firm.experiment.report import OTHER_WORK_AVG, OTHER_WORK_PEAK, build_report
from firm.experiment.runner import (
    Experiment,
    ExperimentPlan,
    recorded_to_json,
    supported_kinds,
)
from firm.experiment.schedule import parse_kinds
from firm.load.config import MAX_RATE_RPS
from firm.load.errors import LoadSpecError
from firm.load.schedule import read_rate_trace
from firm.testbed import config as tb_config

log = logging.getLogger(__name__)

MAX_WARMUP_S = 3600.0
"""The longest warm-up per policy, seconds."""


def _status_view(status: dict[str, Any]) -> Group:
    head = Text.assemble(
        (f"policy {status['policy']} ({status['index'] + 1}/{status['policies']})", "bold"),
        f"  {status['phase']}, {status['left_s']:.0f} s left (all policies: {status['total_left_s']:.0f} s)",
        f"  actions {status['actions']}",
    )
    parts = []
    for kind, p99 in sorted(status["p99_ms"].items()):
        slo = status["slo_ms"].get(kind)
        style = "red" if p99 is not None and slo is not None and p99 > slo else "green"
        shown = "-" if p99 is None else f"{p99:.0f}"
        parts.append((f"{kind} p99 {shown}/{slo:g} ms  " if slo else f"{kind} p99 {shown} ms  ", style))
    anomalies = ", ".join(status["anomalies"]) or "none"
    return Group(head, Text.assemble(*parts), Text(f"anomalies running: {anomalies}", style="dim"))


def _write(report: dict[str, Any], out: Path, as_json: bool) -> None:
    """report.json and the plots to ``out``; the table and the verdict (or the JSON) to stdout."""
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    files = plots(report, out)
    if as_json:
        click.echo(json.dumps(report, allow_nan=False))
        return
    console = Console()
    if not console.is_terminal:  # a file or a pipe (make run | tee): the whole table, not 80 columns
        console = Console(width=200)
    console.print(table(report))
    verdict = report.get("verdict") or {}
    if verdict:
        fewer = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in verdict["fewer_violation_s_than"].items())
        console.print(
            f"firm: fewer SLO-violation seconds than: {fewer or '-'}; CPU allocated not above static: "
            f"{ {True: 'yes', False: 'NO', None: '-'}[verdict['cpu_not_above_static']] }; "
            f"every anomaly mitigated: {'yes' if verdict['mitigated_every_anomaly'] else 'NO'}"
        )
    other = {
        name: (entry.get("other_work_cores_avg"), entry.get("other_work_cores_peak"))
        for name, entry in report.get("policies", {}).items()
    }
    if any(avg is not None for avg, _ in other.values()):
        console.print(
            "other work on this machine (cores, average / busiest interval): "
            + ", ".join(
                f"{escape(str(n))} {a:.2f} / {p:.2f}"
                for n, (a, p) in other.items()
                if a is not None and p is not None
            )
        )
    if verdict.get("disturbed"):
        console.print(
            f"[bold red]disturbed:[/] {escape(', '.join(map(str, verdict['disturbed'])))} ran beside other work (more than "
            f"{OTHER_WORK_AVG:g} cores on average or {OTHER_WORK_PEAK:g} in an interval): those figures "
            "are not comparable; run again on a quiet machine"
        )
    console.print(f"report: {out / 'report.json'}; plots: {', '.join(str(f) for f in files)}")


def _check_workload(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``constant``, or a rate trace read and checked here (a regular file: it is read more than once,
    so not a pipe; not a device, which never ends): a usage error naming ``--workload`` and the fix."""
    if value == "constant":
        return value
    InputFile().convert(value, param, ctx)  # missing, a directory, a device, a socket
    if not Path(value).is_file():
        raise click.BadParameter(
            f"{value} is a pipe; the rate trace is read more than once, so give a regular file",
            ctx,
            param,
        )
    try:
        read_rate_trace(value)
    except LoadSpecError as exc:
        problem = exc.message.removeprefix(f"{exc.field}: ")
        raise click.BadParameter(f"{problem}" + (f"; {exc.fix}" if exc.fix else ""), ctx, param) from None
    return value


@click.command("experiment")
@click.option(
    "--policies",
    default="firm,hpa,aimd,static",
    show_default=True,
    help=f"Policies to run, in order, comma-separated: {', '.join(POLICIES)}.",
)
@click.option(
    "--duration",
    type=FiniteFloatRange(min=20, max=MAX_DURATION_S),
    default=100.0,
    show_default=True,
    metavar="S",
    help=f"Measured seconds per policy (20 to {MAX_DURATION_S:.0f}).",
)
@click.option(
    "--warmup",
    type=FiniteFloatRange(min=0, max=MAX_WARMUP_S),
    default=15.0,
    show_default=True,
    metavar="S",
    help="Seconds of load before measuring (and before the loop starts), per policy.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0, max=MAX_SEED),
    default=1,
    show_default=True,
    help="Seed of the load and of the anomaly schedule (the same for every policy).",
)
@click.option(
    "--workload",
    default="constant",
    show_default=True,
    metavar="constant|PATH",
    callback=_check_workload,
    help="A constant rate, or a rate trace (one requests/s integer per line, e.g. "
    "../shared/data/workloads/diurnal.txt) scaled to --rate at its peak and played over the run.",
)
@click.option(
    "--rate",
    type=FiniteFloatRange(min=0, min_open=True, max=MAX_RATE_RPS),
    default=None,
    metavar="RPS",
    help="Requests/s: the constant rate, or the trace's peak (default: the testbed's rate_rps).",
)
@click.option(
    "--anomalies",
    "kinds",
    default="cpu,memory_bandwidth,disk_io",
    show_default=True,
    metavar="KINDS",
    help="Anomaly kinds, comma-separated (one anomaly each), 'all' (every kind this "
    "machine supports) or 'none'.",
)
@click.option(
    "--out",
    type=OutputDirectory(path_type=Path),
    default=Path("experiment"),
    show_default=True,
    help="Directory of report.json, the plots and the recorded runs.",
)
@click.option(
    "--interval",
    type=FiniteFloatRange(min=MIN_INTERVAL_S, max=MAX_INTERVAL_S),
    default=None,
    metavar="S",
    help="Report interval, seconds (default: the testbed's SLO window).",
)
@config_option("YAML of control-loop settings (as `firm run --config`).", path_type=Path)
@click.option(
    "--testbed-config",
    type=TextFile(path_type=Path),
    default=None,
    help="The testbed's YAML configuration (as `firm testbed up --config`).",
)
@click.option(
    "--report-only",
    is_flag=True,
    help="Run nothing: compute the report and plots again from the runs recorded in --out.",
)
@json_option("Print report.json instead of the table.")
def experiment_command(
    *,
    policies: str,
    duration: float,
    warmup: float,
    seed: int,
    workload: str,
    rate: float | None,
    kinds: str,
    out: Path,
    interval: float | None,
    config_path: Path | None,
    testbed_config: Path | None,
    report_only: bool,
    as_json: bool,
) -> None:
    """FIRM against the baselines: the same seeded load and anomalies once per policy on the testbed.

    For each policy: reset the testbed to its baseline limits, warm up, then run the load while the
    control loop decides with that policy and the anomalies of the seeded schedule come and go
    (beside different services, overlapping, each expiring by itself). Writes report.json, p99.png,
    cpu.png and runs/<policy>.json to --out, and prints a table with every baseline's ratio to
    firm. Brings the testbed up when it is down (and takes it down again after); cleans up
    anomalies and limits whatever happens. Needs root. See docs/experiment.md.
    """
    console = Console(stderr=True)  # progress; the results go to stdout (_write)
    try:
        testbed = tb_config.load(testbed_config)
    except tb_config.ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if report_only:
        _report_again(out, testbed, interval, as_json)
        return
    try:  # the options' values: a wrong one is a usage error (status 2), before anything starts
        names = parse_policies(policies)
        plan = ExperimentPlan(
            tuple(names),
            duration,
            warmup,
            seed,
            tuple(parse_kinds(kinds, supported_kinds())),
            workload,
            rate,
            interval,
            config_path,
        )
    except (ExperimentInputError, LoadSpecError) as exc:
        raise click.UsageError(str(exc)) from exc
    probe_directory(out, "--out")  # before anything starts: a run's results are never lost at its end
    try:
        experiment = Experiment(
            plan, testbed, say=lambda m: console.print(f"[dim]{m}[/dim]"), audit_dir=out / "audit"
        )
        experiment.check()
    except OSError as exc:
        raise click.ClickException(f"--out {out}: {exc.strerror}") from exc
    except FirmError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(
        f"firm experiment: {', '.join(names)}; {warmup:g} s warm-up + {duration:g} s each, about "
        f"{experiment.total_s() / 60:.1f} min; anomalies: "
        + (
            ", ".join(f"{p.kind}@{p.service} {p.start_s:.0f}-{p.end_s:.0f} s" for p in experiment.schedule)
            or "none"
        )
    )
    try:
        with (
            _sigterm_interrupts(),
            Live(Text("starting"), console=console, refresh_per_second=2, transient=True) as live,
        ):
            experiment.progress = lambda status: live.update(_status_view(status))
            runs = experiment.run()
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; the testbed was reset and every anomaly stopped") from None
    except (FirmError, OSError) as exc:
        raise click.ClickException(
            f"{describe(exc)}; the testbed was reset and every anomaly stopped"
        ) from exc
    (out / "runs").mkdir(exist_ok=True)
    for run in runs:
        (out / "runs" / f"{run.policy}.json").write_text(json.dumps(recorded_to_json(run)) + "\n")
    report = build_report(
        runs,
        slo_ms=experiment.slo_ms,
        interval_s=experiment.interval_s,
        seed=seed,
        meta=_meta(plan, experiment),
    )
    _write(report, out, as_json)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a service manager, ``timeout``, ``kill``) stops the experiment as Ctrl-C does: the
    run under way is cut short, the testbed reset and every anomaly stopped, before the exit."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _meta(plan: ExperimentPlan, experiment: Experiment) -> dict[str, Any]:
    return {
        "duration_s": plan.duration_s,
        "warmup_s": plan.warmup_s,
        "workload": plan.workload,
        "rate_rps": plan.rate_rps or experiment.testbed.rate_rps,
        "kinds": list(plan.kinds),
        "schedule": [p.as_dict() for p in experiment.schedule],
    }


def _report_again(out: Path, testbed: tb_config.TestbedConfig, interval: float | None, as_json: bool) -> None:
    """The report and plots again from ``out/runs/*.json`` (each checked: :mod:`firm.experiment.recorded`),
    with the SLOs, interval and seed of ``out/report.json`` when there is one."""
    try:
        previous = load_previous_report(out / "report.json")
        runs = load_runs(out / "runs") if (out / "runs").is_dir() else []
    except ExperimentInputError as exc:
        raise click.ClickException(str(exc)) from exc
    if not runs:
        raise click.ClickException(
            f"no recorded runs in {out / 'runs'}; run `firm experiment --out {out}` first"
        )
    order = {name: i for i, name in enumerate(previous.policies if previous else {})}
    runs.sort(key=lambda r: order.get(r.policy, len(order)))
    report = build_report(
        runs,
        slo_ms=(previous.slo_ms if previous else None) or dict(testbed.slo_ms),
        interval_s=interval or (previous.interval_s if previous else None) or testbed.slo_window_s,
        seed=previous.seed if previous else 0,
        meta=previous.meta() if previous else {},
    )
    try:
        _write(report, out, as_json)
    except OSError as exc:
        raise click.ClickException(f"cannot write to {out}: {exc.strerror}") from exc


__all__ = ["ExperimentError", "experiment_command"]
