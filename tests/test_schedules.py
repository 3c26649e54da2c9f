"""Offline schedules and reward scales do not depend on how training is split into ``learn`` calls.

What each test guards:
- ``test_actor_schedule_follows_the_horizon_not_the_learn_budget``: IQL's and FISOR's cosine anneals over
  ``schedule_horizon`` gradient steps (progress measured per ``learn`` call instead makes a 1000-step run end
  at a learning rate of 0, the failure that squeezed the paper's schedule into a CPU budget);
- ``test_reward_scale_uses_the_env_time_limit``: rewards scaled by the time limit, not the longest episode
  (a dataset of short, failed episodes would shrink the scale);
- ``test_a_bad_horizon_is_refused``.
"""

import math

import numpy as np
import pytest

from rlkit.data import OfflineDataset
from rlkit.envs import make_env
from rlkit.fisor import FISOR
from rlkit.iql import IQL

SMALL = {"batch_size": 32, "policy_kwargs": {"net_arch": [16, 16]}}


def short_episodes(length: int = 10, n_episodes: int = 8, costs: bool = False) -> OfflineDataset:
    """Random toy/reach-v0 episodes cut after ``length`` steps (the task's time limit is 50)."""
    env = make_env("toy/reach-v0")
    rng = np.random.default_rng(0)
    rows: dict[str, list] = {
        k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    }
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=episode)
        for t in range(length):
            action = rng.uniform(-1, 1, 2).astype(np.float32)
            next_obs, reward, *_ = env.step(action)
            for key, value in zip(rows, (obs, action, reward, next_obs, False, t == length - 1), strict=True):
                rows[key].append(value)
            obs = next_obs
    data = {k: np.asarray(v) for k, v in rows.items()}
    if costs:
        data["costs"] = (rng.random(len(data["rewards"])) < 0.2).astype(np.float32)
    return OfflineDataset.from_dict(data, observation_space=env.observation_space, action_space=env.action_space)


def _actor_lr(model) -> float:
    return model.actor.optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize(
    ("algo", "kwargs"),
    [
        (IQL, SMALL),
        (FISOR, {"batch_size": 32, "critic_batch_size": 32, "policy_kwargs": {"net_arch": [16, 16], "n_candidates": 2}}),
    ],
)
def test_actor_schedule_follows_the_horizon_not_the_learn_budget(algo, kwargs):
    dataset = short_episodes(costs=algo is FISOR)
    whole = algo("MlpPolicy", "toy/reach-v0", dataset=dataset, seed=0, schedule_horizon=100, **kwargs).learn(40)
    split = algo("MlpPolicy", "toy/reach-v0", dataset=dataset, seed=0, schedule_horizon=100, **kwargs).learn(20)
    split.learn(20, reset_num_timesteps=False)
    # the last step ran at progress 1 - 39/100
    expected = whole.lr_schedule(1.0) * 0.5 * (1.0 + math.cos(math.pi * 39 / 100))
    assert _actor_lr(whole) == pytest.approx(expected) and _actor_lr(split) == pytest.approx(expected)
    per_call = algo("MlpPolicy", "toy/reach-v0", dataset=dataset, seed=0, schedule_horizon=None, **kwargs).learn(40)
    assert _actor_lr(per_call) < 0.01 * expected  # per learn call: annealed to about 0 by the end of the call


def test_reward_scale_uses_the_env_time_limit():
    dataset = short_episodes(length=10)
    returns = dataset.episode_returns
    with_env = IQL("MlpPolicy", "toy/reach-v0", dataset=dataset, seed=0, **SMALL)
    assert with_env.replay_buffer.reward_scale == pytest.approx(50 / (returns.max() - returns.min()))
    without_env = IQL("MlpPolicy", None, dataset=dataset, seed=0, **SMALL)  # no time limit known: longest episode
    assert without_env.replay_buffer.reward_scale == pytest.approx(10 / (returns.max() - returns.min()))


def test_a_bad_horizon_is_refused():
    with pytest.raises(ValueError, match="schedule_horizon must be a positive number"):
        IQL("MlpPolicy", "toy/reach-v0", dataset=short_episodes(), schedule_horizon=0, **SMALL)
