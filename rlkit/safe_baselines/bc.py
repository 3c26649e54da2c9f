"""Behaviour-cloning baselines of safe offline RL: BC-All and BC-Safe (DSRL / OSRL)."""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from rlkit.bc.bc import BC
from rlkit.bc.policies import BCPolicy
from rlkit.data.minari import OfflineDataset
from rlkit.data.safe import safe_episodes


class BCAll(BC):
    """BC-All: behaviour cloning on every transition of a safe dataset, costs ignored.

    The reference point of DSRL's tables (Liu et al., https://arxiv.org/abs/2306.09303):
    it imitates the mixture of safe and unsafe behaviour policies. Same networks and
    settings as :class:`~rlkit.bc.BC`.
    """


class BCSafe(BC):
    """BC-Safe: behaviour cloning on the trajectories whose cost is within the limit.

    DSRL's oracle-like baseline: only episodes with ``sum_t c_t <= cost_limit`` are
    cloned (:func:`rlkit.data.safe.safe_episodes`), the rest of the dataset is dropped.

    :param policy: the policy model ("MlpPolicy")
    :param env: the environment, its id, or ``None`` (spaces from the dataset)
    :param dataset: an ``OfflineDataset`` with ``costs``, a Minari id or a path
    :param cost_limit: episode cost budget ``kappa``: episodes with more cost are not cloned
    :param learning_rate: learning rate, constant or a schedule of the remaining progress
    :param batch_size: minibatch size
    :param normalize_obs: normalise observations with the (kept) data's mean and std
    :param policy_kwargs: keyword arguments of the policy
    :param tensorboard_log: tensorboard log folder
    :param verbose: verbosity level
    :param seed: seed of the pseudo random generators
    :param device: device (cpu, cuda, auto)
    :param _init_setup_model: build the networks at construction
    """

    def __init__(
        self,
        policy: str | type[BCPolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
        cost_limit: float = 10.0,
        learning_rate: float | Schedule = 3e-4,
        batch_size: int = 256,
        normalize_obs: bool = True,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if cost_limit < 0:
            raise ValueError(f"cost_limit must be >= 0, got {cost_limit}")
        self.cost_limit = cost_limit
        super().__init__(
            policy,
            env,
            dataset=dataset,
            learning_rate=learning_rate,
            batch_size=batch_size,
            normalize_obs=normalize_obs,
            policy_kwargs=policy_kwargs,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _attach_dataset(self, dataset: OfflineDataset) -> None:
        super()._attach_dataset(safe_episodes(dataset, self.cost_limit))
