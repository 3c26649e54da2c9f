"""IQL+BT: IQL on rewards relabelled by a Bradley-Terry reward model fitted on a fixed preference pool."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import set_random_seed

from rlkit.common.preference import (
    GaussianRewardModel,
    PreferencePool,
    RewardEnsemble,
    Segments,
    build_reward_model,
    heldout_pool,
    pool_label_accuracy,
    preference_accuracy,
    resolve_pool,
)
from rlkit.common.sequence import WindowSampler
from rlkit.data.minari import OfflineDataset
from rlkit.iql.iql import IQL
from rlkit.iql.policies import IQLPolicy


class IQLBT(IQL):
    """IQL trained on learned rewards: the offline preference-learning baseline of OPPO's and Preference Transformer's tables.

    Before training, a Bradley-Terry reward ensemble (:class:`~rlkit.common.preference.RewardEnsemble`,
    PEBBLE's model: P(sigma2 > sigma1) = sigmoid(sum r(sigma2) - sum r(sigma1))) is fitted on the
    N_q labelled pairs of a fixed pool (:func:`~rlkit.common.preference.load_or_create_pool`), every
    transition of the dataset is relabelled with the ensemble-mean reward of (normalised s, a),
    and IQL (eqs. 5-7 of Kostrikov et al., 2022) runs on these rewards, scaled as IQL scales true
    rewards (``max episode length / (max return - min return)``, Preference Transformer's
    rescaling of learned rewards). The true rewards are never seen by IQL. The reward model
    is saved with the model; one loaded with ``dataset=`` refits it from the same pool and seed
    (the same model) to relabel that dataset. With ``reward_type="gaussian"`` the reward model is
    PEARL's robust one (:class:`~rlkit.common.preference.GaussianRewardModel`) and the dataset is
    relabelled with its mean mu(s, a), by the same path.

    :param policy: the policy model ("MlpPolicy")
    :param env: the environment, its id, or ``None`` (spaces from the dataset)
    :param dataset: an ``OfflineDataset``, a Minari id or a path
    :param preference_pool: the pool to fit on; by default the cached pool of the settings below
    :param n_labels: N_q of the cached pool
    :param label_mode: score of the pool's teacher: ``foresee`` (OPPO's 200-step future return) or ``window``
    :param segment_length: steps per labelled segment
    :param foresee: steps of the foresee return
    :param pool_seed: seed of the label pool (the same pool for every training seed and method)
    :param teacher: the scripted teacher of the pool (a preset of :data:`~rlkit.common.preference.TEACHER_PRESETS`)
    :param pool_dir: cache folder of pools
    :param heldout_labels: size of a held-out pool of the same settings (another seed) whose preference accuracy
        :meth:`progress_info` reports; 0: none
    :param heldout_teacher: the teacher of the held-out pool (default: ``teacher``; e.g. ``"oracle"`` to score a
        model trained on noisy labels against the rational teacher)
    :param reward_type: ``bt`` (PEBBLE's Bradley-Terry ensemble) or ``gaussian`` (PEARL's robust reward model)
    :param reward_kwargs: ``eta``, ``lambda_u`` and ``log_sigma_bounds`` of the ``gaussian`` model
    :param reward_members: ensemble size (PEBBLE: 3; ``bt`` only)
    :param reward_net_arch: hidden layers of each member (PEBBLE: 3 x 256)
    :param reward_learning_rate: Adam learning rate of the reward model (3e-4)
    :param reward_epochs: at most this many epochs over the pool (B-Pref stops at 97% training accuracy)
    :param reward_batch_size: pairs per reward-model step (128)
    :param kwargs: the keyword arguments of :class:`~rlkit.iql.IQL`
    """

    def __init__(
        self,
        policy: str | type[IQLPolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
        preference_pool: PreferencePool | None = None,
        n_labels: int = 500,
        label_mode: str = "foresee",
        segment_length: int = 20,
        foresee: int = 200,
        pool_seed: int = 0,
        teacher: str | dict = "oracle",
        pool_dir: str | os.PathLike | None = None,
        heldout_labels: int = 0,
        heldout_teacher: str | dict | None = None,
        reward_type: str = "bt",
        reward_kwargs: dict[str, Any] | None = None,
        reward_members: int = 3,
        reward_net_arch: Sequence[int] = (256, 256, 256),
        reward_learning_rate: float = 3e-4,
        reward_epochs: int = 200,
        reward_batch_size: int = 128,
        learning_rate: float | Schedule = 3e-4,
        batch_size: int = 256,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        if n_labels <= 0:
            raise ValueError(f"n_labels must be positive, got {n_labels}")
        self.preference_pool = preference_pool
        self.n_labels = n_labels
        self.label_mode = label_mode
        self.segment_length = segment_length
        self.foresee = foresee
        self.pool_seed = pool_seed
        self.teacher = teacher
        self.pool_dir = None if pool_dir is None else str(pool_dir)
        self.heldout_labels = heldout_labels
        self.heldout_teacher = heldout_teacher
        self.reward_type = reward_type
        self.reward_kwargs = dict(reward_kwargs or {})
        self.reward_members = reward_members
        self.reward_net_arch = list(reward_net_arch)
        self.reward_learning_rate = reward_learning_rate
        self.reward_epochs = reward_epochs
        self.reward_batch_size = reward_batch_size
        self.reward_model: RewardEnsemble | GaussianRewardModel | None = None
        self.reward_fit: dict[str, float] = {}
        self.labels_used = 0
        self.label_accuracy: float | None = None
        self.heldout_accuracy: float | None = None
        super().__init__(
            policy,
            env,
            dataset=dataset,
            learning_rate=learning_rate,
            batch_size=batch_size,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
            **kwargs,
        )

    def _build_reward_model(self, obs_dim: int, action_dim: int) -> RewardEnsemble | GaussianRewardModel:
        kwargs = dict(self.reward_kwargs)
        if "log_sigma_bounds" in kwargs:
            kwargs["log_sigma_bounds"] = tuple(kwargs["log_sigma_bounds"])
        return build_reward_model(
            self.reward_type,
            obs_dim,
            action_dim,
            self.reward_net_arch,
            self.reward_learning_rate,
            self.reward_members,
            **kwargs,
        ).to(self.device)

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.reward_model is None:
            obs_dim = int(np.prod(self.observation_space.shape))  # type: ignore[arg-type]
            self.reward_model = self._build_reward_model(obs_dim, int(np.prod(self.action_space.shape)))  # type: ignore[arg-type]

    def _attach_dataset(self, dataset: OfflineDataset) -> None:
        """Fit the reward model on the pool, relabel ``dataset`` with it, then attach the relabelled data."""
        if self.normalize_obs and self.obs_mean is None:
            self.obs_mean, self.obs_std = dataset.observation_statistics(self.obs_norm_eps)
        pool = resolve_pool(
            dataset,
            self.preference_pool,
            self.n_labels,
            self.label_mode,
            self.segment_length,
            self.foresee,
            self.pool_seed,
            self.teacher,
            self.pool_dir,
        )
        assert pool is not None
        if self.seed is not None:
            set_random_seed(self.seed)  # the reward model is the same for every run with this seed
        self.reward_model = self._build_reward_model(dataset.observations[0].size, dataset.actions.shape[1])
        sampler = self._reward_sampler(dataset, pool.segment_length)
        self.reward_fit = self.reward_model.fit(
            pool.preference_dataset(sampler), self.reward_epochs, self.reward_batch_size, np.random.default_rng(self.seed)
        )
        self.labels_used = pool.n_pairs
        self.label_accuracy = pool_label_accuracy(pool)
        heldout = heldout_pool(
            dataset,
            self.heldout_labels,
            self.label_mode,
            self.pool_seed,
            self.segment_length,
            self.foresee,
            self.teacher if self.heldout_teacher is None else self.heldout_teacher,
            self.pool_dir,
        )
        if heldout is not None:
            self.heldout_accuracy = self.preference_accuracy(heldout, dataset)
        super()._attach_dataset(self._relabel(dataset, sampler))

    def progress_info(self) -> dict[str, float]:
        """Labels used, their agreement with the rational teacher and, with ``heldout_labels``, the reward model's
        held-out preference accuracy."""
        info = {"labels": float(self.labels_used)}
        if self.label_accuracy is not None:
            info["label_accuracy"] = self.label_accuracy
        if self.heldout_accuracy is not None:
            info["preference_accuracy"] = self.heldout_accuracy
        return info

    def _reward_sampler(self, dataset: OfflineDataset, window: int) -> WindowSampler:
        return WindowSampler(dataset, window, self.obs_mean, self.obs_std)

    def learned_rewards(self, observations: np.ndarray, actions: np.ndarray, chunk: int = 65_536) -> np.ndarray:
        """The learned reward of raw (s, a) rows (observations normalised as in training): the ensemble mean, or mu."""
        assert self.reward_model is not None
        obs = self.normalize_observation(np.asarray(observations, np.float32).reshape(len(observations), -1))
        rewards = []
        with th.no_grad():
            for start in range(0, len(obs), chunk):
                part = slice(start, start + chunk)
                o = th.as_tensor(obs[part], device=self.device)
                a = th.as_tensor(np.asarray(actions[part], np.float32), device=self.device)
                rewards.append(self.reward_model.reward(o, a).cpu().numpy())
        return np.concatenate(rewards).astype(np.float32)

    def _relabel(self, dataset: OfflineDataset, sampler: WindowSampler) -> OfflineDataset:
        return OfflineDataset(
            dataset.observations,
            dataset.actions,
            self.learned_rewards(dataset.observations, dataset.actions),
            dataset.next_observations,
            dataset.terminals,
            dataset.timeouts,
            dataset.costs,
            episode_ends=dataset.episode_ends,
            observation_space=dataset.observation_space,
            action_space=dataset.action_space,
            ref_min_score=dataset.ref_min_score,
            ref_max_score=dataset.ref_max_score,
            env_id=dataset.env_id,
            dataset_id=dataset.dataset_id,
            metadata={**dataset.metadata, "rewards": f"learned ({type(self.reward_model).__name__} on a preference pool)"},
        )

    def preference_accuracy(self, pool: PreferencePool, dataset: OfflineDataset) -> float:
        """Fraction of the strict pairs of ``pool`` (e.g. held-out labels) the reward model orders correctly.

        :param pool: the labelled pairs
        :param dataset: the dataset the pool's indices refer to (with its true rewards)
        """
        assert self.reward_model is not None
        pool.check_dataset(dataset)
        first, second = pool.windows(self._reward_sampler(dataset, pool.segment_length))
        probs = self.reward_model.preference_probs(
            Segments(first.observations, first.actions, first.rewards),
            Segments(second.observations, second.actions, second.rewards),
        ).mean(axis=0)
        return preference_accuracy(probs, pool.targets)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "preference_pool", "reward_model"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, tensors = super()._get_torch_save_params()
        return [*state_dicts, "reward_model", "reward_model.optimizer"], tensors
