"""A point mass in two regions whose data call for different balances of improvement and constraint (FamO2O's toy).

:class:`TwoRegionsEnv` puts each episode in one of two halves of the square. On the left each move
slips by a random push as large as a move; on the right moves are exact. The scripted behaviour
(:meth:`TwoRegionsEnv.scripted_behaviour`, the ``scripted`` kind of :mod:`rlkit.data.generate`) is
near-optimal on the left: the straight-line controller, except that it rests when the coming push
will carry the point towards the goal by more than a move. The push is not in the observation, so
the dataset credits resting with the push's progress: its estimated advantage is high, its true
one (for a policy that cannot see the push) low. A strong behaviour constraint keeps the
controller's moves; a greedy weighting of the dataset's actions by their advantages learns to rest.
On the right the behaviour is uniformly random, poor but covering every action, and outcomes are
exact: only a greedy weighting extracts the good actions. So the best fixed balance differs by
region, by construction of the data and the dynamics; online data (the learner's own rests, with
pushes it did not choose) correct the left region's advantages.
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
    plus a push of Gaussian noise of std ``slip`` per axis on the left side (drawn at the previous
    step or reset, so that the scripted behaviour can read it), then clips it to its half of
    ``[-1, 1]^2``. The reward is the negative distance to the goal after the move.

    Observation: ``(x, y)`` as float32 (the side is the sign of ``x``).

    :param max_episode_steps: steps before truncation
    :param max_speed: distance covered per step at full action
    :param slip: std of the move's noise on the left side (per axis)
    :param action_noise: std of the Gaussian noise the scripted behaviour adds to the straight line on the left
        when it moves
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
        self._push = np.zeros(2)
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
        self._draw_push()
        return self._pos.astype(np.float32), {}

    def _draw_push(self) -> None:
        """Draw the push of the next move: Gaussian on the left, none on the right."""
        self._push = self.np_random.normal(0.0, self.slip, size=2) if self.side == "left" else np.zeros(2)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        move = self.max_speed * action + self._push
        low, high = (-1.0, -self.wall) if self.side == "left" else (self.wall, 1.0)
        self._pos = np.array([np.clip(self._pos[0] + move[0], low, high), np.clip(self._pos[1] + move[1], -1.0, 1.0)])
        self._t += 1
        self._draw_push()
        dist = float(np.linalg.norm(self.goal - self._pos))
        return self._pos.astype(np.float32), -dist, False, self._t >= self.max_episode_steps, {}

    def expert_action(self) -> np.ndarray:
        """The straight-line controller: full speed towards the side's goal, then stop on it."""
        return np.clip((self.goal - self._pos) / self.max_speed, -1.0, 1.0).astype(np.float32)

    def rests(self) -> bool:
        """Whether the scripted behaviour rests: on the left, when the coming push carries the point towards the goal
        by more than a move."""
        delta = self.goal - self._pos
        direction = delta / max(float(np.linalg.norm(delta)), 1e-9)
        return self.side == "left" and float(self._push @ direction) > self.max_speed

    def scripted_behaviour(self, rng: np.random.Generator) -> np.ndarray:
        """The behaviour of the ``scripted`` dataset: near-optimal on the left, uniformly random on the right.

        On the left it rests (zero action) when :meth:`rests`, else it follows the straight line with
        Gaussian noise of std ``action_noise``; it sees the coming push, which the observation does not hold.

        :param rng: the generator of the behaviour's noise (not the env's, so the dynamics' draws are unchanged)
        """
        if self.side == "right":
            return rng.uniform(-1.0, 1.0, size=2).astype(np.float32)
        if self.rests():
            return np.zeros(2, dtype=np.float32)
        noisy = self.expert_action() + rng.normal(0.0, self.action_noise, size=2)
        return np.clip(noisy, -1.0, 1.0).astype(np.float32)


#: toy task ids (without the ``toy/`` prefix) -> (class, default kwargs)
TOY_BALANCE_ENVS: dict[str, tuple[type[gym.Env], dict[str, Any]]] = {"two-regions-v0": (TwoRegionsEnv, {})}
