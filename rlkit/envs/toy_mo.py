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

    def pareto_front(self, n_points: int = 101, gamma: float = 1.0) -> np.ndarray:
        """``n_points`` points of the Pareto front of returns discounted by ``gamma``, from ``(H, 0)`` to ``(0, H)``."""
        angle = np.linspace(0.0, np.pi / 2, n_points)
        return _discounted_horizon(self.horizon, gamma) * np.stack([np.cos(angle), np.sin(angle)], axis=-1)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        reward = (action / max(1.0, float(np.linalg.norm(action)))).astype(np.float32)
        self._t += 1
        return self._obs(), reward, False, self._t >= self.horizon, {}


def _discounted_horizon(horizon: int, gamma: float) -> float:
    """``sum_{t < horizon} gamma^t``: the return of a constant unit reward."""
    return float(horizon) if gamma == 1.0 else float((1.0 - gamma**horizon) / (1.0 - gamma))


class ConcaveFrontEnv(gym.Env):
    """A two-objective task whose Pareto front is concave (it bulges towards the origin).

    The action ``a in [-1, 1]^2`` (clipped) gives a position ``s = (a_0 + 1) / 2`` along the front
    and a length ``rho = (a_1 + 1) / 2``; the reward is ``rho * q(s)``, with ``q(s)`` the arc from
    ``(1, 0)`` (``s = 0``) to ``(0, 1)`` (``s = 1``) of the circle of centre ``(2, 2)`` through both,
    at constant angular speed (``q(1/2) = (2 - sqrt(5/2)) * (1, 1)``, about ``(0.42, 0.42)``). The
    observation is a constant, so a deterministic policy repeats one action and its return is
    ``H * rho * q(s)`` (``H`` the possibly discounted horizon): the Pareto front is ``{H q(s)}``
    (``rho = 1``), from ``(H, 0)`` to ``(0, H)``, with nadir ``(0, 0)``; the zero action sits at
    half length in the middle, well inside. Because the front is concave, every linear preference
    ``w`` is best served by one of its two ends, so linear scalarisation can only converge to the
    extremes; the interior is reached only by constrained search (or on the way to an end).

    :param horizon: steps per episode (then truncated)
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012
    #: centre ``(c, c)`` of the circle the front lies on
    centre = 2.0

    def __init__(self, horizon: int = 10) -> None:
        super().__init__()
        self.horizon = horizon
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.reward_space = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self._t = 0

    @classmethod
    def front_point(cls, s: np.ndarray | float) -> np.ndarray:
        """``q(s)``, the per-step reward of full length at position ``s in [0, 1]`` along the front; shape ``(..., 2)``."""
        c = cls.centre
        start, end = np.arctan2(-c, 1.0 - c), np.arctan2(1.0 - c, -c)
        phi = start + np.asarray(s, dtype=np.float64) * (end - start)
        radius = np.hypot(1.0 - c, c)
        return np.stack([c + radius * np.cos(phi), c + radius * np.sin(phi)], axis=-1)

    def pareto_front(self, n_points: int = 101, gamma: float = 1.0) -> np.ndarray:
        """``n_points`` points of the Pareto front of returns discounted by ``gamma``, from ``(H, 0)`` to ``(0, H)``."""
        return _discounted_horizon(self.horizon, gamma) * self.front_point(np.linspace(0.0, 1.0, n_points))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return np.ones(1, dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        s, rho = (action + 1.0) / 2.0
        reward = (rho * self.front_point(s)).astype(np.float32)
        self._t += 1
        return np.ones(1, dtype=np.float32), reward, False, self._t >= self.horizon, {}


class LinearBanditEnv(gym.Env):
    """A one-step bandit with opposed linear objectives: ``r = (1 + a, 1 - a) + offset`` for ``a in [-1, 1]``.

    Every deterministic policy is Pareto-optimal. From ``a = 0`` (returns ``(1, 1)``), maximising
    the first objective while the second keeps at least ``beta`` of its value has the solution
    ``a = 1 - beta``: the analytic check of a constrained (log-barrier) policy update. A negative
    ``offset`` makes the returns negative, the case where keeping ``beta`` of a return must be
    measured from a reference point below it.

    :param offset: added to both objectives
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__()
        self.offset = float(offset)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.reward_space = spaces.Box(self.offset, 2.0 + self.offset, shape=(2,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.ones(1, dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, bool, dict]:
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        reward = np.array([1.0 + a + self.offset, 1.0 - a + self.offset], dtype=np.float32)
        return np.ones(1, dtype=np.float32), reward, True, False, {}


#: multi-objective toy task ids (without the ``toy/`` prefix) -> (class, default kwargs)
TOY_MO_ENVS: dict[str, tuple[type[gym.Env], dict[str, Any]]] = {
    "mo-arc-v0": (ArcEnv, {}),
    "mo-bandit-v0": (LinearBanditEnv, {}),
    "mo-concave-v0": (ConcaveFrontEnv, {}),
}
