from rlkit.iql.iql import IQL
from rlkit.iql.iql_bt import IQLBT
from rlkit.iql.policies import IQLPolicy, MlpPolicy

__all__ = ["IQL", "IQLBT", "IQLPolicy", "MlpPolicy"]
