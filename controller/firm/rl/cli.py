"""``firm train-rl``: train the resource estimator on the simulator or the embedded testbed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from firm.cli_options import MAX_WHOLE, OutputDirectory
from firm.rl.errors import RLError

MAX_INTERVAL_S = 3600.0
"""The longest ``--interval``, seconds: the testbed's longest latency window (its ``slo_window_s``)."""


@click.command("train-rl")
@click.option(
    "--env",
    "env_name",
    type=click.Choice(["sim", "testbed"]),
    default="sim",
    show_default=True,
    help="Train on the queueing simulator (a model, fast) or on the embedded testbed (real, slow; root).",
)
@click.option(
    "--agents",
    type=click.Choice(["one-for-all", "one-for-each"]),
    default="one-for-all",
    show_default=True,
    help="One shared agent, or also one agent per service initialised from the shared one.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_WHOLE),
    default=7,
    show_default=True,
    help="Seed of every random draw of the run (the same seed gives the same summary).",
)
@click.option(
    "--out",
    type=OutputDirectory(path_type=Path),
    default=None,
    help="Run directory: model.pt, episodes.csv, learning_curve.png, summary.json.",
)
@click.option(
    "--episodes",
    type=click.IntRange(min=1),
    default=None,
    help="Training episodes of the shared agent.  [default: 480 on sim, 3 on testbed]",
)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Continue the interrupted run in this directory from its last checkpoint.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Testbed only: control steps per episode.  [default: 10]",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=1.0, max=MAX_INTERVAL_S),
    default=None,
    help="Testbed only: seconds per control step; must be the testbed's latency window.  "
    "[default: the window, 5]",
)
@click.option("--compact", is_flag=True, help="Print the summary as one line of JSON.")
def train_rl_command(
    *,
    env_name: str,
    agents: str,
    seed: int,
    out: Path | None,
    episodes: int | None,
    resume: Path | None,
    steps: int | None,
    interval: float | None,
    compact: bool,
) -> None:
    """Train the DDPG resource estimator and compare it with a random policy and AIMD.

    On the simulator the defaults take a few minutes on two cores. At the end DIR holds the model
    (model.pt, and models/<service>.pt with --agents one-for-each), episodes.csv, learning_curve.png
    and summary.json, whose "eval" gives the mean reward per step of the agent, a random policy and
    AIMD on the same seeded evaluation scenarios; the summary is also printed. Checkpoints are written
    as training goes; --resume DIR continues an interrupted run (with the same options).

    On the testbed (root; the testbed must be up: firm testbed up) the shared agent starts from the
    shipped model and is trained for a few short episodes against real contention; limits are
    restored after every episode.
    """
    if resume is not None and out is not None and resume.resolve() != out.resolve():
        raise click.UsageError(
            "--resume continues the run in its own directory: give the same DIR as --out, or --resume alone"
        )
    run_dir = resume or out
    if run_dir is None:
        raise click.UsageError("give --out DIR (or --resume DIR)")
    console = Console(stderr=True)
    try:
        if env_name == "sim":
            if steps is not None or interval is not None:
                raise click.UsageError("--steps and --interval apply to --env testbed only")
            summary = _train_sim(agents, seed, run_dir, episodes, resume is not None, console)
        else:
            summary = _train_testbed(
                agents, seed, run_dir, episodes, resume is not None, steps, interval, console
            )
    except RLError as err:
        raise click.ClickException(str(err)) from err
    except OSError as err:
        raise click.ClickException(
            f"{run_dir}: {err.strerror or err}. Fix: choose a writable --out directory"
        ) from err
    click.echo(json.dumps(summary, indent=None if compact else 2, sort_keys=True))


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("reward {task.fields[reward]}"),
        TextColumn("updates {task.fields[updates]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _train_sim(
    agents: str, seed: int, out: Path, episodes: int | None, resume: bool, console: Console
) -> dict[str, Any]:
    from firm.rl import train  # noqa: PLC0415 (torch and matplotlib load only when training)

    spec = train.with_episodes(train.RunSpec(env="sim", agents=agents, seed=seed), episodes)  # type: ignore[arg-type]
    with _progress(console) as bar:
        tasks: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int, row: dict[str, Any]) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total, reward="-", updates=0)
            bar.update(tasks[phase], completed=done, reward=f"{row['reward']:.3f}", updates=row["updates"])

        summary = train.train_run(spec, out, resume=resume, progress=progress)
    ev = summary["eval"]
    console.print(
        f"eval (mean reward per step): agent {ev['agent']:.3f}, random {ev['random']:.3f}, "
        f"aimd {ev['aimd']:.3f}; written to {out}"
    )
    return summary


def _train_testbed(
    agents: str,
    seed: int,
    out: Path,
    episodes: int | None,
    resume: bool,
    steps: int | None,
    interval: float | None,
    console: Console,
) -> dict[str, Any]:
    from firm.rl import live  # noqa: PLC0415 (torch, redis and the testbed load only when training)

    if agents != "one-for-all":
        raise click.UsageError(
            "on the testbed only --agents one-for-all is supported (the shipped model is "
            "fine-tuned for the instance under contention)"
        )
    if resume:
        raise click.UsageError("--resume applies to --env sim; testbed runs are short, start them again")
    with _progress(console) as bar:
        task = bar.add_task("testbed", total=episodes or 3, reward="-", updates=0)

        def progress(done: int, total: int, row: dict[str, Any]) -> None:
            bar.update(
                task, completed=done, total=total, reward=f"{row['reward']:.3f}", updates=row["updates"]
            )

        return live.train_live(
            out, seed=seed, episodes=episodes or 3, steps=steps or 10, interval_s=interval, progress=progress
        )
