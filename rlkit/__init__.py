"""rlkit: continuous-control RL algorithms as Stable-Baselines3 classes."""

from rlkit.envs import make_env

__version__ = "0.1.0"

__all__ = ["__version__", "make_env"]
