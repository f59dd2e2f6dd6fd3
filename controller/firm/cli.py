"""The ``firm`` command: a thin layer over the library."""

from __future__ import annotations

import json
import logging

import click
from rich.console import Console

from firm import __version__, preflight


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="firm")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Keep microservices' tail latency under their SLO with as few resources as possible."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command("preflight")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON instead of a table.")
@click.option("--no-pqos", is_flag=True, help="Do not probe libpqos.")
def preflight_command(as_json: bool, no_pqos: bool) -> None:
    """Show what firm can control on this machine (cgroups, tc, RDT, resctrl, libpqos)."""
    facts = preflight.gather(probe_pqos=not no_pqos)
    if as_json:
        click.echo(json.dumps(preflight.report(facts), indent=2, sort_keys=True))
    else:
        preflight.render(facts, Console())
