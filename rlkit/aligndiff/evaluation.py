"""AlignDiff's evaluation: matching requested attribute strengths (area over MAE thresholds) and speed controllability.

Protocol of the official ``eval.py`` (Dong et al., ICLR 2024): each test draws a target
``v ~ U[0, 1]^k`` (Hopper: ``v_height = clip(1 - v_speed + U(-0.15, 0.15))``, since speed and
jump height conflict) and a mask keeping each attribute with probability 0.5 (at least one),
rolls out ``n_segments`` segments of ``segment_steps`` steps (Hopper 1 x 100, Walker 3 x 50) and
scores each executed segment's strengths against the target with the masked MAE. rlkit judges
every segment twice: by the attribute strength model (the paper's judge, which also selected the
plans) and by the ground-truth attributes from physics, min-max normalised over the dataset's
relabelled windows; the area (:func:`~rlkit.aligndiff.attributes.area_over_thresholds`) is
computed for each judge.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from scipy.stats import spearmanr

from rlkit.aligndiff.attributes import area_over_thresholds, masked_mae

#: tasks whose first two attributes conflict (the official Hopper targets)
CONFLICTING_TARGETS = ("Hopper-v5",)


def draw_targets(
    n_tests: int, n_attributes: int, rng: np.random.Generator, conflicting: bool = False, keep_prob: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Targets ``(n_tests, k)`` in [0, 1] and masks ``(n_tests, k)`` with at least one attribute kept.

    :param n_tests: number of tests
    :param n_attributes: k
    :param rng: the random generator
    :param conflicting: attribute 1's target is ``clip(1 - v_0 + U(-0.15, 0.15), 0, 1)``
    :param keep_prob: probability that each attribute counts
    """
    targets = rng.uniform(0.0, 1.0, (n_tests, n_attributes))
    if conflicting and n_attributes >= 2:
        targets[:, 1] = np.clip(1.0 - targets[:, 0] + rng.uniform(-0.15, 0.15, n_tests), 0.0, 1.0)
    masks = (rng.random((n_tests, n_attributes)) < keep_prob).astype(np.float32)
    empty = masks.sum(axis=1) == 0
    masks[np.flatnonzero(empty), rng.integers(n_attributes, size=int(empty.sum()))] = 1.0
    return targets.astype(np.float32), masks


def _rollout(model: Any, env: gym.Env, seed: int, n_steps: int) -> tuple[np.ndarray, float]:
    """Raw observations ``(n_steps + 1, obs_dim)`` of one rollout (reset on termination) and its total reward."""
    obs, _ = env.reset(seed=seed)
    observations, total, state, start = [obs], 0.0, None, True
    for _ in range(n_steps):
        action, state = model.predict(obs, state, episode_start=np.array([start]))
        obs, reward, terminated, truncated, _ = env.step(action)
        start = False
        total += float(reward)
        if terminated or truncated:
            obs, _ = env.reset()
            start = True
        observations.append(obs)
    return np.asarray(observations, dtype=np.float32), total


def evaluate_matching(
    model: Any,
    env: gym.Env,
    n_tests: int = 100,
    n_segments: int = 1,
    segment_steps: int = 100,
    seed: int = 0,
    conflicting: bool = False,
) -> dict[str, Any]:
    """The matching evaluation of an attribute-conditioned model (``set_target``, ``predict``, ``judge``).

    Each segment's target is drawn afresh (Walker's switching); the best segment so far counts.

    :param model: an :class:`~rlkit.aligndiff.AlignDiff` or :class:`~rlkit.aligndiff.AttributeBC`
    :param env: the evaluation env (Hopper: built without early termination, as the official evaluation ignores ``done``)
    :param n_tests: tests (100)
    :param n_segments: segments per test
    :param segment_steps: steps per segment
    :param seed: seed of the targets and of the env resets (disjoint from training seeds)
    :param conflicting: draw Hopper's conflicting speed / height targets
    :return: ``area_model``, ``area_physics``, the MAE arrays ``(n_tests, n_segments)`` and the mean return
    """
    rng = np.random.default_rng(seed)
    mae_model = np.zeros((n_tests, n_segments))
    mae_physics = np.zeros((n_tests, n_segments))
    returns = []
    for test in range(n_tests):
        targets, masks = draw_targets(n_segments, model.n_attributes, rng, conflicting)
        total = 0.0
        for segment in range(n_segments):
            model.set_target(targets[segment], masks[segment])
            observations, reward = _rollout(model, env, seed + 1000 * test + segment, segment_steps)
            by_model, by_physics = model.judge(observations[None])
            mae_model[test, segment] = masked_mae(by_model[0], targets[segment], masks[segment])
            mae_physics[test, segment] = masked_mae(by_physics[0], targets[segment], masks[segment])
            total += reward
        returns.append(total)
    return {
        "area_model": area_over_thresholds(mae_model),
        "area_physics": area_over_thresholds(mae_physics),
        "mae_model": mae_model,
        "mae_physics": mae_physics,
        "return_mean": float(np.mean(returns)),
    }


def speed_controllability(
    model: Any,
    env: gym.Env,
    targets: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9),
    episodes: int = 2,
    n_steps: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Spearman correlation of the realised (physics) speed with 5 target speeds, attribute 0 alone counting.

    :param model: an attribute-conditioned model whose attribute 0 is speed
    :param env: the evaluation env
    :param targets: the target speeds (normalised strengths)
    :param episodes: rollouts per target
    :param n_steps: steps per rollout
    :param seed: seed of the resets
    :return: ``spearman_speed``, the Spearman correlation over the targets of the target and the mean realised
        speed of its rollouts, and those means (the ground-truth attribute, not normalised)
    """
    if model.attribute_names[0] != "speed":
        raise ValueError(f"speed_controllability needs speed as attribute 0, got {model.attribute_names}")
    mask = np.zeros(model.n_attributes, dtype=np.float32)
    mask[0] = 1.0
    per_target = []
    for i, target in enumerate(targets):
        strengths = np.full(model.n_attributes, 0.5, dtype=np.float32)
        strengths[0] = target
        model.set_target(strengths, mask)
        speeds = []
        for episode in range(episodes):
            observations, _ = _rollout(model, env, seed + 100 * i + episode, n_steps)
            speeds.append(float(model.annotator().values(observations[None])[0, 0]))
        per_target.append(float(np.mean(speeds)))
    rho = spearmanr(targets, per_target).statistic
    return {"spearman_speed": float(rho) if np.isfinite(rho) else 0.0, "realised_speed": per_target}
