"""SB3's baselines run through rlkit's registry and solve the toy task (the yardstick for every learning test)."""

import pytest
from stable_baselines3 import SAC

from benchmarks.algorithms import ALGORITHMS
from rlkit import make_env
from rlkit.common.evaluation import evaluate, normalized_score
from rlkit.envs.toy import PointReachEnv


def score(model, env) -> float:
    result = evaluate(model, env, n_episodes=20, seed=1000)
    return float(normalized_score(result.return_mean, PointReachEnv.ref_min_score, PointReachEnv.ref_max_score))


def test_sac_solves_toy_reach():
    env = make_env("toy/reach-v0")
    model = SAC("MlpPolicy", env, learning_starts=500, policy_kwargs={"net_arch": [64, 64]}, seed=0)
    assert score(model, env) < 40, "an untrained agent must fail the threshold"
    model.learn(3000)
    assert score(model, env) > 75


@pytest.mark.parametrize("name", ["SAC", "TD3", "PPO", "TRPO"])
def test_baselines_registered(name):
    entry = ALGORITHMS[name]
    assert entry.kind == "online" and entry.peer in ALGORITHMS
    assert entry.load().__name__ == name
