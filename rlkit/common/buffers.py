"""A replay buffer backed by an offline dataset."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer
from stable_baselines3.common.vec_env import VecNormalize

from rlkit.data.minari import OfflineDataset


class OfflineReplayBufferSamples(NamedTuple):
    """SB3's ``ReplayBufferSamples`` fields (same order) plus the per-step ``costs`` of safe datasets."""

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    discounts: th.Tensor | None = None
    costs: th.Tensor | None = None


class DatasetReplayBuffer(BaseBuffer):
    """Uniform sampling of transitions from an :class:`~rlkit.data.minari.OfflineDataset`.

    The dataset's float32 arrays are shared, not copied: on the CPU the buffer
    holds zero-copy tensor views of them, on an accelerator one copy on that
    device. Sampling gathers the batch rows only, then applies the transforms on
    the batch: observation normalisation ``(s - mean) / std``, actions rescaled to
    ``[-1, 1]`` (SB3's convention for squashed policies) and rewards
    ``reward_scale * r + reward_shift``. ``dones`` are the dataset's
    ``terminals`` (time-limit truncations bootstrap).

    :param dataset: the transitions
    :param device: device of the sampled tensors (and of the stored data)
    :param action_space: bounds mapped to ``[-1, 1]`` (by default the dataset's action space)
    :param obs_mean: per-dimension observation mean, or ``None`` for no normalisation
    :param obs_std: per-dimension observation standard deviation
    :param reward_scale: multiplies the rewards of each batch
    :param reward_shift: added to the scaled rewards of each batch
    """

    def __init__(
        self,
        dataset: OfflineDataset,
        device: th.device | str = "auto",
        action_space: spaces.Box | None = None,
        obs_mean: np.ndarray | None = None,
        obs_std: np.ndarray | None = None,
        reward_scale: float = 1.0,
        reward_shift: float = 0.0,
    ) -> None:
        action_space = action_space or dataset.action_space
        super().__init__(len(dataset), dataset.observation_space, action_space, device=device, n_envs=1)
        self.full = True
        self.dataset = dataset

        def store(array: np.ndarray) -> th.Tensor:
            return th.from_numpy(array).to(self.device)

        self.observations = store(dataset.observations)
        self.next_observations = store(dataset.next_observations)
        self.actions = store(dataset.actions)
        self.rewards = store(dataset.rewards).unsqueeze(1)
        self.dones = store(dataset.terminals).unsqueeze(1)
        self.costs = None if dataset.costs is None else store(dataset.costs).unsqueeze(1)
        self.obs_mean = None if obs_mean is None else th.as_tensor(obs_mean, dtype=th.float32, device=self.device)
        self.obs_std = None if obs_std is None else th.as_tensor(obs_std, dtype=th.float32, device=self.device)
        low, high = action_space.low, action_space.high
        self._rescale_actions = not (np.all(low == -1.0) and np.all(high == 1.0))
        self.action_low = th.as_tensor(low, dtype=th.float32, device=self.device)
        self.action_high = th.as_tensor(high, dtype=th.float32, device=self.device)
        self.reward_scale = reward_scale
        self.reward_shift = reward_shift

    def add(self, *args, **kwargs) -> None:
        raise NotImplementedError("A DatasetReplayBuffer is read-only: build a new OfflineDataset to change the data")

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> OfflineReplayBufferSamples:
        """Sample ``batch_size`` transitions uniformly, with replacement (torch's global generator).

        :param batch_size: number of transitions
        :param env: unused (the dataset's own normalisation applies), kept for SB3's signature
        """
        batch_inds = th.randint(self.buffer_size, (batch_size,), device=self.device)
        return self._get_samples(batch_inds)

    def _get_samples(self, batch_inds: np.ndarray | th.Tensor, env: VecNormalize | None = None) -> OfflineReplayBufferSamples:
        inds = th.as_tensor(batch_inds, device=self.device)
        actions = self.actions[inds]
        if self._rescale_actions:
            actions = 2.0 * (actions - self.action_low) / (self.action_high - self.action_low) - 1.0
        rewards = self.rewards[inds]
        if self.reward_scale != 1.0 or self.reward_shift != 0.0:
            rewards = self.reward_scale * rewards + self.reward_shift
        return OfflineReplayBufferSamples(
            observations=self.normalize_obs(self.observations[inds]),
            actions=actions,
            next_observations=self.normalize_obs(self.next_observations[inds]),
            dones=self.dones[inds],
            rewards=rewards,
            costs=None if self.costs is None else self.costs[inds],
        )

    def normalize_obs(self, obs: th.Tensor) -> th.Tensor:
        """Apply the buffer's observation normalisation to a tensor of observations."""
        if self.obs_mean is None or self.obs_std is None:
            return obs
        return (obs - self.obs_mean) / self.obs_std
