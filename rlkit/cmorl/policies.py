"""Policies for C-MORL: SB3's actor-critic with a vector critic, one value per objective."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule
from torch import nn


class MOActorCriticPolicy(ActorCriticPolicy):
    """
    Actor-critic policy whose critic outputs the vector ``V(s) in R^n`` of per-objective values.

    Everything else is SB3's :class:`~stable_baselines3.common.policies.ActorCriticPolicy`
    (C-MORL's defaults match it: 64-64 tanh MLPs, a Gaussian with state-independent log-std,
    orthogonal initialisation). ``forward``, ``evaluate_actions`` and ``predict_values`` return
    values of shape ``(batch, n_objectives)``.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param n_objectives: Number of objectives, the critic's output size
    :param kwargs: the other arguments of :class:`~stable_baselines3.common.policies.ActorCriticPolicy`
    """

    def __init__(self, observation_space: Any, action_space: Any, lr_schedule: Schedule, n_objectives: int = 2, **kwargs: Any):
        self.n_objectives = n_objectives
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        """Build SB3's networks, then replace the scalar value head by a vector one and rebuild the optimizer.

        :param lr_schedule: Learning rate schedule, ``lr_schedule(1)`` is the initial learning rate
        """
        super()._build(lr_schedule)
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, self.n_objectives)
        if self.ortho_init:
            self.value_net.apply(lambda module: self.init_weights(module, gain=1))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "n_objectives": self.n_objectives}
