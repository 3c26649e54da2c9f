"""Environments: :func:`make_env` for every family, wrappers and tiny test tasks."""

from rlkit.envs.registry import known_env_ids, make_env

__all__ = ["known_env_ids", "make_env"]
