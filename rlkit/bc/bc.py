"""Behaviour cloning (BC), the baseline of every offline table."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.td3.policies import Actor
from torch.nn import functional as F

from rlkit.bc.policies import BCPolicy, MlpPolicy
from rlkit.common.offline import OfflineAlgorithm
from rlkit.data.minari import OfflineDataset

SelfBC = TypeVar("SelfBC", bound="BC")


class BC(OfflineAlgorithm):
    """Behaviour cloning: regress the dataset's actions, ``min_pi E_(s,a)~D [(pi(s) - a)^2]``.

    The BC baseline of TD3+BC (Fujimoto & Gu, 2021, https://arxiv.org/abs/2106.06860):
    a deterministic 256-256 actor, Adam at 3e-4, batch 256, normalised states.

    :param policy: the policy model ("MlpPolicy")
    :param env: the environment, its id, or ``None`` (spaces from the dataset)
    :param dataset: an ``OfflineDataset``, a Minari id or a path
    :param learning_rate: learning rate, constant or a schedule of the remaining progress
    :param batch_size: minibatch size
    :param normalize_obs: normalise observations with the dataset's mean and std
    :param policy_kwargs: keyword arguments of the policy
    :param tensorboard_log: tensorboard log folder
    :param verbose: verbosity level
    :param seed: seed of the pseudo random generators
    :param device: device (cpu, cuda, auto)
    :param _init_setup_model: build the networks at construction
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: BCPolicy
    actor: Actor

    def __init__(
        self,
        policy: str | type[BCPolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
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

    def _setup_model(self) -> None:
        super()._setup_model()
        self.actor = self.policy.actor

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.actor.optimizer)
        losses = []
        for _ in range(gradient_steps):
            self._n_updates += 1
            replay_data = self.replay_buffer.sample(batch_size)  # type: ignore[union-attr]
            loss = F.mse_loss(self.actor(replay_data.observations), replay_data.actions)
            losses.append(loss.item())
            self.actor.optimizer.zero_grad()
            loss.backward()
            self.actor.optimizer.step()
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/actor_loss", np.mean(losses))

    def learn(
        self: SelfBC,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str = "BC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfBC:
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "actor"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "actor.optimizer"], []
