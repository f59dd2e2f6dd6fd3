"""The ``firm`` command: a thin layer over the library."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm import __version__, exit_status, preflight
from firm.cli_options import (
    apply_conventions,
    jaeger_request_options,
    jaeger_url_option,
    json_option,
    only_with,
    overlap_tolerance_option,
    trace_limit_option,
)
from firm.tracing import TraceError, trace_features
from firm.tracing.features import format_table
from firm.tracing.source import TraceInput, TraceQuery, TraceSourceError, read_traces
from firm.tracing.stream import DEFAULT_BATCH_BYTES, StreamOptions, stream_features, write_critical_paths
from firm.urls import redact_url

log = logging.getLogger(__name__)

LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "testbed": ("firm.testbed.commands", "testbed"),
    "load": ("firm.load.cli", "load_command"),
    "localize": ("firm.localize.cli", "localize_command"),
    "train-svm": ("firm.localize.cli", "train_svm_command"),
    "localize-dataset": ("firm.localize.cli", "dataset_command"),
    "localize-testbed-dataset": ("firm.localize.cli", "testbed_dataset_command"),
    "localize-eval": ("firm.localize.cli", "eval_command"),
    "train-rl": ("firm.rl.cli", "train_rl_command"),
    "run": ("firm.loop.cli", "run_command"),
    "audit": ("firm.loop.cli", "audit_command"),
    "explain": ("firm.loop.cli", "explain_command"),
    "experiment": ("firm.experiment.cli", "experiment_command"),
    "cluster": ("firm.cluster.cli", "cluster_command"),
}
"""Subcommands imported only when used: {name: (module, attribute)}. Several pull in torch or
scikit-learn, which take seconds to import; ``firm critical-path`` and ``firm features`` need neither."""


class FirmGroup(click.Group):
    """The ``firm`` group: no traceback reaches a user.

    A :class:`FirmError` from the library becomes its message (what was wrong and the fix); any
    other unexpected error is reported in one line that says how to see the traceback (``-vv``).
    The subcommands of LAZY_COMMANDS are imported when they are run (or listed by ``--help``).
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            module, attribute = LAZY_COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command) and command.name == cmd_name, cmd_name
        if command is not None:
            _prepare(command, cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (
            click.exceptions.Exit,
            click.ClickException,
            click.exceptions.Abort,
            SystemExit,
            KeyboardInterrupt,
        ):
            raise
        except FirmError as err:
            raise click.ClickException(str(err)) from err
        except BrokenPipeError:  # the reader went away (`firm critical-path big.json | head`): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # nothing more reaches the closed pipe, not even at exit
            raise SystemExit(0) from None
        except (OSError, UnicodeError) as err:  # the environment or an input, not a bug in firm
            log.debug("input or system error", exc_info=True)
            raise click.ClickException(input_error_message(err)) from err
        except Exception as err:
            if _is_redis_connection_error(err):
                raise click.ClickException(
                    f"Redis does not answer: {err}; start it (`make services`) or give the right --redis URL"
                ) from err
            log.debug("unexpected error", exc_info=True)
            raise click.ClickException(
                f"unexpected {type(err).__name__}: {err}. This is a bug in firm: run it again as "
                f"`firm -vv {ctx.invoked_subcommand or 'COMMAND'} ...` for the traceback and report it"
            ) from err


def _prepare(command: click.Command, path: str) -> None:
    """Give ``command`` (and a group's subcommands) the exit-status section of firm.exit_status and
    the conventions every option follows (:func:`firm.cli_options.apply_conventions`: finite
    numbers, ``FIRM_<COMMAND>_<OPTION>`` from the environment)."""
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            _prepare(sub, f"{path} {name}")
        return
    if command.epilog is None:
        command.epilog = exit_status.epilog(path)
    apply_conventions(command, path)


def input_error_message(err: OSError | UnicodeError) -> str:
    """What an OSError or a decoding error that reached the command line says, without Python's
    spelling of it (``[Errno 13] ...``, ``'utf-8' codec can't decode ...``)."""
    if isinstance(err, UnicodeDecodeError):
        return (
            f"an input is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
            "give files saved as UTF-8"
        )
    if isinstance(err, UnicodeError):
        return f"an input cannot be encoded or decoded ({err.reason if hasattr(err, 'reason') else err})"
    reason = err.strerror or type(err).__name__
    where = f"{err.filename}: " if err.filename is not None else ""
    if err.filename2 is not None:
        where = f"{err.filename} -> {err.filename2}: "
    return f"{where}{reason}; check the path, its permissions and the free space"


def _is_redis_connection_error(err: Exception) -> bool:
    redis_exceptions = sys.modules.get("redis.exceptions")
    error_type = getattr(redis_exceptions, "ConnectionError", None)
    return isinstance(error_type, type) and isinstance(err, error_type)


@click.group(
    cls=FirmGroup, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "FIRM"}
)
@click.version_option(__version__, prog_name="firm")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Keep microservices' tail latency under their SLO with as few resources as possible."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose == 0:  # the HTTP library's retries are its own business; firm's message says what failed
        logging.getLogger("urllib3").setLevel(logging.ERROR)


@main.command("preflight")
@json_option("Print the facts as JSON instead of a table.")
@click.option("--no-pqos", is_flag=True, help="Do not probe libpqos.")
@click.option(
    "--cluster",
    "on_cluster",
    is_flag=True,
    help="Every node of the inventory (-i) and the cluster (--kubeconfig) instead of this machine.",
)
@click.option(
    "-i",
    "--inventory",
    type=click.Path(exists=True),
    default=None,
    help="With --cluster: the inventory site.yml used (default: this machine, connection local).",
)
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="With --cluster: the cluster's kubeconfig (in a pod: its service account when --in-cluster).",
)
@click.option("--context", default=None, help="With --cluster: the kubeconfig context.")
@click.option("--in-cluster", is_flag=True, help="With --cluster: the pod's service account.")
@click.option(
    "--cluster-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --cluster: the file of `firm run --cluster`; RBAC is checked in its services' "
    "namespaces for its telemetry (default: in every namespace).",
)
def preflight_command(
    as_json: bool,
    no_pqos: bool,
    on_cluster: bool = False,
    inventory: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    in_cluster: bool = False,
    cluster_file: Path | None = None,
) -> None:
    """Show what firm can control on this machine (cgroups, tc, RDT, resctrl, libpqos), or with
    --cluster on each node of a cluster and what it cannot there and why (see docs/cluster.md)."""
    only_with(
        "--cluster",
        on_cluster,
        {
            "--inventory": inventory,
            "--kubeconfig": kubeconfig,
            "--context": context,
            "--in-cluster": in_cluster,
            "--cluster-file": cluster_file,
        },
    )
    if on_cluster:
        from firm.cluster.cli import preflight_cluster  # noqa: PLC0415 (kubernetes is slow to import)

        preflight_cluster(
            inventory,
            kubeconfig,
            context,
            in_cluster,
            probe_pqos=not no_pqos,
            as_json=as_json,
            cluster_file=cluster_file,
        )
        return
    facts = preflight.gather(probe_pqos=not no_pqos)
    if as_json:
        click.echo(json.dumps(preflight.report(facts), indent=2, sort_keys=True))
    else:
        preflight.render(facts, Console())


def batch_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--batch-mb``: JSON read per batch (:class:`firm.tracing.stream.StreamOptions`)."""
    return click.option(
        "--batch-mb",
        type=click.IntRange(min=1),
        default=DEFAULT_BATCH_BYTES // 2**20,
        show_default=True,
        help="MiB of trace JSON read at a time: larger files are processed batch by batch, in memory "
        "proportional to the batch (a trace split over inputs further apart than this is reported in parts).",
    )


def _read(files: tuple[Path, ...], **source: Any) -> TraceInput:
    """The traces FILES or the Jaeger options name (see :func:`firm.tracing.source.read_traces`): a wrong
    combination of options is a usage error, a bad file or an unreachable service stops the command with
    its name in the message; diagnostics (query-API errors, refused spans, dropped traces) go to stderr."""
    try:
        found = read_traces(files, **source)
    except TraceSourceError as err:
        if err.option == "--window":
            raise click.BadParameter(err.message, param_hint="--window") from err
        raise click.UsageError(err.message) from err
    except TraceError as err:
        raise click.ClickException(str(err)) from err
    for message in found.diagnostics:
        click.echo(f"warning: {message}", err=True)
    return found


@main.command("critical-path")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@overlap_tolerance_option()
@click.option("--compact", is_flag=True, help="One line of JSON instead of indented JSON.")
@batch_option()
def critical_path_command(files: tuple[Path, ...], tolerance: int, compact: bool, batch_mb: int) -> None:
    """Print the critical path of every trace in FILES as JSON.

    FILES hold Jaeger query-API JSON ({"data": [...]}), single Jaeger traces, Jaeger domain JSON
    or OTLP JSON. Per trace: the spans on the critical path forward in time (service, instance,
    operation, trimmed start and end, selfTime on the path, all in microseconds) and Jaeger UI's
    sections {spanID, sectionStart, sectionEnd}, backwards in time. Files larger than --batch-mb are
    read and printed batch by batch (see docs/tracing.md).
    """
    held: list[bytes] = []  # the last chunk, held back until the next: an empty document is not printed

    def write(chunk: bytes) -> None:
        if held:
            click.echo(held.pop(), nl=False)
        held.append(chunk)

    try:
        count = write_critical_paths(
            files,
            write,
            overlap_tolerance_us=tolerance,
            indent=not compact,
            options=StreamOptions(batch_bytes=batch_mb * 2**20),
            warn=lambda message: click.echo(f"warning: {message}", err=True),
        )
    except TraceError as err:
        raise click.ClickException(str(err)) from err
    if count == 0:
        raise click.ClickException(no_traces(files))
    click.echo(held.pop() if held else b"", nl=False)
    click.echo(b"")


def no_traces(files: tuple[Path, ...]) -> str:
    """The message of FILES that hold no trace (status 1, as for a file that is not a trace)."""
    names = ", ".join(str(f) for f in files)
    return (
        f"{names}: no trace in {'these files' if len(files) > 1 else 'the file'} (an empty answer or "
        "export); give files with traces: Jaeger query-API JSON, Jaeger traces or OTLP JSON"
    )


@main.command("features")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@jaeger_url_option("Read traces from this Jaeger query service instead of FILES.")
@click.option("--service", help="Service whose traces to read from Jaeger (required with --jaeger-url).")
@click.option("--operation", help="Only traces of this operation of --service.")
@click.option(
    "--window",
    default=None,
    metavar="DURATION",
    help="How far back from now to read from Jaeger, e.g. 30s, 5m, 1h (at most 8784h).  [default: 5m]",
)
@trace_limit_option("At most this many traces from Jaeger.  [default: 1000]")
@jaeger_request_options()
@click.option(
    "--min-samples",
    type=click.IntRange(min=2),
    default=20,
    show_default=True,
    help="Requests an instance must be on the path of before RI and CI are computed.",
)
@overlap_tolerance_option()
@batch_option()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "table"]),
    default="json",
    show_default=True,
    help="JSON with stable keys, or an aligned table (times in ms).",
)
def features_command(
    *,
    files: tuple[Path, ...],
    jaeger_url: str | None,
    service: str | None,
    operation: str | None,
    window: str | None,
    limit: int | None,
    timeout: float,
    retries: int,
    min_samples: int,
    tolerance: int,
    batch_mb: int,
    fmt: str,
) -> None:
    """Print per-instance features (RI, CI, share of critical-path time) of a window of traces.

    The traces come from FILES (any form `firm critical-path` reads) or, with --jaeger-url and
    --service, from the last --window of a Jaeger query service. Values that cannot be computed
    (too few samples, constant latency) are null and named in "flags".
    """
    query = TraceQuery(service, operation, window, limit)
    try:
        if files and jaeger_url is None and not query.given():
            result = stream_features(
                files,
                min_samples=min_samples,
                overlap_tolerance_us=tolerance,
                options=StreamOptions(batch_bytes=batch_mb * 2**20),
                warn=lambda message: click.echo(f"warning: {message}", err=True),
            )
        else:
            traces = _read(
                files, jaeger_url=jaeger_url, timeout_s=timeout, retries=retries, query=query
            ).traces
            if not traces and jaeger_url is not None:
                raise click.ClickException(
                    f"Jaeger at {redact_url(jaeger_url)} has no trace of --service {service}"
                    + (f" --operation {operation}" if operation else "")
                    + f" in the last --window {window or query.default_window}; check the names "
                    "(Jaeger's UI lists them) or give a longer --window"
                )
            result = trace_features(traces, min_samples=min_samples, overlap_tolerance_us=tolerance)
    except TraceError as err:
        raise click.ClickException(str(err)) from err
    if result.requests == 0 and files:
        raise click.ClickException(no_traces(files))
    if fmt == "table":
        click.echo(format_table(result))
    else:
        click.echo(json.dumps(result.as_dict(), indent=2))
