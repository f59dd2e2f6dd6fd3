"""The live environment on the embedded testbed: a few real steps, real limits, restored at the end.

A testbed of its own (names, subnet and cgroup parent differ from a developer's and from the other
tests'), real load with a real CPU anomaly beside compose-post-0, the actions written through the
actuation library (CPU quota with cgroup, veth shaping with tc, disk throttles when the data
directory is on a block device) and read back from the kernel; then the baseline is back.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import pytest

from ansible_collections.firm.core.plugins.module_utils import cgroup, tc
from firm.rl import DEFAULT_MODEL, RESOURCES, Agent
from firm.rl.live import LiveConfig, LiveEnv, LiveStep, run_live_episode
from firm.rl.policies import AgentPolicy
from firm.testbed import config as testbed_config
from firm.testbed import lifecycle
from tests.helpers.redis_db import REDIS_URL, connect

CPU, NET = RESOURCES.index("cpu"), RESOURCES.index("network")


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testbed_config.TestbedConfig]:
    if os.geteuid() != 0:
        pytest.skip("the live environment writes cgroups and qdiscs: it needs root")
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"no shipped model at {DEFAULT_MODEL}")
    connect()
    root = tmp_path_factory.mktemp("rl-testbed")
    config = dataclasses.replace(
        testbed_config.load(),
        subnet="198.18.6.0/24",
        bridge="firmtbr0",
        namespace_prefix="firmtbr-",
        veth_prefix="ftr",
        cgroup_parent="firm-testbed-rl",
        state_dir=str(root / "state"),
        data_dir=str(root / "data"),
        telemetry_redis=REDIS_URL,
        seed_posts=50,
    )
    try:
        lifecycle.up(config)
        yield config
    finally:
        lifecycle.down(config)
    assert not os.path.exists(config.state_dir)


class Scripted:
    """Step 1: halve the CPU quota and the veth rate (a known write); then the agent decides."""

    def __init__(self, agent: Agent) -> None:
        self.agent, self.k = AgentPolicy(agent), 0

    def __call__(self, states: np.ndarray, env: object) -> np.ndarray:
        self.k += 1
        if self.k == 1:
            a = np.zeros((1, 5))
            a[0, CPU] = a[0, NET] = -1.0
            return a
        return self.agent(states, env)  # type: ignore[arg-type]


def test_live_steps_write_real_limits_and_restore_them(testbed: testbed_config.TestbedConfig) -> None:
    agent = Agent.load()
    live = LiveConfig(
        instance="compose-post-0",
        steps=3,
        anomaly="cpu",
        intensity=50,
        anomaly_start_step=1,
        anomaly_steps=2,
        seed=3,
    )
    env = LiveEnv(testbed, live, agent.cfg)
    group, veth = env.group, env.instance.host_interface
    quota0, period0 = cgroup.read_cpu_max(group)
    shaping0 = tc.read_shaping(veth)
    assert env.mask[0].tolist() == [True, False, False, env.device is not None, True]
    start = env.limits.copy()

    seen: list[tuple[np.ndarray, LiveStep, tuple[int, int], int | None]] = []

    def check(states: np.ndarray, actions: np.ndarray, res: LiveStep) -> None:
        shaping = tc.read_shaping(veth)
        seen.append((states, res, cgroup.read_cpu_max(group), shaping.rate_bps if shaping else None))

    mean_reward, violations = run_live_episode(env, Scripted(agent), check)

    assert len(seen) == 3
    states, first, (quota, period), rate = seen[0]
    # The first write is exactly the scripted one, as the kernel holds it.
    assert first.limits[0, CPU] == pytest.approx(start[0, CPU] / 2)
    assert quota == round(first.limits[0, CPU] * period)
    assert rate is not None and abs(rate - first.limits[0, NET]) <= 0.01 * first.limits[0, NET]
    for states, res, (quota, period), _rate in seen:
        assert np.all(np.isfinite(states)) and np.all(np.isfinite(res.states))
        assert 0.0 <= float(res.rewards[0]) <= env.mask.sum()
        assert quota == round(res.limits[0, CPU] * period)
        for i in range(5):
            assert env.lo[0, i] <= res.limits[0, i] <= env.hi[0, i]
    # Real telemetry: the instance used CPU under load.
    assert max(float(r.states[0, -5 + CPU]) for _, r, _, _ in seen) > 0.0
    assert 0.0 <= mean_reward <= 5.0 and 0.0 <= violations <= 1.0
    # Restored.
    assert cgroup.read_cpu_max(group) == (quota0, period0)
    assert tc.read_shaping(veth) == shaping0
