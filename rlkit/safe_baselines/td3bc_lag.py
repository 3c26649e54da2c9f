"""TD3+BC-Lag: TD3+BC with a cost critic and a Lagrange multiplier (a Lagrangian safe offline baseline)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from torch.nn import functional as F

from rlkit.common.utils import FastPath
from rlkit.data.minari import OfflineDataset
from rlkit.td3bc.policies import TD3BCPolicy
from rlkit.td3bc.td3bc import TD3BC


class TD3BCLag(TD3BC):
    """TD3+BC (Fujimoto & Gu, 2021) with a Lagrangian cost constraint, as OSRL's BCQ-Lag adds one to BCQ.

    A cost critic ``Q_c`` (twin networks, pessimistic maximum) is learned by TD on
    the dataset's costs next to the reward critic. The actor maximises
    ``lambda_q (Q(s, pi(s)) - mu Q_c(s, pi(s))) - (pi(s) - a)^2`` with
    ``lambda_q = alpha / mean|Q|``; the multiplier follows dual ascent
    ``mu <- max(0, mu + lagrangian_lr (E[Q_c(s, pi(s))] - q_limit))`` where
    ``q_limit = kappa (1 - gamma^T) / (T (1 - gamma))`` turns the episode budget ``kappa``
    into a discounted per-state cost (OSRL's conversion, ``T`` the env's time limit, else the longest episode).

    :param policy: the policy model ("MlpPolicy")
    :param env: the environment, its id, or ``None`` (spaces from the dataset)
    :param dataset: an ``OfflineDataset`` with ``costs``, a Minari id or a path
    :param cost_limit: episode cost budget ``kappa``
    :param lagrangian_lr: step size of the multiplier's dual ascent
    :param initial_multiplier: initial ``mu``
    :param learning_rate: learning rate of the actor and the critics
    :param batch_size: minibatch size
    :param tau: soft update coefficient of the targets
    :param gamma: discount factor
    :param alpha: TD3+BC's ``alpha``
    :param policy_delay: critic updates per actor update
    :param target_policy_noise: std of the target policy smoothing noise
    :param target_noise_clip: clip of the target policy smoothing noise
    :param normalize_obs: normalise observations with the dataset's mean and std
    :param policy_kwargs: keyword arguments of the policy
    :param tensorboard_log: tensorboard log folder
    :param verbose: verbosity level
    :param seed: seed of the pseudo random generators
    :param device: device (cpu, cuda, auto)
    :param _init_setup_model: build the networks at construction
    """

    cost_critic: ContinuousCritic
    cost_critic_target: ContinuousCritic

    def __init__(
        self,
        policy: str | type[TD3BCPolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
        cost_limit: float = 10.0,
        lagrangian_lr: float = 1e-3,
        initial_multiplier: float = 1.0,
        learning_rate: float | Schedule = 3e-4,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        alpha: float = 2.5,
        policy_delay: int = 2,
        target_policy_noise: float = 0.2,
        target_noise_clip: float = 0.5,
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
        self.lagrangian_lr = lagrangian_lr
        self.multiplier = initial_multiplier
        self.q_limit = 0.0
        super().__init__(
            policy,
            env,
            dataset=dataset,
            learning_rate=learning_rate,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            alpha=alpha,
            policy_delay=policy_delay,
            target_policy_noise=target_policy_noise,
            target_noise_clip=target_noise_clip,
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
        if self.replay_buffer is not None:
            if self.replay_buffer.costs is None:
                raise ValueError(f"{type(self).__name__} needs a dataset with per-step costs (OfflineDataset.costs)")
            horizon = self.episode_horizon(self.replay_buffer.dataset)
            self.q_limit = self.cost_limit * (1.0 - self.gamma**horizon) / (horizon * (1.0 - self.gamma))
        self.cost_critic = self.policy.make_critic(features_extractor=None).to(self.device)
        self.cost_critic_target = self.policy.make_critic(features_extractor=None).to(self.device)
        self.cost_critic_target.load_state_dict(self.cost_critic.state_dict())
        self.cost_critic_target.set_training_mode(False)
        self.cost_critic.optimizer = self.policy.optimizer_class(  # type: ignore[assignment]
            self.cost_critic.parameters(), lr=self.lr_schedule(1), **self.policy.optimizer_kwargs
        )
        self.fast_path = FastPath(
            **self._fast_path_networks(), cost_critic=self.cost_critic, cost_critic_target=self.cost_critic_target
        )

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer, self.cost_critic.optimizer])
        actor_losses, critic_losses, cost_critic_losses, cost_values = [], [], [], []
        for _ in range(gradient_steps):
            self._n_updates += 1
            data = self.replay_buffer.sample(batch_size)  # type: ignore[union-attr]
            assert data.costs is not None
            obs, actions = data.observations, data.actions

            with th.no_grad():
                noise = (
                    actions.clone().normal_(0, self.target_policy_noise).clamp(-self.target_noise_clip, self.target_noise_clip)
                )
                next_actions = (self.actor_target(data.next_observations) + noise).clamp(-1, 1)
                next_q = th.min(th.cat(self.critic_target(data.next_observations, next_actions), dim=1), dim=1, keepdim=True)[
                    0
                ]
                target_q = data.rewards + (1 - data.dones) * self.gamma * next_q
                next_qc = th.max(
                    th.cat(self.cost_critic_target(data.next_observations, next_actions), dim=1), dim=1, keepdim=True
                )[0]
                target_qc = data.costs + (1 - data.dones) * self.gamma * next_qc

            critic_loss = sum(F.mse_loss(q, target_q) for q in self.critic(obs, actions))
            cost_critic_loss = sum(F.mse_loss(q, target_qc) for q in self.cost_critic(obs, actions))
            assert isinstance(critic_loss, th.Tensor) and isinstance(cost_critic_loss, th.Tensor)
            critic_losses.append(critic_loss.item())
            cost_critic_losses.append(cost_critic_loss.item())
            for optimizer, loss in ((self.critic.optimizer, critic_loss), (self.cost_critic.optimizer, cost_critic_loss)):
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            if self._n_updates % self.policy_delay == 0:
                pi = self.actor(obs)
                q_pi = self.critic.q1_forward(obs, pi)
                qc_pi = th.max(th.cat(self.cost_critic(obs, pi), dim=1), dim=1, keepdim=True)[0]
                lmbda = self.alpha / q_pi.abs().mean().detach()
                actor_loss = -lmbda * (q_pi - self.multiplier * qc_pi).mean() + F.mse_loss(pi, actions)
                actor_losses.append(actor_loss.item())
                self.actor.optimizer.zero_grad()
                self.fast_path.backward(actor_loss, "actor")
                self.actor.optimizer.step()
                # dual ascent on the multiplier
                cost_value = qc_pi.mean().item()
                cost_values.append(cost_value)
                self.multiplier = max(0.0, self.multiplier + self.lagrangian_lr * (cost_value - self.q_limit))

                for network in ("critic", "cost_critic", "actor"):
                    self.fast_path.soft_update(network, f"{network}_target", self.tau)

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        self.logger.record("train/cost_critic_loss", np.mean(cost_critic_losses))
        self.logger.record("train/multiplier", self.multiplier)
        if actor_losses:
            self.logger.record("train/actor_loss", np.mean(actor_losses))
            self.logger.record("train/cost_value", np.mean(cost_values))

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "cost_critic", "cost_critic_target"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, other = super()._get_torch_save_params()
        return [*state_dicts, "cost_critic", "cost_critic_target", "cost_critic.optimizer"], other
