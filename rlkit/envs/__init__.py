"""Environments: :func:`make_env` for every family, wrappers and tiny test tasks."""

from rlkit.envs.registry import check_env_id, known_env_ids, make_env

__all__ = ["check_env_id", "known_env_ids", "make_env"]
