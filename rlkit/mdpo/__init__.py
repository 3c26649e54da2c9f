"""Mirror Descent Policy Optimization (Tomar et al., ICLR 2022): on-policy ``MDPO`` and off-policy ``MDPOOff``."""

from rlkit.mdpo.mdpo import MDPO, diagonal_gaussian_kl, mdpo_objective
from rlkit.mdpo.mdpo_off import MDPOOff
from rlkit.mdpo.policies import MDPOOffPolicy, MlpPolicy

__all__ = ["MDPO", "MDPOOff", "MDPOOffPolicy", "MlpPolicy", "diagonal_gaussian_kl", "mdpo_objective"]
