"""The live view of ``firm run``: SLOs, culprits and the last actions (limits set, scale-out and
scale-in requested and done), refreshed every step (rich)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from firm.loop.audit import Record, scale_lines

STATE_STYLE = {"violated": "bold red", "at_risk": "yellow", "ok": "green", "slack": "green", "unknown": "dim"}


class LiveView:
    """Renders the latest audit record and the recent actions."""

    def __init__(
        self, *, decider: str, dry_run: bool, duration_s: float | None, keep_actions: int = 8
    ) -> None:
        self.decider, self.dry_run, self.duration_s = decider, dry_run, duration_s
        self.started = time.monotonic()
        self.record: Record | None = None
        self.actions: deque[tuple[str, str, str]] = deque(maxlen=keep_actions)
        self.counts: dict[str, int] = {}

    def add(self, record: Record) -> RenderableType:
        self.record = record
        status = str(record.get("status", ""))
        self.counts[status] = self.counts.get(status, 0) + 1
        result = record.get("result") or {}
        clock = time.strftime("%H:%M:%S", time.localtime(record.get("time", time.time())))
        for action in result.get("actions") or []:
            if action.get("changed"):
                verb = (
                    "would set"
                    if result.get("dry_run")
                    else "rolled back"
                    if result.get("rolled_back")
                    else "set"
                )
                self.actions.append(
                    (
                        clock,
                        f"{verb} {action['instance']} {action['resource']} "
                        f"{_num(action.get('before'))} -> {_num(action.get('after'))} "
                        f"{action.get('unit', '')}",
                        str(action.get("reason", "")),
                    )
                )
        for what, why in scale_lines(record):
            self.actions.append((clock, f"[cyan]{escape(what)}[/cyan]", escape(why)))
        if result.get("error"):
            self.actions.append(
                (
                    clock,
                    f"[red]step failed: {result['error']}[/red]",
                    "rolled back" if result.get("rolled_back") else "",
                )
            )
        return self.render()

    def render(self) -> RenderableType:
        elapsed = time.monotonic() - self.started
        record = self.record or {}
        total = f" / {self.duration_s:.0f}" if self.duration_s else ""
        steps = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        header = Text.from_markup(
            f"firm run: decider [bold]{self.decider}[/bold]{' [yellow](dry run)[/yellow]' if self.dry_run else ''}"
            f"   {elapsed:.0f}{total} s   step {record.get('step', 0)}: {record.get('status', 'starting')}"
            f"   ({steps or 'no steps yet'})"
        )
        slo = Table(title="request types in the window", title_justify="left")
        for column in ("type", "requests", "p50 ms", "p99 ms", "SLO ms", "state"):
            slo.add_column(column, justify="right")
        for status in record.get("slo") or []:
            state = status.get("state", "unknown")
            slo.add_row(
                status["type"],
                str(status.get("count", 0)),
                _ms(status.get("p50_ms")),
                _ms(status.get("p99_ms")),
                _ms(status.get("slo_ms")),
                f"[{STATE_STYLE.get(state, '')}]{state}[/]",
            )
        parts: list[RenderableType] = [header, slo]
        decision: Mapping[str, Any] = record.get("decision") or {}
        culprits = ", ".join(
            f"{c['instance']} ({c['score']:.2f})"
            if isinstance(c.get("score"), int | float)
            else c["instance"]
            for c in decision.get("culprits") or []
        )
        mode = decision.get("mode", "-")
        parts.append(Text.from_markup(f"mode: {mode}   culprits: {culprits or '-'}"))
        if record.get("scale_in"):
            parts.append(Text(f"scale-in: {record['scale_in']}", style="dim"))
        if record.get("status") == "stale":
            parts.append(Text.from_markup(f"[yellow]no decision: {record.get('reason')}[/yellow]"))
        actions = Table(title="last actions", title_justify="left")
        for column in ("time", "action", "why"):
            actions.add_column(column)
        for row in self.actions:
            actions.add_row(*row)
        parts.append(actions)
        return Group(*parts)


def _ms(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.1f}"


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else str(value)
