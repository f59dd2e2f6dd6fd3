"""``python -m firm.telemetry``: sample instances of this machine, print or store the samples, report the cost."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType

import click

from firm.telemetry.local import LocalCollector
from firm.telemetry.model import Instance, Sample, TelemetryError
from firm.telemetry.redis_store import RedisTelemetrySink
from firm.telemetry.sampler import Sampler
from firm.telemetry.source import TelemetrySink

_KEYS = {
    "service": "service",
    "name": "name",
    "cgroup": "cgroup_path",
    "interface": "interface",
    "namespace": "namespace",
}


def parse_instance(text: str) -> Instance:
    """``service=S,name=N,cgroup=PATH[,interface=IF][,namespace=NS]`` -> Instance."""
    values: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in _KEYS:
            raise click.BadParameter(
                f"{item!r} is not one of {', '.join(k + '=...' for k in _KEYS)}", param_hint="--instance"
            )
        values[_KEYS[key.strip()]] = value.strip()
    missing = [k for k in ("service", "name", "cgroup") if _KEYS[k] not in values]
    if missing:
        raise click.BadParameter(f"{text!r} lacks {', '.join(missing)}", param_hint="--instance")
    try:
        return Instance(**values)
    except TelemetryError as err:
        raise click.BadParameter(str(err), param_hint="--instance") from err


class _Printer:
    def write(self, samples: Sequence[Sample]) -> None:
        for sample in samples:
            click.echo(json.dumps(sample.as_dict()))


@click.command()
@click.option(
    "--instance",
    "specs",
    multiple=True,
    required=True,
    metavar="SPEC",
    help="service=S,name=N,cgroup=PATH[,interface=IF][,namespace=NS]; repeat per instance.",
)
@click.option(
    "--redis", "redis_url", metavar="URL", help="Store samples in firm:telemetry:<instance> streams."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds between samples.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds to run.  [default: until interrupted]",
)
@click.option(
    "--retention",
    type=click.IntRange(min=1),
    default=3600,
    show_default=True,
    help="Samples kept per instance in Redis.",
)
@click.option("--quiet", is_flag=True, help="Do not print the samples.")
def main(
    specs: tuple[str, ...],
    redis_url: str | None,
    interval: float,
    duration: float | None,
    retention: int,
    quiet: bool,
) -> None:
    """Sample the given instances until --duration ends or Ctrl-C, then print what it cost."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    instances = [parse_instance(s) for s in specs]
    sinks: list[TelemetrySink] = [] if quiet else [_Printer()]
    if redis_url:
        sinks.append(RedisTelemetrySink(redis_url, retention=retention))
    done = threading.Event()

    def interrupted(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    previous = signal.signal(signal.SIGINT, interrupted)
    sampler = Sampler(instances, sinks=sinks, collector=LocalCollector(), interval_s=interval)
    started = time.monotonic()
    try:
        with sampler:
            done.wait(duration)
    finally:
        signal.signal(signal.SIGINT, previous)
    stats = sampler.stats()
    click.echo(
        json.dumps(
            {
                "instances": len(instances),
                "seconds": round(time.monotonic() - started, 3),
                "rounds": stats.rounds,
                "samples": stats.samples,
                "skipped": stats.skipped,
                "sink_errors": stats.sink_errors,
                "cpu_s": round(stats.cpu_s, 6),
                "cpu_ms_per_round": stats.cpu_ms_per_round,
                "cpu_ms_per_instance": stats.cpu_ms_per_instance,
            }
        ),
        err=True,
    )


if __name__ == "__main__":
    main()
