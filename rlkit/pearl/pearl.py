"""PEARL: zero-shot cross-task preference alignment and robust reward learning, then IQL."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch as th
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from rlkit.common.preference import PreferencePool, resolve_pool
from rlkit.data.minari import OfflineDataset, load_dataset
from rlkit.iql.iql_bt import IQLBT
from rlkit.iql.policies import IQLPolicy
from rlkit.pearl.alignment import TransferReport, transfer_preferences


class PEARL(IQLBT):
    """PEARL (Liu, Du, Bai, Lyu & Li, ICML 2024): IQL on a target task whose preferences come from another task.

    Paper: https://arxiv.org/abs/2306.03615 (no public code; the choices below are this implementation's).

    1. Cross-task preference alignment (CPA, :mod:`rlkit.pearl.alignment`): the labelled pairs of a
       source dataset (a fixed pool, :func:`~rlkit.common.preference.load_or_create_pool`, with the
       pool settings of :class:`~rlkit.iql.IQLBT`: ``n_labels`` source pairs, ``label_mode``,
       ``segment_length``, ``pool_seed``, ``teacher``) are aligned with N unlabelled target
       segments by Gromov-Wasserstein optimal transport on within-task distances, and each
       labelled source pair's image on the target gets the conditional, normalised transferred
       label. No target label is used.
    2. Robust reward learning (RRL): a Gaussian reward model (mu, sigma) with the uncertainty
       regulariser (:class:`~rlkit.common.preference.GaussianRewardModel`) is fitted on the
       transferred soft labels (``reward_type="bt"`` fits PEBBLE's ensemble instead: the CPA+BT arm).
    3. The target dataset is relabelled with mu(s, a) and IQL trains on it, by
       :class:`~rlkit.iql.IQLBT`'s path (reward scaling as IQL's; expectile 0.7, beta 3 by default).

    The transferred pool's ``scores`` are the true window returns of its target segments, so
    :meth:`progress_info` reports ``label_accuracy``, the transferred labels against the hidden
    target teacher (measured before any RL), with ``labels`` = 0 target labels, the source labels
    used and the alignment's sizes, GW distance, seconds and memory.

    :param policy: the policy model ("MlpPolicy")
    :param env: the target environment, its id, or ``None`` (spaces from the dataset)
    :param dataset: the target dataset (unlabelled): an ``OfflineDataset``, a Minari id or a path
    :param source_dataset: the source task's dataset
    :param source_pool: the labelled source pairs; by default the cached pool of the pool settings
    :param n_target_segments: N, target segments aligned (default: the 2 N_q source segments)
    :param gw_restarts: GW initial plans, the lowest GW distance kept
    :param gw_max_iter: GW solver iterations per restart
    :param gw_epsilon: entropic regularisation of GW; 0 (default) for exact GW
    :param reward_type: ``gaussian`` (RRL) or ``bt``
    :param label_mode: the source teacher's score (``window``: the segment's own return)
    :param kwargs: the keyword arguments of :class:`~rlkit.iql.IQLBT` (its pool settings describe the source pool)
    """

    def __init__(
        self,
        policy: str | type[IQLPolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
        source_dataset: OfflineDataset | str | None = None,
        source_pool: PreferencePool | None = None,
        n_target_segments: int | None = None,
        gw_restarts: int = 5,
        gw_max_iter: int = 10_000,
        gw_epsilon: float = 0.0,
        reward_type: str = "gaussian",
        label_mode: str = "window",
        reward_net_arch: Sequence[int] = (256, 256, 256),
        learning_rate: float | Schedule = 3e-4,
        pool_dir: str | os.PathLike | None = None,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("preference_pool") is not None:
            raise ValueError(
                "PEARL labels the target by transfer: give the source labels as source_pool=, not preference_pool="
            )
        if source_dataset is None and source_pool is None and _init_setup_model and dataset is not None:
            raise ValueError("PEARL needs source_dataset= (the labelled source task's dataset) to transfer preferences from")
        if gw_restarts < 1:
            raise ValueError(f"gw_restarts must be at least 1, got {gw_restarts}")
        if not gw_epsilon >= 0:
            raise ValueError(f"gw_epsilon must be 0 (exact GW) or positive (entropic GW), got {gw_epsilon}")
        self.source_dataset = source_dataset
        self.source_pool = source_pool
        self.n_target_segments = n_target_segments
        self.gw_restarts = gw_restarts
        self.gw_max_iter = gw_max_iter
        self.gw_epsilon = gw_epsilon
        self.transfer_report: TransferReport | None = None
        self.source_labels_used = 0
        super().__init__(
            policy,
            env,
            dataset=dataset,
            reward_type=reward_type,
            label_mode=label_mode,
            reward_net_arch=reward_net_arch,
            learning_rate=learning_rate,
            pool_dir=pool_dir,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
            **kwargs,
        )

    def _attach_dataset(self, dataset: OfflineDataset) -> None:
        """Transfer the source labels onto ``dataset`` (CPA), then fit, relabel and attach as IQL+BT does."""
        if self.source_dataset is None:
            raise ValueError("PEARL needs source_dataset= to transfer preferences from (pass it to load() with dataset=)")
        source = load_dataset(self.source_dataset)
        pool = resolve_pool(
            source,
            self.source_pool,
            self.n_labels,
            self.label_mode,
            self.segment_length,
            self.foresee,
            self.pool_seed,
            self.teacher,
            self.pool_dir,
        )
        assert pool is not None
        self.preference_pool, self.transfer_report = transfer_preferences(
            source,
            pool,
            dataset,
            self.n_target_segments,
            seed=self.pool_seed,
            n_restarts=self.gw_restarts,
            max_iter=self.gw_max_iter,
            epsilon=self.gw_epsilon,
        )
        self.source_labels_used = pool.n_pairs
        super()._attach_dataset(dataset)

    def progress_info(self) -> dict[str, float]:
        """0 target labels, the source labels, the transferred labels' accuracy, held-out accuracy and the GW figures."""
        info = {**super().progress_info(), "labels": 0.0, "source_labels": float(self.source_labels_used)}
        if self.transfer_report is not None:
            info.update(self.transfer_report.as_info())
        return info

    def _excluded_save_params(self) -> list[str]:
        excluded = [*super()._excluded_save_params(), "source_pool", "transfer_report"]
        if isinstance(self.source_dataset, OfflineDataset):
            excluded.append("source_dataset")
        return excluded
