"""A2PR: adaptive advantage-guided policy regularisation for offline RL."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import polyak_update
from torch.nn import functional as F

from rlkit.a2pr.policies import A2PRPolicy, ConditionalVAE, MlpPolicy
from rlkit.common.networks import ValueNetwork
from rlkit.data.minari import OfflineDataset
from rlkit.td3bc import TD3BC

SelfA2PR = TypeVar("SelfA2PR", bound="A2PR")


def bc_target_and_gate(
    q_data: th.Tensor,
    q_vae: th.Tensor,
    value: th.Tensor,
    data_actions: th.Tensor,
    vae_actions: th.Tensor,
    threshold: float = 0.0,
) -> tuple[th.Tensor, th.Tensor]:
    """A2PR's behaviour-cloning target and gate (section 4 of the paper, ``A2PR.py`` of the official code).

    The target is whichever of the dataset action and the VAE reconstruction of the
    policy's action has the higher advantage ``Q(s, .) - V(s)``; ties go to the VAE
    action. The gate is 1 where either candidate is an improvement: the VAE action with
    ``A >= threshold`` or the dataset action with ``A > threshold`` (a logical OR: it is
    never 2), else 0, which switches the BC term off for that state.

    :param q_data: ``Q(s, a)`` of the dataset actions, shape ``(batch, 1)``
    :param q_vae: ``Q(s, a_vae)`` of the VAE actions, shape ``(batch, 1)``
    :param value: ``V(s)``, shape ``(batch, 1)``
    :param data_actions: dataset actions, shape ``(batch, action_dim)``
    :param vae_actions: VAE reconstructions of the policy's actions, shape ``(batch, action_dim)``
    :param threshold: advantage threshold ``epsilon_A`` (0 in the official code)
    :return: the target actions and the gate (``(batch, 1)``, 0 or 1)
    """
    adv_data, adv_vae = q_data - value, q_vae - value
    take_vae = adv_vae >= adv_data
    target = th.where(take_vae, vae_actions, data_actions)
    gate = th.logical_or(adv_vae >= threshold, adv_data > threshold)
    return target, gate.to(q_data.dtype)


class A2PR(TD3BC):
    """A2PR (Liu et al., 2024, "Adaptive Advantage-Guided Policy Regularization for Offline Reinforcement Learning").

    Paper: https://arxiv.org/abs/2405.19909 (ICML 2024); official code: github.com/ltlhuuu/A2PR

    TD3+BC whose behaviour-cloning term is selective. Each gradient step:

    1. TD3's critic update with target policy smoothing.
    2. ``V(s)`` regressed (MSE, not expectile) to ``min(r + gamma * min_i Q_i(s', a~'), y)``
       with the just-updated critics at the same smoothed target action ``a~'``; so ``V``
       tracks the value of the behaviour policy and ``Q - V`` is an advantage over it.
    3. The VAE (the "augmented behaviour policy") reconstructs only dataset actions with
       positive advantage ``Q_1(s, a) > V(s)``: its reconstruction error is masked and
       weighted by ``vae_weight``, plus a KL term of weight ``kl_weight``; both are
       averaged over the whole batch, as in the official code.
    4. Every ``policy_delay`` steps the actor minimises
       ``-lambda * Q_1(s, pi(s)) + mask_weight * gate * (pi(s) - a*)^2`` with TD3+BC's
       ``lambda = alpha / mean|Q_1(s, pi(s))|``, where ``a*`` and ``gate`` come from
       :func:`bc_target_and_gate` comparing the dataset action and the VAE
       reconstruction of ``pi(s)``; the targets are soft-updated.

    As in the official code, the gradient of the BC term flows through the VAE
    reconstruction of ``pi(s)`` into the actor (the VAE itself is only updated by its own
    loss). Actions are in ``[-1, 1]`` units, so the noise scales are relative to the
    action bound. The defaults are the official code's; the per-dataset ``alpha``,
    ``vae_weight``, ``mask_weight`` and ``gamma`` of the authors' README are in the
    ``d4rl`` and ``d4rl-local`` suites.

    :param policy: the policy model ("MlpPolicy")
    :param env: the environment, its id, or ``None`` (spaces from the dataset)
    :param dataset: an ``OfflineDataset``, a Minari id or a path
    :param learning_rate: learning rate of actor, critics and ``V``
    :param vae_learning_rate: learning rate of the VAE (PyTorch's default 1e-3 in the official code)
    :param batch_size: minibatch size
    :param tau: soft update coefficient of the target networks
    :param gamma: discount factor
    :param alpha: weight of the Q term relative to the BC term (``lambda`` numerator)
    :param vae_weight: weight of the VAE's masked reconstruction loss
    :param kl_weight: weight of the VAE's KL term
    :param mask_weight: weight of the gated BC term in the actor loss (``mask`` in the official code)
    :param advantage_threshold: ``epsilon_A``: advantages above it count as positive
    :param policy_delay: the actor and the targets are updated every ``policy_delay`` critic updates
    :param target_policy_noise: std of the Gaussian noise added to the target action
    :param target_noise_clip: clip of that noise
    :param normalize_obs: normalise observations with the dataset's mean and std
    :param reward_scale: rewards are ``reward_scale * r + reward_shift`` in training
    :param reward_shift: see ``reward_scale``
    :param policy_kwargs: keyword arguments of the policy (e.g. ``net_arch``, ``vae_net_arch``)
    :param tensorboard_log: tensorboard log folder
    :param verbose: verbosity level
    :param seed: seed of the pseudo random generators
    :param device: device (cpu, cuda, auto)
    :param _init_setup_model: build the networks at construction
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: A2PRPolicy
    value: ValueNetwork
    vae: ConditionalVAE

    def __init__(
        self,
        policy: str | type[A2PRPolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
        learning_rate: float | Schedule = 3e-4,
        vae_learning_rate: float = 1e-3,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        alpha: float = 2.5,
        vae_weight: float = 1.0,
        kl_weight: float = 0.5,
        mask_weight: float = 1.0,
        advantage_threshold: float = 0.0,
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
        self.vae_weight = vae_weight
        self.kl_weight = kl_weight
        self.mask_weight = mask_weight
        self.advantage_threshold = advantage_threshold
        policy_kwargs = {"vae_learning_rate": vae_learning_rate, **(policy_kwargs or {})}
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
        self.value = self.policy.value
        self.vae = self.policy.vae

    def _fast_path_networks(self) -> dict[str, th.nn.Module]:
        return {**super()._fast_path_networks(), "value": self.policy.value, "vae": self.policy.vae}

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer, self.value.optimizer])
        actor_params = list(self.actor.parameters())
        logs: dict[str, list[float]] = {
            key: [] for key in ("critic_loss", "value_loss", "vae_loss", "actor_loss", "bc_loss", "gate", "vae_target")
        }
        for _ in range(gradient_steps):
            self._n_updates += 1
            data = self.replay_buffer.sample(batch_size)  # type: ignore[union-attr]
            obs, actions = data.observations, data.actions
            not_done = 1 - data.dones

            # 1. TD3 critic update
            with th.no_grad():
                noise = (
                    actions.clone().normal_(0, self.target_policy_noise).clamp(-self.target_noise_clip, self.target_noise_clip)
                )
                next_actions = (self.actor_target(data.next_observations) + noise).clamp(-1, 1)
                next_q = th.min(th.cat(self.critic_target(data.next_observations, next_actions), dim=1), dim=1, keepdim=True)[
                    0
                ]
                target_q = data.rewards + not_done * self.gamma * next_q
            critic_loss = sum(F.mse_loss(q, target_q) for q in self.critic(obs, actions))
            assert isinstance(critic_loss, th.Tensor)
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            # 2. V(s) towards min(r + gamma min_i Q_i(s', a~'), y), with the updated critics.
            # One batched call of the updated critics gives Q(s', a~') and Q_1(s, a).
            with th.no_grad():
                q_all = th.cat(self.critic(th.cat([data.next_observations, obs]), th.cat([next_actions, actions])), dim=1)
                next_q_new = th.min(q_all[: len(obs)], dim=1, keepdim=True)[0]
                q_data = q_all[len(obs) :, :1]
                value_target = th.min(data.rewards + not_done * self.gamma * next_q_new, target_q)
            value = self.value(obs)
            value_loss = F.mse_loss(value, value_target)
            self.value.optimizer.zero_grad()
            value_loss.backward()
            self.value.optimizer.step()
            value = value.detach()

            # 3. VAE on positive-advantage dataset actions only (masked, averaged over the batch)
            positive = (q_data > value + self.advantage_threshold).to(actions.dtype)
            reconstruction, mean, std = self.vae(obs, actions)
            recon_loss = (positive * (reconstruction - actions) ** 2).mean()
            kl_loss = (-0.5 * (1 + th.log(std.pow(2)) - mean.pow(2) - std.pow(2))).mean()
            vae_loss = self.vae_weight * recon_loss + self.kl_weight * kl_loss
            self.vae.optimizer.zero_grad()
            vae_loss.backward()
            self.vae.optimizer.step()

            logs["critic_loss"].append(critic_loss.item())
            logs["value_loss"].append(value_loss.item())
            logs["vae_loss"].append(vae_loss.item())

            if self._n_updates % self.policy_delay == 0:
                # 4. Actor: lambda-normalised Q plus the gated BC term towards the better candidate
                pi = self.actor(obs)
                q_pi = self.critic.q1_forward(obs, pi)
                lmbda = self.alpha / q_pi.abs().mean().detach()
                vae_actions, _, _ = self.vae(obs, pi)
                with th.no_grad():
                    q_vae = self.critic.q1_forward(obs, vae_actions)
                target, gate = bc_target_and_gate(q_data, q_vae, value, actions, vae_actions, self.advantage_threshold)
                bc_loss = (self.mask_weight * gate * (pi - target) ** 2).mean()
                actor_loss = -lmbda * q_pi.mean() + bc_loss
                self.actor.optimizer.zero_grad()
                # only the actor's gradients are needed (the critic and the VAE have their own losses)
                actor_loss.backward(inputs=actor_params)
                self.actor.optimizer.step()

                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.actor.parameters(), self.actor_target.parameters(), self.tau)
                polyak_update(self.critic_batch_norm_stats, self.critic_batch_norm_stats_target, 1.0)
                polyak_update(self.actor_batch_norm_stats, self.actor_batch_norm_stats_target, 1.0)
                logs["actor_loss"].append(actor_loss.item())
                logs["bc_loss"].append(bc_loss.item())
                logs["gate"].append(gate.mean().item())
                logs["vae_target"].append((q_vae >= q_data).float().mean().item())

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in logs.items():
            if values:
                self.logger.record(f"train/{key}", np.mean(values))

    def learn(
        self: SelfA2PR,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str = "A2PR",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfA2PR:
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "value", "vae"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "actor.optimizer", "critic.optimizer", "value.optimizer", "vae.optimizer"], []
