"""Environments: :func:`make_env` for every family, wrappers and tiny test tasks.

Importing this package registers rlkit's prefixed ids (``toy/``, ``safe/``, ``mo/``,
``dmc/``, ``metaworld/``) in gymnasium's registry, so that ``gym.make`` and every
SB3 algorithm given an id string accept them too.
"""

from rlkit.envs.registry import check_env_id, known_env_ids, make_env, register_gymnasium_ids, scripted_policy

register_gymnasium_ids()

__all__ = ["check_env_id", "known_env_ids", "make_env", "register_gymnasium_ids", "scripted_policy"]
