"""``firm audit`` and ``firm explain`` on audit logs of any shape: a record the loop never wrote
(hand-edited, truncated, from another version) is either shown or refused naming its line and
field, never an unexpected error (property-based: random JSON under the record's own keys)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firm.cli import main

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "x", "unlimited", "-unlimited", "cpu", "0", "raise", "reclaim"]),
)
junk: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=4,
)


def entries(*keys: str) -> st.SearchStrategy[Any]:
    """Mostly lists of entries with some of ``keys`` (each value any scalar), sometimes junk."""
    entry = st.dictionaries(
        st.sampled_from(keys),
        scalars | st.dictionaries(st.text(max_size=3), scalars, max_size=2),
        max_size=len(keys),
    )
    return st.lists(entry, max_size=3) | junk


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, strategy, strategy, junk)


records = st.fixed_dictionaries(
    {},
    optional={
        "run": maybe(st.sampled_from(["r1", "r2"])),
        "step": maybe(st.integers(0, 5)),
        "time": maybe(st.floats(0, 2e9)),
        "status": maybe(st.sampled_from(["acted", "no_action", "stale", "failed", "exit", "other"])),
        "reason": maybe(st.text(max_size=5)),
        "decider": maybe(st.sampled_from(["firm", "aimd"])),
        "dry_run": scalars,
        "slo": maybe(entries("type", "state", "count", "p50_ms", "p99_ms", "slo_ms")),
        "decision": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "mode": maybe(st.sampled_from(["raise", "reclaim", "hold", "idle"])),
                    "agent": scalars,
                    "culprits": maybe(entries("instance", "service", "score", "features")),
                    "ranking": maybe(entries("instance", "score", "culprit")),
                    "notes": maybe(st.lists(scalars, max_size=2)),
                },
            )
        ),
        "result": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "actions": maybe(
                        entries("instance", "resource", "value", "before", "after", "changed", "reason")
                    ),
                    "error": scalars,
                    "rolled_back": scalars,
                    "dry_run": scalars,
                },
            )
        ),
        "proposed": maybe(entries("instance", "resource", "value", "reason", "unit")),
        "rejected": maybe(entries("instance", "resource", "value", "rejected")),
        "scale_requests": maybe(entries("service", "reason", "outcome")),
        "scale_events": maybe(entries("service", "outcome", "instance")),
        "scale_in": junk,
        "errors": maybe(entries("kind", "error")),
    },
)
"""Audit records as the loop writes them (firm.loop.audit.RecordShape), each part sometimes missing,
sometimes of another type, entries with any subset of their keys."""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=3))
def test_any_record_is_shown_or_refused_by_line_and_field(batch: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "audit.jsonl")
        path.write_text("".join(json.dumps(record) + "\n" for record in batch))
        for command in (
            ["audit", "--file", str(path)],
            ["explain", "--file", str(path)],
            ["audit", "--json", "--file", str(path)],
        ):
            result = CliRunner().invoke(main, command)
            assert "This is a bug" not in result.output and "Traceback" not in result.output, (
                command,
                batch,
                result.output,
            )
            assert result.exception is None or isinstance(result.exception, SystemExit), (
                command,
                batch,
                result.exception,
            )
            assert result.exit_code in (0, 1), (command, batch, result.output)
            if result.exit_code == 1:
                assert "line " in result.output, (command, batch, result.output)
