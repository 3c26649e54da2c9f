"""FISOR: feasibility-guided safe offline RL with a diffusion policy."""

from __future__ import annotations

import math
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import polyak_update, update_learning_rate
from torch.nn import functional as F

from rlkit.common.buffers import OfflineReplayBufferSamples
from rlkit.common.diffusion import Denoiser, denoising_loss
from rlkit.common.networks import ValueNetwork
from rlkit.common.offline import OfflineAlgorithm
from rlkit.data.minari import OfflineDataset
from rlkit.fisor.policies import FISORPolicy, MlpPolicy

SelfFISOR = TypeVar("SelfFISOR", bound="FISOR")


def feasibility_target(h: th.Tensor, next_v_h: th.Tensor, mask: th.Tensor, gamma: float) -> th.Tensor:
    """Discounted Hamilton-Jacobi reachability target of ``Q_h`` (FISOR eq. 5, the reach-avoid form of its code).

    ``y_h = (1 - gamma) h(s) + gamma max(h(s), V_h(s'))`` where the episode goes on, ``y_h = h(s)`` where it ends.

    :param h: constraint violation ``h(s, a)`` (positive: unsafe)
    :param next_v_h: ``V_h(s')``
    :param mask: 1 where the episode continues, 0 at terminals (and timeouts)
    :param gamma: discount factor
    """
    continued = (1.0 - gamma) * h + gamma * th.maximum(h, next_v_h)
    return mask * continued + (1.0 - mask) * h


def lower_expectile_loss(diff: th.Tensor, expectile: float) -> th.Tensor:
    """FISOR's feasibility value loss ``E[|tau - 1(u > 0)| u^2]`` with ``u = Q_h - V_h`` (eq. 6).

    The weight is ``tau`` where ``Q_h < V_h``: with ``tau > 0.5`` ``V_h`` tends to the
    minimum of ``Q_h`` over in-dataset actions (the opposite side of IQL's value).

    :param diff: ``Q_h(s, a) - V_h(s)``
    :param expectile: ``tau`` in (0.5, 1)
    """
    weight = th.where(diff < 0, expectile, 1.0 - expectile)
    return (weight * diff.pow(2)).mean()


def fisor_weights(
    v_h: th.Tensor,
    q_h: th.Tensor,
    advantage: th.Tensor,
    reward_temperature: float,
    cost_temperature: float,
    max_reward_weight: float,
    max_cost_weight: float,
) -> th.Tensor:
    """FISOR's three-case weight of the denoising loss (eq. 10).

    - infeasible state, ``V_h(s) > 0``: ``clip(exp(alpha_h (V_h(s) - Q_h(s, a))), 0, max_cost_weight)``,
      favouring actions that lower the feasibility value;
    - feasible state and safe action, ``Q_h(s, a) <= 0``: ``clip(exp(alpha_r A_r(s, a)), 0, max_reward_weight)``;
    - feasible state, unsafe action: 0.

    :param v_h: ``V_h(s)``
    :param q_h: ``Q_h(s, a)`` (pessimistic: the maximum over the critics)
    :param advantage: reward advantage ``Q(s, a) - V(s)``
    :param reward_temperature: ``alpha_r``
    :param cost_temperature: ``alpha_h``
    :param max_reward_weight: clip of the reward weight
    :param max_cost_weight: clip of the cost weight
    """
    cost_weight = th.exp(cost_temperature * (v_h - q_h)).clamp(0.0, max_cost_weight)
    reward_weight = th.exp(reward_temperature * advantage).clamp(0.0, max_reward_weight)
    feasible_weight = th.where(q_h <= 0, reward_weight, th.zeros_like(reward_weight))
    return th.where(v_h > 0, cost_weight, feasible_weight)


class FISOR(OfflineAlgorithm):
    """Feasibility-guided safe offline RL (Zheng et al., ICLR 2024).

    Paper: https://arxiv.org/abs/2401.10700

    The constraint is hard (zero violation): with ``h(s, a) = cost_scale`` where the
    step's cost is positive and ``-1`` otherwise, the feasible region is
    ``{s : V_h(s) <= 0}``. Each gradient step (one iteration of the official
    code) draws ``batch_size`` transitions and, in this order:

    1. two actor updates, on the two halves of the batch, of the weighted denoising
       loss ``E[w(s, a) ||eps_theta(s, a_t, t) - eps||^2]`` (eq. 11) with the
       three-case weight :func:`fisor_weights` computed from the critics before
       this step's updates; the EMA actor follows with rate ``actor_ema``;
    2. IQL's reward value ``V`` (expectile ``expectile``) and critics ``Q``, on the first
       ``critic_batch_size`` transitions;
    3. the feasibility value ``V_h`` by the lower expectile :func:`lower_expectile_loss`
       (eq. 6) and the feasibility critics ``Q_h`` by the HJ target
       :func:`feasibility_target` (eq. 5); Polyak updates of both target critics.

    Acting samples ``n_candidates`` actions from the EMA actor and executes the one with
    the least ``Q_h`` (:class:`~rlkit.fisor.policies.FISORPolicy`). As in the official
    code, timeouts count as terminals in both Bellman targets, rewards are scaled by
    ``T / (max return - min return)`` of the dataset (``T`` the env's time limit, 1000 for DSRL's tasks), and dataset
    actions are clipped to ``+-(1 - 1e-5)``. The actor's learning rate decays with a
    cosine over ``schedule_horizon`` gradient steps, 3M as the official code, whatever the budget
    of each ``learn`` call. The
    denoiser is by default an MLP with LayerNorm and Mish, small enough for a CPU;
    ``policy_kwargs=dict(net_arch=dict(pi=[1024], qf=[256, 256]), residual_blocks=3, dropout=0.1)``
    gives the official code's residual denoiser. ``policy_kwargs=dict(fresh_noise=True)`` acts
    as the official code does, with new sampler noise at every step.

    :param policy: the policy model ("MlpPolicy")
    :param env: the environment, its id, or ``None`` (spaces from the dataset)
    :param dataset: an ``OfflineDataset`` with ``costs``, a Minari id or a path
    :param learning_rate: learning rate of every network
    :param batch_size: transitions per gradient step (two actor updates on its halves)
    :param critic_batch_size: transitions of the batch used by the critics and values
    :param tau: soft update coefficient of the target critics
    :param gamma: discount factor
    :param actor_ema: update rate of the EMA actor
    :param expectile: expectile of the reward value (IQL)
    :param cost_expectile: lower-side expectile of the feasibility value
    :param reward_temperature: ``alpha_r`` of the reward weight
    :param cost_temperature: ``alpha_h`` of the feasibility weight
    :param max_reward_weight: clip of the reward weight
    :param max_cost_weight: clip of the feasibility weight
    :param cost_scale: ``h`` of a step with positive cost (``-1`` otherwise)
    :param cosine_actor_lr: anneal the actor's learning rate to 0 with a cosine over ``schedule_horizon``
    :param schedule_horizon: gradient steps the schedules anneal over (the official code's 3M); ``None``: each
        ``learn`` call
    :param normalize_obs: normalise observations with the dataset's mean and std (the code does not)
    :param normalize_reward: scale rewards by ``max episode length / (max return - min return)``
    :param policy_kwargs: keyword arguments of the policy (``n_candidates``, ``n_timesteps``, ``net_arch``...)
    :param tensorboard_log: tensorboard log folder
    :param verbose: verbosity level
    :param seed: seed of the pseudo random generators
    :param device: device (cpu, cuda, auto)
    :param _init_setup_model: build the networks at construction
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: FISORPolicy
    actor: Denoiser
    actor_target: Denoiser
    critic: ContinuousCritic
    critic_target: ContinuousCritic
    value: ValueNetwork
    cost_critic: ContinuousCritic
    cost_critic_target: ContinuousCritic
    cost_value: ValueNetwork

    def __init__(
        self,
        policy: str | type[FISORPolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
        learning_rate: float | Schedule = 3e-4,
        batch_size: int = 2048,
        critic_batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        actor_ema: float = 0.001,
        expectile: float = 0.9,
        cost_expectile: float = 0.9,
        reward_temperature: float = 3.0,
        cost_temperature: float = 5.0,
        max_reward_weight: float = 100.0,
        max_cost_weight: float = 150.0,
        cost_scale: float = 25.0,
        cosine_actor_lr: bool = True,
        schedule_horizon: int | None = 3_000_000,
        normalize_obs: bool = False,
        normalize_reward: bool = True,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        for name, value in (("expectile", expectile), ("cost_expectile", cost_expectile)):
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value} (FISOR uses 0.9)")
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (two actor updates on its halves), got {batch_size}")
        self.critic_batch_size = critic_batch_size
        self.tau = tau
        self.actor_ema = actor_ema
        self.expectile = expectile
        self.cost_expectile = cost_expectile
        self.reward_temperature = reward_temperature
        self.cost_temperature = cost_temperature
        self.max_reward_weight = max_reward_weight
        self.max_cost_weight = max_cost_weight
        self.cost_scale = cost_scale
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
            schedule_horizon=schedule_horizon,
            policy_kwargs=policy_kwargs,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.replay_buffer is not None and self.replay_buffer.costs is None:
            raise ValueError(
                f"{type(self).__name__} needs a dataset with per-step costs (OfflineDataset.costs, info['cost'] in Minari); "
                "generate one with rlkit.data.safe.generate_safe"
            )
        self.actor = self.policy.actor
        self.actor_target = self.policy.actor_target
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target
        self.value = self.policy.value
        self.cost_critic = self.policy.cost_critic
        self.cost_critic_target = self.policy.cost_critic_target
        self.cost_value = self.policy.cost_value
        self._timeouts = None
        if self.replay_buffer is not None:
            self._timeouts = th.as_tensor(self.replay_buffer.dataset.timeouts, device=self.device).unsqueeze(1)

    def _reward_transform(self, dataset: OfflineDataset) -> tuple[float, float]:
        if not self.normalize_reward:
            return 1.0, 0.0
        returns = dataset.episode_returns
        spread = float(returns.max() - returns.min())
        return (self.episode_horizon(dataset) / spread if spread > 0 else 1.0), 0.0

    def _actor_learning_rate(self) -> float:
        learning_rate = self.lr_schedule(self._current_progress_remaining)
        if self.cosine_actor_lr:
            learning_rate *= 0.5 * (1.0 + math.cos(math.pi * (1.0 - self._current_progress_remaining)))
        return learning_rate

    def _sample(self, batch_size: int) -> tuple[OfflineReplayBufferSamples, th.Tensor]:
        """A batch and its continuation mask ``1 - (terminal or timeout)``."""
        assert self.replay_buffer is not None and self._timeouts is not None
        inds = th.randint(self.replay_buffer.buffer_size, (batch_size,), device=self.device)
        data = self.replay_buffer._get_samples(inds)
        mask = 1.0 - th.clamp(data.dones + self._timeouts[inds], max=1.0)
        return data, mask

    def weights(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """The three-case weights :func:`fisor_weights` of ``(s, a)`` pairs under the current critics, ``(batch,)``.

        :param obs: (normalised) observations
        :param actions: actions in ``[-1, 1]``
        """
        with th.no_grad():
            advantage = self.policy.reward_q(obs, actions) - self.value(obs)
            q_h = self.policy.feasibility_q(obs, actions)
            weights = fisor_weights(
                self.cost_value(obs),
                q_h,
                advantage,
                self.reward_temperature,
                self.cost_temperature,
                self.max_reward_weight,
                self.max_cost_weight,
            )
        return weights.squeeze(1)

    def train(self, gradient_steps: int, batch_size: int = 2048) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.critic.optimizer, self.value.optimizer])
        self._update_learning_rate([self.cost_critic.optimizer, self.cost_value.optimizer])
        actor_learning_rate = self._actor_learning_rate()
        update_learning_rate(self.actor.optimizer, actor_learning_rate)
        logs: dict[str, list[float]] = {
            k: [] for k in ("actor_loss", "critic_loss", "value_loss", "cost_critic_loss", "cost_value_loss", "weight")
        }
        for _ in range(gradient_steps):
            self._n_updates += 1
            data, mask = self._sample(batch_size)
            obs, next_obs = data.observations, data.next_observations
            actions = data.actions.clamp(-1.0 + 1e-5, 1.0 - 1e-5)
            assert data.costs is not None
            h = th.where(data.costs > 0, self.cost_scale, -1.0)

            # Eq. (10)-(11): two weighted denoising updates on the halves of the batch
            weights = self.weights(obs, actions)
            logs["weight"].append(weights.mean().item())
            half = batch_size // 2
            for part in (slice(0, half), slice(half, 2 * half)):
                actor_loss = denoising_loss(self.actor, self.policy.schedule, obs[part], actions[part], weights[part])
                logs["actor_loss"].append(actor_loss.item())
                self.actor.optimizer.zero_grad()
                actor_loss.backward()
                self.actor.optimizer.step()
                polyak_update(self.actor.parameters(), self.actor_target.parameters(), self.actor_ema)

            part = slice(0, min(self.critic_batch_size, batch_size))
            obs, next_obs, actions, mask, h = obs[part], next_obs[part], actions[part], mask[part], h[part]
            rewards = data.rewards[part]

            # IQL's reward value (expectile regression) and critics
            with th.no_grad():
                target_q = self.policy.reward_q(obs, actions)
            diff = target_q - self.value(obs)
            value_loss = (th.abs(self.expectile - (diff < 0).float()) * diff.pow(2)).mean()
            logs["value_loss"].append(value_loss.item())
            self.value.optimizer.zero_grad()
            value_loss.backward()
            self.value.optimizer.step()
            with th.no_grad():
                target = rewards + mask * self.gamma * self.value(next_obs)
            critic_loss = sum(F.mse_loss(q, target) for q in self.critic(obs, actions))
            assert isinstance(critic_loss, th.Tensor)
            logs["critic_loss"].append(critic_loss.item())
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()
            polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)

            # Eq. (6): feasibility value, lower expectile of the pessimistic Q_h
            with th.no_grad():
                target_q_h = self.policy.feasibility_q(obs, actions)
            cost_value_loss = lower_expectile_loss(target_q_h - self.cost_value(obs), self.cost_expectile)
            logs["cost_value_loss"].append(cost_value_loss.item())
            self.cost_value.optimizer.zero_grad()
            cost_value_loss.backward()
            self.cost_value.optimizer.step()

            # Eq. (5): HJ reachability Bellman update of Q_h
            with th.no_grad():
                target_h = feasibility_target(h, self.cost_value(next_obs), mask, self.gamma)
            cost_critic_loss = sum(F.mse_loss(q, target_h) for q in self.cost_critic(obs, actions))
            assert isinstance(cost_critic_loss, th.Tensor)
            logs["cost_critic_loss"].append(cost_critic_loss.item())
            self.cost_critic.optimizer.zero_grad()
            cost_critic_loss.backward()
            self.cost_critic.optimizer.step()
            polyak_update(self.cost_critic.parameters(), self.cost_critic_target.parameters(), self.tau)

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/actor_learning_rate", actor_learning_rate)
        for key, values in logs.items():
            self.logger.record(f"train/{key}", np.mean(values))

    def learn(
        self: SelfFISOR,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str = "FISOR",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfFISOR:
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "actor",
            "actor_target",
            "critic",
            "critic_target",
            "value",
            "cost_critic",
            "cost_critic_target",
            "cost_value",
            "_timeouts",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        optimizers = ["actor", "critic", "value", "cost_critic", "cost_value"]
        return ["policy", *[f"{name}.optimizer" for name in optimizers]], []
