"""Policy of behaviour cloning: a deterministic tanh actor."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.td3.policies import Actor
from torch import nn

from rlkit.common.utils import fused_adam_kwargs


class BCPolicy(BasePolicy):
    """Deterministic policy ``a = tanh(mu(s))`` (TD3's actor) for behaviour cloning.

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: learning rate schedule
    :param net_arch: hidden layer sizes (256, 256 as in the TD3+BC paper's BC baseline)
    :param activation_fn: activation function
    :param features_extractor_class: features extractor
    :param features_extractor_kwargs: keyword arguments of the features extractor
    :param normalize_images: whether to divide image observations by 255
    :param optimizer_class: optimizer
    :param optimizer_kwargs: keyword arguments of the optimizer, excluding the learning rate
        (default for Adam: ``fused=True``, see :func:`~rlkit.common.utils.fused_adam_kwargs`)
    """

    actor: Actor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=fused_adam_kwargs(optimizer_class, optimizer_kwargs),
            squash_output=True,
            normalize_images=normalize_images,
        )
        self.net_arch = [256, 256] if net_arch is None else net_arch
        self.activation_fn = activation_fn
        actor_kwargs = self._update_features_extractor(
            {
                "observation_space": self.observation_space,
                "action_space": self.action_space,
                "net_arch": self.net_arch,
                "activation_fn": self.activation_fn,
                "normalize_images": normalize_images,
            }
        )
        self.actor = Actor(**actor_kwargs)
        self.actor.optimizer = self.optimizer_class(self.actor.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                lr_schedule=self._dummy_schedule,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
            )
        )
        return data

    def forward(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self._predict(observation, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self.actor(observation)

    def set_training_mode(self, mode: bool) -> None:
        self.actor.set_training_mode(mode)
        self.training = mode


MlpPolicy = BCPolicy
