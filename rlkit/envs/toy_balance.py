"""A point mass in two regions whose data call for different balances of improvement and constraint (FamO2O's toy).

:class:`TwoRegionsEnv` puts each episode in one of two halves of the square. Its scripted
behaviour (:meth:`TwoRegionsEnv.scripted_behaviour`, the ``scripted`` kind of
:mod:`rlkit.data.generate`) is the straight-line controller with zero-mean action noise on the
left, where moves slip, and uniformly random on the right, where moves are exact. On the left the
behaviour's mean action is already the best one while one transition's outcome says little about
its action (the slip is as large as a move): a strong behaviour constraint keeps the good mean, a
greedy weighting of the dataset's actions by their estimated advantages chases the slips. On the
right the behaviour is poor but covers every action and outcomes are exact: a greedy weighting
extracts the good actions. So the best fixed balance differs by region by construction of the data
and the dynamics.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class TwoRegionsEnv(gym.Env):
    """A 2-D point mass that must reach the goal of its half: slippery near-expert data left, exact random data right.

    Each reset draws a side (left or right with equal probability, or ``options={"side": ...}``);
    the point starts uniformly in ``[0.2, 0.9] x [-0.9, 0.9]`` of that side (mirrored on the left)
    and stays in it (``|x| >= wall``): the goal is ``(-0.5, 0.5)`` on the left, ``(0.5, 0.5)`` on
    the right. Each step moves the point by ``max_speed * action`` (actions in ``[-1, 1]^2``),
    plus Gaussian noise of std ``slip`` per axis on the left side, then clips it to its half of
    ``[-1, 1]^2``. The reward is the negative distance to the goal after the move.

    Observation: ``(x, y)`` as float32 (the side is the sign of ``x``).

    :param max_episode_steps: steps before truncation
    :param max_speed: distance covered per step at full action
    :param slip: std of the move's noise on the left side (per axis)
    :param action_noise: std of the Gaussian noise the scripted behaviour adds to the straight line on the left
    :param wall: half-width of the wall between the sides (no point has ``|x| < wall``)
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012
    #: mean return of a uniformly random policy (seeds 0-999)
    ref_min_score = -20.7
    #: mean return of :meth:`expert_action` (seeds 0-999)
    ref_max_score = -4.2
    #: the sides, by the sign of ``x``
    sides = ("left", "right")

    def __init__(
        self,
        max_episode_steps: int = 30,
        max_speed: float = 0.1,
        slip: float = 0.1,
        action_noise: float = 0.3,
        wall: float = 0.1,
    ) -> None:
        super().__init__()
        self.max_episode_steps = max_episode_steps
        self.max_speed = max_speed
        self.slip = slip
        self.action_noise = action_noise
        self.wall = wall
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._pos = np.array([self.wall, 0.0])
        self._t = 0

    @property
    def side(self) -> str:
        """The side the point is on: ``"left"`` (slippery, near-expert data) or ``"right"`` (exact, random data)."""
        return "left" if self._pos[0] < 0 else "right"

    @property
    def goal(self) -> np.ndarray:
        """The goal of the point's side."""
        return np.array([-0.5 if self.side == "left" else 0.5, 0.5])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        side = (options or {}).get("side")
        if side is None:
            side = self.sides[int(self.np_random.integers(2))]
        if side not in self.sides:
            raise ValueError(f"options['side'] must be one of {self.sides}, got {side!r}")
        sign = -1.0 if side == "left" else 1.0
        self._pos = np.array([sign * self.np_random.uniform(0.2, 0.9), self.np_random.uniform(-0.9, 0.9)])
        self._t = 0
        return self._pos.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        left = self.side == "left"
        move = self.max_speed * action
        if left:
            move = move + self.np_random.normal(0.0, self.slip, size=2)
        low, high = (-1.0, -self.wall) if left else (self.wall, 1.0)
        self._pos = np.array([np.clip(self._pos[0] + move[0], low, high), np.clip(self._pos[1] + move[1], -1.0, 1.0)])
        self._t += 1
        dist = float(np.linalg.norm(self.goal - self._pos))
        return self._pos.astype(np.float32), -dist, False, self._t >= self.max_episode_steps, {}

    def expert_action(self) -> np.ndarray:
        """The straight-line controller: full speed towards the side's goal, then stop on it."""
        return np.clip((self.goal - self._pos) / self.max_speed, -1.0, 1.0).astype(np.float32)

    def scripted_behaviour(self, rng: np.random.Generator) -> np.ndarray:
        """The behaviour of the ``scripted`` dataset: near-expert on the left, uniformly random on the right.

        :param rng: the generator of the behaviour's noise (not the env's, so the dynamics' draws are unchanged)
        """
        if self.side == "left":
            noisy = self.expert_action() + rng.normal(0.0, self.action_noise, size=2)
            return np.clip(noisy, -1.0, 1.0).astype(np.float32)
        return rng.uniform(-1.0, 1.0, size=2).astype(np.float32)


#: toy task ids (without the ``toy/`` prefix) -> (class, default kwargs)
TOY_BALANCE_ENVS: dict[str, tuple[type[gym.Env], dict[str, Any]]] = {"two-regions-v0": (TwoRegionsEnv, {})}
