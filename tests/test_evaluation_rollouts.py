"""``rlkit.common.evaluation.evaluate``: its statistics against episodes rolled out separately, env by env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from rlkit import make_env
from rlkit.common.evaluation import evaluate, evaluate_model
from rlkit.envs.safety import VelocityCost


def _cheetah() -> gym.Env:
    # a cost that fires on some steps of an untrained policy: moving forward faster than 0.05
    return VelocityCost(gym.make("HalfCheetah-v5", max_episode_steps=40), threshold=0.05)


def _rollout(model: PPO, env: gym.Env, seed: int) -> tuple[float, float, int, float | None]:
    """One episode with its own fresh reset: return, summed cost, length, the last step's success."""
    obs, _ = env.reset(seed=seed)
    ret, cost, length, success, done = 0.0, 0.0, 0, None, False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(action)
        ret, cost, length = ret + float(reward), cost + info.get("cost", 0.0), length + 1
        success = info.get("success", success)
        done = terminated or truncated
    return ret, cost, length, success


@pytest.fixture(scope="module")
def cheetah_model() -> PPO:
    return PPO("MlpPolicy", _cheetah(), n_steps=64, batch_size=64, seed=3)


def test_statistics_are_those_of_the_seeded_episodes(cheetah_model):
    reference = [_rollout(cheetah_model, _cheetah(), seed) for seed in (7, 8, 9)]
    returns, costs, lengths = (np.array([row[i] for row in reference]) for i in range(3))
    assert len(set(returns)) == 3 and 0 < costs.sum() < lengths.sum(), "the check needs distinct returns and some costs"
    result = evaluate(cheetah_model, _cheetah(), n_episodes=3, seed=7)
    assert result.episode_returns == pytest.approx(returns.tolist(), abs=1e-9)
    assert result.return_mean == pytest.approx(returns.mean()) and result.return_std == pytest.approx(returns.std())
    assert result.cost_mean == pytest.approx(costs.mean()) and result.length_mean == lengths.mean()
    assert np.isnan(result.success_rate), "an env without info['success'] has no success rate"


def test_a_vec_env_reports_the_original_rewards_and_the_last_steps_success():
    model = PPO("MlpPolicy", "toy/reach-v0", n_steps=64, batch_size=64, seed=0)
    reference = [_rollout(model, make_env("toy/reach-v0"), seed) for seed in (4, 5)]
    venv = VecNormalize(DummyVecEnv([lambda: make_env("toy/reach-v0")]), norm_obs=False, norm_reward=True, training=False)
    venv.ret_rms.var[...] = 9.0  # the normalised rewards are a third of the env's
    starts: list[bool] = []
    predict = model.predict

    def recording_predict(obs, state=None, episode_start=None, deterministic=False):
        starts.append(bool(episode_start[0]))
        return predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)

    model.predict = recording_predict  # type: ignore[method-assign]
    result = evaluate(model, venv, n_episodes=2, seed=4)
    assert result.episode_returns == pytest.approx([row[0] for row in reference], rel=1e-6)
    assert result.success_rate == np.mean([row[3] for row in reference])
    length = reference[0][2]
    assert starts == ([True] + [False] * (length - 1)) * 2, "episode_start is true at each episode's first step only"
    with pytest.raises(ValueError, match="single-env VecEnv, got num_envs=2"):
        evaluate(model, DummyVecEnv([lambda: make_env("toy/reach-v0")] * 2), n_episodes=1)


def test_the_models_reference_scores_come_before_the_envs():
    model = PPO("MlpPolicy", "toy/reach-v0", n_steps=64, batch_size=64, seed=1)
    returns = np.array([_rollout(model, make_env("toy/reach-v0"), seed)[0] for seed in (0, 1, 2)])
    model.ref_min_score, model.ref_max_score = -100.0, 0.0  # the env's own are -52.6 and -5.1
    result = evaluate_model(model, make_env("toy/reach-v0"), n_episodes=3, seed=0)
    normalized = 100 * (returns + 100.0) / 100.0
    assert result["normalized_score"] == pytest.approx(normalized.mean())
    assert result["normalized_score_std"] == pytest.approx(normalized.std()) and normalized.std() > 0
