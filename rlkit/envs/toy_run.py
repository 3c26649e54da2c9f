"""A point mass whose observation holds its velocity: a toy task with behaviour attributes (AlignDiff's tests).

:class:`PointRunEnv` moves a 2-D point by ``max_speed * action`` per step, like
:class:`~rlkit.envs.toy.PointReachEnv`, but observes ``(x, y, vx, vy)``: the position and the
velocity of the last step, as a MuJoCo locomotion task observes its torso's velocity. Its
attributes (speed, position) are then functions of the observed states, as Hopper's are.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class PointRunEnv(gym.Env):
    """A 2-D point mass in ``[-1, 1]^2`` rewarded by its speed; the observation is ``(x, y, vx, vy)``.

    Each step sets the velocity to ``max_speed * action`` (actions in ``[-1, 1]^2``) and moves the
    point by it, clipped to the square (the observed velocity is the displacement actually made).
    The reward is the speed ``||v||``; episodes are truncated after ``max_episode_steps``.

    :param max_episode_steps: steps before truncation
    :param max_speed: distance covered per step at full action
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self, max_episode_steps: int = 50, max_speed: float = 0.1) -> None:
        super().__init__()
        self.max_episode_steps = max_episode_steps
        self.max_speed = max_speed
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._pos = np.zeros(2)
        self._vel = np.zeros(2)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._pos, self._vel]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-0.5, 0.5, size=2)
        self._vel = np.zeros(2)
        self._t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        new_pos = np.clip(self._pos + self.max_speed * action, -1.0, 1.0)
        self._vel, self._pos = new_pos - self._pos, new_pos
        self._t += 1
        return self._obs(), float(np.linalg.norm(self._vel)), False, self._t >= self.max_episode_steps, {}


TOY_RUN_ENVS: dict[str, tuple[type[gym.Env], dict[str, Any]]] = {"run-v0": (PointRunEnv, {})}
