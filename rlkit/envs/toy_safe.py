"""A tiny safe task for tests: a point mass whose shortest path to the goal crosses a hazard."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class PointHazardEnv(gym.Env):
    """A 2-D point mass that must reach a goal behind a circular hazard.

    The point starts near ``(-0.8, 0)`` (``y`` uniform in ``[-0.1, 0.1]``), the
    goal is ``(0.8, 0)`` and the hazard a disc of radius ``hazard_radius`` at the
    origin, so the straight line to the goal crosses it. Each step moves the
    point by ``max_speed * action`` (actions in ``[-1, 1]^2``), clipped to
    ``[-1, 1]^2``; the reward is the negative distance to the goal after the
    move and ``info["cost"]`` is 1 while the point is inside the hazard. The
    straight-line controller (:meth:`behaviour_action` with ``detour=False``)
    collects about 6 cost per episode, the detour over the hazard none, at a
    small loss of reward.

    Observation: ``(x, y, goal_x - x, goal_y - y)`` as float32.

    :param max_episode_steps: steps before truncation
    :param max_speed: distance covered per step at full action
    :param hazard_radius: radius of the hazard disc
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012
    goal = np.array([0.8, 0.0])

    def __init__(self, max_episode_steps: int = 40, max_speed: float = 0.1, hazard_radius: float = 0.3) -> None:
        super().__init__()
        self.max_episode_steps = max_episode_steps
        self.max_speed = max_speed
        self.hazard_radius = hazard_radius
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._pos = np.zeros(2)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._pos, self.goal - self._pos]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._pos = np.array([-0.8, self.np_random.uniform(-0.1, 0.1)])
        self._t = 0
        return self._obs(), {"cost": 0.0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self._pos = np.clip(self._pos + self.max_speed * action, -1.0, 1.0)
        self._t += 1
        dist = float(np.linalg.norm(self.goal - self._pos))
        cost = float(np.linalg.norm(self._pos) < self.hazard_radius)
        return self._obs(), -dist, False, self._t >= self.max_episode_steps, {"cost": cost}

    def behaviour_action(self, detour: bool) -> np.ndarray:
        """A scripted controller: straight to the goal, or (``detour``) via a waypoint above the hazard.

        :param detour: go around the hazard (cost 0) instead of through it
        """
        target = self.goal
        if detour and self._pos[0] < -0.05:
            target = np.array([0.0, self.hazard_radius + 0.25])
        delta = target - self._pos
        return np.clip(delta / self.max_speed, -1.0, 1.0).astype(np.float32)


#: safe toy task ids (without the ``toy/`` prefix) -> (class, default kwargs)
TOY_SAFE_ENVS: dict[str, tuple[type[gym.Env], dict[str, Any]]] = {
    "hazard-v0": (PointHazardEnv, {}),
}
