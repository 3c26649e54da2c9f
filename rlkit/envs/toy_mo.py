"""Tiny two-objective tasks with vector rewards for tests and the ``quick`` suite.

Like MO-Gymnasium's environments they return the reward as a vector and describe it with a
``reward_space``. Their Pareto fronts are known in closed form, so a multi-objective agent can
be checked in seconds.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ArcEnv(gym.Env):
    """Choose a direction each step; the reward is that direction, on or inside the unit circle.

    The action ``a in [-1, 1]^2`` is rescaled to at most unit length and returned as the
    reward vector ``r = a / max(1, ||a||)``. Over an episode of ``horizon`` steps the
    returns of the deterministic policies of the Pareto front lie on the quarter circle of
    radius ``horizon`` in the positive quadrant, and a linear preference ``w`` is best served
    by the direction ``w / ||w||``. The observation is the elapsed fraction of the episode and
    a constant 1, both float32.

    :param horizon: steps per episode (then truncated)
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self, horizon: int = 10) -> None:
        super().__init__()
        self.horizon = horizon
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.reward_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self._t / self.horizon, 1.0], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        reward = (action / max(1.0, float(np.linalg.norm(action)))).astype(np.float32)
        self._t += 1
        return self._obs(), reward, False, self._t >= self.horizon, {}


class LinearBanditEnv(gym.Env):
    """A one-step bandit with opposed linear objectives: ``r = (1 + a, 1 - a)`` for ``a in [-1, 1]``.

    Every deterministic policy is Pareto-optimal. From ``a = 0`` (returns ``(1, 1)``), maximising
    the first objective while the second keeps at least ``beta`` of its value has the solution
    ``a = 1 - beta``: the analytic check of a constrained (log-barrier) policy update.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.reward_space = spaces.Box(0.0, 2.0, shape=(2,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.ones(1, dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, bool, dict]:
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        reward = np.array([1.0 + a, 1.0 - a], dtype=np.float32)
        return np.ones(1, dtype=np.float32), reward, True, False, {}


#: multi-objective toy task ids (without the ``toy/`` prefix) -> (class, default kwargs)
TOY_MO_ENVS: dict[str, tuple[type[gym.Env], dict[str, Any]]] = {
    "mo-arc-v0": (ArcEnv, {}),
    "mo-bandit-v0": (LinearBanditEnv, {}),
}
