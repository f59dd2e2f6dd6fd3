"""Training on the simulator: it learns, it is reproducible, it resumes, and transfer saves episodes."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.rl import DEFAULT_MODEL, Agent, AgentConfig, TrainingError
from firm.rl.ddpg import seed_everything
from firm.rl.policies import AgentPolicy, AimdPolicy, RandomPolicy
from firm.rl.sim import SimConfig, make_scenario
from firm.rl.train import RunSpec, TrainConfig, Trainer, run_episodes, sim_agent_config, train_run

# A short run: 4 rounds of 8 episodes, evaluated on 8 scenarios (seconds, not minutes).
TINY = TrainConfig(
    episodes=32,
    n_envs=8,
    eval_episodes=8,
    checkpoint_every=2,
    each_episodes=8,
    aimd_increase=(2.0,),
    aimd_decrease=(0.005,),
)
TINY_AGENT = AgentConfig(episode_steps=40, batch_size=256, actor_lr=1e-3, tau=5e-3)


def test_run_directory_is_complete_and_the_same_seed_gives_the_same_summary(tmp_path: Path) -> None:
    spec = RunSpec(seed=3, train=TINY, agent=TINY_AGENT)
    a = train_run(spec, tmp_path / "a")
    b = train_run(spec, tmp_path / "b")
    assert a == b
    assert (tmp_path / "a" / "summary.json").read_text() == (tmp_path / "b" / "summary.json").read_text()
    for name in ("model.pt", "episodes.csv", "learning_curve.png", "summary.json", "run.json"):
        assert (tmp_path / "a" / name).is_file(), name
    assert not (tmp_path / "a" / "checkpoint").exists()
    assert set(a["eval"]) == {"agent", "random", "aimd", "max_limits"}
    rows = list(csv.DictReader((tmp_path / "a" / "episodes.csv").open()))
    assert len(rows) == 32 and {"episode", "service", "reward", "violations", "ru_cpu"} <= set(rows[0])
    assert (tmp_path / "a" / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(
        Agent.load(tmp_path / "a" / "model.pt").act(np.ones((4, 10), np.float32)),
        Agent.load(tmp_path / "b" / "model.pt").act(np.ones((4, 10), np.float32)),
    )


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    spec = RunSpec(seed=4, train=TINY, agent=TINY_AGENT)
    whole = train_run(spec, tmp_path / "whole")

    class StopError(Exception):
        pass

    def stop_after_checkpoint(phase: str, done: int, total: int, row: dict[str, object]) -> None:
        if done == 3:  # the checkpoint of round 2 exists; round 3 is lost
            raise StopError

    with pytest.raises(StopError):
        train_run(spec, tmp_path / "cut", progress=stop_after_checkpoint)
    assert (tmp_path / "cut" / "checkpoint" / "progress.json").is_file()
    with pytest.raises(TrainingError, match="other options"):
        train_run(replace(spec, seed=5), tmp_path / "cut", resume=True)
    resumed = train_run(spec, tmp_path / "cut", resume=True)
    assert resumed == whole


def test_one_for_each_writes_an_agent_per_service(tmp_path: Path) -> None:
    spec = RunSpec(agents="one-for-each", seed=2, train=replace(TINY, episodes=16), agent=TINY_AGENT)
    summary = train_run(spec, tmp_path)
    names = [s.name for s in SimConfig().services]
    assert summary["models"] == ["model.pt", *(f"models/{n}.pt" for n in sorted(names))]
    assert set(summary["eval"]) == {"agent", "random", "aimd", "max_limits", "one-for-all"}
    assert Agent.load(tmp_path / "models" / "media.pt").metadata["service"] == "media"


def test_cli_train_rl_runs_and_refuses_bad_options(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        main, ["train-rl", "--env", "sim", "--episodes", "1", "--steps", "3", "--out", str(tmp_path)]
    )
    assert r.exit_code != 0 and "--steps" in r.output
    r = CliRunner().invoke(main, ["train-rl", "--env", "sim"])
    assert r.exit_code != 0 and "--out" in r.output
    r = CliRunner().invoke(main, ["train-rl", "--resume", str(tmp_path)])
    assert r.exit_code != 0 and "no checkpoint" in r.output and "Traceback" not in r.output


def _train_rounds(
    agent: Agent, service: int, rounds: int, seed: int, eval_on: object, sim: SimConfig
) -> list[float]:
    """Eval reward of ``agent`` before training and after each round on one service."""
    tc = TrainConfig(n_envs=8, updates_per_step=1)
    trainer = Trainer(agent, tc, sim, np.random.default_rng(seed), services=[service])
    curve = [run_episodes(AgentPolicy(agent), eval_on, agent.cfg, sim).reward]  # type: ignore[arg-type]
    for _ in range(rounds):
        trainer.round()
        curve.append(run_episodes(AgentPolicy(agent), eval_on, agent.cfg, sim).reward)  # type: ignore[arg-type]
    return curve


def test_one_for_each_from_one_for_all_reaches_aimd_in_fewer_episodes_than_from_scratch() -> None:
    """Transfer learning, measured: an agent for post-storage initialised from the shipped one-for-all
    agent against one trained from scratch, with the same seed, data and budget (6 rounds of 8
    episodes of 100 steps); target: AIMD's reward on the same 16 post-storage scenarios.

    Measured here: target 1.89; from one-for-all 2.52 before any episode (0 episodes to the target),
    2.68 after 48; from scratch 0.83, 0.11, 0.48, then 2.34 after 24 episodes (3 rounds), 2.34 after 48.
    """
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"no shipped model at {DEFAULT_MODEL}")
    sim = SimConfig()
    service = [s.name for s in sim.services].index("post-storage")
    shared = Agent.load()
    cfg = replace(shared.cfg, episode_steps=100)
    scenario = make_scenario(sim, 16, 100, np.random.default_rng(123), services=[service])
    target = run_episodes(AimdPolicy(2.0, 0.005, cfg.max_step), scenario, cfg, sim).reward

    seed_everything(9)
    transfer = Agent(cfg)
    transfer.ddpg.load_state_dict(shared.ddpg.state_dict())
    seed_everything(9)
    scratch = Agent(cfg)
    t_curve = _train_rounds(transfer, service, 6, 9, scenario, sim)
    s_curve = _train_rounds(scratch, service, 6, 9, scenario, sim)

    def rounds_to_target(curve: list[float]) -> int:
        return next((i for i, r in enumerate(curve) if r >= target), len(curve))

    print(
        f"target {target:.3f}; transfer {[round(x, 3) for x in t_curve]}; scratch {[round(x, 3) for x in s_curve]}"
    )
    assert rounds_to_target(t_curve) < rounds_to_target(s_curve)


def test_a_short_seeded_training_beats_random_and_aimd() -> None:
    """Six rounds of 16 compose-post episodes of 100 steps (585 updates, seconds), then the deterministic
    agent against a random policy and AIMD (x2 on violation, -0.5 % of each range otherwise) on the
    same 16 seeded scenarios. Measured here: agent 3.18, AIMD 2.53, random 1.10 (mean reward per step,
    at most 5); the margin asserted is 0.2 over AIMD and 1.0 over random."""
    sim = SimConfig(mask_prob=0.0)
    service = [s.name for s in sim.services].index("compose-post")
    cfg = replace(sim_agent_config(), episode_steps=100)
    scenario = make_scenario(sim, 16, 100, np.random.default_rng(1000), services=[service])
    seed_everything(0)
    agent = Agent(cfg)
    trainer = Trainer(agent, TrainConfig(n_envs=16), sim, np.random.default_rng(0), services=[service])
    for _ in range(6):
        trainer.round()
    got = run_episodes(AgentPolicy(agent), scenario, cfg, sim).reward
    aimd = run_episodes(AimdPolicy(2.0, 0.005, cfg.max_step), scenario, cfg, sim).reward
    rand = run_episodes(RandomPolicy(np.random.default_rng(1)), scenario, cfg, sim).reward
    print(f"agent {got:.3f}, aimd {aimd:.3f}, random {rand:.3f}")
    assert got > aimd + 0.2
    assert got > rand + 1.0


def test_one_for_each_resumes_inside_a_service_phase(tmp_path: Path) -> None:
    spec = RunSpec(
        agents="one-for-each", seed=6, train=replace(TINY, episodes=8, each_episodes=24), agent=TINY_AGENT
    )
    whole = train_run(spec, tmp_path / "whole")

    class StopError(Exception):
        pass

    def stop(phase: str, done: int, total: int, row: dict[str, object]) -> None:
        if phase == "compose-post" and done == 3:  # its round-2 checkpoint exists
            raise StopError

    with pytest.raises(StopError):
        train_run(spec, tmp_path / "cut", progress=stop)
    assert (
        json.loads((tmp_path / "cut" / "checkpoint" / "progress.json").read_text())["phase"] == "compose-post"
    )
    assert train_run(spec, tmp_path / "cut", resume=True) == whole
