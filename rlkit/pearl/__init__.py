from rlkit.pearl.alignment import (
    GWAlignment,
    TransferReport,
    gromov_wasserstein_alignment,
    matched_target_pairs,
    segment_features,
    transfer_labels,
    transfer_preferences,
    within_task_distances,
)
from rlkit.pearl.pearl import PEARL

__all__ = [
    "PEARL",
    "GWAlignment",
    "TransferReport",
    "gromov_wasserstein_alignment",
    "matched_target_pairs",
    "segment_features",
    "transfer_labels",
    "transfer_preferences",
    "within_task_distances",
]
