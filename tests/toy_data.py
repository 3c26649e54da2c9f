"""Datasets of the toy reach tasks for the tests: episodes of the straight-line expert mixed with random ones."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rlkit.data import OfflineDataset
from rlkit.envs import make_env

KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


def reach_episodes(
    env_id: str,
    n_episodes: int,
    is_expert: Callable[[int, np.random.Generator], bool],
    seed: int,
    dataset_id: str,
) -> OfflineDataset:
    """Whole episodes of ``env_id`` (a toy reach task), each from its expert or uniformly random actions.

    :param env_id: a toy task with ``expert_action()`` (``toy/reach-v0``, ``toy/reach-rot90-v0``)
    :param n_episodes: episodes to record; episode ``i`` is reset with ``seed * 100000 + i``
    :param is_expert: ``(episode, rng) -> bool``, called once before each episode (it may draw from ``rng``,
        the generator the random actions also come from)
    :param seed: seed of the resets and of ``rng``
    :param dataset_id: the dataset's id
    """
    env = make_env(env_id)
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {key: [] for key in KEYS}
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed * 100_000 + episode)
        expert, done = is_expert(episode, rng), False
        while not done:
            action = env.unwrapped.expert_action() if expert else rng.uniform(-1, 1, 2).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(KEYS, (obs, action, reward, next_obs, terminated, truncated), strict=True):
                rows[key].append(value)
            obs, done = next_obs, terminated or truncated
    return OfflineDataset.from_dict(
        {k: np.asarray(v) for k, v in rows.items()},
        observation_space=env.observation_space,
        action_space=env.action_space,
        ref_min_score=env.unwrapped.ref_min_score,
        ref_max_score=env.unwrapped.ref_max_score,
        env_id=env_id,
        dataset_id=dataset_id,
    )
