from rlkit.safe_baselines.bc import BCAll, BCSafe
from rlkit.safe_baselines.td3bc_lag import TD3BCLag

__all__ = ["BCAll", "BCSafe", "TD3BCLag"]
