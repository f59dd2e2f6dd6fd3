"""``firm localize``: rank the instances of a window of traces by blame."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.cli_options import (
    MAX_SEED,
    MAX_WHOLE,
    InputFile,
    ModelFile,
    OutputDirectory,
    OutputFile,
    config_option,
    describe,
    files_without_traces,
    jaeger_url_option,
    no_trace_warning,
    only_with,
    refuse_empty,
    trace_limit_option,
    typed,
    warnings_to_stderr,
)
from firm.localize.errors import LocalizeError
from firm.localize.localizer import Localizer
from firm.localize.model import MODEL_INPUTS
from firm.localize.ranking import InstanceScore, Ranking
from firm.terminal import safe
from firm.tracing import JaegerClient, Trace, TraceError, parse_duration_us
from firm.tracing.parse import load_trace_files
from firm.tracing.source import TraceSourceError, check_window_us

__all__ = [
    "dataset_command",
    "eval_command",
    "format_ranking",
    "load_window",
    "localize_command",
    "testbed_dataset_command",
    "train_svm_command",
]

_FILE = InputFile(path_type=Path)


def load_window(files: Sequence[Path], what: str) -> list[Trace]:
    """Every trace of ``files`` as one window (a trace split over files is one trace); the reader's
    diagnostics (query-API errors, refused spans, dropped traces) go to stderr."""
    try:
        reader = load_trace_files(files)
        traces = reader.traces()
    except TraceError as err:
        raise click.ClickException(f"{what}: {err}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise click.ClickException(f"{what}: cannot read the files: {describe(err)}") from err
    with warnings_to_stderr(f"{what}: ") as warn:
        for message in reader.diagnostics:
            warn(message)
        if traces and len(set(map(str, files))) > 1:
            # a JSON Lines file's traces come from FILE:LINE, which is FILE's (files_without_traces)
            sources = [source for t in traces for source in reader.sources(t.trace_id)]
            for name in files_without_traces(files, sources):
                warn(no_trace_warning(name, f"the {what} is that of the other files"))
    return traces


def _duration(text: str | None, default: str, option: str) -> int:
    try:
        us = parse_duration_us(text or default)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint=option) from err
    try:
        return check_window_us(us, option)
    except TraceSourceError as err:
        raise click.BadParameter(err.message, param_hint=option) from err


def _from_jaeger(
    url: str,
    service: str | None,
    operation: str | None,
    window: str | None,
    reference_window: str | None,
    limit: int,
) -> tuple[list[Trace], list[Trace] | None]:
    """The last --window of traces from Jaeger, and the --reference-window before it (or None)."""
    if not service:
        raise click.UsageError("--jaeger-url needs --service")
    w_us = _duration(window, "1m", "--window")
    r_us = _duration(reference_window, "1m", "--reference-window") if reference_window else None
    end = time.time_ns() // 1000
    try:
        client = JaegerClient(url)
        traces = client.search(service, end - w_us, end, limit=limit, operation=operation)
        ref = (
            client.search(service, end - w_us - r_us, end - w_us, limit=limit, operation=operation)
            if r_us is not None
            else None
        )
    except TraceError as err:
        raise click.ClickException(str(err)) from err
    return traces, ref


def _drivers(i: InstanceScore) -> str:
    f = i.features
    parts = []
    for name, label in (("blame_own_us", "own"), ("blame_in_us", "calls in"), ("blame_out_us", "calls out")):
        v = f.get(name)
        if v is not None and v > 0:
            parts.append((v, f"{label} +{v / 1000:.2f} ms"))
    parts.sort(reverse=True)
    text = ", ".join(p for _, p in parts[:3])
    if not text and f.get("cp_share") is not None:
        text = f"cp share {100 * (f.get('cp_share') or 0.0):.1f}%"
    return text or "-"


def _table(rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """``rows`` (the head first) as aligned text lines; the columns in ``right`` aligned right."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(widths[c]) if c in right else cell.ljust(widths[c]) for c, cell in enumerate(r)
        ).rstrip()
        for r in rows
    ]


def format_ranking(ranking: Ranking, top: int = 10) -> str:
    """The ranking as an aligned text table: the ``top`` instances and what drove their scores."""

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    head = ["#", "service", "instance", "score", "culprit", "drivers (per request)", "RI", "CI"]
    rows: list[list[str]] = [head]
    for k, i in enumerate(ranking.top(top), 1):
        rows.append(
            [
                str(k),
                safe(i.service),  # names come from the traces: control characters escaped (firm.terminal)
                safe(i.instance),
                f"{i.score:.4f}",
                "yes" if i.culprit else "",
                _drivers(i),
                num(i.features.get("ri"), ".2f"),
                num(i.features.get("ci"), ".2f"),
            ]
        )
    lines = _table(rows, right={0, 3, 6, 7})
    w = ranking.window
    lat = w.get("latencyP50")
    ref = w.get("referenceLatencyP50")
    head_line = (
        f"{w.get('requests')} requests, median latency {num(None if lat is None else lat / 1000, '.3f')} ms"
    )
    if ranking.reference_used:
        head_line += (
            f"; reference: {w.get('referenceRequests')} requests, median "
            f"{num(None if ref is None else ref / 1000, '.3f')} ms"
        )
    else:
        head_line += (
            "; no reference window: ranked by where the time goes in this window alone, "
            "not by what changed (give --reference for that)"
        )
    head_line += f"; method: {ranking.method}"
    if ranking.flags:
        head_line += f"; flags: {','.join(ranking.flags)}"
    more = len(ranking.instances) - top
    tail = [f"... and {more} more instances"] if more > 0 else []
    return "\n".join([head_line, *lines, *tail])


class _ReferenceFiles(click.Command):
    """``--reference A B C`` takes every file up to the next option (click options take one value)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        taking = False
        for arg in args:
            if arg == "--reference" or arg.startswith("--reference="):
                taking = arg == "--reference"
                out.append(arg)
                continue
            if arg.startswith("-"):
                taking = False
            elif taking and out and out[-1] != "--reference":
                out.append("--reference")
            out.append(arg)
        return super().parse_args(ctx, out)


@click.command("localize", cls=_ReferenceFiles)
@click.argument("files", nargs=-1, type=_FILE)
@click.option(
    "--reference",
    "reference",
    multiple=True,
    type=_FILE,
    metavar="FILE...",
    help="Traces of a reference window from before the trouble: every file after it up to the next option.",
)
@click.option(
    "--model",
    "model",
    type=ModelFile(path_type=Path),
    default=None,
    help="A model file written by `firm train-svm`.  [default: the shipped model, else the rules]",
)
@click.option("--rules", "use_rules", is_flag=True, help="Rank by the training-free rules, not by a model.")
@click.option(
    "--baseline",
    "use_baseline",
    is_flag=True,
    help="Rank by the growth of cp_share (the training-free baseline), not by a model.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "table"]),
    default="json",
    show_default=True,
    help="JSON with stable keys, or a table of the top instances and what drove their scores.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Instances shown in the table (JSON always holds all).",
)
@click.option("--compact", is_flag=True, help="One line of JSON instead of indented JSON.")
@jaeger_url_option("Read the window from this Jaeger query service instead of FILES.")
@click.option(
    "--service",
    callback=refuse_empty,
    help="Service whose traces to read from Jaeger (required with --jaeger-url).",
)
@click.option("--operation", callback=refuse_empty, help="Only traces of this operation of --service.")
@click.option(
    "--window",
    "window",
    default=None,
    metavar="DURATION",
    help="With --jaeger-url: the window is the last DURATION, e.g. 60s.  [default: 1m]",
)
@click.option(
    "--reference-window",
    "reference_window",
    default=None,
    metavar="DURATION",
    help="With --jaeger-url: the reference is the DURATION before the window (none if not given).",
)
@trace_limit_option("With --jaeger-url: at most this many traces per window.  [default: 1000]", default=1000)
def localize_command(
    *,
    files: tuple[Path, ...],
    reference: tuple[Path, ...],
    model: Path | None,
    use_rules: bool,
    use_baseline: bool,
    fmt: str,
    top: int,
    compact: bool,
    jaeger_url: str | None,
    service: str | None,
    operation: str | None,
    window: str | None,
    reference_window: str | None,
    limit: int,
) -> None:
    """Rank the service instances of a window of traces by how much they are to blame.

    FILES hold the window's traces (any form `firm critical-path` reads; a trace split over
    files is one request). With --reference, the window is compared with the reference window
    and instances are ranked by what changed: growth of their own processing time and of the
    request / response gaps of their calls (see docs/localization.md). Without it, the window
    alone is ranked by where its time goes, and the output says so ("no_reference" in flags).

    JSON: {"instances": [{"service", "instance", "score", "culprit", "features": {...}}, ...]}
    sorted by score, highest first, with "referenceUsed", "flags", "method" and "window".
    """
    if jaeger_url is None and (service or operation or window or reference_window):
        raise click.UsageError(
            "--service, --operation, --window and --reference-window apply to --jaeger-url only"
        )
    only_with(
        "--jaeger-url", jaeger_url is not None, typed(click.get_current_context(), **{"--limit": "limit"})
    )
    only_with("--format json", fmt == "json", typed(click.get_current_context(), **{"--compact": "compact"}))
    if jaeger_url is not None and (files or reference):
        raise click.UsageError("give FILES (and --reference) or --jaeger-url, not both")
    if not files and jaeger_url is None:
        raise click.UsageError(
            "give the window's trace FILES (and --reference FILE for a window from before), "
            "or --jaeger-url with --service"
        )
    if sum((use_rules, use_baseline, model is not None)) > 1:
        raise click.UsageError("give at most one of --model, --rules and --baseline")
    try:
        if use_rules:
            loc = Localizer.rules()
        elif use_baseline:
            loc = Localizer.baseline()
        else:
            loc = Localizer.load(model)
    except LocalizeError as err:
        raise click.ClickException(str(err)) from err
    if jaeger_url is not None:
        traces, ref = _from_jaeger(jaeger_url, service, operation, window, reference_window, limit)
        reference = (Path("jaeger"),) if ref is not None else ()
    else:
        traces = load_window(files, "window")
        ref = load_window(reference, "reference") if reference else None
    if not traces:
        raise click.ClickException(
            "window: no traces, so no instance can be ranked. Fix: give files with traces "
            '(a Jaeger query-API answer {"data": [...]}, ...), or a longer --window'
        )
    if reference and not ref:
        raise click.ClickException(
            "reference: no traces in the reference window. "
            "Fix: give a reference window with traces, or leave --reference out"
        )
    try:
        ranking = loc.rank(traces, ref)
    except LocalizeError as err:
        raise click.ClickException(str(err)) from err
    if fmt == "table":
        click.echo(format_ranking(ranking, top))
    else:
        click.echo(json.dumps(ranking.as_dict(), indent=None if compact else 2))


# -- Datasets, training, evaluation ---------------------------------------------------------------

_DSB = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "jaeger-traces" / "deathstarbench"


def _progress(label: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


_Cmd = TypeVar("_Cmd", bound=Callable[..., Any])

MAX_TRAINING_SEED = (1 << 32) - 1
"""The largest seed of a training (``--seed`` of train-svm and localize-eval): scikit-learn's
``random_state`` takes 0 to 2^32 - 1."""

MAX_SYNTHETIC = 10_000
"""The most windows ``--synthetic`` makes per fault kind and graph (each is a window of traces held in
memory while the dataset is built; the documented run makes 15)."""

MAX_TESTBED_WINDOW_S = 3600
"""The longest window of ``localize-testbed-dataset --window``, seconds (each run lasts about twice
that)."""

_OUT_OPTION = click.option(
    "--out",
    "out",
    type=OutputDirectory(path_type=Path),
    required=True,
    help="Folder to write windows.parquet and manifest.json to.",
)


def _training_options(prefix: str = "") -> Callable[[_Cmd], _Cmd]:
    """The SVM's training options (--epochs, --alpha, --seed), ``prefix`` before each help text."""

    def text(help_text: str) -> str:
        return prefix + help_text[0].lower() + help_text[1:] if prefix else help_text

    def apply(f: _Cmd) -> _Cmd:
        for option in reversed(
            (
                click.option(
                    "--epochs",
                    type=click.IntRange(min=1),
                    default=20,
                    show_default=True,
                    help=text("Passes over the data."),
                ),
                click.option(
                    "--alpha",
                    type=click.FloatRange(min=0, min_open=True),
                    default=1e-4,
                    show_default=True,
                    help=text("L2 regularisation strength."),
                ),
                click.option(
                    "--seed",
                    type=click.IntRange(0, MAX_TRAINING_SEED),
                    default=0,
                    show_default=True,
                    help=text("Seed of the shuffling and the classifier."),
                ),
            )
        ):
            f = option(f)
        return f

    return apply


def _dataset_option(flag: str, multiple: bool = False) -> Callable[[_Cmd], _Cmd]:
    """The option naming the dataset a command reads (as ``source``; a tuple with ``multiple``)."""
    return click.option(
        flag,
        "source",
        type=click.Path(exists=True, path_type=Path),
        required=True,
        multiple=multiple,
        help="A dataset written by `firm localize-dataset` (its folder or windows.parquet)"
        + ("; repeat to train on several together." if multiple else "."),
    )


def _graph_mask(data: Mapping[str, Any], names: str, hint: str) -> Any:
    """Rows whose graph (campaign) is one of the comma-separated ``names``; BadParameter if none."""
    import numpy as np  # noqa: PLC0415

    wanted = {n.strip() for n in names.split(",") if n.strip()}
    mask = np.asarray([g in wanted for g in data["graph"]], dtype=bool)
    if not mask.any():
        known = ", ".join(sorted(set(data["graph"])))
        raise click.BadParameter(
            f"no window of graph {names!r} in the dataset (it has {known})", param_hint=hint
        )
    return mask


@click.command("localize-dataset")
@_OUT_OPTION
@click.option(
    "--synthetic",
    "cases",
    type=click.IntRange(min=1, max=MAX_SYNTHETIC),
    default=None,
    metavar="N",
    help="Generate N labelled fault windows per fault kind and graph by perturbing traces "
    "(see docs/localization.md), plus 10% quiet windows.",
)
@click.option(
    "--graphs",
    default="dsb,boutique",
    show_default=True,
    help="Call graphs of the synthetic windows: dsb (recorded DeathStarBench traces), boutique, hotel.",
)
@click.option(
    "--dsb-traces",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of the recorded DeathStarBench traces.  [default: ../shared/data/jaeger-traces/deathstarbench]",
)
@click.option(
    "--campaign",
    "campaign",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A campaign record (JSON lines) to label windows of --traces with.",
)
@click.option(
    "--traces",
    "trace_files",
    multiple=True,
    type=_FILE,
    metavar="FILE",
    help="Traces recorded during --campaign (repeat for several files).",
)
@click.option(
    "--window", "window", default="60s", show_default=True, help="Window length for --campaign, e.g. 30s, 1m."
)
@click.option(
    "--runs",
    "runs",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A folder of testbed runs kept by `firm localize-testbed-dataset --keep-traces` (searched "
    "recursively): their windows, labelled as recorded, with the features of this firm.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    default=0,
    show_default=True,
    help="Seed of the synthetic windows.",
)
def dataset_command(
    *,
    out: Path,
    cases: int | None,
    graphs: str,
    dsb_traces: Path | None,
    campaign: Path | None,
    trace_files: tuple[Path, ...],
    window: str,
    runs: Path | None,
    seed: int,
) -> None:
    """Build a labelled dataset of instance-windows (Parquet + manifest) for train-svm and localize-eval.

    Either --synthetic N (fault windows made by perturbing real traces: CPU hogs, CPU contention,
    network delay; no testbed needed) or --campaign RECORD with --traces FILES (windows of a
    recorded campaign, labelled by its injections: positive when an injection covered at least
    half of the window) or --runs DIR (testbed runs kept by localize-testbed-dataset; the dataset's
    graph column is each run's campaign).
    """
    from firm.localize import campaigns, labels, synthetic, testbed_runs, train  # noqa: PLC0415

    if sum(v is not None for v in (cases, campaign, runs)) != 1:
        raise click.UsageError("give exactly one of --synthetic N, --campaign RECORD and --runs DIR")
    t0 = time.monotonic()
    rows: list[dict[str, Any]]
    try:
        if runs is not None:
            from firm.testbed import config as testbed_config  # noqa: PLC0415

            slo_ms = dict(testbed_config.TestbedConfig().slo_ms)
            kept = testbed_runs.load_runs(runs)
            rows = []
            with _progress("runs") as bar:
                task = bar.add_task("runs", total=len(kept))
                for run, win, ref in kept:
                    rows.extend(testbed_runs.run_rows(run, win, ref, slo_ms=slo_ms))
                    bar.update(task, advance=1)
            manifest: dict[str, Any] = {
                "source": "testbed",
                "runs": str(runs),
                "campaigns": sorted({r.campaign for r, _, _ in kept}),
                "runsKept": len(kept),
                "sloMs": slo_ms,
                "note": "windows of real anomalies on the embedded testbed, labelled as recorded; kinds "
                "placed on CPUs label every instance sharing the target's CPUs",
            }
        elif cases is not None:
            names = [g.strip() for g in graphs.split(",") if g.strip()]
            try:
                tpl = synthetic.graphs(names, dsb_traces or _DSB)
            except ValueError as err:
                raise click.BadParameter(str(err), param_hint="--graphs") from err
            with _progress("windows") as bar:
                task = bar.add_task("windows", total=None)
                rows = synthetic.synthetic_rows(
                    tpl, cases, seed, progress=lambda d, n: bar.update(task, completed=d, total=n)
                )
            manifest = {
                "source": "synthetic",
                "graphs": names,
                "casesPerKind": cases,
                "seed": seed,
                "note": "fault windows simulated by perturbing traces (firm.localize.synthetic), not recorded faults",
            }
        else:
            assert campaign is not None
            if not trace_files:
                raise click.UsageError("--campaign needs the --traces recorded during it")
            try:
                window_us = parse_duration_us(window)
            except ValueError as err:
                raise click.BadParameter(str(err), param_hint="--window") from err
            if window_us <= 0:
                raise click.BadParameter("the window must be longer than zero", param_hint="--window")
            recorded = labels.read_campaign_file(campaign)
            traces = load_window(trace_files, "traces")
            rows = campaigns.campaign_rows(traces, recorded, window_us, campaign=campaign.stem)
            manifest = {
                "source": "campaign",
                "campaign": str(campaign),
                "traces": [str(f) for f in trace_files],
                "windowUs": window_us,
                "injections": len(recorded),
            }
        manifest["command"] = "firm localize-dataset " + " ".join(sys.argv[2:])
        manifest["seconds"] = round(time.monotonic() - t0, 1)
    except LocalizeError as err:
        raise click.ClickException(str(err)) from err
    _write_dataset(train, rows, out, manifest)


@click.command("train-svm")
@_dataset_option("--from", multiple=True)
@click.option(
    "--out",
    "out",
    type=OutputFile(path_type=Path),
    required=True,
    help="Model file to write (JSON).",
)
@_training_options()
@click.option(
    "--batch", type=click.IntRange(min=1), default=1000, show_default=True, help="Rows per partial_fit."
)
@click.option(
    "--test-share",
    type=click.FloatRange(0.0, 0.9),
    default=0.2,
    show_default=True,
    help="Share of the windows held out to measure the model (0: train on all).",
)
@click.option(
    "--holdout-graph",
    default=None,
    metavar="NAME",
    help="Hold out every window of these graphs or campaigns (comma-separated) instead of a random share.",
)
@click.option(
    "--features",
    "features",
    default=None,
    metavar="NAMES",
    help="Comma-separated inputs to use.  [default: all of " + ", ".join(MODEL_INPUTS) + "]",
)
def train_svm_command(
    *,
    source: tuple[Path, ...],
    out: Path,
    epochs: int,
    batch: int,
    alpha: float,
    seed: int,
    test_share: float,
    holdout_graph: str | None,
    features: str | None,
) -> None:
    """Train FIRM's culprit SVM (SGDClassifier, hinge loss, partial_fit) and write a versioned model.

    The model file holds the weights, the scaling, the feature list, the training configuration,
    a summary of the dataset (with its manifest) and the held-out results of the SVM, the rules
    and the cp_share-growth baseline.
    """
    import numpy as np  # noqa: PLC0415

    from firm.localize import train  # noqa: PLC0415

    try:
        parts = [train.read_dataset(p) for p in source]
        data = train.concat_datasets(parts)
        if holdout_graph is not None:
            test = _graph_mask(data, holdout_graph, "--holdout-graph")
            fit = ~test
        elif test_share > 0:
            fit, test = train.split_windows(data, test_share, seed)
        else:
            fit, test = np.ones(len(data["y"]), dtype=bool), np.zeros(len(data["y"]), dtype=bool)
        manifests = []
        for part in parts:
            manifest_path = Path(part["path"]).with_name("manifest.json")
            manifests.append(json.loads(manifest_path.read_text()) if manifest_path.is_file() else {})
        summary = {
            "dataset": ", ".join(str(p) for p in source),
            "manifest": manifests[0] if len(manifests) == 1 else {"datasets": manifests},
            "trainRows": int(fit.sum()),
            "testRows": int(test.sum()),
            "holdout": holdout_graph or f"{test_share:.0%} of the windows",
            "trainGraphs": sorted({str(g) for g, f in zip(data["graph"], fit, strict=True) if f}),
            "testGraphs": sorted({str(g) for g, t in zip(data["graph"], test, strict=True) if t}),
            "source": "+".join(str(m.get("source", "unknown")) for m in manifests),
            "note": "; ".join(str(m["note"]) for m in manifests if m.get("note")),
            "command": "firm train-svm " + " ".join(sys.argv[2:]),
        }
        names = _feature_names(features) or MODEL_INPUTS
        try:
            cfg = train.TrainConfig(epochs=epochs, batch=batch, alpha=alpha, seed=seed, features=names)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--features") from err
        t0 = time.monotonic()
        with _progress("epochs") as bar:
            task = bar.add_task("epochs", total=epochs)
            model = train.train_svm(
                data["x"][fit],
                data["y"][fit],
                cfg,
                data_summary=summary,
                progress=lambda d, n: bar.update(task, completed=d),
            )
        seconds = time.monotonic() - t0
        metrics: dict[str, Any] = {"trainSeconds": round(seconds, 3)}
        if test.any():
            metrics["heldOut"] = {r.method: r.as_dict() for r in train.compare(data, test, model)}
            if "slo_violated" in data:
                metrics["heldOutSloViolating"] = {
                    r.method: r.as_dict() for r in train.compare(data, test, model, slo_violating=True)
                }
        model = dataclasses.replace(model, metrics=metrics)
        model.save(out)
    except LocalizeError as err:
        raise click.ClickException(str(err)) from err
    except OSError as err:
        raise click.ClickException(f"{out}: cannot write the model: {describe(err)}") from err
    click.echo(json.dumps({"model": str(out), **metrics}, indent=2))


def _feature_names(text: str | None) -> tuple[str, ...]:
    """The comma-separated names of ``text`` (empty for None)."""
    return tuple(f.strip() for f in (text or "").split(",") if f.strip())


@click.command("localize-eval")
@_dataset_option("--dataset")
@click.option(
    "--model",
    "model_path",
    type=ModelFile(path_type=Path),
    default=None,
    help="Model file to evaluate.  [default: the shipped model]",
)
@click.option(
    "--graph",
    "graph",
    default=None,
    metavar="NAMES",
    help="Only the windows of these graphs or campaigns (comma-separated).",
)
@click.option(
    "--cross-validate",
    "cross",
    is_flag=True,
    help="Instead of a model file: for every campaign (graph) of the dataset, train an SVM on the "
    "others (with --features, --alpha, --epochs, --seed) and score that campaign with it.",
)
@click.option(
    "--features",
    "features",
    default=None,
    metavar="NAMES",
    help="With --cross-validate: the SVM's inputs.  [default: those of the shipped model]",
)
@click.option(
    "--also-train",
    "also_train",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    metavar="DATASET",
    help="With --cross-validate: a dataset every fold also trains on (never scored), e.g. synthetic "
    "windows beside testbed campaigns; repeat for several.",
)
@click.option(
    "--slo-violating",
    "slo_violating",
    is_flag=True,
    help="Count only the windows that violate an SLO (a request type's p99 above its SLO; datasets "
    "built from kept testbed runs say which).",
)
@_training_options("With --cross-validate: ")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="table", show_default=True)
def eval_command(
    *,
    source: Path,
    model_path: Path | None,
    graph: str | None,
    cross: bool,
    also_train: tuple[Path, ...],
    features: str | None,
    slo_violating: bool,
    alpha: float,
    epochs: int,
    seed: int,
    fmt: str,
) -> None:
    """Compare the SVM, the rules, the cp_share-growth baseline and FIRM's RI on a labelled dataset.

    Per row: accuracy, precision, recall and F1 of the culprit verdict. Per window with a culprit:
    top-1 and top-3 (the culprit among the highest scores), overall and per fault kind. With
    --cross-validate, every campaign is scored by an SVM that was trained without it (held-out
    campaigns, not held-out windows).
    """
    import numpy as np  # noqa: PLC0415

    from firm.localize import train  # noqa: PLC0415
    from firm.localize.localizer import DEFAULT_MODEL  # noqa: PLC0415
    from firm.localize.model import LinearModel  # noqa: PLC0415

    if cross and model_path is not None:
        raise click.UsageError("give --model or --cross-validate, not both")
    if also_train and not cross:
        raise click.UsageError("--also-train applies to --cross-validate only")
    decisions = None
    model = None
    try:
        data = train.read_dataset(source)
        path = None if cross else model_path or (DEFAULT_MODEL if DEFAULT_MODEL.is_file() else None)
        if cross:
            default = LinearModel.load(DEFAULT_MODEL).features if DEFAULT_MODEL.is_file() else MODEL_INPUTS
            try:
                cfg = train.TrainConfig(
                    epochs=epochs, alpha=alpha, seed=seed, features=_feature_names(features) or default
                )
            except ValueError as err:
                raise click.BadParameter(str(err), param_hint="--features") from err
            extra = train.concat_datasets([train.read_dataset(p) for p in also_train]) if also_train else None
            decisions, _ = train.held_out_decisions(data, cfg, extra=extra)
        elif path is not None:
            model = LinearModel.load(path)
    except LocalizeError as err:
        raise click.ClickException(str(err)) from err
    mask = np.ones(len(data["y"]), dtype=bool) if graph is None else _graph_mask(data, graph, "--graph")
    try:
        results = train.compare(data, mask, model, decisions, slo_violating=slo_violating)
    except LocalizeError as err:
        raise click.ClickException(str(err)) from err
    doc: dict[str, Any] = {
        "dataset": str(source),
        "model": "cross-validated by campaign" if cross else None if path is None else str(path),
        "windows": "SLO-violating windows with a culprit" if slo_violating else "windows with a culprit",
        "results": {r.method: r.as_dict() for r in results},
    }
    by = {r.method: r for r in results}
    if "svm" in by:
        doc["svmTop1MinusBaseline"] = round(by["svm"].top1 - by["cp_share_growth"].top1, 6)
        doc["svmTop1MinusRules"] = round(by["svm"].top1 - by["rules"].top1, 6)
        doc["svmTop1MinusFirmRi"] = round(by["svm"].top1 - by["firm_ri"].top1, 6)
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2))
        return
    head = ["method", "windows", "top-1", "top-3", "accuracy", "precision", "recall", "F1"]
    rows = [head] + [
        [
            r.method,
            str(r.windows),
            f"{r.top1:.3f}",
            f"{r.top3:.3f}",
            f"{r.accuracy:.3f}",
            f"{r.precision:.3f}",
            f"{r.recall:.3f}",
            f"{r.f1:.3f}",
        ]
        for r in results
    ]
    lines = [f"top-1 / top-3 over {doc['windows']}; accuracy .. F1 over every instance"]
    lines += _table(rows, right=set(range(1, len(head))))
    kinds = sorted({k for r in results for k in r.per_kind})
    lines.append("")
    lines.append(
        "top-1 per fault kind: "
        + "; ".join(
            f"{k}: "
            + ", ".join(f"{r.method} {r.per_kind[k]['top1']:.3f}" for r in results if k in r.per_kind)
            for k in kinds
        )
    )
    if "svm" in by:
        lines.append(
            f"SVM top-1 minus cp_share-growth baseline: {100 * doc['svmTop1MinusBaseline']:+.1f} points; "
            f"minus the rules: {100 * doc['svmTop1MinusRules']:+.1f} points; "
            f"minus FIRM's RI: {100 * doc['svmTop1MinusFirmRi']:+.1f} points"
        )
    click.echo("\n".join(lines))


_START_SLACK_S = 12
"""Seconds the load and the anomaly run on past the planned window (for the anomaly's late start)."""


def _testbed_kinds() -> list[str]:
    """The anomaly kinds this machine can inject (the registry's, network_delay only with netem)."""
    from ansible_collections.firm.core.plugins.module_utils import anomaly  # noqa: PLC0415

    return [
        k for k in anomaly.kind_names() if not anomaly.REGISTRY[k].kernel_feature or anomaly.netem_available()
    ]


def _intensities(text: str) -> list[int]:
    try:
        levels = [int(v) for v in text.split(",")]
    except ValueError as err:
        raise click.BadParameter("give integers 0-100", param_hint="--intensity") from err
    if any(not 0 <= v <= 100 for v in levels):
        raise click.BadParameter("give integers 0-100", param_hint="--intensity")
    return levels


def _cpu_set(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.update(range(int(lo), int(hi) + 1))
        elif part.strip():
            out.add(int(part))
    return out


def _plans(
    plan: str | None, kinds: str, targets: str | None, intensities: str, services: Sequence[str]
) -> list[tuple[str, str, int]]:
    """(kind, target, intensity) of every run: --plan's triples, else kinds x targets x intensities."""
    supported = _testbed_kinds()
    if plan:
        out = []
        for item in plan.split(","):
            parts = item.strip().split("/")
            if len(parts) != 3 or not parts[2].isdigit():
                raise click.BadParameter(
                    f"{item.strip()!r} is not KIND/SERVICE/INTENSITY, e.g. cpu/text/60", param_hint="--plan"
                )
            out.append((parts[0], parts[1], int(parts[2])))
    else:
        kind_list = [k.strip() for k in kinds.split(",") if k.strip()]
        target_list = [t.strip() for t in targets.split(",")] if targets else list(services)
        out = [(k, t, v) for k in kind_list for t in target_list for v in _intensities(intensities)]
    bad = sorted({k for k, _, _ in out if k not in supported})
    if bad or not out:
        raise click.BadParameter(
            f"unknown or unsupported kinds {bad}; this machine supports {', '.join(supported)}",
            param_hint="--plan" if plan else "--kinds",
        )
    unknown = sorted({t for _, t, _ in out if t not in services})
    if unknown:
        raise click.BadParameter(
            f"unknown services {unknown}; the testbed has {', '.join(services)}",
            param_hint="--plan" if plan else "--targets",
        )
    if any(not 0 <= v <= 100 for _, _, v in out):
        raise click.BadParameter("intensities are 0-100", param_hint="--plan" if plan else "--intensity")
    return out


@click.command("localize-testbed-dataset")
@_OUT_OPTION
@click.option(
    "--kinds",
    default="cpu",
    show_default=True,
    help="Comma-separated anomaly kinds (of the registry; network_delay needs netem in the kernel).",
)
@click.option(
    "--targets", default=None, help="Comma-separated services to inject beside.  [default: every service]"
)
@click.option(
    "--intensity", "intensities", default="60", show_default=True, help="Comma-separated intensities (0-100)."
)
@click.option(
    "--plan",
    "plan",
    default=None,
    metavar="KIND/SERVICE/INTENSITY,...",
    help="The runs, one triple each, instead of --kinds x --targets x --intensity.",
)
@click.option(
    "--campaign",
    "campaign",
    default="testbed",
    show_default=True,
    help="Name of this recording (the dataset's graph column: train-svm --holdout-graph splits by it).",
)
@click.option(
    "--window",
    "window_s",
    type=click.IntRange(min=5, max=MAX_TESTBED_WINDOW_S),
    default=25,
    show_default=True,
    help="Seconds of each window (the reference before the anomaly, the window during it).",
)
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_WHOLE),
    default=1,
    show_default=True,
    help="Seed of the load (run n uses SEED + n).",
)
@config_option("Testbed configuration (YAML).  [default: the built-in one]")
@click.option(
    "--keep-traces",
    is_flag=True,
    help="Also keep every run (its window and reference as Jaeger JSON, its record and telemetry) in "
    "OUT/runs, so that `firm localize-dataset --runs` can compute its features again.",
)
def testbed_dataset_command(
    *,
    out: Path,
    kinds: str,
    targets: str | None,
    intensities: str,
    plan: str | None,
    campaign: str,
    window_s: int,
    seed: int,
    config_path: str | None,
    keep_traces: bool,
) -> None:
    """Run anomaly campaigns on the embedded testbed and write labelled windows (Parquet + manifest).

    For every run (kind x target x intensity, or --plan): load the testbed, start the anomaly
    after one window, read the window before it (the reference) and the window during it from the
    trace store, and label every instance from the anomaly's record: kinds placed on CPUs (CPU,
    memory bandwidth, LLC, disk) label every instance sharing the target's CPUs, the target
    marked; network kinds label the target. Brings the testbed up if it is not, and takes it down
    again at the end. Needs root; run it under `flock /tmp/firm-real.lock`. Each run takes about
    2 x --window + 30 seconds.
    """
    from firm.localize import train  # noqa: PLC0415
    from firm.testbed import config as testbed_config  # noqa: PLC0415
    from firm.testbed import experiment, lifecycle  # noqa: PLC0415
    from firm.testbed.store import RedisTraceStore  # noqa: PLC0415

    config = testbed_config.load(config_path)
    services = [s.name for s in config.services]
    plans = _plans(plan, kinds, targets, intensities, services)
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    take_down = not lifecycle.is_up(config)
    try:
        lifecycle.up(config)
        state = lifecycle.read_state(config)
        if state is None:
            raise click.ClickException("the testbed did not come up; see `firm testbed status`")
        store = RedisTraceStore.of(state)
        with _progress("campaign runs") as bar:
            task = bar.add_task("runs", total=len(plans))
            for n, (kind, target, level) in enumerate(plans):
                # Starting an anomaly takes its module seconds of CPU (up to 8 s measured on 2 busy
                # cores): the load runs on long enough for a whole window after the real start.
                aplan = experiment.AnomalyPlan(
                    kind, target, level, float(window_s + 2), window_s + _START_SLACK_S
                )
                report = experiment.run(
                    config,
                    experiment.RunPlan(
                        duration_s=2 * window_s + 4 + _START_SLACK_S, seed=seed + n, anomaly=aplan
                    ),
                )
                if report.anomaly is not None:
                    rows.extend(
                        _testbed_rows(
                            config,
                            store,
                            report.anomaly,
                            (kind, target, level),
                            campaign,
                            window_s,
                            out / "runs" if keep_traces else None,
                        )
                    )
                bar.update(task, advance=1)
    except (FirmError, OSError) as err:  # LocalizeError and the testbed's errors are FirmErrors
        raise click.ClickException(str(err)) from err
    finally:
        if take_down:
            lifecycle.down(config)
    manifest = {
        "source": "testbed",
        "campaign": campaign,
        "runs": [f"{k}/{t}/{v}" for k, t, v in plans],
        "windowS": window_s,
        "seed": seed,
        "command": "firm localize-testbed-dataset " + " ".join(sys.argv[2:]),
        "seconds": round(time.monotonic() - t0, 1),
        "note": "windows of real anomalies on the embedded testbed; kinds placed on CPUs label every "
        "instance sharing the target's CPUs",
    }
    _write_dataset(train, rows, out, manifest)


def _write_dataset(
    train: Any, rows: Sequence[Mapping[str, Any]], out: Path, manifest: Mapping[str, Any]
) -> None:
    """Write the dataset and print its summary (JSON)."""
    try:
        path = train.write_dataset(rows, out, manifest)
    except LocalizeError as err:
        raise click.ClickException(str(err)) from err
    except OSError as err:
        raise click.ClickException(f"{out}: cannot write the dataset: {describe(err)}") from err
    click.echo(
        json.dumps(
            {
                "dataset": str(path),
                "rows": len(rows),
                "windows": len({r["window"] for r in rows}),
                "positives": sum(int(r["label"]) for r in rows),
                "seconds": manifest.get("seconds"),
            },
            indent=2,
        )
    )


def _telemetry(
    config: Any, names: Sequence[str], start_us: int, end_us: int
) -> dict[str, list[dict[str, Any]]]:
    """Every instance's telemetry samples of ``[start_us, end_us)`` from firm's Redis ({} without it)."""
    if not config.telemetry_redis:
        return {}
    import redis  # noqa: PLC0415

    from ansible_collections.firm.core.plugins.module_utils import redis_auth  # noqa: PLC0415
    from firm.telemetry.redis_store import RedisTelemetrySource  # noqa: PLC0415

    try:
        source = RedisTelemetrySource(redis_auth.connect(config.telemetry_redis, socket_connect_timeout=2))
        return {n: [s.as_dict() for s in source.window(n, start_us / 1e6, end_us / 1e6)] for n in names}
    except (redis.RedisError, OSError):
        return {}


def _testbed_rows(
    config: Any,
    store: Any,
    record: Mapping[str, Any],
    run: tuple[str, str, int],
    campaign: str,
    window_s: int,
    keep: Path | None,
) -> list[dict[str, Any]]:
    """Labelled rows of one testbed run: the window during the anomaly against the one before it."""
    from ansible_collections.firm.core.plugins.module_utils import anomaly  # noqa: PLC0415
    from firm.localize import testbed_runs  # noqa: PLC0415

    kind, target, level = run
    started = testbed_runs.started_us(record)
    ref_span = (started - window_s * 1_000_000, started - 1_000_000)
    win_span = (started + 2_000_000, started + (window_s + 2) * 1_000_000)
    reference = store.traces(*ref_span)
    window = store.traces(*win_span)
    beside = anomaly.REGISTRY[kind].placement == "cpus"
    cpus = _cpu_set(config.service(target).cpus)
    shared = tuple(
        sorted((i.service, i.name) for i in config.instances() if beside and _cpu_set(i.spec.cpus) & cpus)
    )
    names = [i.name for i in config.instances()]
    tb_run = testbed_runs.KeptRun(
        id=f"{campaign}-{kind}-{target}-{level}-{started}",
        campaign=campaign,
        kind=kind,
        target=target,
        instance=f"{target}-0",
        intensity=level,
        placement="beside" if beside else "inside",
        record=dict(record),
        window=win_span,
        reference=ref_span,
        shared=shared,
        telemetry=(
            {
                "window": _telemetry(config, names, *win_span),
                "reference": _telemetry(config, names, *ref_span),
            }
            if keep is not None
            else {}
        ),
    )
    if keep is not None:  # the run itself, so that its windows can be ranked again
        testbed_runs.save_run(keep, tb_run, window, reference)
    return testbed_runs.run_rows(tb_run, window, reference, slo_ms=dict(config.slo_ms))
