"""Policy of A2PR: TD3's actor and twin critics, a state value ``V(s)`` and a conditional VAE."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, create_mlp
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.td3.policies import TD3Policy
from torch import nn

from rlkit.common.networks import ValueNetwork
from rlkit.common.utils import fused_adam_kwargs


class ConditionalVAE(nn.Module):
    """VAE of actions given the state (BCQ's, the "augmented behaviour policy" of A2PR).

    The encoder maps ``(s, a)`` to a diagonal Gaussian over the latent ``z``; the decoder
    maps ``(s, z)`` to ``tanh(D(s, z))`` in ``[-1, 1]``.

    :param obs_dim: dimension of the (flattened, normalised) observation
    :param action_dim: dimension of the action
    :param net_arch: hidden layer sizes of the encoder and of the decoder
    :param latent_dim: dimension of ``z`` (default ``2 * action_dim``)
    :param activation_fn: activation function
    :param log_std_min: lower clip of the encoder's log standard deviation
    :param log_std_max: upper clip of the encoder's log standard deviation
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        net_arch: list[int],
        latent_dim: int | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        log_std_min: float = -4.0,
        log_std_max: float = 15.0,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim or 2 * action_dim
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.encoder = nn.Sequential(*create_mlp(obs_dim + action_dim, 2 * self.latent_dim, net_arch, activation_fn))
        self.decoder = nn.Sequential(*create_mlp(obs_dim + self.latent_dim, action_dim, net_arch, activation_fn))

    def encode(self, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Mean and standard deviation of ``q(z | s, a)``."""
        mean, log_std = self.encoder(th.cat([obs, actions], dim=1)).chunk(2, dim=1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max).exp()

    def decode(self, obs: th.Tensor, z: th.Tensor) -> th.Tensor:
        """The action ``tanh(D(s, z))``."""
        return th.tanh(self.decoder(th.cat([obs, z], dim=1)))

    def forward(self, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Reconstruct ``actions`` through a sampled latent: ``(reconstruction, mean, std)``."""
        mean, std = self.encode(obs, actions)
        z = mean + std * th.randn_like(std)
        return self.decode(obs, z), mean, std


class A2PRPolicy(TD3Policy):
    """TD3's policy with A2PR's networks: a 256x3 actor, 256x4 twin critics, a 256x4 ``V(s)`` and a 750-750 VAE.

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: learning rate schedule of actor, critics and ``V``
    :param net_arch: hidden layer sizes, a list or ``dict(pi=[...], qf=[...])``; ``V`` uses the ``qf`` sizes
    :param vae_net_arch: hidden layer sizes of the VAE's encoder and decoder
    :param vae_latent_dim: latent dimension of the VAE (default ``2 * action_dim``)
    :param vae_learning_rate: learning rate of the VAE
    :param activation_fn: activation function
    :param features_extractor_class: features extractor
    :param features_extractor_kwargs: keyword arguments of the features extractor
    :param normalize_images: whether to divide image observations by 255
    :param optimizer_class: optimizer
    :param optimizer_kwargs: keyword arguments of the optimizer, excluding the learning rate
        (default for Adam: ``fused=True``, see :func:`~rlkit.common.utils.fused_adam_kwargs`)
    :param n_critics: number of critics
    """

    value: ValueNetwork
    vae: ConditionalVAE

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        vae_net_arch: list[int] | None = None,
        vae_latent_dim: int | None = None,
        vae_learning_rate: float = 1e-3,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
    ) -> None:
        self.vae_net_arch = [750, 750] if vae_net_arch is None else vae_net_arch
        self.vae_latent_dim = vae_latent_dim
        self.vae_learning_rate = vae_learning_rate
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=dict(pi=[256] * 3, qf=[256] * 4) if net_arch is None else net_arch,
            activation_fn=activation_fn,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=fused_adam_kwargs(optimizer_class, optimizer_kwargs),
            n_critics=n_critics,
            share_features_extractor=False,
        )

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        value_kwargs = self._update_features_extractor(
            {
                "observation_space": self.observation_space,
                "action_space": self.action_space,
                "net_arch": self.critic_kwargs["net_arch"],
                "activation_fn": self.net_args["activation_fn"],
                "normalize_images": self.normalize_images,
            }
        )
        self.value = ValueNetwork(**value_kwargs)
        self.value.optimizer = self.optimizer_class(self.value.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)
        self.vae = ConditionalVAE(
            value_kwargs["features_dim"],
            get_action_dim(self.action_space),
            self.vae_net_arch,
            latent_dim=self.vae_latent_dim,
            activation_fn=self.net_args["activation_fn"],
        )
        self.vae.optimizer = self.optimizer_class(self.vae.parameters(), lr=self.vae_learning_rate, **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            vae_net_arch=self.vae_net_arch,
            vae_latent_dim=self.vae_latent_dim,
            vae_learning_rate=self.vae_learning_rate,
        )
        return data

    def set_training_mode(self, mode: bool) -> None:
        super().set_training_mode(mode)
        self.value.set_training_mode(mode)
        self.vae.train(mode)


MlpPolicy = A2PRPolicy
