"""rlkit: continuous-control RL algorithms as Stable-Baselines3 classes."""

from rlkit.bc import BC
from rlkit.data import load_dataset
from rlkit.envs import make_env
from rlkit.iql import IQL
from rlkit.mdpo import MDPO, MDPOOff
from rlkit.pmoe import PMOEPPO, PMOESAC
from rlkit.td3bc import TD3BC

__version__ = "0.1.0"

__all__ = ["BC", "IQL", "MDPO", "PMOEPPO", "PMOESAC", "TD3BC", "MDPOOff", "__version__", "load_dataset", "make_env"]
