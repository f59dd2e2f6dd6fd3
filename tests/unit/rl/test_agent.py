"""DDPG parts, determinism, and model files (firm.rl.ddpg, firm.rl.agent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from firm.rl import DEFAULT_MODEL, Agent, AgentConfig, ModelError, StateError
from firm.rl.agent import MODEL_FORMAT
from firm.rl.ddpg import Batch, GaussianNoise, OrnsteinUhlenbeckNoise, ReplayBuffer, seed_everything
from firm.rl.errors import TrainingError


def _filled_buffer(seed: int, n: int = 500) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(1000, 10, rng)
    buf.add(
        rng.random((n, 10), np.float32),
        rng.uniform(-1, 1, (n, 5)).astype(np.float32),
        rng.random(n, np.float32),
        rng.random((n, 10), np.float32),
        np.zeros(n, np.float32),
    )
    return buf


def _trained(seed: int, updates: int = 30) -> Agent:
    seed_everything(seed)
    agent = Agent(AgentConfig())
    buf = _filled_buffer(seed)
    for _ in range(updates):
        stats = agent.ddpg.update(buf.sample(64))
        assert not stats.skipped
    return agent


def _states(seed: int = 0, n: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 2, (n, 10)).astype(np.float32)


def test_same_seed_same_actions_other_seed_other_actions() -> None:
    a, b, c = _trained(11), _trained(11), _trained(12)
    np.testing.assert_array_equal(a.act(_states()), b.act(_states()))
    assert not np.array_equal(a.act(_states()), c.act(_states()))


def test_save_then_load_gives_the_same_policy(tmp_path: Path) -> None:
    agent = _trained(5)
    agent.save(tmp_path / "m.pt")
    loaded = Agent.load(tmp_path / "m.pt")
    assert loaded.cfg == agent.cfg
    np.testing.assert_array_equal(loaded.act(_states()), agent.act(_states()))
    agent.save(tmp_path / "c.pt", checkpoint=True)
    np.testing.assert_array_equal(Agent.load(tmp_path / "c.pt").act(_states()), agent.act(_states()))


def test_shipped_default_model_loads_and_decides() -> None:
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"no shipped model at {DEFAULT_MODEL} (train one with firm train-rl --env sim --seed 7)")
    agent = Agent.load()
    assert agent.act(_states()).shape == (64, 5)


def test_load_refuses_another_layout_format_or_file(tmp_path: Path) -> None:
    agent = _trained(1, updates=1)
    agent.save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["layout"]["actions"] = ["cpu", "memory"]
    torch.save(payload, tmp_path / "layout.pt")
    with pytest.raises(ModelError, match="layout"):
        Agent.load(tmp_path / "layout.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["format"] = MODEL_FORMAT + 1
    torch.save(payload, tmp_path / "format.pt")
    with pytest.raises(ModelError, match="format"):
        Agent.load(tmp_path / "format.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["config"]["hidden"] = [8, 8]
    torch.save(payload, tmp_path / "weights.pt")
    with pytest.raises(ModelError, match="weights do not fit"):
        Agent.load(tmp_path / "weights.pt")
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(ModelError, match="not a readable"):
        Agent.load(tmp_path / "junk.pt")
    with pytest.raises(ModelError, match="no model file"):
        Agent.load(tmp_path / "absent.pt")


def test_config_refuses_out_of_range_fields_by_name() -> None:
    with pytest.raises(StateError, match="gamma"):
        AgentConfig(gamma=1.0)
    with pytest.raises(StateError, match="max_step"):
        AgentConfig(max_step=1.0)
    with pytest.raises(StateError, match="hidden"):
        AgentConfig(hidden=())
    assert AgentConfig.from_dict(AgentConfig().as_dict()) == AgentConfig()
    with pytest.raises(ModelError, match="unknown fields"):
        AgentConfig.from_dict({"colour": 1})


def test_prototype_hyperparameters_are_the_defaults() -> None:
    c = AgentConfig()
    assert (c.actor_lr, c.critic_lr, c.gamma, c.tau, c.batch_size, c.buffer_size, c.learning_starts) == (
        3e-4,
        3e-3,
        0.9,
        1e-3,
        64,
        100_000,
        70,
    )
    assert (c.noise, c.noise_sigma, c.ou_theta, c.hidden, c.episode_steps, c.alpha) == (
        "ou",
        0.2,
        0.15,
        (40, 40),
        300,
        0.5,
    )


def test_replay_buffer_batches_are_named_tuples_and_wrap_around() -> None:
    buf = _filled_buffer(0, n=1500)
    assert len(buf) == 1000 and buf.full
    batch = buf.sample(32)
    assert isinstance(batch, Batch)
    assert (
        batch.states.shape == (32, 10) and batch.actions.shape == (32, 5) and batch.rewards.shape == (32, 1)
    )
    with pytest.raises(TrainingError, match="NaN"):
        buf.add(
            np.full((1, 10), np.nan, np.float32),
            np.zeros((1, 5), np.float32),
            np.zeros(1, np.float32),
            np.zeros((1, 10), np.float32),
            np.zeros(1, np.float32),
        )


def test_noise_draws_from_the_injected_generator() -> None:
    for make in (
        lambda g: OrnsteinUhlenbeckNoise((4, 5), 0.2, 0.15, g),
        lambda g: GaussianNoise((4, 5), 0.2, g),
    ):
        a, b = make(np.random.default_rng(3)), make(np.random.default_rng(3))
        xa = [a() for _ in range(5)]
        xb = [b() for _ in range(5)]
        np.testing.assert_array_equal(np.array(xa), np.array(xb))
        a.reset()
    ou = OrnsteinUhlenbeckNoise((1, 5), 0.2, 0.15, np.random.default_rng(0))
    xs = np.array([ou()[0] for _ in range(5000)])
    assert abs(xs.mean()) < 0.1  # mean-reverting to 0
    assert np.corrcoef(xs[:-1, 0], xs[1:, 0])[0, 1] > 0.5  # temporally correlated


def test_nan_guard_skips_the_update_and_keeps_weights() -> None:
    agent = _trained(2, updates=1)
    before = [p.detach().clone() for p in agent.ddpg.actor.parameters()]
    buf = _filled_buffer(2)
    batch = buf.sample(64)
    bad = Batch(
        batch.states,
        batch.actions,
        torch.full_like(batch.rewards, float("nan")),
        batch.next_states,
        batch.dones,
    )
    stats = agent.ddpg.update(bad)
    assert stats.skipped and agent.ddpg.skipped == 1
    for p, q in zip(before, agent.ddpg.actor.parameters(), strict=True):
        assert torch.equal(p, q)


def test_gradient_clipping_bounds_a_huge_reward_step() -> None:
    seed_everything(4)
    agent = Agent(AgentConfig(grad_clip=1.0))
    buf = _filled_buffer(4)
    b = buf.sample(64)
    big = Batch(b.states, b.actions, b.rewards * 1e6, b.next_states, b.dones)
    before = [p.detach().clone() for p in agent.ddpg.critic.parameters()]
    agent.ddpg.update(big)
    moved = max(
        float((p - q.detach()).abs().max())
        for p, q in zip(before, agent.ddpg.critic.parameters(), strict=True)
    )
    assert moved <= 3e-3 * 1.01  # one Adam step moves a weight by at most about the learning rate


def test_clone_is_independent() -> None:
    a = _trained(6, updates=2)
    b = a.clone()
    np.testing.assert_array_equal(a.act(_states()), b.act(_states()))
    buf = _filled_buffer(7)
    for _ in range(5):
        b.ddpg.update(buf.sample(64))
    assert not np.array_equal(a.act(_states()), b.act(_states()))


def test_batch_norm_option_trains_and_acts_on_one_state() -> None:
    seed_everything(8)
    agent = Agent(AgentConfig(batch_norm=True))
    buf = _filled_buffer(8)
    for _ in range(3):
        agent.ddpg.update(buf.sample(64))
    assert agent.act(_states(n=1)).shape == (1, 5)
