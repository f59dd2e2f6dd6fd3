"""The experiment's recording adapter keeps what the loop asks of the target it wraps."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from firm.experiment.runner import RecordingTarget
from firm.loop.runner import ControlLoop


@pytest.mark.parametrize("incremental", [True, False])
def test_the_loop_prefetches_through_the_recorder_exactly_when_it_would_without_it(incremental: bool) -> None:
    inner: Any = SimpleNamespace(executor=SimpleNamespace(), prefetch=incremental)
    recording = RecordingTarget(inner, exclude=())
    assert recording.prefetch is incremental
    # what the loop checks (ControlLoop._prefetches), with a decider that has per-trace work
    probe: Any = SimpleNamespace(decider=SimpleNamespace(ingest=lambda traces: None), target=recording)
    assert ControlLoop._prefetches(probe) is incremental
    assert RecordingTarget(SimpleNamespace(executor=SimpleNamespace()), exclude=()).prefetch is False  # type: ignore[arg-type]
