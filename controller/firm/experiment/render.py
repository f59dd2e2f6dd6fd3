"""The report for people: a terminal table with every baseline's ratio to firm, and PNG plots."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.table import Table

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.experiment.report import ratio
from firm.load.config import RequestType


def _num(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:.{digits}f}{unit}"
    return str(value)


def _short(request_type: str) -> str:
    """``read-home-timeline`` -> ``home`` (the load generator's short names)."""
    try:
        return RequestType.parse(request_type).short
    except FirmError:
        return request_type


def _with(text: str, versus: float | str | None) -> str:
    """``text`` and the ratio to firm (``""``: none to show; None: undefined, firm's value is 0)."""
    if versus == "":
        return text
    return f"{text} ({'-' if not isinstance(versus, float) else f'{versus:.2f}x'})"


def table(report: Mapping[str, Any]) -> Table:
    """One row per policy: violation seconds and episodes, worst p99 against its SLO, failures, CPU
    allocated (mean, peak) and used, core-seconds while the SLO held, mitigation times, actions; the
    violation seconds, CPU and core-seconds with their ratio to firm (above 1: the baseline has more)."""
    policies: Mapping[str, Mapping[str, Any]] = report["policies"]
    firm = policies.get("firm")
    result = Table(
        title=f"firm experiment: {report.get('duration_s', 0):g} s per policy, seed {report['seed']}, "
        f"{report['interval_s']:g} s intervals (x: ratio to firm)"
    )
    for column in (
        "policy",
        "SLO viol. s",
        "episodes",
        "worst p99/SLO",
        "failed",
        "CPU alloc",
        "peak",
        "used",
        "core-s met",
        "mitigated s",
        "actions",
    ):
        result.add_column(column, justify="left" if column in ("policy", "mitigated s") else "right")
    for name, entry in policies.items():
        worst = max(
            (
                (t["p99_ms"] / t["slo_ms"], kind)
                for kind, t in entry["per_type"].items()
                if t.get("p99_ms") is not None and t.get("slo_ms")
            ),
            default=None,
        )
        mitigations = ", ".join("never" if m is None else f"{m:.0f}" for m in entry["mitigation_s"]) or "-"
        versus = (
            {}
            if firm is None or name == "firm"
            else {
                f: ratio(entry[f], firm[f]) for f in ("slo_violation_s", "cpu_cores_avg", "core_seconds_met")
            }
        )
        result.add_row(
            name,
            _with(_num(entry["slo_violation_s"], digits=0), versus.get("slo_violation_s", "")),
            str(entry["slo_violation_count"]),
            "-" if worst is None else f"{worst[0]:.2f} {_short(worst[1])}",
            str(entry["failed_requests"]),
            _with(_num(entry["cpu_cores_avg"], digits=2), versus.get("cpu_cores_avg", "")),
            _num(entry["cpu_cores_peak"], digits=2),
            _num(entry["cpu_used_avg"], digits=2),
            _with(_num(entry["core_seconds_met"], digits=0), versus.get("core_seconds_met", "")),
            mitigations,
            str(entry["actions"] + entry["scale_events"]),
        )
    return result


def _steps(
    starts: list[float], values: list[float | None], interval_s: float
) -> tuple[list[float], list[float]]:
    """Step-plot points that draw the last interval to its end too (None as a gap)."""
    ys = [v if v is not None else float("nan") for v in values]
    if not starts:
        return [], []
    return [*starts, starts[-1] + interval_s], [*ys, ys[-1]]


def plots(report: Mapping[str, Any], out: Path) -> list[Path]:
    """``p99.png`` (each type's p99 against its SLO over time, one panel per policy, anomalies
    shaded) and ``cpu.png`` (CPU allocated and used over time, every policy); returns the files."""
    import matplotlib  # noqa: PLC0415 (matplotlib is slow to import; only the plots need it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    policies: Mapping[str, Mapping[str, Any]] = report["policies"]
    slo: Mapping[str, float] = report["slo_ms"]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    names = list(policies)
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.6 * len(names) + 0.6), sharex=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes[:, 0], names, strict=True):
        entry = policies[name]
        series = entry["series"]
        for anomaly in entry["anomalies"]:
            if anomaly["start_s"] is not None and anomaly["end_s"] is not None:
                ax.axvspan(anomaly["start_s"], anomaly["end_s"], color="tab:red", alpha=0.12, lw=0)
                ax.text(
                    anomaly["start_s"],
                    1.0,
                    f" {anomaly['kind']}@{anomaly['service']}",
                    fontsize=7,
                    va="top",
                    transform=ax.get_xaxis_transform(),
                )
        for index, (kind, values) in enumerate(sorted(series["p99_ms"].items())):
            colour = colours[index % len(colours)]
            ax.step(
                *_steps(series["start_s"], values, report["interval_s"]),
                where="post",
                color=colour,
                label=f"{kind} p99",
            )
            if kind in slo:
                ax.axhline(slo[kind], color=colour, ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(f"{name}: {entry['slo_violation_s']:g} s of SLO violation", fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel(
        "seconds into the measured run (shaded: anomalies; dashed: SLOs; "
        "a gap: more than 1 % of the requests failed, or none completed)"
    )
    fig.tight_layout()
    path = out / "p99.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(10, 4))
    for index, name in enumerate(names):
        series = policies[name]["series"]
        colour = colours[index % len(colours)]
        ax.step(
            *_steps(series["start_s"], series["cpu_allocated"], report["interval_s"]),
            where="post",
            color=colour,
            label=f"{name} allocated",
        )
        ax.step(
            *_steps(series["start_s"], series["cpu_used"], report["interval_s"]),
            where="post",
            color=colour,
            ls=":",
            label=f"{name} used",
        )
    first = policies[names[0]] if names else {"anomalies": []}
    for anomaly in first["anomalies"]:
        if anomaly["start_s"] is not None and anomaly["end_s"] is not None:
            ax.axvspan(anomaly["start_s"], anomaly["end_s"], color="tab:red", alpha=0.08, lw=0)
    ax.set_xlabel("seconds into the measured run (shaded: anomalies)")
    ax.set_ylabel("CPU cores")
    ax.set_title("CPU allocated (solid) and used (dotted) by the managed instances", fontsize=9, loc="left")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / "cpu.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written
