"""Rollouts of a trained model: return, cost, success and normalised score."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize


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

    Each step calls ``model.predict(obs, state=state, episode_start=episode_start,
    deterministic=...)`` with SB3's recurrent signature: ``state`` is what the previous
    call returned and ``episode_start`` is true at the first step of each episode, so a
    history-conditioned policy (a sequence model, a recurrent policy) starts every
    episode afresh.

    :param model: any SB3 model (or anything with SB3's ``predict(obs, state, episode_start, deterministic)``)
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
    state, episode_start = None, np.ones((1,), dtype=bool)
    done = False
    while not done:
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        episode_start = np.zeros((1,), dtype=bool)
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
    state, episode_start = None, np.ones((env.num_envs,), dtype=bool)
    while True:
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        episode_start = np.zeros((env.num_envs,), dtype=bool)
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


def reference_scores_of(model: Any, env: gym.Env | VecEnv) -> tuple[float, float] | None:
    """``(ref_min, ref_max)`` of the model (an offline model's dataset), else of the env, else ``None``.

    :param model: the model (``ref_min_score`` / ``ref_max_score`` attributes, where it has them)
    :param env: the evaluation env (its unwrapped env's ``ref_min_score`` / ``ref_max_score``)
    """
    base: Any = env
    if isinstance(env, VecEnv):
        base = env.unwrapped.envs[0] if isinstance(env.unwrapped, DummyVecEnv) else None
    for owner in (model, getattr(base, "unwrapped", None)):
        ref_min, ref_max = getattr(owner, "ref_min_score", None), getattr(owner, "ref_max_score", None)
        if ref_min is not None and ref_max is not None:
            return float(ref_min), float(ref_max)
    return None


def evaluate_model(
    model: BaseAlgorithm,
    env: gym.Env | VecEnv | str | None = None,
    n_episodes: int = 10,
    deterministic: bool = True,
    seed: int | None = None,
) -> dict[str, Any]:
    """Roll out a model and report the return and, with reference scores, the normalised score.

    What ``model.evaluate(...)`` does for every rlkit algorithm, online and offline.

    :param model: the model
    :param env: evaluation env or id (default: the model's env; pass a separate one to keep
        the training env's episodes and normalisation statistics untouched)
    :param n_episodes: number of episodes
    :param deterministic: act with the deterministic policy
    :param seed: seed of the first episode (episode ``i`` uses ``seed + i``)
    :return: :class:`EvalResult` as a dict, plus ``normalized_score`` and ``normalized_score_std``
        when the model or the env has reference scores
    """
    if isinstance(env, str):
        from rlkit.envs import make_env

        env = make_env(env)
    env = env if env is not None else model.get_env()
    if env is None:
        raise ValueError(f"{type(model).__name__}.evaluate needs an env: pass env= or build the model with one")
    result = evaluate(model, env, n_episodes=n_episodes, deterministic=deterministic, seed=seed).to_dict()
    scores = reference_scores_of(model, env)
    if scores is not None:
        normalized = normalized_score(np.asarray(result["episode_returns"]), *scores)
        result["normalized_score"] = float(np.mean(normalized))
        result["normalized_score_std"] = float(np.std(normalized))
    return result


class EvaluateMixin:
    """Gives an SB3 algorithm ``evaluate(env, n_episodes, deterministic, seed)`` (:func:`evaluate_model`)."""

    def evaluate(
        self,
        env: gym.Env | VecEnv | str | None = None,
        n_episodes: int = 10,
        deterministic: bool = True,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Roll out the policy and report the return and, with reference scores, the normalised score.

        :param env: evaluation env or id (by default the model's env)
        :param n_episodes: number of episodes
        :param deterministic: act with the deterministic policy
        :param seed: seed of the first episode (episode ``i`` uses ``seed + i``)
        :return: :class:`EvalResult` as a dict, plus ``normalized_score`` and ``normalized_score_std``
            when the reference scores are known
        """
        return evaluate_model(self, env, n_episodes=n_episodes, deterministic=deterministic, seed=seed)  # type: ignore[arg-type]
