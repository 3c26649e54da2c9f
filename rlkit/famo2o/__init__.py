from rlkit.famo2o.famo2o import FamO2O, IQLO2O, OfflineToOnlineReplayBuffer
from rlkit.famo2o.policies import BalanceModel, FamO2OPolicy, MlpPolicy, balance_encoding, coefficient_from_unit

__all__ = [
    "IQLO2O",
    "BalanceModel",
    "FamO2O",
    "FamO2OPolicy",
    "MlpPolicy",
    "OfflineToOnlineReplayBuffer",
    "balance_encoding",
    "coefficient_from_unit",
]
