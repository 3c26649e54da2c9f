from rlkit.td3bc.policies import MlpPolicy, TD3BCPolicy
from rlkit.td3bc.td3bc import TD3BC

__all__ = ["TD3BC", "MlpPolicy", "TD3BCPolicy"]
