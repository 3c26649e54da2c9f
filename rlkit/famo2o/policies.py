"""Policy of FamO2O on IQL: universal policy ``pi_u(a|s, beta)``, balance model ``pi_b(beta|s)``, IQL's critics and V."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from rlkit.common.networks import GaussianActor
from rlkit.iql.policies import IQLPolicy


def balance_encoding(beta: th.Tensor, dim: int = 6, base: float = 10000.0) -> th.Tensor:
    """Sin/cos encoding of the balance coefficient, the universal policy's extra input.

    ``enc(beta) = [sin(beta / base^(0/dim)), cos(beta / base^(0/dim)), sin(beta / base^(2/dim)),
    cos(beta / base^(2/dim)), ...]`` with ``dim / 2`` frequencies (FamO2O's official code: ``base`` 10000,
    ``dim`` 6). The raw ``beta`` is encoded, not a normalised one.

    :param beta: coefficients, shape ``(batch, 1)``
    :param dim: size of the encoding (even)
    :param base: base of the geometric frequency ladder
    :return: the encoding, shape ``(batch, dim)``
    """
    exponents = th.arange(dim // 2, dtype=beta.dtype, device=beta.device) * 2.0 / dim
    angles = beta / base**exponents
    return th.stack([th.sin(angles), th.cos(angles)], dim=-1).flatten(-2)


def coefficient_from_unit(u: th.Tensor, low: float, high: float) -> th.Tensor:
    """Map the balance model's output ``u`` in ``(-1, 1)`` to ``beta = low + (u + 1) / 2 (high - low)`` in ``(low, high)``.

    :param u: squashed balance outputs
    :param low: lower end of the coefficient range
    :param high: upper end of the coefficient range
    """
    return low + 0.5 * (u + 1.0) * (high - low)


class BalanceModel(BaseModel):
    """Balance model ``pi_b(beta|s)``: a 1-D tanh-Gaussian policy over the squashed coefficient ``u``.

    ``u = tanh(x)``, ``x ~ N(mu(s), exp(log_std)^2)`` with a state-independent ``log_std``; the
    coefficient is :func:`coefficient_from_unit` of ``u``. ``log_alpha`` is the log of the balance
    model's own entropy temperature ``alpha_b`` (initialised at ``alpha_b = 1``).

    :param observation_space: observation space
    :param action_space: action space of the env (unused by the network, kept for SB3's ``BaseModel``)
    :param net_arch: hidden layer sizes
    :param features_extractor: network that extracts features from observations
    :param features_dim: number of features
    :param activation_fn: activation function
    :param normalize_images: whether to divide image observations by 255
    :param log_std_init: initial log standard deviation (before the tanh)
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
            observation_space, action_space, features_extractor=features_extractor, normalize_images=normalize_images
        )
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.mu = nn.Sequential(*create_mlp(features_dim, 1, net_arch, activation_fn))
        self.log_std = nn.Parameter(th.full((1,), float(log_std_init)))
        self.log_alpha = nn.Parameter(th.zeros(1))
        self.squashed_gaussian = SquashedDiagGaussianDistribution(1)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        """The pre-tanh mean ``mu(s)``, shape ``(batch, 1)``."""
        return self.mu(self.extract_features(obs, self.features_extractor))

    def mode(self, obs: th.Tensor) -> th.Tensor:
        """The deterministic squashed output ``tanh(mu(s))``."""
        return th.tanh(self(obs))

    def sample(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """A reparameterised sample ``u`` and its log-probability ``log pi_b(u|s)`` (tanh correction included).

        :param obs: normalised observations
        :return: ``u`` of shape ``(batch, 1)`` and ``log pi_b(u|s)`` of shape ``(batch,)``
        """
        mean = self(obs)
        log_std = self.log_std.clamp(self.log_std_min, self.log_std_max).expand_as(mean)
        return self.squashed_gaussian.log_prob_from_params(mean, log_std)

    def model_parameters(self) -> list[nn.Parameter]:
        """The parameters of ``pi_b`` (everything but ``log_alpha``)."""
        return [param for name, param in self.named_parameters() if name != "log_alpha"]


class FamO2OPolicy(IQLPolicy):
    """Networks of FamO2O on IQL (Wang et al., 2023): ``pi_u(a|s, beta)``, ``pi_b(beta|s)``, ``Q_1, Q_2`` (+ targets), ``V``.

    The universal policy is IQL's Gaussian actor whose input is ``concat(s, enc(beta))``
    (:func:`balance_encoding`). Acting uses the balance model's deterministic coefficient
    ``beta(s) = map(tanh(mu_b(s)))``; the action is the universal policy's mean
    (deterministic) or a sample from it.

    :param observation_space: observation space (a flat Box)
    :param action_space: action space
    :param lr_schedule: learning rate schedule of every optimizer
    :param beta_range: ``(low, high)`` range of the balance coefficient
    :param encoding_dim: size of the sin/cos encoding of ``beta``
    :param encoding_base: base of the encoding's frequencies
    :param balance_net_arch: hidden layer sizes of the balance model (default: the actor's)
    :param balance_log_std_init: initial log standard deviation of the balance model
    :param net_arch: hidden layer sizes, a list or ``dict(pi=[...], qf=[...])``; V uses the ``qf`` sizes
    :param activation_fn: activation function
    :param log_std_init: initial log standard deviation of the universal policy
    :param features_extractor_class: features extractor of the critics, value and balance model
    :param features_extractor_kwargs: keyword arguments of the features extractor
    :param normalize_images: whether to divide image observations by 255
    :param optimizer_class: optimizer
    :param optimizer_kwargs: keyword arguments of the optimizer, excluding the learning rate
    :param n_critics: number of Q networks
    """

    balance: BalanceModel

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        beta_range: tuple[float, float] = (1.0, 5.0),
        encoding_dim: int = 6,
        encoding_base: float = 10000.0,
        balance_net_arch: list[int] | None = None,
        balance_log_std_init: float = 0.0,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        log_std_init: float = 0.0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
    ) -> None:
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"FamO2O needs a flat Box observation space, got {observation_space}")
        low, high = float(beta_range[0]), float(beta_range[1])
        if not low < high:
            raise ValueError(f"beta_range must be (low, high) with low < high, got {beta_range}")
        if encoding_dim <= 0 or encoding_dim % 2:
            raise ValueError(f"encoding_dim must be a positive even number, got {encoding_dim}")
        self.beta_range = (low, high)
        self.encoding_dim = encoding_dim
        self.encoding_base = encoding_base
        self.balance_log_std_init = balance_log_std_init
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            log_std_init=log_std_init,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            n_critics=n_critics,
        )
        self.balance_net_arch = list(self.actor.net_arch) if balance_net_arch is None else balance_net_arch
        balance_kwargs = {
            "observation_space": self.observation_space,
            "action_space": self.action_space,
            "net_arch": self.balance_net_arch,
            "activation_fn": activation_fn,
            "normalize_images": normalize_images,
        }
        self.balance = BalanceModel(**self._update_features_extractor(balance_kwargs), log_std_init=balance_log_std_init)
        self.balance.optimizer = self.optimizer_class(
            self.balance.model_parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )
        self.balance.alpha_optimizer = self.optimizer_class(
            [self.balance.log_alpha], lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _build_actor(self, actor_kwargs: dict[str, Any]) -> GaussianActor:
        obs_space = self.observation_space
        assert isinstance(obs_space, spaces.Box)
        extended = spaces.Box(-np.inf, np.inf, (obs_space.shape[0] + self.encoding_dim,), np.float32)
        extractor = FlattenExtractor(extended)
        return GaussianActor(
            **{**actor_kwargs, "observation_space": extended},
            features_extractor=extractor,
            features_dim=extractor.features_dim,
            log_std_init=self.log_std_init,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                beta_range=self.beta_range,
                encoding_dim=self.encoding_dim,
                encoding_base=self.encoding_base,
                balance_net_arch=self.balance_net_arch,
                balance_log_std_init=self.balance_log_std_init,
            )
        )
        return data

    def actor_input(self, obs: th.Tensor, beta: th.Tensor) -> th.Tensor:
        """The universal policy's input ``concat(s, enc(beta))``.

        :param obs: normalised observations, shape ``(batch, obs_dim)``
        :param beta: coefficients, shape ``(batch, 1)``
        """
        return th.cat([obs.float(), balance_encoding(beta, self.encoding_dim, self.encoding_base)], dim=-1)

    def coefficient(self, u: th.Tensor) -> th.Tensor:
        """``beta`` in ``beta_range`` of a squashed balance output ``u`` (:func:`coefficient_from_unit`)."""
        return coefficient_from_unit(u, *self.beta_range)

    def balance_coefficient(self, obs: th.Tensor) -> th.Tensor:
        """The balance model's deterministic coefficient ``beta(s)``, shape ``(batch, 1)``."""
        return self.coefficient(self.balance.mode(obs))

    def universal_action(self, obs: th.Tensor, beta: th.Tensor, deterministic: bool = True) -> th.Tensor:
        """The universal policy's action at a given coefficient, in ``[-1, 1]``.

        :param obs: normalised observations
        :param beta: coefficients, shape ``(batch, 1)``
        :param deterministic: the mean action, else a sample (clipped to ``[-1, 1]``)
        """
        return self.actor._predict(self.actor_input(obs, beta), deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        assert isinstance(observation, th.Tensor)
        return self.universal_action(observation, self.balance_coefficient(observation), deterministic)

    def set_training_mode(self, mode: bool) -> None:
        super().set_training_mode(mode)
        self.balance.set_training_mode(mode)


MlpPolicy = FamO2OPolicy
