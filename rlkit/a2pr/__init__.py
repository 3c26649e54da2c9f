from rlkit.a2pr.a2pr import A2PR, bc_target_and_gate
from rlkit.a2pr.policies import A2PRPolicy, ConditionalVAE, MlpPolicy

__all__ = ["A2PR", "A2PRPolicy", "ConditionalVAE", "MlpPolicy", "bc_target_and_gate"]
