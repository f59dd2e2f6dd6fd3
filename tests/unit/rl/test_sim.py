"""The simulator: determinism, physics that make sense, speed of a vectorised step."""

from __future__ import annotations

import numpy as np

from firm.rl import AgentConfig
from firm.rl.policies import AimdPolicy, RandomPolicy
from firm.rl.sim import CPU, DISK, LLC, MEM, NET, SimConfig, SimEnv, make_scenario
from firm.rl.train import run_episodes

CFG = AgentConfig()


def _env(seed: int = 0, n: int = 8, steps: int = 50, sim: SimConfig | None = None) -> SimEnv:
    sim = sim or SimConfig()
    return SimEnv(make_scenario(sim, n, steps, np.random.default_rng(seed)), CFG, sim)


def test_same_seed_same_episode() -> None:
    a, b = _env(1), _env(1)
    sa, sb = a.reset(), b.reset()
    np.testing.assert_array_equal(sa, sb)
    rng = np.random.default_rng(5)
    for _ in range(20):
        act = rng.uniform(-1, 1, (8, 5))
        ra, rb = a.step(act), b.step(act)
        np.testing.assert_array_equal(ra.states, rb.states)
        np.testing.assert_array_equal(ra.rewards, rb.rewards)


def test_states_and_rewards_are_in_range() -> None:
    env = _env(2, n=32, steps=100)
    s = env.reset()
    rng = np.random.default_rng(0)
    done = False
    while not done:
        res = env.step(rng.uniform(-1, 1, (32, 5)))
        s, done = res.states, res.done
        assert s.shape == (32, CFG.state_dim) and np.all(np.isfinite(s))
        assert np.all(s[:, 0] >= 0) and np.all(s[:, 0] <= CFG.sr_clip)
        np.testing.assert_allclose(s[:, 2:5].sum(axis=1), 1.0, rtol=1e-5)
        assert np.all(s[:, 5:] >= 0) and np.all(s[:, 5:] <= 1)
        assert np.all(res.rewards >= 0) and np.all(res.rewards <= 5)
        assert np.all(res.limits >= env.lo * (1 - 1e-12)) and np.all(res.limits <= env.hi * (1 + 1e-12))
    assert not np.any(s[~env.mask[:, 0], 5])  # masked resources report RU = 0 (none masked for CPU)
    masked = ~env.mask
    assert np.all(s[:, 5:][masked] == 0)


def test_more_resources_lower_latency_and_utilisation() -> None:
    sim = SimConfig(anomaly_rate=0.0, p99_noise=0.0, mask_prob=0.0)
    tight, loose = _env(3, sim=sim), _env(3, sim=sim)
    tight.reset(), loose.reset()
    tight.limits[:] = tight.lo * 2
    loose.limits[:] = loose.hi
    rt, rl = tight.step(np.zeros((8, 5))), loose.step(np.zeros((8, 5)))
    assert np.all(rl.p99_ms <= rt.p99_ms)
    assert np.all(rl.usage / rl.limits <= rt.usage / rt.limits + 1e-12)


def test_contention_of_each_kind_raises_latency_until_it_leaves() -> None:
    sim = SimConfig(anomaly_rate=0.0, p99_noise=0.0, mask_prob=0.0)
    for kind in (CPU, MEM, LLC, DISK, NET):
        sc = make_scenario(sim, 1, 60, np.random.default_rng(4), services=[3])
        svc = sim.services[3]
        mix = np.array(svc.mix) / sum(svc.mix)
        need = mix @ np.array(svc.demand)  # per request, RESOURCES order
        sc.init[0] = np.clip(need * sc.rate[0].mean() * 2.0, svc.lo, svc.hi)  # utilisation about 0.5
        sc.init[0, LLC] = need[LLC]  # the working set just fits
        calm = SimEnv(sc, CFG, sim)
        calm.reset()
        base = [calm.step(np.zeros((1, 5))).p99_ms[0] for _ in range(60)]
        sc.contention[0, 10:20, kind] = 2.0
        hit = SimEnv(sc, CFG, sim)
        hit.reset()
        lat = [hit.step(np.zeros((1, 5))).p99_ms[0] for _ in range(60)]
        assert max(lat[10:19]) > 1.2 * max(base[10:19]), kind
        assert lat[-1] <= 1.5 * base[-1] + 1.0, kind  # it leaves, and the backlog drains


def test_good_policies_exist_and_beat_random_and_aimd() -> None:
    """A hand-written proportional rule (keep each RU near 0.45) beats both baselines: the reward
    rewards what it should. On these 32 seeded scenarios, measured: rule 2.73, AIMD 2.12, random 0.75;
    asserted: the rule 0.2 above AIMD, AIMD 0.3 above random."""
    sim = SimConfig()
    sc = make_scenario(sim, 32, 300, np.random.default_rng(11))

    def rule(states: np.ndarray, env: object) -> np.ndarray:
        ru = states[:, 5:].astype(float)
        target = np.where(states[:, :1] < 1, 0.36, 0.45)
        out: np.ndarray = np.clip(np.log(np.maximum(ru, 1e-3) / target) / np.log(CFG.max_step), -1, 1)
        return out

    good = run_episodes(rule, sc, CFG, sim).reward
    aimd = run_episodes(AimdPolicy(2.0, 0.005, CFG.max_step), sc, CFG, sim).reward
    rand = run_episodes(RandomPolicy(np.random.default_rng(0)), sc, CFG, sim).reward
    print(f"rule {good:.3f}, aimd {aimd:.3f}, random {rand:.3f}")
    assert good > aimd + 0.2 and aimd > rand + 0.3
