"""The exit status of every ``firm`` command, in one place.

Every command follows one convention, which click and :class:`firm.cli.FirmGroup` enforce:

- **0**: the command did what it was asked (what that means for each command is below);
- **1**: an error the message explains, naming the input and saying how to fix it (a file that is
  not a trace, a testbed that is not up, a service that does not answer, a kernel that refuses a
  write...); also Ctrl-C, after which click prints ``Aborted!`` (unless the command says otherwise);
- **2**: a usage error, found before the command starts: an unknown option, a missing or malformed
  argument or option value (a number out of range, a file that does not exist or is not UTF-8 text,
  a malformed URL), a wrong combination of options. click prints the usage and names the option.

No command exits with another status. This module is the source of the exit-status section of each
command's ``--help`` (:func:`epilog`) and of the table in ``docs/cli.md`` (:func:`markdown`); a test
keeps both in step with the commands that exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SUCCESS = 0
FAILURE = 1
USAGE = 2


@dataclass(frozen=True)
class ExitStatuses:
    """What each status means for one command (sentences, for ``--help`` and docs/cli.md).

    ``success``: when it exits 0; ``failure``: the typical causes of 1; ``interrupt``: what Ctrl-C
    (SIGINT) does, when it is not click's ``Aborted!`` with status 1.
    """

    success: str
    failure: str
    interrupt: str | None = None

    def lines(self) -> tuple[tuple[int, str], ...]:
        """(status, meaning) for 0, 1 and 2."""
        return ((SUCCESS, self.success), (FAILURE, self.failure), (USAGE, USAGE_MEANING))


USAGE_MEANING = "usage error: an unknown option, a missing or malformed argument, a wrong combination"
"""Status 2, the same for every command (click's UsageError and BadParameter)."""

CTRL_C = "Ctrl-C: 1 (Aborted!)."
"""What Ctrl-C does unless a command says otherwise."""

STATUSES: Mapping[str, ExitStatuses] = {
    "audit": ExitStatuses(
        "the decisions were shown (also when none are recorded yet)",
        "the audit log (--file) or Redis (--redis) cannot be read",
    ),
    "cluster": ExitStatuses(
        "the application's pods were shown",
        "the cluster cannot be reached or refuses (kubeconfig, context, permissions), --services "
        "cannot be read",
    ),
    "critical-path": ExitStatuses(
        "the critical path of every trace was printed",
        "a file cannot be read or holds no trace in a known format (the file is named)",
    ),
    "experiment": ExitStatuses(
        "every policy ran and the report was written",
        "the testbed or a policy cannot run; the testbed is reset and every anomaly stopped (an --out "
        "that cannot be written is a usage error, 2, before the first run)",
        "Ctrl-C: 1, after the testbed is reset and every anomaly stopped.",
    ),
    "explain": ExitStatuses(
        "the decision was explained",
        "no such decision in the log, the audit log (--file) or Redis (--redis) cannot be read",
    ),
    "features": ExitStatuses(
        "the features were printed",
        "a file cannot be read or holds no trace (the file is named), Jaeger does not answer or has no "
        "trace of --service in the --window",
    ),
    "load": ExitStatuses(
        "the run finished and at least one request succeeded",
        "the load cannot start (the trace file, Redis), or no request succeeded (the summary is "
        "printed first)",
        "Ctrl-C: stops sending, prints the summary, then 0 or 1 as above.",
    ),
    "localize": ExitStatuses(
        "the culprits were ranked",
        "a trace file, the model or Jaeger cannot be read, too few traces for a window",
    ),
    "localize-dataset": ExitStatuses(
        "the dataset was written",
        "an input cannot be read, --out cannot be written",
    ),
    "localize-eval": ExitStatuses(
        "the comparison was printed",
        "the dataset or the model cannot be read or do not fit together",
    ),
    "localize-testbed-dataset": ExitStatuses(
        "the campaigns ran and the dataset was written",
        "the testbed or an anomaly cannot run, --out cannot be written",
    ),
    "preflight": ExitStatuses(
        "the facts were shown, also when a capability is missing (the report says which and why)",
        "with --cluster: the cluster or the inventory cannot be read",
    ),
    "run": ExitStatuses(
        "the loop ran for --duration, or was stopped by SIGTERM or Ctrl-C, and kept or restored the "
        "limits (--on-exit)",
        "the configuration, the testbed (not up), the models or the instances' limits cannot be read "
        "(an --audit-log that cannot be appended to is a usage error, 2, before the loop starts)",
        "Ctrl-C or SIGTERM: the step under way finishes, the limits are kept or restored, then 0.",
    ),
    "testbed down": ExitStatuses(
        "the testbed was taken down, or was not up",
        "the configuration cannot be read, something could not be removed (named)",
    ),
    "testbed run": ExitStatuses(
        "the run finished and its report was printed",
        "the configuration cannot be read, the testbed did not start, the anomaly cannot run",
    ),
    "testbed scale": ExitStatuses(
        "the service has the replicas asked for",
        "the testbed is not up, the service is unknown, an instance did not start (it is removed; "
        "the message names the instances added or removed before)",
    ),
    "testbed status": ExitStatuses(
        "the status was shown",
        "the testbed is not up, the configuration cannot be read",
    ),
    "testbed traces": ExitStatuses(
        "the traces were written",
        "the testbed is not up, its Redis does not answer, --output cannot be written",
    ),
    "testbed up": ExitStatuses(
        "the testbed is up (started now, or already running)",
        "the configuration cannot be read, the testbed did not start (what was started is removed)",
    ),
    "train-rl": ExitStatuses(
        "training finished and the agents were saved",
        "--resume or --out cannot be used, the testbed (--env testbed) cannot run",
    ),
    "train-svm": ExitStatuses(
        "the model was trained and saved",
        "the dataset cannot be read or has too few labelled windows, --out cannot be written",
    ),
}
"""Exit statuses of every command, by its path below ``firm`` (``"testbed up"``). Groups (``firm``,
``firm testbed``) exit 0 for ``--help`` and 2 for an unknown subcommand."""


def statuses_of(path: str) -> ExitStatuses | None:
    """The statuses of the command ``path`` (``"testbed up"``; a leading ``firm`` is ignored)."""
    words = path.split()
    if words[:1] == ["firm"]:
        words = words[1:]
    return STATUSES.get(" ".join(words))


def epilog(path: str) -> str | None:
    """The ``Exit status`` section of a command's ``--help`` (click keeps its lines as written)."""
    statuses = statuses_of(path)
    if statuses is None:
        return None
    lines = [f"  {code}  {meaning}" for code, meaning in statuses.lines()]
    return "\b\nExit status:\n" + "\n".join(lines) + "\n  " + (statuses.interrupt or CTRL_C)


def markdown() -> str:
    """The table of docs/cli.md: one row per command and status."""
    rows = ["| command | status | when |", "| --- | --- | --- |"]
    for path, statuses in sorted(STATUSES.items()):
        for code, meaning in statuses.lines():
            rows.append(f"| `firm {path}` | {code} | {_cell(meaning)} |")
        rows.append(f"| `firm {path}` | Ctrl-C | {_cell(statuses.interrupt or CTRL_C)} |")
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
