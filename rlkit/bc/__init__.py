from rlkit.bc.bc import BC
from rlkit.bc.policies import BCPolicy, MlpPolicy

__all__ = ["BC", "BCPolicy", "MlpPolicy"]
