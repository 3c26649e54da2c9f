"""IQL: Implicit Q-Learning."""

from __future__ import annotations

import math
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import update_learning_rate
from torch.nn import functional as F

from rlkit.common.buffers import OfflineReplayBufferSamples
from rlkit.common.networks import GaussianActor, ValueNetwork
from rlkit.common.offline import OfflineAlgorithm
from rlkit.common.utils import FastPath
from rlkit.data.minari import OfflineDataset
from rlkit.iql.policies import IQLPolicy, MlpPolicy

SelfIQL = TypeVar("SelfIQL", bound="IQL")


class IQL(OfflineAlgorithm):
    """Implicit Q-Learning (Kostrikov, Nair & Levine, ICLR 2022).

    Paper: https://arxiv.org/abs/2110.06169

    Each gradient step, with ``Q_hat`` the minimum of the target critics:

    - value, eq. (5): ``L_V = E[L_2^tau(Q_hat(s, a) - V(s))]``, ``L_2^tau(u) = |tau - 1(u < 0)| u^2``
      (``tau`` is ``expectile``);
    - critics, eq. (6): ``L_Q = E[(r + gamma (1 - d) V(s') - Q(s, a))^2]``, then a Polyak update of the targets;
    - actor, eq. (7), advantage-weighted regression:
      ``L_pi = -E[min(exp(beta (Q_hat(s, a) - V(s))), exp_adv_max) log pi(a|s)]``.

    As in CORL's implementation the advantage and ``V(s')`` use the value network
    before its update. Defaults are the paper's locomotion settings (expectile 0.7,
    beta 3, actor learning rate annealed to 0 with a cosine over the paper's 1M
    gradient steps, whatever the budget of each ``learn`` call, rewards scaled by
    ``1000 / (max return - min return)``; the 1000 is the env's time limit).

    :param policy: the policy model ("MlpPolicy")
    :param env: the environment, its id, or ``None`` (spaces from the dataset)
    :param dataset: an ``OfflineDataset``, a Minari id or a path
    :param learning_rate: learning rate of actor, critics and value network
    :param batch_size: minibatch size
    :param tau: soft update coefficient of the target critics
    :param gamma: discount factor
    :param expectile: expectile ``tau`` of the value loss, in (0.5, 1)
    :param beta: inverse temperature of the advantage weights
    :param exp_adv_max: cap of the advantage weights
    :param cosine_actor_lr: anneal the actor's learning rate to 0 with a cosine over ``schedule_horizon``
    :param schedule_horizon: gradient steps the schedules anneal over (the paper's 1M); ``None``: each ``learn`` call
    :param normalize_obs: normalise observations with the dataset's mean and std
    :param normalize_reward: scale rewards by ``T / (max return - min return)`` of the dataset, ``T`` the env's
        time limit (:meth:`episode_horizon`; 1000 for D4RL locomotion, as the official code)
    :param reward_scale: rewards are ``reward_scale * r + reward_shift`` (when ``normalize_reward`` is False)
    :param reward_shift: see ``reward_scale`` (antmaze uses -1)
    :param policy_kwargs: keyword arguments of the policy
    :param tensorboard_log: tensorboard log folder
    :param verbose: verbosity level
    :param seed: seed of the pseudo random generators
    :param device: device (cpu, cuda, auto)
    :param _init_setup_model: build the networks at construction
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: IQLPolicy
    actor: GaussianActor
    critic: ContinuousCritic
    critic_target: ContinuousCritic
    value: ValueNetwork

    def __init__(
        self,
        policy: str | type[IQLPolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
        learning_rate: float | Schedule = 3e-4,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        expectile: float = 0.7,
        beta: float = 3.0,
        exp_adv_max: float = 100.0,
        cosine_actor_lr: bool = True,
        schedule_horizon: int | None = 1_000_000,
        normalize_obs: bool = True,
        normalize_reward: bool = True,
        reward_scale: float = 1.0,
        reward_shift: float = 0.0,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if not 0.0 < expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {expectile} (IQL uses 0.7 for locomotion, 0.9 for antmaze)")
        self.tau = tau
        self.expectile = expectile
        self.beta = beta
        self.exp_adv_max = exp_adv_max
        self.cosine_actor_lr = cosine_actor_lr
        self.normalize_reward = normalize_reward
        super().__init__(
            policy,
            env,
            dataset=dataset,
            learning_rate=learning_rate,
            batch_size=batch_size,
            gamma=gamma,
            normalize_obs=normalize_obs,
            reward_scale=reward_scale,
            schedule_horizon=schedule_horizon,
            reward_shift=reward_shift,
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
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target
        self.value = self.policy.value
        # The off-policy family's fast path: one-call target updates, in-place ReLUs
        self.fast_path = FastPath(actor=self.actor, value=self.value, critic=self.critic, critic_target=self.critic_target)

    def _reward_transform(self, dataset: OfflineDataset) -> tuple[float, float]:
        if not self.normalize_reward:
            return self.reward_scale, self.reward_shift
        returns = dataset.episode_returns
        spread = float(returns.max() - returns.min())
        return (self.episode_horizon(dataset) / spread if spread > 0 else 1.0), 0.0

    def _actor_learning_rate(self) -> float:
        learning_rate = self.lr_schedule(self._current_progress_remaining)
        if self.cosine_actor_lr:
            learning_rate *= 0.5 * (1.0 + math.cos(math.pi * (1.0 - self._current_progress_remaining)))
        return learning_rate

    def _update_value_and_critic(self, replay_data: OfflineReplayBufferSamples) -> tuple[th.Tensor, float, float]:
        """One step of the value loss, eq. (5), and of the critic loss, eq. (6), then the Polyak update.

        :param replay_data: a normalised minibatch
        :return: the detached advantage ``Q_hat(s, a) - V(s)`` (value before its update, shape ``(batch, 1)``),
            the value loss and the critic loss
        """
        obs, actions = replay_data.observations, replay_data.actions
        with th.no_grad():
            target_q = th.min(th.cat(self.critic_target(obs, actions), dim=1), dim=1, keepdim=True)[0]
            next_v = self.value(replay_data.next_observations)

        # Eq. (5): expectile regression of V towards the target Q
        advantage = target_q - self.value(obs)
        weight = th.abs(self.expectile - (advantage < 0).float())
        value_loss = (weight * advantage.pow(2)).mean()
        self.value.optimizer.zero_grad()
        value_loss.backward()
        self.value.optimizer.step()

        # Eq. (6): TD regression of Q towards r + gamma V(s')
        target = replay_data.rewards + (1 - replay_data.dones) * self.gamma * next_v
        critic_loss = sum(F.mse_loss(q, target) for q in self.critic(obs, actions))
        assert isinstance(critic_loss, th.Tensor)
        self.critic.optimizer.zero_grad()
        critic_loss.backward()
        self.critic.optimizer.step()
        self.fast_path.soft_update("critic", "critic_target", self.tau)
        return advantage.detach(), value_loss.item(), critic_loss.item()

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.critic.optimizer, self.value.optimizer])
        actor_learning_rate = self._actor_learning_rate()
        update_learning_rate(self.actor.optimizer, actor_learning_rate)
        actor_losses, critic_losses, value_losses, advantages = [], [], [], []
        for _ in range(gradient_steps):
            self._n_updates += 1
            replay_data = self.replay_buffer.sample(batch_size)  # type: ignore[union-attr]
            obs, actions = replay_data.observations, replay_data.actions
            advantage, value_loss, critic_loss = self._update_value_and_critic(replay_data)
            value_losses.append(value_loss)
            critic_losses.append(critic_loss)

            # Eq. (7): advantage-weighted regression
            exp_advantage = th.exp(self.beta * advantage).clamp(max=self.exp_adv_max).squeeze(1)
            actor_loss = -(exp_advantage * self.actor.log_prob(obs, actions)).mean()
            actor_losses.append(actor_loss.item())
            advantages.append(advantage.mean().item())
            self.actor.optimizer.zero_grad()
            actor_loss.backward()
            self.actor.optimizer.step()

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/actor_learning_rate", actor_learning_rate)
        self.logger.record("train/actor_loss", np.mean(actor_losses))
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/advantage", np.mean(advantages))

    def learn(
        self: SelfIQL,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str = "IQL",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfIQL:
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "actor", "critic", "critic_target", "value", "fast_path"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "actor.optimizer", "critic.optimizer", "value.optimizer"], []
