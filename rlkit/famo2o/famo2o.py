"""FamO2O and IQL offline-to-online: offline pretraining on a dataset, then fine-tuning in the env."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import safe_mean, update_learning_rate
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from rlkit.common.buffers import OfflineReplayBufferSamples
from rlkit.data.minari import OfflineDataset
from rlkit.famo2o.policies import BalanceModel, FamO2OPolicy
from rlkit.iql.iql import IQL
from rlkit.iql.policies import IQLPolicy

SelfIQLO2O = TypeVar("SelfIQLO2O", bound="IQLO2O")


class OfflineToOnlineReplayBuffer(ReplayBuffer):
    """SB3's ``ReplayBuffer`` that starts with an offline dataset and keeps the new transitions after it.

    It stores raw observations, actions in ``[-1, 1]`` and raw rewards, and samples
    uniformly over the dataset and the new data alike; each batch gets the same
    transforms as a :class:`~rlkit.common.buffers.DatasetReplayBuffer`: the dataset's
    observation normalisation and ``reward_scale * r + reward_shift``. ``dones`` are
    true terminations (time-limit truncations bootstrap).

    :param buffer_size: capacity (dataset + new transitions; the oldest are overwritten beyond it)
    :param observation_space: observation space
    :param action_space: action space
    :param device: device of the sampled tensors
    :param obs_mean: per-dimension observation mean, or ``None`` for no normalisation
    :param obs_std: per-dimension observation standard deviation
    :param reward_scale: multiplies the rewards of each batch
    :param reward_shift: added to the scaled rewards of each batch
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        device: th.device | str = "auto",
        obs_mean: np.ndarray | None = None,
        obs_std: np.ndarray | None = None,
        reward_scale: float = 1.0,
        reward_shift: float = 0.0,
    ) -> None:
        super().__init__(buffer_size, observation_space, action_space, device=device, n_envs=1)
        self.obs_mean = None if obs_mean is None else th.as_tensor(obs_mean, dtype=th.float32, device=self.device)
        self.obs_std = None if obs_std is None else th.as_tensor(obs_std, dtype=th.float32, device=self.device)
        self.reward_scale = reward_scale
        self.reward_shift = reward_shift

    def add_dataset(self, dataset: OfflineDataset, scaled_actions: np.ndarray) -> None:
        """Write every transition of ``dataset`` (from the current position).

        :param dataset: the offline transitions
        :param scaled_actions: the dataset's actions rescaled to ``[-1, 1]``
        """
        n = len(dataset)
        if n > self.buffer_size:
            raise ValueError(f"The dataset has {n} transitions but the buffer holds only {self.buffer_size}")
        window = slice(self.pos, self.pos + n)
        if window.stop > self.buffer_size:
            raise ValueError(f"The dataset ({n} transitions) does not fit after position {self.pos} of the buffer")
        self.observations[window, 0] = dataset.observations
        self.next_observations[window, 0] = dataset.next_observations
        self.actions[window, 0] = scaled_actions
        self.rewards[window, 0] = dataset.rewards
        self.dones[window, 0] = dataset.terminals
        self.timeouts[window, 0] = 0.0
        self.pos = window.stop % self.buffer_size
        self.full = self.full or window.stop == self.buffer_size

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> OfflineReplayBufferSamples:
        data = super()._get_samples(batch_inds, env)
        rewards = data.rewards
        if self.reward_scale != 1.0 or self.reward_shift != 0.0:
            rewards = self.reward_scale * rewards + self.reward_shift
        return OfflineReplayBufferSamples(
            observations=self.normalize_obs(data.observations),
            actions=data.actions,
            next_observations=self.normalize_obs(data.next_observations),
            dones=data.dones,
            rewards=rewards,
        )

    def normalize_obs(self, obs: th.Tensor) -> th.Tensor:
        """Apply the dataset's observation normalisation to a tensor of observations."""
        if self.obs_mean is None or self.obs_std is None:
            return obs.float()
        return (obs.float() - self.obs_mean) / self.obs_std


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Switch off the gradients of the parameters of ``modules`` inside the block (they still pass gradients on)."""
    params = [param for module in modules for param in module.parameters() if param.requires_grad]
    for param in params:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in params:
            param.requires_grad_(True)


class IQLO2O(IQL):
    """IQL offline-to-online (Kostrikov, Nair & Levine, ICLR 2022, section 5.3): the baseline of FamO2O.

    Paper: https://arxiv.org/abs/2110.06169

    One object runs both phases. :meth:`learn_offline` (``n`` gradient steps) is IQL on
    the dataset. :meth:`learn` (``total_timesteps`` env steps) fine-tunes online: each
    env step adds one transition, acting with a sample of the policy, to SB3's
    ``ReplayBuffer`` holding the whole dataset plus the new data
    (:class:`OfflineToOnlineReplayBuffer`, sampled uniformly), then runs one IQL
    gradient step on it. The dataset's observation normalisation and reward scale are
    kept online. The model can be saved between (or after) the phases and loaded with
    ``load(path, env=..., dataset=...)`` to continue; the online buffer is not saved,
    a loaded model starts a new one from the dataset.

    As in FamO2O's IQL configuration the learning rates are constant
    (``cosine_actor_lr=False``) and the coefficient is IQL's ``beta``. ``num_timesteps``
    counts gradient steps in :meth:`learn_offline` and env steps in :meth:`learn`;
    ``offline_gradient_steps`` keeps the offline count.

    :param policy: the policy model ("MlpPolicy")
    :param env: the environment (needed by the online phase), its id, or ``None``
    :param dataset: an ``OfflineDataset``, a Minari id or a path
    :param learning_rate: learning rate of every network
    :param batch_size: minibatch size
    :param tau: soft update coefficient of the target critics
    :param gamma: discount factor
    :param expectile: expectile ``tau`` of the value loss, in (0.5, 1)
    :param beta: inverse temperature of the advantage weights
    :param exp_adv_max: cap of the advantage weights
    :param cosine_actor_lr: anneal the actor's learning rate to 0 with a cosine over each ``learn`` call
    :param normalize_obs: normalise observations with the dataset's mean and std
    :param normalize_reward: scale rewards by ``max episode length / (max return - min return)`` of the dataset
    :param reward_scale: rewards are ``reward_scale * r + reward_shift`` (when ``normalize_reward`` is False)
    :param reward_shift: see ``reward_scale``
    :param buffer_size: capacity of the online replay buffer (default: the dataset plus the first
        ``learn`` call's env steps, so nothing is overwritten)
    :param online_data: add the online transitions to the buffer; ``False`` is the control arm of an
        offline-to-online comparison: the online phase acts and takes the same gradient steps on the
        dataset alone, so its change in score is what the extra gradient steps give without new data
    :param policy_kwargs: keyword arguments of the policy
    :param tensorboard_log: tensorboard log folder
    :param verbose: verbosity level
    :param seed: seed of the pseudo random generators
    :param device: device (cpu, cuda, auto)
    :param _init_setup_model: build the networks at construction
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": IQLPolicy}
    replay_buffer: Any

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
        cosine_actor_lr: bool = False,
        normalize_obs: bool = True,
        normalize_reward: bool = True,
        reward_scale: float = 1.0,
        reward_shift: float = 0.0,
        buffer_size: int | None = None,
        online_data: bool = True,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if buffer_size is not None and buffer_size <= 0:
            raise ValueError(f"buffer_size must be positive, got {buffer_size}")
        self.buffer_size = buffer_size
        self.online_data = online_data
        self.online = False
        self.offline_gradient_steps = 0
        super().__init__(
            policy,
            env,
            dataset=dataset,
            learning_rate=learning_rate,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            expectile=expectile,
            beta=beta,
            exp_adv_max=exp_adv_max,
            cosine_actor_lr=cosine_actor_lr,
            normalize_obs=normalize_obs,
            normalize_reward=normalize_reward,
            reward_scale=reward_scale,
            reward_shift=reward_shift,
            policy_kwargs=policy_kwargs,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def learn_offline(
        self: SelfIQLO2O,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfIQLO2O:
        """Offline phase: ``total_timesteps`` gradient steps on the dataset.

        :param total_timesteps: number of gradient steps
        :param callback: callback(s) called after every gradient step
        :param log_interval: dump the logger every ``log_interval`` gradient steps
        :param tb_log_name: name of the run for tensorboard (default ``<class>_offline``)
        :param reset_num_timesteps: restart the gradient-step counter (``False`` continues it)
        :param progress_bar: show a progress bar over gradient steps
        :return: the trained model
        """
        if self.online:
            raise ValueError(f"{type(self).__name__} is in its online phase: learn_offline must come before learn")
        super().learn(
            total_timesteps,
            callback,
            log_interval,
            tb_log_name or f"{type(self).__name__}_offline",
            reset_num_timesteps,
            progress_bar,
        )
        self.offline_gradient_steps = self.num_timesteps
        return self

    def learn(
        self: SelfIQLO2O,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfIQLO2O:
        """Online phase: ``total_timesteps`` env steps, each followed by one gradient step on dataset + new data.

        :param total_timesteps: number of env steps
        :param callback: callback(s) called after every env step
        :param log_interval: dump the logger every ``log_interval`` env steps
        :param tb_log_name: name of the run for tensorboard (default ``<class>_online``)
        :param reset_num_timesteps: restart the step counter and the episode (``False`` continues them)
        :param progress_bar: show a progress bar over env steps
        :return: the trained model
        """
        if self.env is None:
            raise ValueError(
                f"{type(self).__name__}.learn is the online phase and needs an env: pass env= (or load with env=)"
            )
        if not isinstance(self.replay_buffer, OfflineToOnlineReplayBuffer):
            self.replay_buffer = self._online_buffer(total_timesteps)
        self.online = True
        total_timesteps, callback = BaseAlgorithm._setup_learn(
            self, total_timesteps, callback, reset_num_timesteps, tb_log_name or f"{type(self).__name__}_online", progress_bar
        )
        callback.on_training_start(locals(), globals())
        while self.num_timesteps < total_timesteps:
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            actions, _ = self.predict(self._last_obs, deterministic=False)
            new_obs, rewards, dones, infos = self.env.step(actions)
            self.num_timesteps += self.env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                break
            self._update_info_buffer(infos, dones)
            next_obs = new_obs.copy()
            for i, done in enumerate(dones):
                if done and infos[i].get("terminal_observation") is not None:
                    next_obs[i] = infos[i]["terminal_observation"]
            if self.online_data:
                self.replay_buffer.add(self._last_obs, next_obs, self.policy.scale_action(actions), rewards, dones, infos)
            self._last_obs = new_obs
            self._episode_num += int(dones.sum())
            self.train(gradient_steps=1, batch_size=self.batch_size)
            if log_interval > 0 and self.num_timesteps % log_interval == 0:
                self.dump_logs()
        callback.on_training_end()
        return self

    def _online_buffer(self, total_timesteps: int) -> OfflineToOnlineReplayBuffer:
        """SB3's replay buffer filled with the dataset, with room for the online transitions."""
        if not isinstance(self.dataset, OfflineDataset):
            raise ValueError(
                f"{type(self).__name__} has no dataset to start its online buffer from: pass dataset= at construction "
                f"or to {type(self).__name__}.load(path, env=..., dataset=...)"
            )
        reward_scale, reward_shift = self._reward_transform(self.dataset)
        buffer = OfflineToOnlineReplayBuffer(
            self.buffer_size or len(self.dataset) + total_timesteps,
            self.observation_space,
            self.action_space,
            device=self.device,
            obs_mean=self.obs_mean,
            obs_std=self.obs_std,
            reward_scale=reward_scale,
            reward_shift=reward_shift,
        )
        buffer.add_dataset(self.dataset, self.policy.scale_action(self.dataset.actions))
        return buffer

    def dump_logs(self) -> None:
        """Record the episode statistics of the online phase (if any), then the timing keys, and dump."""
        if self.online and self.ep_info_buffer:
            self.logger.record("rollout/ep_rew_mean", safe_mean([info["r"] for info in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([info["l"] for info in self.ep_info_buffer]))
        super().dump_logs()


class FamO2O(IQLO2O):
    """FamO2O on IQL: state-adaptive improvement/constraint balances (Wang et al., NeurIPS 2023).

    Paper: https://arxiv.org/abs/2310.17966

    The balance coefficient is IQL's inverse temperature ``beta`` (eq. (7) of IQL).
    A universal policy ``pi_u(a|s, beta)`` takes ``concat(s, enc(beta))`` with the sin/cos
    encoding :func:`~rlkit.famo2o.policies.balance_encoding`; a balance model
    ``pi_b(beta|s)`` is a 1-D tanh-Gaussian over ``u`` in ``(-1, 1)``, mapped to the
    coefficient by ``beta = low + (u + 1) / 2 (high - low)`` with ``beta_range = (low, high)``.
    This is the mapping of the official IQL variant; it keeps the balance model's
    coefficients inside the range the universal policy was pretrained on (the CQL
    variant's ``low + u (high - low)`` reaches below ``low``, outside that range).

    Each gradient step (on top of IQL's value and critic updates, in the order of
    :class:`~rlkit.iql.IQL`):

    - balance model (the paper's "balance model" objective): ``u ~ pi_b(.|s)``,
      ``a ~ pi_u(.|s, beta(u))`` reparameterised through the frozen universal policy,
      ``L_b = E[alpha_b log pi_b(u|s) - min_j Q'_j(s, a)]`` on the target critics;
    - its temperature: ``L_alpha = alpha_b (H_b - H_target)``, ``H_b = -E[log pi_b]``;
    - universal policy, IQL's eq. (7) per sample:
      ``L_u = -E[min(exp(beta_i (Q_hat(s, a) - V(s))), exp_adv_max) log pi_u(a|s, enc(beta_i))]``
      with ``beta_i ~ U(low, high)`` in the offline phase and ``beta_i ~ pi_b(.|s_i)`` (before
      this step's balance update, no gradient) in the online phase.

    Acting (online data collection and evaluation) uses the balance model's
    deterministic ``beta(s)``; online actions are samples of ``pi_u``, evaluation
    actions its mean. The defaults are the IQL locomotion settings of the paper's
    IQL variant: expectile 0.7, ``beta_range = (1, 5)``, balance target entropy -0.5,
    ``alpha_b`` initialised at 1, constant learning rates.

    :param policy: the policy model ("MlpPolicy")
    :param env: the environment (needed by the online phase), its id, or ``None``
    :param dataset: an ``OfflineDataset``, a Minari id or a path
    :param learning_rate: learning rate of every network (and of ``alpha_b``)
    :param batch_size: minibatch size
    :param tau: soft update coefficient of the target critics
    :param gamma: discount factor
    :param expectile: expectile ``tau`` of the value loss, in (0.5, 1)
    :param beta_range: ``(low, high)`` of the balance coefficient (antmaze: ``(8, 14)``)
    :param encoding_dim: size of the sin/cos encoding of ``beta`` (even)
    :param encoding_base: base of the encoding's frequencies
    :param balance_target_entropy: target entropy ``H_target`` of the balance model
    :param exp_adv_max: cap of the advantage weights
    :param cosine_actor_lr: anneal the universal policy's learning rate to 0 with a cosine over each ``learn`` call
    :param normalize_obs: normalise observations with the dataset's mean and std
    :param normalize_reward: scale rewards by ``max episode length / (max return - min return)`` of the dataset
    :param reward_scale: rewards are ``reward_scale * r + reward_shift`` (when ``normalize_reward`` is False)
    :param reward_shift: see ``reward_scale``
    :param buffer_size: capacity of the online replay buffer (default: dataset + the first ``learn`` call's steps)
    :param online_data: add the online transitions to the buffer (``False``: the no-new-data control, see
        :class:`IQLO2O`)
    :param policy_kwargs: keyword arguments of the policy (:class:`~rlkit.famo2o.policies.FamO2OPolicy`)
    :param tensorboard_log: tensorboard log folder
    :param verbose: verbosity level
    :param seed: seed of the pseudo random generators
    :param device: device (cpu, cuda, auto)
    :param _init_setup_model: build the networks at construction
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": FamO2OPolicy}
    policy: FamO2OPolicy
    balance: BalanceModel

    def __init__(
        self,
        policy: str | type[FamO2OPolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
        learning_rate: float | Schedule = 3e-4,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        expectile: float = 0.7,
        beta_range: tuple[float, float] | list[float] = (1.0, 5.0),
        encoding_dim: int = 6,
        encoding_base: float = 10000.0,
        balance_target_entropy: float = -0.5,
        exp_adv_max: float = 100.0,
        cosine_actor_lr: bool = False,
        normalize_obs: bool = True,
        normalize_reward: bool = True,
        reward_scale: float = 1.0,
        reward_shift: float = 0.0,
        buffer_size: int | None = None,
        online_data: bool = True,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if len(beta_range) != 2 or not float(beta_range[0]) < float(beta_range[1]):
            raise ValueError(f"beta_range must be (low, high) with low < high, got {beta_range}")
        self.beta_range = (float(beta_range[0]), float(beta_range[1]))
        self.encoding_dim = encoding_dim
        self.encoding_base = encoding_base
        self.balance_target_entropy = balance_target_entropy
        self.beta_mean = float("nan")
        super().__init__(
            policy,
            env,
            dataset=dataset,
            learning_rate=learning_rate,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            expectile=expectile,
            beta=float(np.mean(self.beta_range)),
            exp_adv_max=exp_adv_max,
            cosine_actor_lr=cosine_actor_lr,
            normalize_obs=normalize_obs,
            normalize_reward=normalize_reward,
            reward_scale=reward_scale,
            reward_shift=reward_shift,
            buffer_size=buffer_size,
            online_data=online_data,
            policy_kwargs=policy_kwargs,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _setup_model(self) -> None:
        self.policy_kwargs = {
            "beta_range": self.beta_range,
            "encoding_dim": self.encoding_dim,
            "encoding_base": self.encoding_base,
            **self.policy_kwargs,
        }
        super()._setup_model()
        self.balance = self.policy.balance

    def actor_coefficients(self, obs: th.Tensor) -> th.Tensor:
        """The coefficients ``beta_i`` of the universal policy's loss: uniform offline, the balance model's online.

        :param obs: normalised observations of the minibatch
        :return: ``(batch, 1)`` coefficients, without gradient
        """
        if not self.online:
            low, high = self.beta_range
            return low + (high - low) * th.rand(obs.shape[0], 1, device=self.device)
        with th.no_grad():
            return self.policy.coefficient(self.balance.sample(obs)[0])

    def _update_balance(self, obs: th.Tensor) -> tuple[float, float, float]:
        """One step of the balance model and of its temperature.

        :param obs: normalised observations
        :return: the balance loss, the temperature loss and the entropy estimate ``-E[log pi_b]``
        """
        with frozen(self.actor, self.critic_target):
            u, log_prob = self.balance.sample(obs)
            beta = self.policy.coefficient(u)
            actions = self.actor.distribution(self.policy.actor_input(obs, beta)).rsample()
            q_value = th.min(th.cat(self.critic_target(obs, actions), dim=1), dim=1)[0]
            alpha = self.balance.log_alpha.exp().detach()
            balance_loss = (alpha * log_prob - q_value).mean()
        self.balance.optimizer.zero_grad()
        balance_loss.backward()
        self.balance.optimizer.step()

        entropy = -log_prob.detach().mean()
        alpha_loss = self.balance.log_alpha.exp() * (entropy - self.balance_target_entropy)
        self.balance.alpha_optimizer.zero_grad()
        alpha_loss.backward()
        self.balance.alpha_optimizer.step()
        return balance_loss.item(), alpha_loss.item(), entropy.item()

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(
            [self.critic.optimizer, self.value.optimizer, self.balance.optimizer, self.balance.alpha_optimizer]
        )
        actor_learning_rate = self._actor_learning_rate()
        update_learning_rate(self.actor.optimizer, actor_learning_rate)
        keys = ("actor_loss", "critic_loss", "value_loss", "advantage", "balance_loss", "alpha_loss", "entropy")
        logs: dict[str, list[float]] = {key: [] for key in keys}
        for _ in range(gradient_steps):
            self._n_updates += 1
            replay_data = self.replay_buffer.sample(batch_size)  # type: ignore[union-attr]
            obs, actions = replay_data.observations, replay_data.actions
            actor_beta = self.actor_coefficients(obs)
            advantage, value_loss, critic_loss = self._update_value_and_critic(replay_data)
            balance_loss, alpha_loss, entropy = self._update_balance(obs)

            # IQL's eq. (7) with a coefficient per sample, on the universal policy
            exp_advantage = th.exp(actor_beta * advantage).clamp(max=self.exp_adv_max).squeeze(1)
            log_prob = self.actor.log_prob(self.policy.actor_input(obs, actor_beta), actions)
            actor_loss = -(exp_advantage * log_prob).mean()
            self.actor.optimizer.zero_grad()
            actor_loss.backward()
            self.actor.optimizer.step()

            for key, value in zip(
                logs,
                (actor_loss.item(), critic_loss, value_loss, advantage.mean().item(), balance_loss, alpha_loss, entropy),
                strict=True,
            ):
                logs[key].append(value)
        with th.no_grad():
            self.beta_mean = self.policy.balance_coefficient(obs).mean().item()

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/actor_learning_rate", actor_learning_rate)
        for key, values in logs.items():
            self.logger.record(f"train/{key}", np.mean(values))
        self.logger.record("train/balance_alpha", self.balance.log_alpha.exp().item())
        self.logger.record("train/beta_mean", self.beta_mean)

    def progress_info(self) -> dict[str, float]:
        """The balance model's mean deterministic coefficient on the last minibatch (added to benchmark curves)."""
        return {"beta_mean": self.beta_mean}

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "balance"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return [*state_dicts, "balance.optimizer", "balance.alpha_optimizer"], variables
