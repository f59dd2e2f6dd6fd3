"""Options shared by firm's commands, each defined once: ``--json``, ``--config``, ``--redis`` (a Redis
URL), ``--jaeger-url`` and ``--overlap-tolerance``. Each function returns a click decorator; the
parameter names they give the command function are fixed (``as_json``, ``config_path``,
``redis_url``, ``jaeger_url``, ``tolerance``).

And the rules every option of every command follows, applied by :class:`firm.cli.FirmGroup`
(:func:`apply_conventions`): a number is finite (:class:`FiniteFloatRange`: ``nan`` and ``inf`` are
usage errors), and an option can come from the environment as ``FIRM_<COMMAND>_<OPTION>``, the
option's long name (:func:`envvar_name`).
"""

from __future__ import annotations

import math
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from firm.schema import redis_url_problem
from firm.terminal import safe
from firm.textfiles import MAX_TEXT_FILE_BYTES, TextFileError, kind_of, read_small_file
from firm.urls import describe_transport, http_url_problem, redact_url

F = TypeVar("F", bound=Callable[..., Any])

MAX_WHOLE = (1 << 31) - 1
"""The largest whole number an option takes unless it names its own bound (:func:`whole`): the
largest C ``int`` (2^31 - 1; 2^31 itself overflows one), far beyond any count firm needs."""

MAX_SEED = (1 << 64) - 1
"""The largest seed of every command (``--seed``): seeds are 64-bit (PyTorch's ``manual_seed`` takes
at most 2^64 - 1; NumPy's generators refuse a negative one)."""

MAX_OVERLAP_TOLERANCE_US = 3_600_000_000
"""The largest --overlap-tolerance accepted, microseconds (an hour: far beyond any real overlap)."""

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
"""firm's own Redis (telemetry, audit, request records) when nothing else is configured."""


def json_option(help: str = "Print the result as JSON.") -> Callable[[F], F]:
    """``--json``: machine-readable output (the command function's ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def config_option(
    help: str, *, path_type: type[Path] | None = None, default: Path | str | None = None
) -> Callable[[F], F]:
    """``--config FILE``: an existing YAML file (the command function's ``config_path``); ``path_type``
    ``Path`` hands it over as a :class:`pathlib.Path`, None as text."""
    return click.option(
        "--config",
        "config_path",
        type=TextFile(path_type=path_type),
        default=default,
        help=help,
    )


def refuse_empty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback for a text option where an empty value has no meaning (it would silently
    read as the option left out): a usage error naming the option. None (not given) passes."""
    if value is not None and not value.strip():
        raise click.BadParameter(
            "an empty value means nothing here; give a value or leave the option out", ctx, param
        )
    return value


def redis_url_option(
    help: str,
    *,
    default: str | None = None,
    envvar: str | None = None,
    show_default: bool = False,
    metavar: str | None = None,
    empty_means_none: bool = True,
) -> Callable[[F], F]:
    """``--redis URL``: a Redis to use (the command function's ``redis_url``), checked by
    :func:`check_redis_url`. ``empty_means_none`` False: an empty value is refused (the command has
    no use without a Redis, and '' would silently read as its default)."""
    return click.option(
        "--redis",
        "redis_url",
        default=default,
        envvar=envvar,
        show_default=show_default,
        metavar=metavar,
        callback=check_redis_url if empty_means_none else _check_redis_url_given,
        help=help,
    )


def check_redis_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a Redis URL that redis-py cannot use (:func:`firm.schema.redis_url_problem`: scheme,
    brackets, port, query options, a database that is not a number from 0 to its maximum, no host),
    as a usage error naming the option; the password is never shown. None and '' pass unchanged
    (some commands read '' as "no Redis")."""
    if not value:  # unset, or '' where a command reads it as "no Redis"
        return value
    problem = redis_url_problem(value)
    if problem is not None:
        raise click.BadParameter(
            f"{redact_url(value)!r}: {problem}; give a URL like redis://127.0.0.1:6379/0, "
            "rediss://HOST:PORT/DB or unix:///PATH/redis.sock",
            ctx,
            param,
        )
    return value


def _check_redis_url_given(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter(
            "an empty URL names no Redis; give a URL like redis://127.0.0.1:6379/0, or leave --redis out "
            "for the default",
            ctx,
            param,
        )
    return check_redis_url(ctx, param, value)


class TextFile(click.Path):
    """An existing, readable file of UTF-8 text (a YAML or JSON configuration) of at most
    :data:`MAX_TEXT_FILE_BYTES`: anything else (missing, a directory, unreadable, binary, in another
    encoding, too large) is a usage error naming the option and the
    file, before the command starts. ``path_type`` as for :class:`click.Path`."""

    name = "text file"

    def __init__(self, path_type: type[Path] | None = None) -> None:
        super().__init__(exists=True, dir_okay=False, readable=True, path_type=path_type)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        converted = super().convert(value, param, ctx)
        try:
            data = read_small_file(os.fsdecode(converted))
        except OSError as exc:
            self.fail(f"{value}: cannot read it: {exc.strerror or exc}", param, ctx)
        except TextFileError as exc:
            self.fail(
                f"{value} {exc}: a configuration file is a regular file of at most "
                f"{MAX_TEXT_FILE_BYTES} bytes; give the configuration, not a data file or a device",
                param,
                ctx,
            )
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.fail(
                f"{value} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                "give a YAML or JSON file saved as UTF-8",
                param,
                ctx,
            )
        return converted


class ModelFile(click.Path):
    """An existing regular file of a trained model (``firm train-svm``, ``firm train-rl``): a
    directory, a pipe, a device or a socket is a usage error naming the option, before the command
    starts (a pipe with no writer would hang the load). ``path_type`` as for :class:`click.Path`."""

    name = "model file"

    def __init__(self, path_type: type[Path] | None = None) -> None:
        super().__init__(exists=True, dir_okay=False, readable=True, path_type=path_type)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        converted = super().convert(value, param, ctx)
        kind = kind_of(os.stat(os.fsdecode(converted)).st_mode)
        if kind != "a regular file":
            self.fail(f"{value} is {kind}, not a model file; give the file the training wrote", param, ctx)
        return converted


class InputFile(click.Path):
    """An existing file to read whole or in batches (a trace export): a regular file or a pipe
    (``<(zcat traces.json.gz)``; ``-`` is stdin). A directory, a device (``/dev/zero`` never ends) or a socket is a
    usage error naming the argument, before the command starts. ``path_type`` as for
    :class:`click.Path`."""

    name = "input file"

    def __init__(self, path_type: type[Path] | None = None) -> None:
        super().__init__(exists=True, dir_okay=False, readable=True, path_type=path_type)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (str, bytes)) and os.fsdecode(value) == "-":  # the usual name of stdin
            if sys.stdin is None or sys.stdin.isatty():
                self.fail("'-' reads stdin, which is a terminal here; pipe the data in", param, ctx)
            value = "/dev/stdin"
        converted = super().convert(value, param, ctx)
        try:
            mode = os.stat(os.fsdecode(converted)).st_mode
        except OSError as exc:
            self.fail(f"{value}: cannot read it: {exc.strerror or exc}", param, ctx)
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            kind = "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
            self.fail(f"{value} is {kind}; give a file (or a pipe) that holds the data", param, ctx)
        return converted


class OutputFile(click.Path):
    """A file a command will write (``--report``, ``--output``): not a directory, and in a directory
    that exists and that this user may write to, checked before the command starts, so that a long
    run does not end in an error that loses its result. Anything else is a usage error naming the
    option and the fix. ``path_type`` as for :class:`click.Path`."""

    name = "output file"

    def __init__(self, path_type: type[Path] | None = None, *, append: bool = False) -> None:
        """``append``: the command appends to the file (an audit log), and says so when it cannot."""
        super().__init__(dir_okay=False, writable=True, path_type=path_type)
        self.append = append

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not os.fsdecode(value).strip():
            self.fail("an empty path names no file; give the file's path", param, ctx)
        converted = super().convert(value, param, ctx)
        if os.fsdecode(converted) == "-":
            return converted
        parent = Path(os.fsdecode(converted)).parent
        if not parent.is_dir():
            why = "is not a directory" if parent.exists() else "does not exist"
            self.fail(
                f"{value}: its directory {parent} {why}; create the directory first or give another path",
                param,
                ctx,
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            self.fail(
                f"{value}: this user may not write to its directory {parent}; give a path in a writable "
                "directory",
                param,
                ctx,
            )
        problem = _write_refused(parent)
        if problem is not None:
            cannot = "cannot append to it" if self.append else f"cannot write in its directory {parent}"
            self.fail(
                f"{value}: {cannot} ({problem}); give a file in a directory this user may write to",
                param,
                ctx,
            )
        return converted


def _write_refused(directory: Path) -> str | None:
    """Why a file cannot be made in the existing ``directory`` (a read-only mount, ``/proc``, a full
    disk: what ``os.access`` does not see, and root passes), None when it can: a small file is made
    and removed at once, so nothing is left behind and nothing the command writes is begun."""
    probe = directory / f".firm-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    with suppress(OSError):
        probe.unlink()
    return None


def source_file(source: str, names: Container[str]) -> str:
    """The input file a trace's source names, among ``names`` (the files' names, ``str(path)``): the
    source itself, or FILE for ``FILE:LINE``, line LINE of a JSON Lines FILE; else the source as given."""
    if source in names:
        return source
    head, colon, line = source.rpartition(":")
    return head if colon and line.isdigit() and head in names else source


def files_without_traces(files: Iterable[Path | str], sources: Iterable[str]) -> list[str]:
    """The names of ``files`` (each once, in order) that none of ``sources`` (the sources of the
    traces read from them, :func:`source_file`) names: an empty answer or export, or a file whose
    every span was refused, which a command given several files names in a warning
    (:func:`no_trace_warning`)."""
    names = list(dict.fromkeys(str(f) for f in files))
    known = set(names)
    gave = {source_file(s, known) for s in sources}
    return [name for name in names if name not in gave]


def no_trace_warning(name: str, instead: str) -> str:
    """The warning for file ``name`` that gave no trace among files that did (``instead``: what the
    result is, then)."""
    return f"{name}: no trace in this file (an empty answer or export, or every span refused); {instead}"


MAX_WARNINGS_SHOWN = 20
"""Warnings a command prints before it only counts the rest (all of them with ``firm -v``)."""


@contextmanager
def warnings_to_stderr(prefix: str = "") -> Iterator[Callable[[str], None]]:
    """A ``warn(message)`` that prints ``warning: {prefix}{message}`` on stderr, the first
    :data:`MAX_WARNINGS_SHOWN` only unless firm runs with ``-v`` (``firm -v COMMAND``); on leaving,
    also when the command fails, one line counts the warnings not shown. A file of a million broken
    lines then gives twenty warnings and a count, not a million lines."""
    shown = hidden = 0
    ctx = click.get_current_context(silent=True)
    every = ctx is not None and bool(ctx.find_root().params.get("verbose"))

    def warn(message: str) -> None:
        nonlocal shown, hidden
        if every or shown < MAX_WARNINGS_SHOWN:
            shown += 1
            click.echo(f"warning: {safe(prefix + message)}", err=True)  # input's text escaped (firm.terminal)
        else:
            hidden += 1

    try:
        yield warn
    finally:
        if hidden:
            click.echo(
                f"warning: {prefix}{hidden} more warnings not shown (the first {shown} are above); "
                "run `firm -v ...` to see every one",
                err=True,
            )


def overlap_tolerance_option() -> Callable[[F], F]:
    """``--overlap-tolerance US``: siblings overlapping by at most this many microseconds count as
    sequential (the command function's ``tolerance``, 0 to :data:`MAX_OVERLAP_TOLERANCE_US`)."""
    return click.option(
        "--overlap-tolerance",
        "tolerance",
        type=click.IntRange(min=0, max=MAX_OVERLAP_TOLERANCE_US),
        default=0,
        show_default=True,
        metavar="US",
        help="Siblings overlapping by at most this many microseconds count as sequential.",
    )


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (a long-running command finishes the step under way, then
    exits as asked); the old handlers come back after."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def describe(exc: BaseException) -> str:
    """An error's message for a user: an ``OSError`` as its reason and file, without Python's
    ``[Errno N]`` spelling, a decoding error without codec names, a failed connection without the
    HTTP library's wording (:func:`firm.urls.describe_transport`); anything else as its own message."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start}); give files saved as UTF-8"
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return exc.strerror + f": {exc.filename}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    urllib3_errors = sys.modules.get("urllib3.exceptions")
    if urllib3_errors is not None and isinstance(exc, urllib3_errors.HTTPError):
        return describe_transport(exc)
    return str(exc)


def redis_reason(err: BaseException) -> str:
    """Why redis-py could not talk to Redis, in words: the socket error it wraps (``connection
    refused``, ``unknown host``, ``no answer in time``: :func:`firm.urls.describe_transport`), else
    its own message without the trailing period (``invalid password``...)."""
    cause = err.__cause__ or err.__context__
    if isinstance(cause, OSError):
        return describe_transport(cause)
    return str(err).strip().rstrip(".") or type(err).__name__


class FiniteFloatRange(click.FloatRange):
    """A number in a range, finite: ``nan``, ``inf`` and ``-inf`` are refused as usage errors naming
    the option (click's FloatRange lets ``nan`` through every bound, and ``inf`` through a range with
    no maximum)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return super().convert(value, param, ctx)  # click's "is not a valid float"
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number; give {self._describe_range()}", param, ctx)
        return super().convert(value, param, ctx)


def finite(type_: click.ParamType[Any]) -> click.ParamType[Any]:
    """``type_`` (click's FLOAT or a FloatRange) made finite, with the same bounds; any other type
    unchanged."""
    if isinstance(type_, FiniteFloatRange) or not isinstance(type_, click.types.FloatParamType):
        return type_
    if isinstance(type_, click.FloatRange):
        return FiniteFloatRange(
            type_.min, type_.max, min_open=type_.min_open, max_open=type_.max_open, clamp=type_.clamp
        )
    return FiniteFloatRange()


class WholeRange(click.IntRange):
    """A whole number in a range, refused in words when it is not one (``nan``, ``2.5``, ``''``):
    "'nan' is not a whole number; give x>=0", where click says "is not a valid integer range"."""

    name = "whole number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, int):
            try:
                int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a whole number; give {self._describe_range()}", param, ctx)
        return super().convert(value, param, ctx)


def whole(type_: click.ParamType[Any]) -> click.ParamType[Any]:
    """``type_`` (click's INT or IntRange) as a :class:`WholeRange` with the same bounds, at most
    :data:`MAX_WHOLE` when it names no maximum (``--episodes 99999999999999999999`` is a usage error,
    not a run that never ends or an allocation that never fits); any other type unchanged."""
    if isinstance(type_, WholeRange) or not isinstance(type_, click.types.IntParamType):
        return type_
    if not isinstance(type_, click.IntRange):  # click.INT: no bound at all
        return WholeRange(max=MAX_WHOLE)
    return WholeRange(
        type_.min,
        MAX_WHOLE if type_.max is None else type_.max,
        min_open=type_.min_open,
        max_open=type_.max_open,
        clamp=type_.clamp,
    )


def envvar_name(command_path: str, option: click.Option) -> str | None:
    """``FIRM_<COMMAND>_<OPTION>``: ``("testbed up", --config)`` -> ``FIRM_TESTBED_UP_CONFIG``, from
    the option's (first) long name, not the parameter's Python name; None for an option without one."""
    long = next((o for o in option.opts if o.startswith("--")), None)
    if long is None:
        return None
    words = [*command_path.split(), long[2:]]
    return "FIRM_" + "_".join(w.upper().replace("-", "_") for w in words)


def environment_source(ctx: click.Context, param: click.Parameter) -> str | None:
    """The environment variable that gave ``param`` its value in ``ctx``, None when the value came
    from the command line, a default or nowhere. The first variable of the option's list that is set
    and not empty, as click reads them."""
    if not isinstance(param, click.Option) or param.name is None:
        return None
    if ctx.get_parameter_source(param.name) is not click.core.ParameterSource.ENVIRONMENT:
        return None
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
    return next((name for name in names if os.environ.get(name)), None)


def name_environment_source(err: click.BadParameter) -> None:
    """Make ``err`` name the environment variable its bad value came from, as well as the option:
    ``Invalid value for '--rate' (from FIRM_LOAD_RATE): ...``, so that a user who never typed
    ``--rate`` sees where to fix it. Unchanged when the value came from the command line."""
    if err.ctx is None:
        return
    param, hint = err.param, err.param_hint
    if param is None and isinstance(hint, str):  # raised by the command by the option's name
        name = hint.strip("'\"")
        param = next((p for p in err.ctx.command.params if name in getattr(p, "opts", ())), None)
    if (
        param is None
        or (hint is not None and not isinstance(hint, str))
        or "environment variable" in str(hint)
    ):
        return
    variable = environment_source(err.ctx, param)
    if variable is not None:
        shown = hint if hint is not None else param.get_error_hint(err.ctx)
        err.param_hint = f"{shown} (from the environment variable {variable})"


def apply_conventions(command: click.Command, path: str) -> None:
    """Every option of ``command`` (a command below ``firm``, at ``path`` such as ``"testbed up"``):
    floating-point values finite (:func:`finite`), whole numbers refused in words (:func:`whole`), and read from ``FIRM_<COMMAND>_<OPTION>`` when not
    given on the command line (also from an option's own variable, e.g. ``FIRM_REDIS_URL``, after).
    Idempotent."""
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        param.type = whole(finite(param.type))
        name = envvar_name(path, param)
        if name is None or not param.allow_from_autoenv:
            continue
        own = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
        if name not in own:
            param.envvar = [name, *own]


def check_http_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a URL that is not ``http(s)://HOST[:PORT][/PATH]`` (no scheme, no host, a port out of
    range, unbalanced brackets, a space or a control character, a query or a fragment) as a usage
    error naming the option;
    a password in it is never shown (:func:`redact_url`). None passes unchanged."""
    if value is None:
        return value
    shown = redact_url(value)
    example = 16686 if param.name == "jaeger_url" else 8080  # Jaeger's query port, else the frontend's
    hint = (
        f"give the service's address, e.g. http://localhost:{example}, http://[::1]:{example} "
        "or https://HOST/PREFIX"
    )
    problem = http_url_problem(value)
    if problem is not None:
        raise click.BadParameter(f"{shown!r} {problem}; {hint}", ctx, param)
    return value


def jaeger_url_option(help: str) -> Callable[[F], F]:
    """``--jaeger-url URL``: a Jaeger query service (the command function's ``jaeger_url``), checked by
    :func:`check_http_url`; it may carry ``user:password@`` for a proxy with basic authentication."""
    return click.option("--jaeger-url", "jaeger_url", metavar="URL", callback=check_http_url, help=help)


MAX_JAEGER_TIMEOUT_S = 600.0
"""The longest wait for one answer of Jaeger, seconds."""

MAX_JAEGER_RETRIES = 10
"""The most times a request to Jaeger is repeated (the backoff reaches its 8 s cap after 4)."""

MAX_TRACE_LIMIT = 100_000
"""The most traces asked of Jaeger at once: its answer is read whole, and 100 000 traces of a
microservice application are gigabytes of JSON."""


def jaeger_request_options() -> Callable[[F], F]:
    """``--timeout S`` and ``--retries N`` of the requests to Jaeger (``timeout``, ``retries``)."""

    def decorate(f: F) -> F:
        f = click.option(
            "--retries",
            type=click.IntRange(min=0, max=MAX_JAEGER_RETRIES),
            default=3,
            show_default=True,
            help="Times a failed request to Jaeger is repeated (with exponential backoff).",
        )(f)
        return click.option(
            "--timeout",
            type=FiniteFloatRange(min=0, min_open=True, max=MAX_JAEGER_TIMEOUT_S),
            default=10.0,
            show_default=True,
            metavar="S",
            help="Seconds per request to Jaeger.",
        )(f)

    return decorate


def trace_limit_option(help: str, default: int | None = None) -> Callable[[F], F]:
    """``--limit N``: at most N traces from Jaeger (1 to :data:`MAX_TRACE_LIMIT`)."""
    return click.option(
        "--limit", type=click.IntRange(min=1, max=MAX_TRACE_LIMIT), default=default, help=help
    )


def typed(ctx: click.Context, **options: object) -> dict[str, object]:
    """Of ``options`` (the option's name as typed -> its parameter's name, e.g. ``{"--timeout":
    "timeout"}`` given as ``typed(ctx, **{"--timeout": "timeout"})``), those given on the command line,
    by name -> value; options left at their defaults (or read from the environment, a standing
    preference) are left out. For :func:`only_with` with options that have defaults."""
    return {
        option: ctx.params.get(str(name))
        for option, name in options.items()
        if ctx.get_parameter_source(str(name)) is click.core.ParameterSource.COMMANDLINE
    }


def only_with(flag: str, given: bool, options: Mapping[str, object]) -> None:
    """Refuse, as a usage error naming them and the fix, the ``options`` (name -> value, None or False
    when not given) that apply only with ``flag`` when ``flag`` is not ``given``: an option that
    would be silently ignored is a mistake the user should hear about."""
    used = [name for name, value in options.items() if value is not None and value is not False]
    if given or not used:
        return
    names = ", ".join(used)
    plural = len(used) > 1
    raise click.UsageError(
        f"{names} appl{'y' if plural else 'ies'} only with {flag}: add {flag}, "
        f"or leave {'them' if plural else 'it'} out"
    )


class OutputDirectory(click.Path):
    """A directory a command will write into (``--out``): an existing directory this user may write
    to, or a path that can be made (its nearest existing ancestor a writable directory), checked
    before the command starts. A file, or a path below a file or an unwritable directory, is a usage
    error naming the option and the fix. :func:`probe_directory` then tries a real write. ``path_type``
    as for :class:`click.Path`."""

    name = "output directory"

    def __init__(self, path_type: type[Path] | None = None) -> None:
        super().__init__(file_okay=False, path_type=path_type)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not os.fsdecode(value).strip():
            self.fail(
                "an empty path names no directory; give one (e.g. experiment, or . for here)", param, ctx
            )
        converted = super().convert(value, param, ctx)
        path = Path(os.fsdecode(converted)).absolute()
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            self.fail(
                f"{value}: {existing} is a file, so the directory cannot be made there; give a directory path",
                param,
                ctx,
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            self.fail(
                f"{value}: this user may not write to {existing}; give a directory this user may write to",
                param,
                ctx,
            )
        problem = _write_refused(existing)
        if problem is not None:
            self.fail(
                f"{value}: cannot write there ({existing}: {problem}); give a directory this user may write to",
                param,
                ctx,
            )
        return converted


def probe_directory(path: Path, option: str) -> None:
    """Make ``path`` (and its parents) and write and remove a small file in it, so that a directory
    the kernel refuses (``/proc``, a read-only mount, a full disk) is a usage error naming ``option``
    before a long run starts rather than at its end."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".firm-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise click.BadParameter(
            f"{path}: cannot write there ({describe(exc)}); give a directory this user may write to",
            param_hint=f"'{option}'",
        ) from None


def probe_appendable(path: Path, option: str) -> None:
    """Open ``path`` for appending (creating it, empty, when it does not exist) and close it, so that a
    file the kernel refuses (under ``/proc``, on a read-only mount) is a usage error naming ``option``
    before a run starts."""
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        raise click.BadParameter(
            f"{path}: cannot append to it ({describe(exc)}); give a file in a directory this user may write to",
            param_hint=f"'{option}'",
        ) from None
