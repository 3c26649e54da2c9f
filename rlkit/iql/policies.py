"""Policy of IQL: a Gaussian actor, twin Q critics with a target, and a state-value network."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, get_actor_critic_arch
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from rlkit.common.networks import GaussianActor, ValueNetwork
from rlkit.common.utils import fused_adam_kwargs


class IQLPolicy(BasePolicy):
    """Networks of IQL (Kostrikov et al., 2022): ``pi(a|s)``, ``Q_1, Q_2(s, a)`` (+ targets) and ``V(s)``.

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: learning rate schedule (of every optimizer; IQL anneals the actor's itself)
    :param net_arch: hidden layer sizes, a list or ``dict(pi=[...], qf=[...])``; V uses the ``qf`` sizes
    :param activation_fn: activation function
    :param log_std_init: initial log standard deviation of the actor
    :param features_extractor_class: features extractor
    :param features_extractor_kwargs: keyword arguments of the features extractor
    :param normalize_images: whether to divide image observations by 255
    :param optimizer_class: optimizer
    :param optimizer_kwargs: keyword arguments of the optimizer, excluding the learning rate
        (default for Adam: ``fused=True``, see :func:`~rlkit.common.utils.fused_adam_kwargs`)
    :param n_critics: number of Q networks
    """

    actor: GaussianActor
    critic: ContinuousCritic
    critic_target: ContinuousCritic
    value: ValueNetwork

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
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
        self.log_std_init = log_std_init
        self.n_critics = n_critics
        actor_arch, critic_arch = get_actor_critic_arch(self.net_arch)
        common = {
            "observation_space": self.observation_space,
            "action_space": self.action_space,
            "activation_fn": activation_fn,
            "normalize_images": normalize_images,
        }
        self.actor = self._build_actor({**common, "net_arch": actor_arch})
        critic_kwargs = {**common, "net_arch": critic_arch, "n_critics": n_critics, "share_features_extractor": False}
        self.critic = ContinuousCritic(**self._update_features_extractor(critic_kwargs))
        self.critic_target = ContinuousCritic(**self._update_features_extractor(critic_kwargs))
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.set_training_mode(False)
        self.value = ValueNetwork(**self._update_features_extractor({**common, "net_arch": critic_arch}))
        for module in (self.actor, self.critic, self.value):
            module.optimizer = self.optimizer_class(module.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _build_actor(self, actor_kwargs: dict[str, Any]) -> GaussianActor:
        """The actor ``pi(a|s)``; subclasses may condition it on more than the observation.

        :param actor_kwargs: the spaces, ``net_arch``, activation and image normalisation of the actor
        """
        return GaussianActor(**self._update_features_extractor(actor_kwargs), log_std_init=self.log_std_init)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                log_std_init=self.log_std_init,
                n_critics=self.n_critics,
                lr_schedule=self._dummy_schedule,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
            )
        )
        return data

    def forward(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(observation, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self.actor._predict(observation, deterministic=deterministic)

    def set_training_mode(self, mode: bool) -> None:
        self.actor.set_training_mode(mode)
        self.critic.set_training_mode(mode)
        self.value.set_training_mode(mode)
        self.training = mode


MlpPolicy = IQLPolicy
