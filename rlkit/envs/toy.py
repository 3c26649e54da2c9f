"""Tiny, fast continuous-control tasks for tests and the ``quick`` suite.

They have no external dependency, run thousands of steps per second and are
solved by a working agent in a few thousand steps, so a broken update shows up
in seconds.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class PointReachEnv(gym.Env):
    """A 2-D point mass that must reach a goal.

    The point starts at a random position in ``[-1, 1]^2`` and the goal is drawn
    in the same square. Each step moves the point by ``max_speed * action``
    (actions in ``[-1, 1]^2``), clipped to the square. The reward is the negative
    distance to the goal after the move, so an agent that heads straight for the
    goal and stays there collects about ``-5`` over an episode while a random
    agent collects about ``-53`` (see :attr:`ref_min_score`, :attr:`ref_max_score`).

    Observation: ``(x, y, goal_x - x, goal_y - y)`` as float32.
    ``info["success"]`` is 1.0 while the point is within ``goal_radius``.

    :param max_episode_steps: steps before truncation
    :param max_speed: distance covered per step at full action
    :param goal_radius: distance under which ``info["success"]`` is 1
    :param render_mode: ``"rgb_array"`` draws the square (goal green, point blue) as a 96 x 96 image
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012
    #: mean return of a uniformly random policy (seeds 0-999)
    ref_min_score = -52.6
    #: mean return of :meth:`expert_action` (seeds 0-999)
    ref_max_score = -5.1

    def __init__(
        self, max_episode_steps: int = 50, max_speed: float = 0.1, goal_radius: float = 0.05, render_mode: str | None = None
    ) -> None:
        super().__init__()
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        self.max_speed = max_speed
        self.goal_radius = goal_radius
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._pos = np.zeros(2)
        self._goal = np.zeros(2)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._pos, self._goal - self._pos]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-1.0, 1.0, size=2)
        self._goal = self.np_random.uniform(-1.0, 1.0, size=2)
        self._t = 0
        return self._obs(), {"success": 0.0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self._pos = np.clip(self._pos + self.max_speed * action, -1.0, 1.0)
        self._t += 1
        dist = float(np.linalg.norm(self._goal - self._pos))
        truncated = self._t >= self.max_episode_steps
        return self._obs(), -dist, False, truncated, {"success": float(dist < self.goal_radius)}

    def render(self, size: int = 96) -> np.ndarray | None:
        """An RGB frame of the square: the goal (green, its success radius at least 2 pixels) and the point (blue)."""
        if self.render_mode != "rgb_array":
            return None
        frame = np.full((size, size, 3), 255, dtype=np.uint8)
        rows, cols = np.mgrid[0:size, 0:size]
        discs = ((self._goal, max(self.goal_radius, 0.04), (40, 160, 60)), (self._pos, 0.05, (30, 80, 200)))
        for center, radius, colour in discs:
            x, y = (center[0] + 1) / 2 * (size - 1), (1 - center[1]) / 2 * (size - 1)
            frame[(cols - x) ** 2 + (rows - y) ** 2 <= (radius / 2 * (size - 1)) ** 2] = colour
        return frame

    def get_state(self) -> np.ndarray:
        """The simulator state ``(x, y, goal_x, goal_y)``; the step counter is episode bookkeeping, not state."""
        return np.concatenate([self._pos, self._goal])

    def set_state(self, state: np.ndarray) -> None:
        """Restore a state returned by :meth:`get_state`."""
        self._pos, self._goal = np.array(state[:2], dtype=np.float64), np.array(state[2:4], dtype=np.float64)

    def expert_action(self) -> np.ndarray:
        """The straight-line controller: full speed towards the goal, then stop on it."""
        delta = self._goal - self._pos
        return np.clip(delta / self.max_speed, -1.0, 1.0).astype(np.float32)


class RotatedPointReachEnv(PointReachEnv):
    """:class:`PointReachEnv` under a rotated (and optionally mirrored) action map: the cross-task target of PEARL.

    The point moves by ``max_speed * M a`` with ``M = R(angle)`` (then mirrored about the x axis when
    ``mirror``), so the same point mass, goal, observation and reward need other actions: an agent
    of ``toy/reach-v0`` heads the wrong way here. With a multiple of 90 degrees ``M`` maps the action
    square onto itself, so every move of ``toy/reach-v0`` stays reachable and the reference scores
    are the same; other angles can ask for moves outside the square, which are clipped.

    :param angle: rotation of the action map in degrees (counter-clockwise)
    :param mirror: mirror the rotated action about the x axis (y -> -y)
    :param kwargs: the keyword arguments of :class:`PointReachEnv`
    """

    def __init__(self, angle: float = 90.0, mirror: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        theta = np.deg2rad(angle)
        rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        flip = np.diag([1.0, -1.0]) if mirror else np.eye(2)
        #: the action map M: the point moves by ``max_speed * action_map @ action``
        self.action_map = np.round(flip @ rotation, 12)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        return super().step(self.action_map @ action)

    def expert_action(self) -> np.ndarray:
        """The straight-line controller of :class:`PointReachEnv`, mapped back through ``M^-1``."""
        move = super().expert_action().astype(np.float64)
        return np.clip(np.linalg.solve(self.action_map, move), -1.0, 1.0).astype(np.float32)


class TwoRoutesEnv(gym.Env):
    """A 2-D point mass that must pass a wall by one of two equally good routes: the multimodal task of PMOE.

    The point starts near ``(0, -0.8)`` (x drawn in ``[-0.05, 0.05]``) and the goal is fixed at ``(0, 0.8)``.
    A wall ``[-0.5, 0.5] x [-0.1, 0.1]`` lies across the straight line; a move that would end inside it is
    not made (the point stays). The reward is the negative distance to the goal, so the straight line is a
    local optimum (pressed against the wall) and the two detours, left and right of the wall, are mirror
    images with the same return: at the start the optimal actions are bimodal, and their mean (straight up)
    runs into the wall.

    Observation: ``(x, y)`` as float32. ``info["success"]`` is 1.0 while the point is within ``goal_radius``.

    :param max_episode_steps: steps before truncation
    :param max_speed: distance covered per step at full action (smaller than the wall's thickness)
    :param goal_radius: distance under which ``info["success"]`` is 1
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012
    #: mean return of a uniformly random policy (seeds 0-999)
    ref_min_score = -93.2
    #: mean return of :meth:`expert_action` (seeds 0-999)
    ref_max_score = -14.7
    #: the wall, ``(x_min, x_max, y_min, y_max)``
    wall = (-0.5, 0.5, -0.1, 0.1)
    goal = np.array([0.0, 0.8])

    def __init__(self, max_episode_steps: int = 60, max_speed: float = 0.1, goal_radius: float = 0.05) -> None:
        super().__init__()
        if not 0 < max_speed < self.wall[3] - self.wall[2]:
            raise ValueError(
                f"max_speed must be in (0, {self.wall[3] - self.wall[2]}) so no step jumps the wall, got {max_speed}"
            )
        self.max_episode_steps = max_episode_steps
        self.max_speed = max_speed
        self.goal_radius = goal_radius
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._pos = np.zeros(2)
        self._t = 0

    def in_wall(self, point: np.ndarray) -> bool:
        """Whether ``point`` lies inside the wall."""
        x_min, x_max, y_min, y_max = self.wall
        return bool(x_min <= point[0] <= x_max and y_min <= point[1] <= y_max)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._pos = np.array([self.np_random.uniform(-0.05, 0.05), -0.8])
        self._t = 0
        return self._pos.astype(np.float32), {"success": 0.0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        new_pos = np.clip(self._pos + self.max_speed * action, -1.0, 1.0)
        if not self.in_wall(new_pos):
            self._pos = new_pos
        self._t += 1
        dist = float(np.linalg.norm(self.goal - self._pos))
        truncated = self._t >= self.max_episode_steps
        return self._pos.astype(np.float32), -dist, False, truncated, {"success": float(dist < self.goal_radius)}

    def expert_action(self) -> np.ndarray:
        """Round the wall on the side the point is on (right at x = 0): to the corner's waypoint, then to the goal."""
        x, y = self._pos
        side = 1.0 if x >= 0 else -1.0
        if y < self.wall[3] + 0.05:
            target = np.array(
                [side * (self.wall[1] + 0.05), self.wall[3] + 0.05 if abs(x) > self.wall[1] else self.wall[2] - 0.05]
            )
        else:
            target = self.goal
        return np.clip((target - self._pos) / self.max_speed, -1.0, 1.0).astype(np.float32)


#: toy task ids (without the ``toy/`` prefix) -> (class, default kwargs)
TOY_ENVS: dict[str, tuple[type[gym.Env], dict[str, Any]]] = {
    "reach-v0": (PointReachEnv, {}),
    "reach-rot90-v0": (RotatedPointReachEnv, {"angle": 90.0}),
    "two-routes-v0": (TwoRoutesEnv, {}),
}
