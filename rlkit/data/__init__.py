"""Offline datasets: Minari loading, local D4RL-style generation and reference scores."""

from rlkit.data.minari import Episode, OfflineDataset, from_minari, load_dataset, local_dataset_id
from rlkit.data.scores import D4RL_REF_SCORES, d4rl_normalized_score, d4rl_ref_scores

__all__ = [
    "D4RL_REF_SCORES",
    "Episode",
    "OfflineDataset",
    "d4rl_normalized_score",
    "d4rl_ref_scores",
    "from_minari",
    "load_dataset",
    "local_dataset_id",
]
