"""Small helpers shared by every algorithm."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.type_aliases import GymEnv


def check_box_action_space(env: GymEnv | str | None, algorithm: str, verbose: int = 0) -> GymEnv | None:
    """Make ``env`` if it is an id and reject any action space other than ``Box``.

    SB3 only asserts the action space; this raises a ``ValueError`` naming the
    space and the algorithm, before any network is built.

    :param env: the environment (or its id) given to the algorithm; ``None`` when loading
    :param algorithm: name of the algorithm, for the message
    :param verbose: verbosity passed to SB3's ``maybe_make_env``
    :return: the environment, made from its id if needed
    """
    if env is None:
        return None
    env = maybe_make_env(env, verbose)
    if not isinstance(env.action_space, spaces.Box):
        raise ValueError(
            f"{algorithm} only supports continuous (gymnasium.spaces.Box) action spaces, "
            f"but the environment has action space {env.action_space}"
        )
    return env


def fused_adam_kwargs(
    optimizer_class: type[th.optim.Optimizer], optimizer_kwargs: dict[str, Any] | None, **defaults: Any
) -> dict[str, Any] | None:
    """Default optimizer keyword arguments that select Adam's fused implementation.

    The fused kernel updates every parameter tensor in one call on the CPU and on
    CUDA; the default (per-tensor) implementation launches several small operations
    per tensor, which dominates a training step on the small networks of RL. The
    update rule is the same. Arguments given by the user are never changed.

    :param optimizer_class: the policy's optimizer class
    :param optimizer_kwargs: the user's keyword arguments, ``None`` when not given
    :param defaults: other defaults to add, e.g. PPO's ``eps=1e-5``
    :return: ``optimizer_kwargs`` when given or when the class is not Adam, else the defaults with ``fused=True``
    """
    if optimizer_kwargs is not None or optimizer_class is not th.optim.Adam:
        return optimizer_kwargs
    return {**defaults, "fused": True}
