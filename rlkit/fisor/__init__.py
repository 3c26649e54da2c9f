from rlkit.fisor.fisor import FISOR
from rlkit.fisor.policies import FISORPolicy, MlpPolicy

__all__ = ["FISOR", "FISORPolicy", "MlpPolicy"]
