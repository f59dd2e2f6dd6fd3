"""Where the project's shared reference data lives (``../shared/data`` beside the checkout)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def data_dir(*parts: str) -> Path:
    """``DATA_DIR / parts``; skips the calling test, saying why, when it is not there."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        reason = f"shared reference data not found at {path.resolve()} (see ../shared/data/README.md)"
        print(reason)
        pytest.skip(reason)
    return path


def deathstarbench_files(prefix: str = "") -> list[Path]:
    """The recorded DeathStarBench Jaeger answers whose names start with ``prefix``."""
    return sorted(data_dir("jaeger-traces", "deathstarbench").glob(f"{prefix}*.json"))
