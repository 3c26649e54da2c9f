from rlkit.iql.iql import IQL
from rlkit.iql.policies import IQLPolicy, MlpPolicy

__all__ = ["IQL", "IQLPolicy", "MlpPolicy"]
