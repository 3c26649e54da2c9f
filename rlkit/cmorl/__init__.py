"""C-MORL: multi-objective RL by Pareto initialisation and constrained Pareto extension."""

from rlkit.cmorl.cmorl import CMORL, ArchiveMember, LinearScalarizationPPO, ParetoArchive, evaluate_returns
from rlkit.cmorl.mo_ppo import MOPPO, MODummyVecEnv, MORolloutBuffer, MOVecNormalize
from rlkit.cmorl.policies import MOActorCriticPolicy

__all__ = [
    "CMORL",
    "MOPPO",
    "ArchiveMember",
    "LinearScalarizationPPO",
    "MOActorCriticPolicy",
    "MODummyVecEnv",
    "MORolloutBuffer",
    "MOVecNormalize",
    "ParetoArchive",
    "evaluate_returns",
]
