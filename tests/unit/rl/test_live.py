"""The live environment refuses to start, before touching anything, where it cannot run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from firm.rl import AgentConfig, LiveEnvError
from firm.rl.live import LiveConfig, LiveEnv, train_live
from firm.testbed import config as testbed_config


def test_refuses_without_root_or_testbed(tmp_path: Path) -> None:
    config = dataclasses.replace(
        testbed_config.TestbedConfig(), state_dir=str(tmp_path / "state"), data_dir=str(tmp_path / "d")
    )
    with pytest.raises(LiveEnvError, match=r"root|not up"):
        LiveEnv(config, LiveConfig(), AgentConfig())
    assert not (tmp_path / "state").exists()


def test_a_step_is_one_latency_window(tmp_path: Path) -> None:
    config = dataclasses.replace(testbed_config.TestbedConfig(), state_dir=str(tmp_path / "state"))
    with pytest.raises(LiveEnvError, match="latency window"):
        train_live(tmp_path / "out", seed=1, episodes=1, steps=2, interval_s=7.0, testbed=config)


def test_bounds_follow_the_resource_order() -> None:
    b = LiveConfig().resource_bounds()
    assert list(b) == ["cpu", "memory_bandwidth", "llc", "disk_io", "network"]
    assert b["cpu"].min == 0.2 and b["cpu"].max == 2.0 and b["network"].min == 1e6
