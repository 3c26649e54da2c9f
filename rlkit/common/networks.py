"""Networks shared by the offline algorithms: a state-value network and a Gaussian actor."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel, BasePolicy
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn
from torch.distributions import Normal


class ValueNetwork(BaseModel):
    """State-value network ``V(s)`` (IQL, A2PR, FISOR).

    :param observation_space: observation space
    :param action_space: action space (unused by the network, kept for SB3's ``BaseModel``)
    :param net_arch: hidden layer sizes
    :param features_extractor: network that extracts features from observations
    :param features_dim: number of features
    :param activation_fn: activation function
    :param normalize_images: whether to divide image observations by 255
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
    ) -> None:
        super().__init__(
            observation_space, action_space, features_extractor=features_extractor, normalize_images=normalize_images
        )
        self.v_net = nn.Sequential(*create_mlp(features_dim, 1, net_arch, activation_fn))

    def forward(self, obs: th.Tensor) -> th.Tensor:
        return self.v_net(self.extract_features(obs, self.features_extractor))


class GaussianActor(BasePolicy):
    """Gaussian policy with a tanh-bounded mean and a state-independent log standard deviation.

    ``pi(a|s) = N(tanh(mu(s)), exp(log_std)^2)``, the actor of IQL's official code
    (``NormalTanhPolicy`` with ``tanh_squash_distribution=False``) and of FamO2O's
    universal policy. The deterministic action is the mean; sampled actions are
    clipped to ``[-1, 1]``.

    :param observation_space: observation space
    :param action_space: action space
    :param net_arch: hidden layer sizes
    :param features_extractor: network that extracts features from observations
    :param features_dim: number of features
    :param activation_fn: activation function
    :param normalize_images: whether to divide image observations by 255
    :param log_std_init: initial log standard deviation
    :param log_std_min: lower clip of the log standard deviation
    :param log_std_max: upper clip of the log standard deviation
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        log_std_init: float = 0.0,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=True,
        )
        self.net_arch = net_arch
        self.features_dim = features_dim
        self.activation_fn = activation_fn
        self.log_std_init = log_std_init
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        action_dim = get_action_dim(self.action_space)
        self.mu = nn.Sequential(*create_mlp(features_dim, action_dim, net_arch, activation_fn, squash_output=True))
        self.log_std = nn.Parameter(th.full((action_dim,), float(log_std_init)))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                features_dim=self.features_dim,
                activation_fn=self.activation_fn,
                features_extractor=self.features_extractor,
                log_std_init=self.log_std_init,
                log_std_min=self.log_std_min,
                log_std_max=self.log_std_max,
            )
        )
        return data

    def forward(self, obs: th.Tensor) -> th.Tensor:
        """The mean action ``tanh(mu(s))``."""
        return self.mu(self.extract_features(obs, self.features_extractor))

    def distribution(self, obs: th.Tensor) -> Normal:
        """The action distribution at ``obs``."""
        std = self.log_std.clamp(self.log_std_min, self.log_std_max).exp()
        return Normal(self(obs), std)

    def log_prob(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """``log pi(a|s)`` summed over action dimensions, shape ``(batch,)``."""
        return self.distribution(obs).log_prob(actions).sum(dim=-1)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        if deterministic:
            return self(observation)
        return self.distribution(observation).sample().clamp(-1.0, 1.0)
