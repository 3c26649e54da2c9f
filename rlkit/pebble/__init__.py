"""PEBBLE: preference-based SAC with unsupervised pre-training and relabelling (Lee et al., 2021)."""

from rlkit.pebble.pebble import PEBBLE, RelabelReplayBuffer

__all__ = ["PEBBLE", "RelabelReplayBuffer"]
