"""Small helpers shared by every algorithm."""

from __future__ import annotations

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
