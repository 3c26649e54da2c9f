"""Probabilistic Mixture-of-Experts policies (Ren et al., 2021): ``PMOESAC`` and ``PMOEPPO``."""

from rlkit.pmoe.policies import (
    GaussianMixtureDistribution,
    PMOEActor,
    PMOEActorCriticPolicy,
    PMOESACPolicy,
)
from rlkit.pmoe.pmoe_ppo import PMOEPPO
from rlkit.pmoe.pmoe_sac import PMOESAC

__all__ = [
    "PMOEPPO",
    "PMOESAC",
    "GaussianMixtureDistribution",
    "PMOEActor",
    "PMOEActorCriticPolicy",
    "PMOESACPolicy",
]
