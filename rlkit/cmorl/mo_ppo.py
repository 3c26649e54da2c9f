"""Multi-objective PPO: vector critic, per-objective reward normalisation, scalarised or log-barrier actor loss.

The vector reward travels through SB3's machinery unchanged except for three small extensions:
:class:`MODummyVecEnv` (a reward row per env), :class:`MOVecNormalize` (a running return
variance per objective) and :class:`MORolloutBuffer` (vector rewards, values, returns and
advantages; SB3's GAE applied to each objective).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.type_aliases import MaybeCallback, RolloutBufferSamples, Schedule
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs
from stable_baselines3.common.utils import explained_variance
from stable_baselines3.ppo import PPO
from torch.nn import functional as F

from rlkit.cmorl.policies import MOActorCriticPolicy

ACTOR_LOSSES = ("scalarized", "barrier", "objective")


def n_objectives_of(env: gym.Env | VecEnv) -> int:
    """Number of objectives of a vector-reward env, from its ``reward_space`` (MO-Gymnasium's convention).

    :param env: a gymnasium env or a VecEnv of them
    :raises ValueError: if the env has no vector ``reward_space``
    """
    try:
        space = env.get_attr("reward_space")[0] if isinstance(env, VecEnv) else env.get_wrapper_attr("reward_space")
    except AttributeError:
        space = None
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"A multi-objective env needs a 1-D Box `reward_space` (MO-Gymnasium), got {space!r} for {env}")
    return int(space.shape[0])


class MODummyVecEnv(DummyVecEnv):
    """SB3's :class:`~stable_baselines3.common.vec_env.DummyVecEnv` with an ``(n_envs, n_objectives)`` reward.

    :param env_fns: functions that build the vector-reward envs
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]]):
        super().__init__(env_fns)
        self.n_objectives = n_objectives_of(self.envs[0])
        self.buf_rews = np.zeros((self.num_envs, self.n_objectives), dtype=np.float32)


class MOVecNormalize(VecNormalize):
    """SB3's :class:`~stable_baselines3.common.vec_env.VecNormalize` with one return variance per objective.

    Each objective's reward is divided by the running std of its own discounted return and
    clipped (C-MORL's ``obj_rms``); observations are normalised as in SB3.

    :param venv: a vector-reward VecEnv (e.g. :class:`MODummyVecEnv`)
    :param n_objectives: number of objectives
    :param kwargs: :class:`~stable_baselines3.common.vec_env.VecNormalize`'s arguments
    """

    def __init__(self, venv: VecEnv, n_objectives: int, **kwargs: Any):
        self.n_objectives = n_objectives
        super().__init__(venv, **kwargs)
        self.ret_rms = RunningMeanStd(shape=(n_objectives,))
        self.returns = np.zeros((self.num_envs, n_objectives))

    def set_venv(self, venv: VecEnv) -> None:
        super().set_venv(venv)
        self.returns = np.zeros((self.num_envs, self.n_objectives))

    def reset(self) -> VecEnvObs:
        obs = super().reset()
        self.returns = np.zeros((self.num_envs, self.n_objectives))
        return obs

    @property
    def return_scale(self) -> np.ndarray:
        """Per-objective factor from normalised to raw rewards, ``sqrt(var + epsilon)``."""
        return np.sqrt(self.ret_rms.var + self.epsilon)


class MORolloutBuffer(RolloutBuffer):
    """SB3's :class:`~stable_baselines3.common.buffers.RolloutBuffer` with vector rewards, values, returns, advantages.

    ``rewards``, ``returns`` and ``advantages`` have shape ``(n_steps, n_envs, n_objectives)``;
    SB3's ``add`` stores the flattened value vectors, which
    :meth:`compute_returns_and_advantage` reshapes before running SB3's GAE once per objective.
    Samples carry ``(batch, n_objectives)`` values, advantages and returns.

    :param buffer_size: Max number of elements in the buffer
    :param observation_space: Observation space
    :param action_space: Action space
    :param device: PyTorch device
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param gamma: Discount factor
    :param n_envs: Number of parallel environments
    :param n_objectives: Number of objectives
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
        n_objectives: int = 2,
    ):
        self.n_objectives = n_objectives
        super().__init__(buffer_size, observation_space, action_space, device, gae_lambda, gamma, n_envs)

    def reset(self) -> None:
        super().reset()
        shape = (self.buffer_size, self.n_envs, self.n_objectives)
        self.rewards = np.zeros(shape, dtype=np.float32)
        # SB3's add() flattens the value tensor of each step: keep that layout until the rollout ends
        self.values = np.zeros((self.buffer_size, self.n_envs * self.n_objectives), dtype=np.float32)
        self.returns = np.zeros(shape, dtype=np.float32)
        self.advantages = np.zeros(shape, dtype=np.float32)
        self.episode_ends = 0

    def compute_returns_and_advantage(self, last_values: th.Tensor, dones: np.ndarray) -> None:
        """GAE(lambda) advantages and TD(lambda) returns of every objective (SB3's estimator per objective).

        :param last_values: ``(n_envs, n_objectives)`` values of the last observations
        :param dones: whether the last step of each env was terminal
        """
        rewards = self.rewards
        values = self.values.reshape(self.buffer_size, self.n_envs, self.n_objectives)
        last = last_values.reshape(self.n_envs, self.n_objectives)
        advantages, returns = [], []
        for k in range(self.n_objectives):
            self.rewards, self.values = rewards[..., k], values[..., k]
            self.advantages = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)
            super().compute_returns_and_advantage(last[:, k], dones)
            advantages.append(self.advantages)
            returns.append(self.returns)
        self.rewards, self.values = rewards, values
        self.advantages = np.stack(advantages, axis=-1)
        self.returns = np.stack(returns, axis=-1)
        self.episode_ends = int(self.episode_starts[1:].sum() + np.asarray(dones).sum())

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> RolloutBufferSamples:
        data = (
            self.observations[batch_inds],
            self.actions[batch_inds],
            self.values[batch_inds],
            self.log_probs[batch_inds].flatten(),
            self.advantages[batch_inds],
            self.returns[batch_inds],
        )
        return RolloutBufferSamples(*tuple(map(self.to_torch, data)))


class VectorTimeoutBootstrap(BaseCallback):
    """Bootstrap vector rewards at time-limit truncations with the vector critic.

    SB3's ``collect_rollouts`` adds ``gamma * V(terminal_obs)`` to a truncated step's scalar reward;
    with vector rewards this callback, called right after ``env.step``, adds the value vector
    instead and clears ``info["TimeLimit.truncated"]`` so that the step is bootstrapped once.
    """

    def _on_step(self) -> bool:
        rewards, infos, dones = self.locals["rewards"], self.locals["infos"], self.locals["dones"]
        for idx, done in enumerate(dones):
            info = infos[idx]
            if done and info.get("terminal_observation") is not None and info.get("TimeLimit.truncated", False):
                terminal_obs = self.model.policy.obs_to_tensor(info["terminal_observation"])[0]
                with th.no_grad():
                    terminal_value = self.model.policy.predict_values(terminal_obs)[0]
                rewards[idx] += self.model.gamma * terminal_value.cpu().numpy()
                info["TimeLimit.truncated"] = False
        return True


def extended_log_barrier(margin: th.Tensor, t: float) -> th.Tensor:
    """Log-barrier penalty ``-(1/t) log(margin)`` of the constraint ``margin >= 0``, extended linearly below ``1/t^2``.

    The extension (Kervadec et al., 2022, "Constrained deep networks: Lagrangian optimization via
    log-barrier extensions") keeps the penalty finite and its gradient (slope ``t``) pointing back to
    the feasible set when a constraint is violated; above ``1/t^2`` it equals the plain barrier.

    :param margin: constraint margins
    :param t: barrier parameter (larger: closer to the hard constraint)
    :return: penalties, same shape as ``margin``
    """
    z = -margin
    switch = -1.0 / t**2
    inside = -th.log(th.clamp(margin, min=1.0 / t**2)) / t
    outside = t * z - np.log(1.0 / t**2) / t + 1.0 / t
    return th.where(z <= switch, inside, outside)


class MOPPO(PPO):
    """
    Multi-objective PPO with a vector critic, the policy optimiser of C-MORL.

    Paper: https://arxiv.org/abs/2410.02236 (Liu, Pan, Xu, Song, You, Chen, "C-MORL: Multi-Objective
    Reinforcement Learning through Efficient Discovery of Pareto Front", ICLR 2025), §5.1 and §5.3.
    Code: https://github.com/RuohLiuq/C-MORL

    The critic predicts one value per objective and is trained on per-objective GAE returns of
    rewards normalised per objective (:class:`MOVecNormalize`, ``normalize=True``). The actor loss is

    * ``"scalarized"`` (Pareto initialisation): PPO's clipped surrogate on the standardised
      scalarised advantage ``A = w^T (sigma * A_vec)``, where ``sigma`` undoes each objective's
      reward normalisation;
    * ``"barrier"`` (Pareto extension): the clipped surrogate of objective ``l``'s standardised
      advantage plus the interior-point barrier
      ``-(1/t) sum_{j != l} log((G_j(theta) - r_j) - beta (G_j^{pi_r} - r_j))`` (the paper's IPO
      relaxation of ``G_j >= beta G_j^{pi_r}``, with the margin measured from the reference point
      ``r`` = ``ref_point``, default 0, so that keeping ``beta`` of a negative return is slack, not a
      demand for improvement). ``G_j(theta)`` is estimated as the return estimate of the rollout
      policy (:attr:`current_return`) plus ``H`` times the clipped importance-weighted surrogate of
      objective ``j``'s raw advantage, centred over the minibatch so that a biased critic does not
      shift the estimate (CPO's first-order estimate, Achiam et al., 2017), with ``H = min(1/(1-gamma),
      mean episode length in the rollout)``; the paper's text for this estimate could not be read,
      so it is our reconstruction. After every update :attr:`current_return` moves by the same
      estimate evaluated over the whole rollout at the new parameters, so that it follows the
      policy between evaluations (which reset it to the measured return). Violated constraints use
      the linear log-barrier extension (:func:`extended_log_barrier`). ``legacy_ipo=True``
      reproduces the released code instead: barrier terms ``log(max(clip(ratio) * R_j - beta * R_j,
      1e-3))`` with ``R_j`` the minibatch mean of objective ``j``'s normalised returns, over every
      objective and every sample but the ``l``-th;
    * ``"objective"``: the clipped surrogate of objective ``l`` alone, i.e. the extension without
      its constraint (an ablation).

    The value loss is the MSE over all objectives (clipped with ``clip_range_vf`` if given, SB3's
    clipping of the prediction; the released code takes the maximum of the clipped and unclipped
    squared errors).

    :param policy: The policy model to use (MlpPolicy)
    :param env: A vector-reward environment (MO-Gymnasium style, with ``reward_space``) or a VecEnv of them
    :param weights: Preference ``w`` of the scalarised loss (default: uniform)
    :param actor_loss: ``"scalarized"``, ``"barrier"`` or ``"objective"``
    :param objective: Objective ``l`` maximised by the barrier (and objective) loss
    :param constraint_reference: Returns ``G^{pi_r}`` of the policy the extension starts from (barrier loss)
    :param ref_point: Reference point ``r`` from which the constraint margins are measured (``None``: 0)
    :param beta: Fraction of each other objective's margin above ``r`` that must be kept (paper: 0.9)
    :param barrier_t: Barrier parameter ``t`` (paper code: 20)
    :param legacy_ipo: Use the released code's barrier instead of the paper's form
    :param normalize: Wrap the env in :class:`MOVecNormalize` (observations and per-objective rewards,
        clipped to 10) unless it is a ``VecNormalize`` already
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
    :param batch_size: Minibatch size
    :param n_epochs: Number of epoch when optimizing the surrogate loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: Clipping parameter of the surrogate ratio, it can be a function of the current progress
        remaining (from 1 to 0).
    :param clip_range_vf: Clipping parameter for the value function, None (default) for no clipping
    :param ent_coef: Entropy coefficient for the loss calculation
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MOActorCriticPolicy}
    policy: MOActorCriticPolicy
    rollout_buffer: MORolloutBuffer

    def __init__(
        self,
        policy: str | type[MOActorCriticPolicy],
        env: gym.Env | VecEnv,
        weights: Sequence[float] | np.ndarray | None = None,
        actor_loss: str = "scalarized",
        objective: int = 0,
        constraint_reference: Sequence[float] | np.ndarray | None = None,
        ref_point: Sequence[float] | np.ndarray | None = None,
        beta: float = 0.9,
        barrier_t: float = 20.0,
        legacy_ipo: bool = False,
        normalize: bool = True,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 512,
        batch_size: int = 128,
        n_epochs: int = 10,
        gamma: float = 0.995,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        if actor_loss not in ACTOR_LOSSES:
            raise ValueError(f"actor_loss must be one of {', '.join(ACTOR_LOSSES)}, got {actor_loss!r}")
        if not isinstance(env.action_space, spaces.Box):
            raise ValueError(
                f"{type(self).__name__} only supports continuous (gymnasium.spaces.Box) action spaces, "
                f"but the environment has action space {env.action_space}"
            )
        if not isinstance(env, VecEnv):
            env = MODummyVecEnv([lambda: env])
        self.n_objectives = n_objectives_of(env)
        if normalize and not isinstance(env, VecNormalize):
            env = MOVecNormalize(env, self.n_objectives, gamma=gamma, clip_obs=10.0, clip_reward=10.0)
        self.weights = np.full(self.n_objectives, 1.0 / self.n_objectives) if weights is None else np.asarray(weights, float)
        if self.weights.shape != (self.n_objectives,):
            raise ValueError(f"weights must have {self.n_objectives} entries, got {self.weights}")
        if not 0 <= objective < self.n_objectives:
            raise ValueError(f"objective must be in [0, {self.n_objectives}), got {objective}")
        self.actor_loss = actor_loss
        self.objective = objective
        self.constraint_reference = None if constraint_reference is None else np.asarray(constraint_reference, float)
        self.ref_point = np.zeros(self.n_objectives) if ref_point is None else np.asarray(ref_point, float)
        if self.ref_point.shape != (self.n_objectives,):
            raise ValueError(f"ref_point must have {self.n_objectives} entries, got {self.ref_point}")
        #: return estimate of the current policy (its latest evaluation, moved by every update since),
        #: the base of the barrier's return estimate
        self.current_return = self.constraint_reference
        self.beta = beta
        self.barrier_t = barrier_t
        self.legacy_ipo = legacy_ipo
        policy_kwargs = {**(policy_kwargs or {}), "n_objectives": self.n_objectives}
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=True,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            rollout_buffer_class=MORolloutBuffer,
            rollout_buffer_kwargs={"n_objectives": self.n_objectives},
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        """SB3's callback set-up with :class:`VectorTimeoutBootstrap` first."""
        if callback is not None and not isinstance(callback, (list, BaseCallback)):
            callback = ConvertCallback(callback)
        given = callback if isinstance(callback, list) else ([] if callback is None else [callback])
        return super()._init_callback([VectorTimeoutBootstrap(), *given], progress_bar)

    def return_scale(self) -> th.Tensor:
        """Per-objective factor from normalised to raw returns (ones without reward normalisation)."""
        venv = self.get_vec_normalize_env()
        if isinstance(venv, MOVecNormalize) and venv.norm_reward:
            return th.as_tensor(venv.return_scale, dtype=th.float32, device=self.device)
        return th.ones(self.n_objectives, device=self.device)

    def _effective_horizon(self) -> float:
        """``min(1 / (1 - gamma), mean episode length of the rollout)``: scale from a per-step surrogate to a return."""
        steps = self.rollout_buffer.buffer_size * self.rollout_buffer.n_envs
        return float(min(1.0 / (1.0 - self.gamma), steps / max(1, self.rollout_buffer.episode_ends)))

    def _barrier_loss(
        self, rollout_data: RolloutBufferSamples, ratio: th.Tensor, raw_advantages: th.Tensor, clip: float
    ) -> th.Tensor:
        """The barrier term of the extension loss (paper form, or the released code's with ``legacy_ipo``)."""
        t = self.barrier_t
        if self.legacy_ipo:
            mean_returns = rollout_data.returns.mean(dim=0)
            surrogate = th.clamp(ratio, 1 - clip, 1 + clip)[:, None] * mean_returns[None, :]
            keep = th.arange(len(ratio), device=ratio.device) != self.objective
            margin = (surrogate - self.beta * mean_returns[None, :])[keep]
            return -th.log(th.clamp(margin, min=1e-3)).mean() / t
        if self.current_return is None or self.constraint_reference is None:
            raise ValueError("the barrier loss needs `constraint_reference` (and `current_return`) set before training")
        current = th.as_tensor(self.current_return, dtype=th.float32, device=self.device)
        reference = th.as_tensor(self.constraint_reference, dtype=th.float32, device=self.device)
        ref_point = th.as_tensor(self.ref_point, dtype=th.float32, device=self.device)
        estimate = current + self._effective_horizon() * self._surrogate(ratio, raw_advantages, clip)
        margin = (estimate - ref_point) - self.beta * (reference - ref_point)
        others = th.arange(self.n_objectives, device=self.device) != self.objective
        return extended_log_barrier(margin[others], t).sum()

    @staticmethod
    def _surrogate(ratio: th.Tensor, raw_advantages: th.Tensor, clip: float) -> th.Tensor:
        """Per-objective clipped importance-weighted mean of the centred raw advantages (first-order return change)."""
        # centred advantages: at ratio 1 the estimate is the evaluated return, whatever the critic's bias
        centred = raw_advantages - raw_advantages.mean(dim=0, keepdim=True)
        clipped = th.clamp(ratio, 1 - clip, 1 + clip)[:, None]
        return th.min(ratio[:, None] * centred, clipped * centred).mean(dim=0)

    def _refresh_return_estimate(self, clip: float) -> None:
        """Move :attr:`current_return` by the first-order return change of the update just made (whole rollout)."""
        if self.actor_loss != "barrier" or self.legacy_ipo or self.current_return is None:
            return
        ratios, advantages = [], []
        with th.no_grad():
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                _, log_prob, _ = self.policy.evaluate_actions(rollout_data.observations, rollout_data.actions)
                ratios.append(th.exp(log_prob - rollout_data.old_log_prob))
                advantages.append(rollout_data.advantages * self.return_scale())
            change = self._effective_horizon() * self._surrogate(th.cat(ratios), th.cat(advantages), clip)
        self.current_return = np.asarray(self.current_return, dtype=np.float64) + change.cpu().numpy().astype(np.float64)

    def _minibatch_losses(
        self, rollout_data: RolloutBufferSamples, clip: float, clip_vf: float | None
    ) -> dict[str, th.Tensor]:
        """Actor, value and entropy losses of one minibatch, and detached statistics (see the class docstring)."""
        values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, rollout_data.actions)
        log_ratio = log_prob - rollout_data.old_log_prob
        ratio = th.exp(log_ratio)
        raw_advantages = rollout_data.advantages * self.return_scale()
        if self.actor_loss == "scalarized":
            advantages = raw_advantages @ th.as_tensor(self.weights, dtype=th.float32, device=self.device)
        else:
            advantages = raw_advantages[:, self.objective]
        if len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = -th.min(advantages * ratio, advantages * th.clamp(ratio, 1 - clip, 1 + clip)).mean()
        barrier_loss = th.zeros((), device=self.device)
        if self.actor_loss == "barrier":
            barrier_loss = self._barrier_loss(rollout_data, ratio, raw_advantages, clip)
        if clip_vf is not None:
            values = rollout_data.old_values + th.clamp(values - rollout_data.old_values, -clip_vf, clip_vf)
        value_loss = F.mse_loss(rollout_data.returns, values)
        entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
        with th.no_grad():
            statistics = {
                "clip_fraction": th.mean((th.abs(ratio - 1) > clip).float()),
                "approx_kl": th.mean((ratio - 1) - log_ratio),
            }
        return {"policy": policy_loss, "barrier": barrier_loss, "value": value_loss, "entropy": entropy_loss, **statistics}

    def train(self) -> None:
        """Update the policy and the vector critic on the current rollout buffer."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        clip_vf = None if self.clip_range_vf is None else self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        history: dict[str, list[th.Tensor]] = {}
        for _ in range(self.n_epochs):
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                losses = self._minibatch_losses(rollout_data, clip, clip_vf)
                loss = (
                    losses["policy"] + losses["barrier"] + self.ent_coef * losses["entropy"] + self.vf_coef * losses["value"]
                )
                for key, value in {**losses, "loss": loss}.items():
                    history.setdefault(key, []).append(value.detach())
                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
        self._refresh_return_estimate(clip)
        values = self.rollout_buffer.values.reshape(-1, self.n_objectives)
        returns = self.rollout_buffer.returns.reshape(-1, self.n_objectives)
        names = {"policy": "policy_gradient_loss", "value": "value_loss", "entropy": "entropy_loss", "barrier": "barrier_loss"}
        for key, series in history.items():
            self.logger.record(f"train/{names.get(key, key)}", th.stack(series).mean().item())
        for k in range(self.n_objectives):
            self.logger.record(f"train/explained_variance_{k}", explained_variance(values[:, k], returns[:, k]))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip)
