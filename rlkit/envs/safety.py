"""Cost wrappers: safe tasks report a per-step cost in ``info["cost"]``.

The velocity tasks follow DSRL's Safety-Gymnasium velocity tasks (Liu et al.,
"Datasets and Benchmarks for Offline Safe RL", https://arxiv.org/abs/2306.09303):
the cost of a step is 1 when the robot moves faster than a per-robot threshold
(the forward x-velocity for HalfCheetah, Hopper, Walker2d and Swimmer, the
xy-speed for Ant), with the v1 thresholds of safety-gymnasium (half of the
speed PPO reaches after 1e7 steps). DSRL's tasks are built on the Gymnasium
MuJoCo v4 envs; here the robots are the v5 ones, whose dynamics differ slightly,
so the thresholds carry over only approximately.

The thresholds are DSRL's for every suite, the paper-scale one and the local ones. At a CPU budget
they bind only when the behaviour agents are fast enough: SAC agents of 8,000 steps never exceeded
HalfCheetah's, so the local suite trains a cost-seeking agent (cost penalty -1, see
:mod:`rlkit.data.safe`) for 60,000 steps (Hopper's SAC agent of that budget runs at a median 2 m/s,
above its 0.74), and :func:`rlkit.data.safe.generate_safe` refuses to write a dataset whose costs
do not bind.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

#: safe velocity task name (after ``safe/``) -> (Gymnasium MuJoCo id, speed threshold of safety-gymnasium's v1 tasks)
VELOCITY_TASKS: dict[str, tuple[str, float]] = {
    "HalfCheetahVelocity-v5": ("HalfCheetah-v5", 3.2096),
    "HopperVelocity-v5": ("Hopper-v5", 0.7402),
    "Walker2dVelocity-v5": ("Walker2d-v5", 2.3415),
    "AntVelocity-v5": ("Ant-v5", 2.6222),
    "SwimmerVelocity-v5": ("Swimmer-v5", 0.2282),
}


class VelocityCost(gym.Wrapper):
    """Add DSRL's velocity cost ``c_t = 1[v_t > threshold]`` to ``info["cost"]``.

    ``v_t`` is ``info["x_velocity"]`` of the MuJoCo v5 env, or the norm of
    ``(x_velocity, y_velocity)`` with ``planar=True`` (Ant).

    :param env: a Gymnasium MuJoCo v5 locomotion env
    :param threshold: speed above which a step costs 1
    :param planar: use the xy-speed instead of the forward velocity
    """

    def __init__(self, env: gym.Env, threshold: float, planar: bool = False) -> None:
        super().__init__(env)
        self.threshold = threshold
        self.planar = planar

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, {**info, "cost": 0.0}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.planar:
            speed = float(np.hypot(info["x_velocity"], info["y_velocity"]))
        else:
            speed = float(info["x_velocity"])
        info["cost"] = float(speed > self.threshold)
        return obs, reward, terminated, truncated, info


class CostPenalty(gym.Wrapper):
    """Train-time reward shaping ``r - penalty * info["cost"]`` (behaviour policies at several cost levels).

    :param env: an env that reports ``info["cost"]``
    :param penalty: the multiplier ``lambda`` of the cost
    """

    def __init__(self, env: gym.Env, penalty: float) -> None:
        super().__init__(env)
        self.penalty = penalty

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float(reward) - self.penalty * float(info["cost"]), terminated, truncated, info


def make_velocity_env(name: str, **kwargs: Any) -> gym.Env:
    """A safe velocity task, e.g. ``HalfCheetahVelocity-v5`` (see :data:`VELOCITY_TASKS`).

    :param name: the task name without the ``safe/`` prefix
    :param kwargs: keyword arguments of ``gymnasium.make`` for the robot
    """
    if name not in VELOCITY_TASKS:
        raise ValueError(f"Unknown safe task {name!r}; known: {', '.join(sorted(VELOCITY_TASKS))}")
    robot_id, threshold = VELOCITY_TASKS[name]
    return VelocityCost(gym.make(robot_id, **kwargs), threshold, planar=robot_id.startswith("Ant"))
