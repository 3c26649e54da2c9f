"""Policy of TD3+BC: SB3's TD3 policy (actor, twin critics, targets) with the paper's 256-256 networks."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.td3.policies import TD3Policy
from torch import nn

from rlkit.common.utils import fused_adam_kwargs


class TD3BCPolicy(TD3Policy):
    """TD3's policy with 256-256 actor and critics by default (TD3+BC, Fujimoto & Gu, 2021).

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: learning rate schedule
    :param net_arch: hidden layer sizes, a list or ``dict(pi=[...], qf=[...])``
    :param activation_fn: activation function
    :param features_extractor_class: features extractor
    :param features_extractor_kwargs: keyword arguments of the features extractor
    :param normalize_images: whether to divide image observations by 255
    :param optimizer_class: optimizer
    :param optimizer_kwargs: keyword arguments of the optimizer, excluding the learning rate
        (default for Adam: ``fused=True``, see :func:`~rlkit.common.utils.fused_adam_kwargs`)
    :param n_critics: number of critics
    :param share_features_extractor: share the features extractor of actor and critic
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=[256, 256] if net_arch is None else net_arch,
            activation_fn=activation_fn,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=fused_adam_kwargs(optimizer_class, optimizer_kwargs),
            n_critics=n_critics,
            share_features_extractor=share_features_extractor,
        )


MlpPolicy = TD3BCPolicy
