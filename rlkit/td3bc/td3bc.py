"""TD3+BC: TD3 with a behaviour-cloning term in the actor loss."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import get_parameters_by_name, polyak_update
from stable_baselines3.td3.policies import Actor
from torch.nn import functional as F

from rlkit.common.offline import OfflineAlgorithm
from rlkit.common.utils import FastPath
from rlkit.data.minari import OfflineDataset
from rlkit.td3bc.policies import MlpPolicy, TD3BCPolicy

SelfTD3BC = TypeVar("SelfTD3BC", bound="TD3BC")


class TD3BC(OfflineAlgorithm):
    """TD3+BC (Fujimoto & Gu, 2021, "A Minimalist Approach to Offline Reinforcement Learning").

    Paper: https://arxiv.org/abs/2106.06860

    The critic is TD3's (clipped double Q with target policy smoothing); the actor
    maximises eq. (3) of the paper,
    ``pi = argmax_pi E_(s,a)~D [lambda Q(s, pi(s)) - (pi(s) - a)^2]`` with
    ``lambda = alpha / mean|Q(s, pi(s))|`` (detached), every ``policy_delay`` steps.
    Defaults are the paper's D4RL settings (alpha 2.5, normalised states).

    :param policy: the policy model ("MlpPolicy")
    :param env: the environment, its id, or ``None`` (spaces from the dataset)
    :param dataset: an ``OfflineDataset``, a Minari id or a path
    :param learning_rate: learning rate of actor and critics
    :param batch_size: minibatch size
    :param tau: soft update coefficient of the target networks
    :param gamma: discount factor
    :param alpha: weight of the Q term relative to the BC term (``lambda`` numerator)
    :param policy_delay: the actor and the targets are updated every ``policy_delay`` critic updates
    :param target_policy_noise: std of the Gaussian noise added to the target action (in [-1, 1] units)
    :param target_noise_clip: clip of that noise
    :param normalize_obs: normalise observations with the dataset's mean and std
    :param reward_scale: rewards are ``reward_scale * r + reward_shift`` in training
    :param reward_shift: see ``reward_scale``
    :param policy_kwargs: keyword arguments of the policy
    :param tensorboard_log: tensorboard log folder
    :param verbose: verbosity level
    :param seed: seed of the pseudo random generators
    :param device: device (cpu, cuda, auto)
    :param _init_setup_model: build the networks at construction
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: TD3BCPolicy
    actor: Actor
    actor_target: Actor
    critic: ContinuousCritic
    critic_target: ContinuousCritic

    def __init__(
        self,
        policy: str | type[TD3BCPolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
        learning_rate: float | Schedule = 3e-4,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        alpha: float = 2.5,
        policy_delay: int = 2,
        target_policy_noise: float = 0.2,
        target_noise_clip: float = 0.5,
        normalize_obs: bool = True,
        reward_scale: float = 1.0,
        reward_shift: float = 0.0,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if policy_delay < 1:
            raise ValueError(f"policy_delay must be >= 1, got {policy_delay}")
        self.tau = tau
        self.alpha = alpha
        self.policy_delay = policy_delay
        self.target_policy_noise = target_policy_noise
        self.target_noise_clip = target_noise_clip
        super().__init__(
            policy,
            env,
            dataset=dataset,
            learning_rate=learning_rate,
            batch_size=batch_size,
            gamma=gamma,
            normalize_obs=normalize_obs,
            reward_scale=reward_scale,
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
        self.actor_target = self.policy.actor_target
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target
        # Running stats of batch norm layers, copied to the targets (SB3 GH#996)
        self.actor_batch_norm_stats = get_parameters_by_name(self.actor, ["running_"])
        self.critic_batch_norm_stats = get_parameters_by_name(self.critic, ["running_"])
        self.actor_batch_norm_stats_target = get_parameters_by_name(self.actor_target, ["running_"])
        self.critic_batch_norm_stats_target = get_parameters_by_name(self.critic_target, ["running_"])
        self.fast_path = FastPath(**self._fast_path_networks())

    def _fast_path_networks(self) -> dict[str, th.nn.Module]:
        """The networks of the update, by name, for :attr:`fast_path`, the off-policy family's fast path (the actor
        loss's gradient for the actor only, one-call target updates, in-place ReLUs); an algorithm with more networks
        adds them here."""
        return {
            "actor": self.actor,
            "actor_target": self.actor_target,
            "critic": self.critic,
            "critic_target": self.critic_target,
        }

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])
        actor_losses, bc_losses, critic_losses = [], [], []
        for _ in range(gradient_steps):
            self._n_updates += 1
            replay_data = self.replay_buffer.sample(batch_size)  # type: ignore[union-attr]

            with th.no_grad():
                # Target policy smoothing: a' = clip(pi'(s') + clip(eps, -c, c), -1, 1)
                noise = replay_data.actions.clone().normal_(0, self.target_policy_noise)
                noise = noise.clamp(-self.target_noise_clip, self.target_noise_clip)
                next_actions = (self.actor_target(replay_data.next_observations) + noise).clamp(-1, 1)
                next_q_values = th.cat(self.critic_target(replay_data.next_observations, next_actions), dim=1)
                next_q_values, _ = th.min(next_q_values, dim=1, keepdim=True)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * self.gamma * next_q_values

            current_q_values = self.critic(replay_data.observations, replay_data.actions)
            critic_loss = sum(F.mse_loss(current_q, target_q_values) for current_q in current_q_values)
            assert isinstance(critic_loss, th.Tensor)
            critic_losses.append(critic_loss.item())
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            if self._n_updates % self.policy_delay == 0:
                # Eq. (3): lambda Q(s, pi(s)) - (pi(s) - a)^2, lambda = alpha / mean|Q|
                pi = self.actor(replay_data.observations)
                q_pi = self.critic.q1_forward(replay_data.observations, pi)
                lmbda = self.alpha / q_pi.abs().mean().detach()
                bc_loss = F.mse_loss(pi, replay_data.actions)
                actor_loss = -lmbda * q_pi.mean() + bc_loss
                actor_losses.append(actor_loss.item())
                bc_losses.append(bc_loss.item())
                self.actor.optimizer.zero_grad()
                self.fast_path.backward(actor_loss, "actor")
                self.actor.optimizer.step()

                self.fast_path.soft_update("critic", "critic_target", self.tau)
                self.fast_path.soft_update("actor", "actor_target", self.tau)
                polyak_update(self.critic_batch_norm_stats, self.critic_batch_norm_stats_target, 1.0)
                polyak_update(self.actor_batch_norm_stats, self.actor_batch_norm_stats_target, 1.0)

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if len(actor_losses) > 0:
            self.logger.record("train/actor_loss", np.mean(actor_losses))
            self.logger.record("train/bc_loss", np.mean(bc_losses))
        self.logger.record("train/critic_loss", np.mean(critic_losses))

    def learn(
        self: SelfTD3BC,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str = "TD3BC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfTD3BC:
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "actor",
            "critic",
            "actor_target",
            "critic_target",
            "actor_batch_norm_stats",
            "critic_batch_norm_stats",
            "actor_batch_norm_stats_target",
            "critic_batch_norm_stats_target",
            "fast_path",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "actor.optimizer", "critic.optimizer"], []
