"""The ``firm load`` command: parse options into a :class:`LoadSpec`, show progress, print the summary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import click
import redis
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from firm import cli_options
from firm.cli_options import (
    MAX_WHOLE,
    FiniteFloatRange,
    check_http_url,
    json_option,
    redis_reason,
    redis_url_option,
    refuse_empty,
)
from firm.load.config import (
    MAX_RATE_RPS,
    ConstantRate,
    LoadSpec,
    RedisOutput,
    RequestType,
    TraceRate,
    parse_mix,
    parse_slos,
)
from firm.load.errors import LoadError, LoadSpecError
from firm.load.generator import LoadGenerator
from firm.load.stats import Summary, WindowStats
from firm.urls import redact_url

_DEFAULT = LoadSpec.__dataclass_fields__


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _verdict(stats: WindowStats) -> str:
    return {None: "", True: "VIOLATED", False: "ok"}[stats.violated]


def progress_line(elapsed_s: float, windows: Sequence[WindowStats]) -> str:
    """One line per window: per type, completions, p50 and p99 against the SLO."""
    parts = []
    for s in windows:
        slo = f"/{s.slo_ms:g}" if s.slo_ms is not None else ""
        verdict = f" {_verdict(s)}" if s.violated is not None else ""
        parts.append(
            f"{s.request_type.short} n={s.count} err={s.errors} p50={_ms(s.p50_ms)} "
            f"p99={_ms(s.p99_ms)}{slo} ms{verdict}"
        )
    return f"[{elapsed_s:6.1f} s] " + " | ".join(parts)


def progress_table(elapsed_s: float, windows: Sequence[WindowStats]) -> Table:
    table = Table(title=f"last window, {elapsed_s:.0f} s into the run", title_justify="left")
    for name in ("type", "requests", "errors", "p50 ms", "p99 ms", "SLO ms", ""):
        table.add_column(name, justify="left" if name in ("type", "") else "right")
    for s in windows:
        verdict = _verdict(s)
        style = "red" if s.violated else ""
        table.add_row(
            s.request_type.value,
            str(s.count),
            str(s.errors),
            _ms(s.p50_ms),
            _ms(s.p99_ms),
            _ms(s.slo_ms),
            f"[{style}]{verdict}[/{style}]" if style else verdict,
        )
    return table


def summary_heading(summary: Summary) -> str:
    """The line above the summary table: where, how long, and the rate scheduled and sent."""
    return (
        f"{summary.url}: {summary.duration_s:.1f} s, requests/s {summary.scheduled_rps:.1f} scheduled "
        f"and {summary.sent_rps:.1f} sent; latency in ms"
    )


def summary_table(summary: Summary) -> Table:
    """Per type and overall: requests, success, latency and SLO windows (the heading goes above it,
    :func:`summary_heading`, as its own line, so that it never wraps to the table's width; the errors go
    below it)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("type", "sent", "ok", "p50", "p99", "max", "SLO", "windows > SLO"):
        table.add_column(name, justify="left" if name == "type" else "right", no_wrap=True)
    for t in (*summary.per_type, summary.overall):
        ratio = "-" if t.success_ratio is None else f"{100 * t.success_ratio:.1f}%"
        violated = (
            "-"
            if t.slo_violation_ratio is None
            else (f"{t.violated_windows}/{t.windows} {100 * t.slo_violation_ratio:.0f}%")
        )
        short = RequestType(t.request_type).short if t.request_type != "all" else "all"
        table.add_row(
            short, str(t.sent), ratio, _ms(t.p50_ms), _ms(t.p99_ms), _ms(t.max_ms), _ms(t.slo_ms), violated
        )
    return table


def error_lines(summary: Summary) -> list[str]:
    return [
        f"errors of {t.request_type}: " + ", ".join(f"{k} {v}" for k, v in sorted(t.errors.items()))
        for t in summary.per_type
        if t.errors
    ]


MIN_SPEEDUP = 1e-3
"""The slowest a rate trace is played: a second of it lasts at most 1000 s."""
MAX_SPEEDUP = 1e5
"""The fastest a rate trace is played (the peak, sped up, is bounded by MAX_RATE_RPS too)."""
MAX_RUN_S = 7 * 86400.0
"""The longest run, timeout or window, seconds (a week)."""
MIN_WINDOW_S = 0.01
"""The shortest latency window, seconds."""
MAX_CONNECTIONS = 10_000
"""The most keep-alive connections one generator opens."""
MAX_COUNT = MAX_WHOLE
"""The largest count (users, requests in flight, stream entries): 2^31 - 1."""
MAX_SEED = cli_options.MAX_SEED
"""The largest seed (2^64 - 1; also ``firm testbed run --seed``)."""


@click.command("load")
@click.argument("url", callback=check_http_url)
@click.option(
    "--rate",
    type=FiniteFloatRange(min=0, min_open=True, max=MAX_RATE_RPS),
    metavar="RPS",
    help="Constant rate, requests per second (all types together).",
)
@click.option(
    "--trace",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Rate trace: one requests-per-second integer per line, e.g. ../shared/data/workloads/diurnal.txt.",
)
@click.option(
    "--peak",
    type=FiniteFloatRange(min=0, min_open=True, max=MAX_RATE_RPS),
    metavar="RPS",
    help="With --trace: requests per second at the trace's busiest second.",
)
@click.option(
    "--speedup",
    type=FiniteFloatRange(min=MIN_SPEEDUP, max=MAX_SPEEDUP),
    default=None,
    metavar="K",
    help="With --trace: play the trace K times faster than real time.  [default: 1]",
)
@click.option(
    "--duration",
    type=FiniteFloatRange(min=0, min_open=True, max=MAX_RUN_S),
    metavar="SECONDS",
    help="Length of the run (required with --rate; with --trace it defaults to the trace's length).",
)
@click.option(
    "--mix",
    default="compose=10,home=60,user=30",
    show_default=True,
    help="Weights of the request types compose, home and user (types not named are not sent).",
)
@click.option(
    "--slo",
    default=None,
    callback=refuse_empty,
    metavar="TYPE=MS,...",
    help="p99 objective per type in milliseconds, e.g. compose=500,home=200,user=200, or one number "
    "for every type. Without it no window is judged.",
)
@click.option(
    "--users",
    type=click.IntRange(min=1, max=MAX_COUNT),
    default=_DEFAULT["users"].default,
    show_default=True,
    help="User ids are drawn uniformly from [0, USERS).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0, max=MAX_SEED),
    default=None,
    help="Seed of arrivals, types, users and payloads (reported in the summary).  [default: random]",
)
@click.option(
    "--connections",
    type=click.IntRange(min=1, max=MAX_CONNECTIONS),
    default=_DEFAULT["connections"].default,
    show_default=True,
    help="Keep-alive connections, i.e. requests on the wire at once.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1, max=MAX_COUNT),
    default=_DEFAULT["max_in_flight"].default,
    show_default=True,
    help="Requests sent or queued at once; beyond, a request counts as overloaded.",
)
@click.option(
    "--timeout",
    type=FiniteFloatRange(min=0, min_open=True, max=MAX_RUN_S),
    default=_DEFAULT["timeout_s"].default,
    show_default=True,
    metavar="SECONDS",
    help="From a request's intended send time.",
)
@click.option(
    "--window",
    type=FiniteFloatRange(min=MIN_WINDOW_S, max=MAX_RUN_S),
    default=_DEFAULT["window_s"].default,
    show_default=True,
    metavar="SECONDS",
    help="Length of a latency window.",
)
@redis_url_option(
    "Store each request in the stream firm:requests and each window in firm:latency, e.g. "
    "redis://127.0.0.1:6379/0.  [default: not stored]",
    metavar="URL",
)
@click.option(
    "--requests-maxlen",
    type=click.IntRange(min=1, max=MAX_COUNT),
    default=1_000_000,
    show_default=True,
    help="Approximate bound of the firm:requests stream, in entries.",
)
@json_option("Print the summary as JSON instead of a table.")
@click.option("--quiet", is_flag=True, help="No progress while the load runs.")
def load_command(
    *,
    url: str,
    rate: float | None,
    trace: Path | None,
    peak: float | None,
    speedup: float | None,
    duration: float | None,
    mix: str,
    slo: str | None,
    users: int,
    seed: int | None,
    connections: int,
    max_in_flight: int,
    timeout: float,
    window: float,
    redis_url: str | None,
    requests_maxlen: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Send open-loop load to the Social Network frontend at URL and report latency against the SLOs.

    Requests arrive with exponential gaps at a constant --rate, or following a --trace scaled to
    --peak. Latency counts from each request's intended send time, so stalls and a client that
    falls behind are charged in full. Every --window, the p50 and p99 per request type are shown
    (and stored with --redis); at the end, the summary: sent, succeeded, p50/p99/max latency and
    the share of windows whose p99 exceeded the SLO.

    \b
    Examples:
      firm load http://10.0.0.2:8080 --rate 200 --duration 60 --slo compose=500,home=200,user=200
      firm load http://10.0.0.2:8080 --trace diurnal.txt --peak 300 --speedup 60 --json
    """
    if (rate is None) == (trace is None):
        raise click.UsageError("give either --rate or --trace")
    if trace is not None and peak is None:
        raise click.UsageError("--trace needs --peak (requests per second at the trace's busiest second)")
    if rate is not None and (peak is not None or speedup is not None):
        raise click.UsageError("--peak and --speedup apply to --trace only")
    try:  # the option values that are parsed here: a wrong one is a usage error, as click's are
        mix_spec = parse_mix(mix)
    except LoadError as err:
        raise click.BadParameter(str(err), param_hint="--mix") from err
    try:
        slo_spec = parse_slos(slo) if slo else ()
    except LoadError as err:
        raise click.BadParameter(str(err), param_hint="--slo") from err
    try:  # the options as a load: each value and their combination
        if rate is not None:
            rate_spec: ConstantRate | TraceRate = ConstantRate(rate)
        else:
            assert trace is not None and peak is not None
            rate_spec = TraceRate(trace, peak, speedup or 1.0)
        spec = LoadSpec(
            url=url,
            rate=rate_spec,
            duration_s=duration,
            mix=mix_spec,
            slos=slo_spec,
            users=users,
            seed=seed,
            connections=connections,
            max_in_flight=max_in_flight,
            timeout_s=timeout,
            window_s=window,
        )
    except LoadSpecError as err:  # the options do not make a load: a usage error (status 2) naming the option
        raise _usage_error(err) from err
    except LoadError as err:
        raise click.UsageError(str(err)) from err
    try:
        output = RedisOutput(redis_url, requests_maxlen=requests_maxlen) if redis_url else None
        summary = asyncio.run(_run(spec, output, quiet))
    except LoadSpecError as err:  # the --trace file, read when the load starts: status 1, the option named
        option, message = _in_options(err)
        raise click.ClickException(f"{option}: {message}" if option else message) from err
    except LoadError as err:
        raise click.ClickException(_load_error(err, redis_url)) from err
    _print_summary(summary, output, as_json)
    if not summary.overall.succeeded:
        what = f"errors: {dict(summary.overall.errors)}" if summary.overall.sent else "nothing was sent"
        raise click.ClickException(
            f"no request succeeded ({what}); check that the frontend answers at {redact_url(url)}"
        )


OPTION_OF_FIELD = {
    "url": "URL",
    "rate": "--rate",
    "rate.path": "--trace",
    "rate.peak_rps": "--peak",
    "rate.speedup": "--speedup",
    "duration_s": "--duration",
    "users": "--users",
    "seed": "--seed",
    "connections": "--connections",
    "max_in_flight": "--max-in-flight",
    "timeout_s": "--timeout",
    "window_s": "--window",
}
"""The option of ``firm load`` that sets each field of :class:`firm.load.config.LoadSpec` (a refused
field is reported as its option)."""


def _in_options(err: LoadSpecError) -> tuple[str | None, str]:
    """The option that sets the refused field (:data:`OPTION_OF_FIELD`; None for a field without
    one) and the message without the field's name, its fix in the option's spelling
    (``--duration 60``, not ``duration_s=60``)."""
    option = OPTION_OF_FIELD.get(err.field)
    if option is None:
        return None, str(err)
    message = err.message.removeprefix(f"{err.field}: ")
    fix = err.fix.replace(f"{err.field}=", f"{option} ") if option.startswith("--") else err.fix
    return option, f"{message}. Fix: {fix}" if fix else message


def _usage_error(err: LoadSpecError) -> click.UsageError:
    """A refused field of the load as a usage error naming its option (:func:`_in_options`)."""
    option, message = _in_options(err)
    return click.BadParameter(message, param_hint=option) if option else click.UsageError(message)


def _load_error(err: LoadError, redis_url: str | None) -> str:
    """A LoadError of the run for the user: a Redis that does not answer as its URL (password
    redacted) and the reason in words (:func:`firm.urls.describe_transport`), not redis-py's text."""
    cause = err.__cause__
    if redis_url and isinstance(cause, redis.RedisError):
        return (
            f"Redis at {redact_url(redis_url)} does not answer ({redis_reason(cause)}). Fix: start it (make services) "
            "or give the right --redis URL ('' for none)"
        )
    return str(err)


def _print_summary(summary: Summary, output: RedisOutput | None, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    console.print(summary_heading(summary))
    console.print(summary_table(summary))
    for line in error_lines(summary):
        console.print(line)
    per_request = summary.cpu_ms_per_request
    console.print(
        f"client CPU {summary.client_cpu_s:.2f} s"
        + (f" ({per_request:.3f} ms per request)" if per_request is not None else "")
        + f"; latest dispatch {summary.max_dispatch_lag_ms:.1f} ms behind schedule; seed {summary.seed}"
    )
    if output is not None:
        console.print(
            f"Redis: {summary.records_written} request records in {output.requests_key}, "
            f"{summary.records_dropped} dropped; windows in {output.latency_key}"
        )


async def _run(spec: LoadSpec, output: RedisOutput | None, quiet: bool) -> Summary:
    loop = asyncio.get_running_loop()
    start = loop.time()
    live: Live | None = None
    if not quiet and sys.stderr.isatty():
        live = Live(
            Table(title="waiting for the first window"),
            console=Console(stderr=True),
            refresh_per_second=4,
            transient=True,
        )

    def show(windows: Sequence[WindowStats]) -> None:
        if quiet:
            return
        if live is not None:
            live.update(progress_table(loop.time() - start, windows))
        else:
            click.echo(progress_line(loop.time() - start, windows), err=True)

    generator = LoadGenerator(spec, redis=output, on_window=show)
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, generator.stop)
    try:
        with live if live is not None else contextlib.nullcontext():
            return await generator.run()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)
