"""The ``firm`` command: a thin layer over the library."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm import __version__, exit_status
from firm.cli_options import (
    InputFile,
    apply_conventions,
    files_without_traces,
    jaeger_request_options,
    jaeger_url_option,
    json_option,
    name_environment_source,
    no_trace_warning,
    only_with,
    overlap_tolerance_option,
    redis_reason,
    refuse_empty,
    source_file,
    trace_limit_option,
    typed,
    warnings_to_stderr,
)
from firm.terminal import safe
from firm.urls import redact_url

if TYPE_CHECKING:
    from firm.tracing.features import WindowFeatures
    from firm.tracing.source import TraceInput
    from firm.tracing.stream import StreamOptions

log = logging.getLogger(__name__)

LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "testbed": (
        "firm.testbed.commands",
        "testbed",
        "The embedded default: a traced social network on this machine (needs root).",
    ),
    "load": (
        "firm.load.cli",
        "load_command",
        "Send open-loop load to the Social Network frontend at URL and report latency against the SLOs.",
    ),
    "localize": (
        "firm.localize.cli",
        "localize_command",
        "Rank the service instances of a window of traces by how much they are to blame.",
    ),
    "train-svm": (
        "firm.localize.cli",
        "train_svm_command",
        "Train FIRM's culprit SVM (SGDClassifier, hinge loss, partial_fit) and write a versioned model.",
    ),
    "localize-dataset": (
        "firm.localize.cli",
        "dataset_command",
        "Build a labelled dataset of instance-windows (Parquet + manifest) for train-svm and localize-eval.",
    ),
    "localize-testbed-dataset": (
        "firm.localize.cli",
        "testbed_dataset_command",
        "Run anomaly campaigns on the embedded testbed and write labelled windows (Parquet + manifest).",
    ),
    "localize-eval": (
        "firm.localize.cli",
        "eval_command",
        "Compare the SVM, the rules, the cp_share-growth baseline and FIRM's RI on a labelled dataset.",
    ),
    "train-rl": (
        "firm.rl.cli",
        "train_rl_command",
        "Train the DDPG resource estimator and compare it with a random policy and AIMD.",
    ),
    "run": (
        "firm.loop.cli",
        "run_command",
        "Keep every request type's p99 under its SLO with as few resources as possible (the control loop).",
    ),
    "audit": (
        "firm.loop.cli",
        "audit_command",
        "Show the control loop's recent decisions: what it saw, whom it blamed, what it did and why.",
    ),
    "explain": (
        "firm.loop.cli",
        "explain_command",
        "Why the control loop did what it did: for the last decisions, or the one with ID.",
    ),
    "experiment": (
        "firm.experiment.cli",
        "experiment_command",
        "FIRM against the baselines: the same seeded load and anomalies once per policy on the testbed.",
    ),
    "cluster": (
        "firm.cluster.cli",
        "cluster_command",
        "Show the application's pods on a Kubernetes cluster as firm sees them: service, node, QoS class, "
        "containers and the cgroup path on the node (see docs/cluster.md).",
    ),
}
"""Subcommands imported only when used: {name: (module, attribute, short help)}. Several pull in
torch, scikit-learn or the kubernetes client, which take seconds to import; ``firm --help`` lists
them by their short help (the first sentence of their documentation, kept equal by a test) without
importing them, and ``firm critical-path`` and ``firm features`` need none of them."""


class FirmGroup(click.Group):
    """The ``firm`` group: no traceback reaches a user.

    A :class:`FirmError` from the library becomes its message (what was wrong and the fix); any
    other unexpected error is reported in one line that says how to see the traceback (``-vv``).
    The subcommands of LAZY_COMMANDS are imported when they are run, not when ``--help`` lists them.
    """

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands section of ``firm --help``, as click writes it, with the short help of
        the commands of LAZY_COMMANDS from there (no import)."""
        rows: list[tuple[str, str]] = []
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        for name in names:
            if name in LAZY_COMMANDS and name not in self.commands:
                stand_in = click.Command(name, help=LAZY_COMMANDS[name][2])
                rows.append((name, stand_in.get_short_help_str(limit)))
                continue
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            module, attribute, _ = LAZY_COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command) and command.name == cmd_name, cmd_name
        if command is not None:
            _prepare(command, cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.BadParameter as err:
            name_environment_source(err)
            err.message = safe(err.message, keep_newlines=True)  # type: ignore[misc]
            raise
        except click.ClickException as err:  # its text may quote an input: control characters escaped
            err.message = safe(err.message, keep_newlines=True)  # type: ignore[misc]
            raise
        except (
            click.exceptions.Exit,
            click.exceptions.Abort,
            SystemExit,
            KeyboardInterrupt,
        ):
            raise
        except FirmError as err:
            raise click.ClickException(safe(str(err), keep_newlines=True)) from err
        except BrokenPipeError:  # the reader went away (`firm critical-path big.json | head`): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # nothing more reaches the closed pipe, not even at exit
            raise SystemExit(0) from None
        except MemoryError as err:  # an input larger than memory: say so, not "a bug in firm"
            raise click.ClickException(
                "out of memory: an input is larger than this machine can hold; give smaller inputs "
                "(or, for trace files, a smaller --batch-mb)"
            ) from err
        except (OSError, UnicodeError) as err:  # the environment or an input, not a bug in firm
            log.debug("input or system error", exc_info=True)
            raise click.ClickException(input_error_message(err)) from err
        except Exception as err:
            if _is_redis_connection_error(err):
                raise click.ClickException(
                    f"Redis does not answer ({redis_reason(err)}); start it (`make services`) or give "
                    "the right --redis URL"
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
    if not getattr(command, "_firm_invoke", False):  # once: get_command prepares a command at each call
        command.invoke = _with_context(command.invoke)  # type: ignore[method-assign,assignment]
        command._firm_invoke = True  # type: ignore[attr-defined]


def _with_context(invoke: Callable[[click.Context], Any]) -> Callable[[click.Context], Any]:
    """``invoke`` where a BadParameter the command raises by an option's name (``param_hint``) keeps
    the command's context, so that :func:`firm.cli_options.name_environment_source` can tell whether
    the option's value came from the environment after the context has closed."""

    def invoke_with_context(ctx: click.Context) -> Any:
        try:
            return invoke(ctx)
        except click.BadParameter as err:
            if err.ctx is None:
                err.ctx = ctx
            raise

    return invoke_with_context


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
@click.option(
    "--context", default=None, callback=refuse_empty, help="With --cluster: the kubeconfig context."
)
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
    if in_cluster and (kubeconfig is not None or context is not None):
        raise click.UsageError(
            "--in-cluster uses the pod's service account, --kubeconfig and --context a kubeconfig: "
            "give one or the other"
        )
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
    from rich.console import Console  # noqa: PLC0415 (imported by the commands that print tables)

    from firm import preflight  # noqa: PLC0415 (the actuation library's probes)

    facts = preflight.gather(probe_pqos=not no_pqos)
    if as_json:
        click.echo(json.dumps(preflight.report(facts), indent=2, sort_keys=True))
    else:
        preflight.render(facts, Console())


DEFAULT_BATCH_MB = 32
"""``--batch-mb``'s default: :data:`firm.tracing.stream.DEFAULT_BATCH_BYTES` in MiB (a test keeps them
equal; the stream module is imported only when a command reads traces)."""

MAX_MIN_SAMPLES = (1 << 31) - 1
"""The largest ``--min-samples`` (more requests than any window holds: RI and CI never computed)."""

MAX_BATCH_MB = 1 << 20
"""The largest ``--batch-mb``: a TiB of JSON a batch is far past any memory (a larger number would
overflow the byte count)."""


def batch_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--batch-mb``: JSON read per batch (:class:`firm.tracing.stream.StreamOptions`)."""
    return click.option(
        "--batch-mb",
        type=click.IntRange(min=1, max=MAX_BATCH_MB),
        default=DEFAULT_BATCH_MB,
        show_default=True,
        help="MiB of trace JSON read at a time: larger files are processed batch by batch, in memory "
        "proportional to the batch (a trace split over inputs further apart than this is reported in parts).",
    )


def _read(files: tuple[Path, ...], **source: Any) -> TraceInput:
    """The traces FILES or the Jaeger options name (see :func:`firm.tracing.source.read_traces`): a wrong
    combination of options is a usage error, a bad file or an unreachable service stops the command with
    its name in the message; diagnostics (query-API errors, refused spans, dropped traces) go to stderr."""
    from firm.tracing.errors import TraceError  # noqa: PLC0415 (firm.tracing pulls in numpy)
    from firm.tracing.source import TraceSourceError, read_traces  # noqa: PLC0415

    try:
        found = read_traces(files, **source)
    except TraceSourceError as err:
        if err.option == "--window":
            raise click.BadParameter(err.message, param_hint="--window") from err
        raise click.UsageError(err.message) from err
    except TraceError as err:
        raise click.ClickException(str(err)) from err
    with warnings_to_stderr() as warn:
        for message in found.diagnostics:
            warn(message)
    return found


@main.command("critical-path")
@click.argument("files", nargs=-1, required=True, type=InputFile(path_type=Path))
@overlap_tolerance_option()
@click.option("--compact", is_flag=True, help="One line of JSON instead of indented JSON.")
@batch_option()
def critical_path_command(files: tuple[Path, ...], tolerance: int, compact: bool, batch_mb: int) -> None:
    """Print the critical path of every trace in FILES as JSON.

    FILES hold Jaeger query-API JSON ({"data": [...]}), single Jaeger traces, Jaeger domain JSON,
    OTLP JSON, or JSON Lines of any of them (OpenTelemetry's file exporter); '-' reads stdin. Per
    trace: the spans on the critical path forward in time (service, instance,
    operation, trimmed start and end, selfTime on the path, all in microseconds) and Jaeger UI's
    sections {spanID, sectionStart, sectionEnd}, backwards in time. Files larger than --batch-mb are
    read and printed batch by batch (see docs/tracing.md).
    """
    from firm.tracing.errors import TraceError  # noqa: PLC0415 (firm.tracing pulls in numpy)
    from firm.tracing.stream import StreamOptions  # noqa: PLC0415

    held: list[bytes] = []  # the last chunk, held back until the next: an empty document is not printed

    def write(chunk: bytes) -> None:
        if held:
            click.echo(held.pop(), nl=False)
        held.append(chunk)

    try:
        with warnings_to_stderr() as warn:
            count = critical_paths_of_files(
                files,
                write,
                overlap_tolerance_us=tolerance,
                indent=not compact,
                options=StreamOptions(batch_bytes=batch_mb * 2**20),
                warn=warn,
            )
    except TraceError as err:
        raise click.ClickException(str(err)) from err
    if count == 0:
        raise click.ClickException(no_traces(files))
    click.echo(held.pop() if held else b"", nl=False)
    click.echo(b"")


def critical_paths_of_files(
    files: tuple[Path, ...],
    write: Callable[[bytes], object],
    *,
    overlap_tolerance_us: int,
    indent: bool,
    options: StreamOptions,
    warn: Callable[[str], object],
) -> int:
    """``firm critical-path`` of FILES, written through ``write``:
    :func:`firm.tracing.stream.write_critical_paths` for one file; for several, the same document (a
    test keeps the two equal) written by :func:`firm.tracing.export.write_critical_path_document` from
    the batches of a :class:`FileTally`, which warns through ``warn`` of each file that gave no trace.
    Returns the number of traces (0: the command's error names every file, :func:`no_traces`).

    Raises :class:`firm.tracing.errors.TraceError` naming a file that cannot be read or parsed."""
    from firm.tracing.export import write_critical_path_document  # noqa: PLC0415 (numpy)
    from firm.tracing.gcpause import paused_gc  # noqa: PLC0415
    from firm.tracing.stream import write_critical_paths  # noqa: PLC0415

    if len(set(files)) == 1:  # one file: nothing to tell apart
        return write_critical_paths(
            files,
            write,
            overlap_tolerance_us=overlap_tolerance_us,
            indent=indent,
            options=options,
            warn=warn,
        )
    tally = FileTally(files, warn)
    with paused_gc():  # as in write_critical_paths: the batches die by reference counting
        count = write_critical_path_document(
            tally.batches(options), write, overlap_tolerance_us=overlap_tolerance_us, indent=indent
        )
    if count:
        tally.warn_of_files_without_traces("the critical paths are those of the other files")
    return count


class FileTally:
    """The traces of several FILES batch by batch (:func:`firm.tracing.stream.trace_batches`), told
    apart by file: each batch's diagnostics go to ``warn`` as it comes, and the files that gave a
    trace are counted (:func:`firm.cli_options.source_file`: a line of a JSON Lines file counts for
    the file), so that a file that gave none (an empty answer or export, or one whose every span was
    refused) among files that did is named in a warning rather than passing unseen."""

    def __init__(self, files: tuple[Path, ...], warn: Callable[[str], object]) -> None:
        self.files = files
        self.warn = warn
        self._known = {str(f) for f in files}
        self._gave: set[str] = set()

    def batches(self, options: StreamOptions) -> Iterator[TraceInput]:
        """The batches of the files' traces, each batch's diagnostics through ``warn`` first.

        Raises :class:`firm.tracing.errors.TraceError` naming a file that cannot be read or parsed."""
        from firm.tracing.stream import trace_batches  # noqa: PLC0415 (numpy)

        for batch in trace_batches(self.files, options):
            for message in batch.diagnostics:
                self.warn(message)
            for sources in batch.sources.values():
                self._gave.update(source_file(source, self._known) for source in sources)
            yield batch

    def warn_of_files_without_traces(self, instead: str) -> None:
        """A warning naming each file that gave no trace (``instead``: what the result is, then)."""
        for name in files_without_traces(self.files, self._gave):
            self.warn(no_trace_warning(name, instead))


def no_traces(files: tuple[Path, ...]) -> str:
    """The message of FILES that hold no trace (status 1, as for a file that is not a trace)."""
    unique = list(dict.fromkeys(str(f) for f in files))  # a file given twice is named once
    return (
        f"{', '.join(unique)}: no trace in {'these files' if len(unique) > 1 else 'the file'} (an empty answer or "
        "export, or every span refused: see the warnings above); give files with traces: Jaeger query-API "
        "JSON, Jaeger traces or OTLP JSON"
    )


@main.command("features")
@click.argument("files", nargs=-1, type=InputFile(path_type=Path))
@jaeger_url_option("Read traces from this Jaeger query service instead of FILES.")
@click.option(
    "--service",
    callback=refuse_empty,
    help="Service whose traces to read from Jaeger (required with --jaeger-url).",
)
@click.option("--operation", callback=refuse_empty, help="Only traces of this operation of --service.")
@click.option(
    "--window",
    default=None,
    callback=refuse_empty,
    metavar="DURATION",
    help="How far back from now to read from Jaeger, e.g. 30s, 5m, 1h (at most 8784h).  [default: 5m]",
)
@trace_limit_option("At most this many traces from Jaeger.  [default: 1000]")
@jaeger_request_options()
@click.option(
    "--min-samples",
    type=click.IntRange(min=2, max=MAX_MIN_SAMPLES),
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
    from firm.tracing import trace_features  # noqa: PLC0415 (firm.tracing pulls in numpy)
    from firm.tracing.errors import TraceError  # noqa: PLC0415
    from firm.tracing.features import format_table  # noqa: PLC0415
    from firm.tracing.source import TraceQuery  # noqa: PLC0415
    from firm.tracing.stream import StreamOptions  # noqa: PLC0415

    only_with(
        "--jaeger-url",
        jaeger_url is not None,
        typed(click.get_current_context(), **{"--timeout": "timeout", "--retries": "retries"}),
    )
    query = TraceQuery(service, operation, window, limit)
    try:
        if files and jaeger_url is None and not query.given():
            with warnings_to_stderr() as warn:
                result = features_of_files(
                    files,
                    min_samples=min_samples,
                    overlap_tolerance_us=tolerance,
                    options=StreamOptions(batch_bytes=batch_mb * 2**20),
                    warn=warn,
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


def features_of_files(
    files: tuple[Path, ...],
    *,
    min_samples: int,
    overlap_tolerance_us: int,
    options: StreamOptions,
    warn: Callable[[str], object],
) -> WindowFeatures:
    """``firm features`` of FILES: :func:`firm.tracing.stream.stream_features` for one file; for
    several, the same computation (a test keeps the two equal) over the batches of a
    :class:`FileTally`, which warns through ``warn`` of each file that gave no trace (an empty answer
    or export among good ones would otherwise pass unseen); when none gave one, the command's error
    names them all (:func:`no_traces`).

    Raises :class:`firm.tracing.errors.TraceError` naming a file that cannot be read or parsed."""
    from firm.tracing.critical_path import critical_paths  # noqa: PLC0415 (numpy)
    from firm.tracing.features import PathSummary, window_features  # noqa: PLC0415
    from firm.tracing.gcpause import paused_gc  # noqa: PLC0415
    from firm.tracing.stream import stream_features  # noqa: PLC0415

    if len(set(files)) == 1:  # one file: nothing to tell apart
        return stream_features(
            files,
            min_samples=min_samples,
            overlap_tolerance_us=overlap_tolerance_us,
            options=options,
            warn=warn,
        )
    tally = FileTally(files, warn)
    kept: list[PathSummary] = []
    with paused_gc():  # as in stream_features: nothing made here forms a reference cycle
        for batch in tally.batches(options):
            paths = critical_paths(batch.traces, overlap_tolerance_us=overlap_tolerance_us)
            kept.extend(PathSummary.of(cp.main) for cp in paths)
        result = window_features(kept, min_samples=min_samples)
    if result.requests:
        tally.warn_of_files_without_traces("the features are those of the other files")
    return result
