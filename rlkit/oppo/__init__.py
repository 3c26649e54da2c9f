from rlkit.oppo.oppo import OPPO
from rlkit.oppo.policies import MlpPolicy, OPPOPolicy, TransformerPolicy

__all__ = ["OPPO", "MlpPolicy", "OPPOPolicy", "TransformerPolicy"]
