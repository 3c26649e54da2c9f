"""Policies for off-policy MDPO: SB3's SAC policy plus the anchor actor and the SAC-v1 state-value critic."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.sac.policies import Actor, SACPolicy
from torch import nn


class StateValueCritic(BaseModel):
    """
    State-value network V_psi(s) of SAC-v1 (Haarnoja et al., 2018), used by off-policy MDPO.

    :param observation_space: Observation space
    :param action_space: Action space
    :param net_arch: Network architecture
    :param features_extractor: Network to extract features
        (a CNN when using images, a nn.Flatten() layer otherwise)
    :param features_dim: Number of features
    :param activation_fn: Activation function
    :param normalize_images: Whether to normalize images or not,
         dividing by 255.0 (True by default)
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
    ):
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        self.v_net = nn.Sequential(*create_mlp(features_dim, 1, net_arch, activation_fn))

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        return self.v_net(self.extract_features(obs, self.features_extractor))


class MDPOOffPolicy(SACPolicy):
    """
    Policy class for off-policy MDPO: SB3's SAC policy (squashed-Gaussian actor,
    twin Q critics and their targets) plus

    * ``anchor_actor``: a frozen copy of the actor, the previous mirror-descent iterate pi_k,
      hard-copied from the actor by the algorithm every m gradient steps;
    * with ``use_value_net`` (SAC-v1 critics, as in the paper's code): a state-value network
      ``value_net`` and its Polyak target ``value_target``. As in the paper's code one
      optimizer, ``critic.optimizer``, trains the Q networks and V. In that mode the
      Q targets built by :class:`SACPolicy` are not used.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param net_arch: The specification of the policy and value networks (default [256, 256], as in the paper)
    :param activation_fn: Activation function
    :param use_sde: Must be False: the anchor log-density needs the plain squashed Gaussian
    :param log_std_init: Initial value for the log standard deviation
    :param features_extractor_class: Features extractor to use.
    :param features_extractor_kwargs: Keyword arguments
        to pass to the features extractor.
    :param normalize_images: Whether to normalize images or not,
         dividing by 255.0 (True by default)
    :param optimizer_class: The optimizer to use,
        ``th.optim.Adam`` by default
    :param optimizer_kwargs: Additional keyword arguments,
        excluding the learning rate, to pass to the optimizer
    :param n_critics: Number of critic networks to create.
    :param share_features_extractor: Whether to share or not the features extractor
        between the actor and the critic (this saves computation time)
    :param use_value_net: Whether to build the SAC-v1 state-value network and its target
    """

    anchor_actor: Actor
    value_net: StateValueCritic | None
    value_target: StateValueCritic | None

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        use_sde: bool = False,
        log_std_init: float = -3,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        use_value_net: bool = True,
    ):
        if use_sde:
            raise ValueError(
                "MDPOOffPolicy does not support gSDE (use_sde=True): the anchor density needs a squashed Gaussian"
            )
        self.use_value_net = use_value_net
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            use_sde=False,
            log_std_init=log_std_init,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            n_critics=n_critics,
            share_features_extractor=share_features_extractor,
        )

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        self.anchor_actor = self.make_actor()
        self.anchor_actor.load_state_dict(self.actor.state_dict())
        self.anchor_actor.requires_grad_(False)
        self.anchor_actor.set_training_mode(False)

        self.value_net, self.value_target = None, None
        if self.use_value_net:
            self.value_net = self.make_value_net()
            self.critic.optimizer = self.optimizer_class(
                [*self.critic.optimizer.param_groups[0]["params"], *self.value_net.parameters()],
                lr=lr_schedule(1),  # type: ignore[call-arg]
                **self.optimizer_kwargs,
            )
            self.value_target = self.make_value_net()
            self.value_target.load_state_dict(self.value_net.state_dict())
            self.value_target.requires_grad_(False)
            self.value_target.set_training_mode(False)

    def make_value_net(self, features_extractor: BaseFeaturesExtractor | None = None) -> StateValueCritic:
        value_kwargs = {
            key: value for key, value in self.critic_kwargs.items() if key not in ("n_critics", "share_features_extractor")
        }
        value_kwargs = self._update_features_extractor(value_kwargs, features_extractor)
        return StateValueCritic(**value_kwargs).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for key in ("use_expln", "clip_mean"):
            data.pop(key)
        data.update(dict(use_value_net=self.use_value_net, share_features_extractor=self.share_features_extractor))
        return data

    def set_training_mode(self, mode: bool) -> None:
        super().set_training_mode(mode)
        if self.value_net is not None:
            self.value_net.set_training_mode(mode)


MlpPolicy = MDPOOffPolicy
