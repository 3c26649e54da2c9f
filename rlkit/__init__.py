"""rlkit: continuous-control RL algorithms as Stable-Baselines3 classes."""

from rlkit.a2pr import A2PR
from rlkit.aligndiff import AlignDiff, AttributeBC
from rlkit.bc import BC
from rlkit.cmorl import CMORL
from rlkit.data import load_dataset
from rlkit.envs import make_env
from rlkit.famo2o import FamO2O, IQLO2O
from rlkit.fisor import FISOR
from rlkit.iql import IQL, IQLBT
from rlkit.mdpo import MDPO, MDPOOff
from rlkit.oppo import OPPO
from rlkit.parl import PARL
from rlkit.pearl import PEARL
from rlkit.pebble import PEBBLE
from rlkit.pmoe import PMOEPPO, PMOESAC
from rlkit.td3bc import TD3BC

__version__ = "0.1.0"

__all__ = [
    "A2PR",
    "BC",
    "CMORL",
    "FISOR",
    "IQL",
    "IQLBT",
    "IQLO2O",
    "MDPO",
    "OPPO",
    "PARL",
    "PEARL",
    "PEBBLE",
    "PMOEPPO",
    "PMOESAC",
    "TD3BC",
    "AlignDiff",
    "AttributeBC",
    "FamO2O",
    "MDPOOff",
    "__version__",
    "load_dataset",
    "make_env",
]
