"""PMOE-PPO: Proximal Policy Optimization with a probabilistic mixture-of-experts policy (Ren et al., 2021)."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, RolloutBufferSamples, Schedule
from stable_baselines3.common.utils import explained_variance
from stable_baselines3.ppo import PPO
from torch.nn import functional as F

from rlkit.common.evaluation import EvaluateMixin
from rlkit.common.utils import CheckedArguments, check_box_action_space
from rlkit.pmoe.policies import (
    PMOEActorCriticPolicy,
    check_deterministic_expert,
    merge_mixture_kwargs,
)

SelfPMOEPPO = TypeVar("SelfPMOEPPO", bound="PMOEPPO")


class PMOEPPO(CheckedArguments, EvaluateMixin, PPO):
    """
    PMOE-PPO: Proximal Policy Optimization with a probabilistic mixture-of-experts (Gaussian mixture) policy.

    Paper: https://arxiv.org/abs/2104.09122 (Ren, Li, Ding, Pan, Dong, "Probabilistic
    Mixture-of-Experts for Efficient Deep Reinforcement Learning")
    Code: the paper's official code has no PPO variant; this follows ``pmoe_ppo.py`` of
    https://github.com/quantumiracle/Popular-RL-Algorithms (by co-author Zihan Ding). The
    paper's method section could not be read (only its abstract): the formulas below are
    stated from that code and cite the paper's terms rather than equation numbers.

    The policy is the GMM pi(a|s) = sum_k alpha_k(s) N(a; mu_k(s), diag(sigma_k^2)) of K
    Gaussian experts with state-independent log-stds
    (:class:`~rlkit.pmoe.policies.GaussianMixtureDistribution`). Behaviour actions draw the
    expert j ~ Categorical(alpha(s)), then a ~ N(mu_j, sigma_j^2). Each minibatch minimises

        L = L_clip + vf_coef * L_V + ent_coef * L_H + L_alpha + L_Q

    * L_clip: PPO's clipped surrogate with the ratio of *mixture* likelihoods,
      log pi(a|s) = logsumexp_k [log alpha_k(s) + log N(a; mu_k, sigma_k)], so the gradient
      reaches the mixing weights and every expert;
    * L_V: SB3's value loss (optionally clipped by ``clip_range_vf``); L_H: -mean(-log pi(a|s))
      (the mixture has no closed-form entropy);
    * L_Q: MSE of the extra Q-network Q(s, a) to the TD(lambda) returns of the rollout;
    * L_alpha: the routing ("frequency") loss MSE(alpha(s), onehot(k*(s))) with
      k*(s) = argmax_k Q(s, a_k), a_k one fresh (non-reparameterised) sample of each expert,
      all K scored in one batched Q-network call.

    One Adam optimizer over all networks and gradient-norm clipping, as in the reference code
    (on one flat buffer of all the parameters: see :class:`~rlkit.pmoe.policies.PMOEActorCriticPolicy`).
    Deterministic actions: the mean of the most probable expert (``deterministic_expert="argmax"``);
    ``"sample"`` draws the expert from alpha(s) (at construction, or later with
    ``model.deterministic_expert = "sample"``).

    Deviations from the reference code, on purpose:

    * the mixing weights read the detached policy latent (the official PMOE-SAC design) instead
      of a linear layer on the raw observation: the router sees learned features and its
      gradients never change the policy trunk;
    * SB3's value loss: MSE to the returns, clipped only with ``clip_range_vf`` (the reference
      takes the max of the clipped and unclipped squared errors with the policy clip range);
    * deterministic actions use the most probable expert by default (above);
    * ``n_experts`` defaults to 4, as PMOE-SAC (the reference uses 5);
    * the reference normalises observations and rewards (clipped to 10) with env wrappers; here
      that is the environment's business (SB3's ``VecNormalize``).

    :param policy: The policy model to use (MlpPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate (reference: 3e-4, Adam eps 1e-5), it can be a function
        of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update (reference: 2048)
    :param batch_size: Minibatch size (reference: 64)
    :param n_epochs: Number of epoch when optimizing the surrogate loss (reference: 10)
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: Clipping parameter of the surrogate ratio, it can be a function of the current progress
        remaining (from 1 to 0).
    :param clip_range_vf: Clipping parameter for the value function, None (default) for no clipping
    :param normalize_advantage: Whether to normalize or not the advantage
    :param ent_coef: Entropy coefficient for the loss calculation (reference: 0)
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation.
    :param target_kl: Limit the KL divergence between updates (None: no limit)
    :param n_experts: Number K of experts (reference: 5)
    :param deterministic_expert: Expert of a deterministic action: ``"argmax"`` (most probable, default)
        or ``"sample"`` (drawn from the mixing weights)
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
        (``n_experts`` and ``deterministic_expert`` are set from the arguments above; ``q_net_arch``
        sets the Q-network)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or wrappers used), 2 for
        debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": PMOEActorCriticPolicy}
    policy: PMOEActorCriticPolicy

    def __init__(
        self,
        policy: str | type[PMOEActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        n_experts: int = 4,
        deterministic_expert: str = "argmax",
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        env = check_box_action_space(env, type(self).__name__, verbose)
        policy_kwargs = merge_mixture_kwargs(policy_kwargs, n_experts=n_experts, deterministic_expert=deterministic_expert)
        super().__init__(
            policy,
            env,  # type: ignore[arg-type]
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _minibatch_losses(
        self, rollout_data: RolloutBufferSamples, clip_range: float, clip_range_vf: float | None
    ) -> dict[str, th.Tensor]:
        """The PMOE-PPO losses of one minibatch (see the class docstring).

        :param rollout_data: the minibatch
        :param clip_range: the current clip range of the ratio
        :param clip_range_vf: the current clip range of the value, None for no clipping
        :return: the losses ``policy``, ``value``, ``entropy``, ``routing``, ``q``, and the detached
            statistics ``clip_fraction``, ``approx_kl`` and ``mixing_entropy``
        """
        observations, actions = rollout_data.observations, rollout_data.actions
        if isinstance(observations, th.Tensor) and observations.dtype == th.float64:
            # What every network's preprocessing does first, once here instead of once per network call
            observations = observations.float()
        values, log_prob, distribution = self.policy.evaluate_mixture(observations, actions)
        values = values.flatten()

        advantages = rollout_data.advantages
        if self.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        log_ratio = log_prob - rollout_data.old_log_prob
        ratio = th.exp(log_ratio)
        policy_loss = -th.min(advantages * ratio, advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)).mean()

        if clip_range_vf is not None:
            values = rollout_data.old_values + th.clamp(values - rollout_data.old_values, -clip_range_vf, clip_range_vf)
        value_loss = F.mse_loss(rollout_data.returns, values)

        q_loss = F.mse_loss(self.policy.q_net(observations, actions)[0].flatten(), rollout_data.returns)
        with th.inference_mode():
            best_index = self.policy.expert_q_values(observations, distribution.expert_samples()).argmax(dim=1)
        weights = distribution.weights
        routing_loss = F.mse_loss(weights, F.one_hot(best_index, self.policy.n_experts).to(weights.dtype))

        with th.no_grad():
            statistics = {
                "clip_fraction": th.mean((th.abs(ratio - 1) > clip_range).float()),
                "approx_kl": th.mean((ratio - 1) - log_ratio),
                "mixing_entropy": -(weights * distribution.log_weights).sum(dim=1).mean(),  # type: ignore[operator]
            }
        losses = {
            "policy": policy_loss,
            "value": value_loss,
            "entropy": th.mean(log_prob),
            "routing": routing_loss,
            "q": q_loss,
        }
        return {**losses, **statistics}

    def train(self) -> None:
        """Update the policy, value, mixing and Q networks on the current rollout buffer."""
        self.policy.set_training_mode(True)
        self.policy.refresh_flat_parameters()
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        clip_range_vf = None
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        # Statistics stay tensors until the end of the call: one device synchronisation per call
        history: dict[str, list[th.Tensor]] = {}
        continue_training = True
        for epoch in range(self.n_epochs):
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                losses = self._minibatch_losses(rollout_data, clip_range, clip_range_vf)
                for key, value in losses.items():
                    history.setdefault(key, []).append(value.detach())

                if self.target_kl is not None and losses["approx_kl"].item() > 1.5 * self.target_kl:
                    continue_training = False
                    self.logger.log(f"Early stopping at step {epoch} due to reaching max kl: {losses['approx_kl'].item():.2f}")
                    break

                loss = (
                    losses["policy"]
                    + self.ent_coef * losses["entropy"]
                    + self.vf_coef * losses["value"]
                    + losses["routing"]
                    + losses["q"]
                )
                history.setdefault("loss", []).append(loss.detach())
                self.policy.backward_and_clip(loss, self.max_grad_norm)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        means = {key: th.stack(values).mean().item() for key, values in history.items()}
        self.logger.record("train/entropy_loss", means["entropy"])
        self.logger.record("train/policy_gradient_loss", means["policy"])
        self.logger.record("train/value_loss", means["value"])
        self.logger.record("train/routing_loss", means["routing"])
        self.logger.record("train/q_loss", means["q"])
        self.logger.record("train/mixing_entropy", means["mixing_entropy"])
        self.logger.record("train/approx_kl", means["approx_kl"])
        self.logger.record("train/clip_fraction", means["clip_fraction"])
        if "loss" in history:
            self.logger.record("train/loss", history["loss"][-1].item())
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    @property
    def deterministic_expert(self) -> str:
        """Expert of deterministic actions: ``"argmax"`` (most probable) or ``"sample"`` (drawn from alpha(s))."""
        return self.policy.action_dist.deterministic_expert

    @deterministic_expert.setter
    def deterministic_expert(self, mode: str) -> None:
        check_deterministic_expert(mode)
        self.policy.action_dist.deterministic_expert = mode
        self.policy_kwargs["deterministic_expert"] = mode  # what ``save`` stores

    def learn(
        self: SelfPMOEPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PMOEPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPMOEPPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
