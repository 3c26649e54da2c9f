"""On-policy Mirror Descent Policy Optimization (MDPO).

Tomar, Shani, Efroni, Ghavamzadeh, "Mirror Descent Policy Optimization", ICLR 2022
(arXiv:2005.09814). Official code: github.com/manantomar/Mirror-Descent-Policy-Optimization
(``mdpo_on/``), which this port follows where the paper leaves a detail open.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import (
    ActorCriticCnnPolicy,
    ActorCriticPolicy,
    BasePolicy,
    MultiInputActorCriticPolicy,
)
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance

from rlkit.common.evaluation import EvaluateMixin
from rlkit.common.utils import CheckedArguments, check_box_action_space

SelfMDPO = TypeVar("SelfMDPO", bound="MDPO")


def diagonal_gaussian_kl(mean_new: th.Tensor, std_new: th.Tensor, mean_old: th.Tensor, std_old: th.Tensor) -> th.Tensor:
    """Closed-form KL(pi_new || pi_old) between diagonal Gaussians, summed over the last dimension.

    KL = sum_d [log sigma_old - log sigma_new + (sigma_new^2 + (mu_new - mu_old)^2) / (2 sigma_old^2) - 1/2].
    This is the direction MDPO uses: the new policy is the first argument
    (Tomar et al., 2022, on-policy MDPO; the official code calls ``pi_new.kl(pi_old)``).

    :param mean_new: mean of the new policy, shape ``(batch, action_dim)``
    :param std_new: standard deviation of the new policy
    :param mean_old: mean of the old (anchor) policy
    :param std_old: standard deviation of the old (anchor) policy
    :return: the KL per batch element, shape ``(batch,)``
    """
    var_ratio = (std_new / std_old) ** 2
    mean_term = ((mean_new - mean_old) / std_old) ** 2
    return 0.5 * (var_ratio + mean_term - 1.0 - th.log(var_ratio)).sum(dim=-1)


def mdpo_objective(
    log_prob: th.Tensor,
    old_log_prob: th.Tensor,
    advantages: th.Tensor,
    kl: th.Tensor,
    step_size: float,
) -> th.Tensor:
    """The on-policy MDPO objective Psi(theta, theta_k), to be maximised.

    Psi(theta, theta_k) = mean_i[ pi_theta(a_i|s_i) / pi_k(a_i|s_i) * A_hat_i ]
                          - (1/t_k) * mean_i[ KL(pi_theta(.|s_i) || pi_k(.|s_i)) ]

    (Tomar et al., 2022, on-policy MDPO: the linearised objective of the
    mirror-descent step plus the Bregman (KL) proximity term, estimated with
    samples of pi_k). There is no ratio clipping. At theta = theta_k the ratio is 1 and
    the gradient of the KL term vanishes, so the first step is the vanilla
    policy gradient.

    :param log_prob: log pi_theta(a_i|s_i), with gradient
    :param old_log_prob: log pi_k(a_i|s_i) of the anchor (no gradient)
    :param advantages: advantage estimates A_hat_i
    :param kl: KL(pi_theta || pi_k) per state, with gradient
    :param step_size: the mirror-descent step size t_k > 0 (the KL weight is 1/t_k)
    :return: the scalar objective
    """
    ratio = th.exp(log_prob - old_log_prob)
    return (ratio * advantages).mean() - kl.mean() / step_size


class MDPO(CheckedArguments, EvaluateMixin, OnPolicyAlgorithm):
    """
    On-policy Mirror Descent Policy Optimization (MDPO).

    Paper: https://arxiv.org/abs/2005.09814 (Tomar et al., ICLR 2022)
    Code: https://github.com/manantomar/Mirror-Descent-Policy-Optimization (``mdpo_on``)

    Each iteration k collects ``n_steps`` transitions with pi_k, computes GAE
    advantages, then approximately solves the mirror-descent step

    theta_{k+1} <- argmax_theta Psi(theta, theta_k)
                 = E[pi_theta / pi_k * A_hat] - (1/t_k) E[KL(pi_theta || pi_k)]

    (see :func:`mdpo_objective`) with ``sgd_steps`` (m) full-batch Adam steps on
    the whole rollout against the frozen anchor theta_k, without ratio clipping.
    The KL is the closed-form diagonal-Gaussian KL(new || old)
    (:func:`diagonal_gaussian_kl`). The value function is then fitted with the
    clipped value loss max[(V - R_hat)^2, (V_old + clip(V - V_old, +-eps) - R_hat)^2] over
    ``n_epochs`` epochs of minibatches, as in the official code. The new
    parameters become the next anchor.

    The step size t_k follows the official code by default:
    t_k = 1 - (k - 1)/K for iteration k = 0, 1, ... and K = int(horizon / (n_steps * n_envs)),
    i.e. linearly from 1 + 1/K down to about 1/K, floored at ``min_step_size``. The official
    ``run_mujoco.py`` always calls ``learn(total_timesteps=1e7)``, so its horizon is 10M env steps
    whatever a run's length; that is ``schedule_horizon``'s default, so a 1M-step run anneals t_k
    only from 1 to about 0.9 as the paper's runs do. ``schedule_horizon=None`` anneals over each
    ``learn()`` call's ``total_timesteps`` instead (t_k reaches about 0 at the end of the run).

    Deviations from the paper and its code, on purpose:

    * The paper's code trains the policy and the value function with two Adam
      optimisers; here one Adam optimiser (SB3's ``policy.optimizer``) holds both
      parameter sets. With policy and value networks that share no parameters (the
      default MLP policy) each step only has gradients for one of the two sets and
      Adam's state is per parameter, so the updates are the same.
    * Advantages are normalised with a 1e-8 guard in the denominator (the code has none).
    * Observation and reward normalisation (the code's ``VecNormalize``) are the
      caller's choice, as for every SB3 algorithm: wrap the env in ``VecNormalize``.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: Adam learning rate of the policy and value steps, it can be a function
        of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per iteration
        (the rollout, and so the full batch of the policy steps, has ``n_steps * n_envs`` samples)
    :param batch_size: Minibatch size of the value-function epochs
    :param n_epochs: Number of epochs over the rollout when fitting the value function
    :param sgd_steps: Number m of full-batch gradient steps on Psi(theta, theta_k) per iteration (paper: 10)
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param step_size: The mirror-descent step size t_k (the KL weight is 1/t_k).
        ``None`` anneals it as the official code does (see above); a float keeps it
        constant; a callable maps the progress remaining (from 1 to 0) to t_k.
    :param schedule_horizon: Env steps over which the default t_k anneals (official code: 10M);
        ``None``: the ``total_timesteps`` of each ``learn()`` call
    :param min_step_size: Floor of t_k, so that the KL weight 1/t_k stays finite
    :param clip_range_vf: Clipping parameter of the value loss, it can be a function of the current
        progress remaining (from 1 to 0). ``None`` disables the clipping.
        IMPORTANT: this clipping depends on the reward scaling.
    :param normalize_advantage: Whether to normalize the advantages over the rollout
    :param ent_coef: Entropy bonus coefficient in the policy steps (the paper uses 0)
    :param max_grad_norm: The maximum global norm of the policy gradient in each inner step
        (the value steps are not clipped, as in the official code)
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
        instead of action noise exploration (default: False)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
        Default: -1 (only sample at the beginning of the rollout)
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
        (default: separate [64, 64] tanh policy and value networks, state-independent log-std)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or wrappers used), 2 for
        debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorCriticPolicy,
        "CnnPolicy": ActorCriticCnnPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
    }

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 128,
        n_epochs: int = 5,
        sgd_steps: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        step_size: float | Schedule | None = None,
        schedule_horizon: int | None = 10_000_000,
        min_step_size: float = 1e-3,
        clip_range_vf: float | Schedule | None = 0.2,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        env = check_box_action_space(env, type(self).__name__, verbose)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=1.0,  # unused: the value function is fitted in its own steps
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box,),
        )
        if sgd_steps < 1:
            raise ValueError(f"sgd_steps (m, the number of inner gradient steps) must be >= 1, got {sgd_steps}")
        if n_epochs < 1:
            raise ValueError(f"n_epochs must be >= 1, got {n_epochs}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if schedule_horizon is not None and schedule_horizon < 1:
            raise ValueError(
                f"schedule_horizon must be a positive number of env steps (or None: each learn() call's budget), "
                f"got {schedule_horizon}"
            )
        if min_step_size <= 0:
            raise ValueError(f"min_step_size must be positive, got {min_step_size}")
        if isinstance(step_size, (int, float)) and step_size <= 0:
            raise ValueError(f"step_size (t_k) must be positive, got {step_size}")
        if isinstance(clip_range_vf, (int, float)) and clip_range_vf <= 0:
            raise ValueError(f"clip_range_vf must be positive (or None to disable it), got {clip_range_vf}")
        if normalize_advantage and self.env is not None and self.env.num_envs * n_steps < 2:
            raise ValueError(
                f"n_steps * n_envs must be > 1 to normalise advantages, got n_steps={n_steps}, n_envs={self.env.num_envs}"
            )
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.sgd_steps = sgd_steps
        self.step_size = step_size
        self.schedule_horizon = schedule_horizon
        self.min_step_size = min_step_size
        self.clip_range_vf = clip_range_vf
        self.normalize_advantage = normalize_advantage

        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.step_size is not None:
            self.step_size = FloatSchedule(self.step_size)
        if self.clip_range_vf is not None:
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def _current_step_size(self) -> float:
        """The step size t_k of the iteration whose rollout was just collected.

        With ``step_size=None`` this is the official code's t_k = 1 - (k - 1)/K, with
        k the 0-based iteration index (``num_timesteps`` already counts this rollout)
        and K = int(horizon / (n_steps * n_envs)), the horizon being ``schedule_horizon``
        (or this ``learn()`` call's total_timesteps when it is ``None``).
        """
        if self.step_size is None:
            n_batch = self.n_steps * self.n_envs
            iteration = self.num_timesteps // n_batch - 1
            horizon = self._total_timesteps if self.schedule_horizon is None else self.schedule_horizon
            n_iterations = max(int(horizon) // n_batch, 1)
            step_size = 1.0 - (iteration - 1) / n_iterations
        else:
            step_size = self.step_size(self._current_progress_remaining)  # type: ignore[operator]
        return max(step_size, self.min_step_size)

    def train(self) -> None:
        """
        One mirror-descent iteration on the rollout buffer: ``sgd_steps`` full-batch
        steps on Psi(theta, theta_k), then ``n_epochs`` epochs of clipped value regression.

        ``train/kl``, ``train/policy_gradient_loss`` and ``train/entropy_loss`` are the terms of
        the last inner step's loss, the tensors that step optimised: ``train/kl`` is
        KL(pi_theta || pi_k) at the parameters that step started from (0 when ``sgd_steps=1``).
        """
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        step_size = self._current_step_size()

        rollout = next(self.rollout_buffer.get(batch_size=None))
        observations, actions = rollout.observations, rollout.actions
        advantages = rollout.advantages
        if self.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        # The anchor pi_k is the policy that collected the rollout; nothing has changed it since,
        # so its distribution parameters on the batch are computed once and frozen.
        with th.no_grad():
            anchor = self.policy.get_distribution(observations).distribution
            mean_old, std_old = anchor.mean, anchor.stddev

        for _ in range(self.sgd_steps):
            distribution = self.policy.get_distribution(observations)
            log_prob = distribution.log_prob(actions)
            kl = diagonal_gaussian_kl(distribution.distribution.mean, distribution.distribution.stddev, mean_old, std_old)
            objective = mdpo_objective(log_prob, rollout.old_log_prob, advantages, kl, step_size)
            entropy = distribution.entropy()
            entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
            policy_loss = -objective + self.ent_coef * entropy_loss

            self.policy.optimizer.zero_grad()
            policy_loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()

        clip_range_vf = None if self.clip_range_vf is None else self.clip_range_vf(self._current_progress_remaining)
        value_losses = []
        for _ in range(self.n_epochs):
            for batch in self.rollout_buffer.get(self.batch_size):
                values = self.policy.predict_values(batch.observations).flatten()
                value_loss = (batch.returns - values) ** 2
                if clip_range_vf is not None:
                    values_clipped = batch.old_values + th.clamp(values - batch.old_values, -clip_range_vf, clip_range_vf)
                    value_loss = th.max(value_loss, (batch.returns - values_clipped) ** 2)
                value_loss = value_loss.mean()
                value_losses.append(value_loss.item())

                self.policy.optimizer.zero_grad()
                value_loss.backward()
                self.policy.optimizer.step()

        self._n_updates += self.sgd_steps
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        self.logger.record("train/kl", kl.mean().item())
        self.logger.record("train/step_size", step_size)
        self.logger.record("train/kl_coef", 1.0 / step_size)
        self.logger.record("train/policy_gradient_loss", -objective.item())
        self.logger.record("train/entropy_loss", entropy_loss.item())
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def learn(
        self: SelfMDPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "MDPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMDPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
