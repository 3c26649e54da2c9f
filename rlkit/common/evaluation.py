"""Rollouts of a trained model: return, cost, success and normalised score."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize


@dataclass
class EvalResult:
    """Per-episode statistics of an evaluation, averaged over episodes.

    ``cost`` is the sum of ``info["cost"]`` (0 where the env reports none) and
    ``success`` the fraction of episodes whose last step had a truthy
    ``info["success"]`` (``nan`` where the env reports none).
    """

    return_mean: float
    return_std: float
    cost_mean: float
    length_mean: float
    success_rate: float
    n_episodes: int
    episode_returns: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalized_score(episode_return: float | np.ndarray, ref_min: float, ref_max: float) -> float | np.ndarray:
    """D4RL's normalised score: ``100 * (R - ref_min) / (ref_max - ref_min)``.

    :param episode_return: undiscounted episode return(s)
    :param ref_min: return of the reference random policy
    :param ref_max: return of the reference expert policy
    """
    if ref_max == ref_min:
        raise ValueError(f"ref_max ({ref_max}) must differ from ref_min ({ref_min}) to normalise a score")
    return 100.0 * (np.asarray(episode_return) - ref_min) / (ref_max - ref_min)


def evaluate(
    model: BaseAlgorithm,
    env: gym.Env | VecEnv,
    n_episodes: int = 10,
    deterministic: bool = True,
    seed: int | None = None,
) -> EvalResult:
    """Roll out ``model.predict`` for ``n_episodes`` full episodes.

    Works on a plain gymnasium env or a single-env ``VecEnv`` (a ``VecNormalize``
    must have ``training=False``; its observation statistics are used and the
    original rewards are reported).

    :param model: any SB3 model (or anything with ``predict(obs, deterministic=...)``)
    :param env: the evaluation environment
    :param n_episodes: number of complete episodes
    :param deterministic: act with the deterministic policy
    :param seed: seed of the first reset (episode ``i`` uses ``seed + i``)
    """
    if n_episodes <= 0:
        raise ValueError(f"n_episodes must be positive, got {n_episodes}")
    returns, costs, lengths, successes = [], [], [], []
    for episode in range(n_episodes):
        ep_seed = None if seed is None else seed + episode
        ret, cost, length, success = _run_episode(model, env, deterministic, ep_seed)
        returns.append(ret)
        costs.append(cost)
        lengths.append(length)
        successes.append(success)
    success_values = [s for s in successes if s is not None]
    return EvalResult(
        return_mean=float(np.mean(returns)),
        return_std=float(np.std(returns)),
        cost_mean=float(np.mean(costs)),
        length_mean=float(np.mean(lengths)),
        success_rate=float(np.mean(success_values)) if success_values else float("nan"),
        n_episodes=n_episodes,
        episode_returns=[float(r) for r in returns],
    )


def _run_episode(
    model: BaseAlgorithm, env: gym.Env | VecEnv, deterministic: bool, seed: int | None
) -> tuple[float, float, int, float | None]:
    if isinstance(env, VecEnv):
        return _run_vec_episode(model, env, deterministic, seed)
    obs, _ = env.reset(seed=seed)
    ret, cost, length, success = 0.0, 0.0, 0, None
    done = False
    while not done:
        action, _ = model.predict(obs, deterministic=deterministic)
        obs, reward, terminated, truncated, info = env.step(action)
        ret += float(np.sum(reward))
        cost += float(info.get("cost", 0.0))
        if "success" in info:
            success = float(bool(info["success"]))
        length += 1
        done = terminated or truncated
    return ret, cost, length, success


def _run_vec_episode(
    model: BaseAlgorithm, env: VecEnv, deterministic: bool, seed: int | None
) -> tuple[float, float, int, float | None]:
    if env.num_envs != 1:
        raise ValueError(f"evaluate() needs a single-env VecEnv, got num_envs={env.num_envs}")
    if seed is not None:
        env.seed(seed)
    obs = env.reset()
    ret, cost, length, success = 0.0, 0.0, 0, None
    while True:
        action, _ = model.predict(obs, deterministic=deterministic)
        obs, reward, dones, infos = env.step(action)
        if isinstance(env, VecNormalize):
            reward = env.get_original_reward()
        ret += float(np.sum(reward))
        cost += float(infos[0].get("cost", 0.0))
        if "success" in infos[0]:
            success = float(bool(infos[0]["success"]))
        length += 1
        if dones[0]:
            return ret, cost, length, success
