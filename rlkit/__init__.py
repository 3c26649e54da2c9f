"""rlkit: continuous-control RL algorithms as Stable-Baselines3 classes."""

from rlkit.envs import make_env
from rlkit.mdpo import MDPO, MDPOOff

__version__ = "0.1.0"

__all__ = ["MDPO", "MDPOOff", "__version__", "make_env"]
