"""PMOE-SAC: Soft Actor-Critic with a probabilistic mixture-of-experts policy (Ren et al., 2021)."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, TypeVar

import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import polyak_update
from torch.nn import functional as F

from rlkit.common.evaluation import EvaluateMixin
from rlkit.common.fast_sac import FastSAC
from rlkit.common.utils import CheckedArguments, check_box_action_space
from rlkit.pmoe.policies import (
    PMOEActor,
    PMOESACPolicy,
    check_deterministic_expert,
    gather_expert,
    merge_mixture_kwargs,
)

SelfPMOESAC = TypeVar("SelfPMOESAC", bound="PMOESAC")


class PMOELosses(NamedTuple):
    """The PMOE-SAC policy losses of one batch and what they were built from."""

    #: mean_s [ ent_coef * log pi_{k*}(a_{k*}|s) - Q_{k*}(s) ], differentiable through expert k* only
    actor_loss: th.Tensor
    #: MSE(alpha(s), onehot(k*(s))), differentiable through the mixing layer only
    routing_loss: th.Tensor
    #: log pi_{k*}(a_{k*}|s), shape ``(B, 1)``
    best_log_prob: th.Tensor
    #: k*(s) = argmax_k min_i Q_i(s, a_k), shape ``(B,)``
    best_index: th.Tensor


class PMOESAC(CheckedArguments, EvaluateMixin, FastSAC):
    """
    PMOE-SAC: Soft Actor-Critic with a probabilistic mixture-of-experts (Gaussian mixture) policy.

    Paper: https://arxiv.org/abs/2104.09122 (Ren, Li, Ding, Pan, Dong, "Probabilistic
    Mixture-of-Experts for Efficient Deep Reinforcement Learning")
    Code: https://github.com/JieRen98/rlkit-pmoe (``rlkit/torch/PMOEsac``), followed where the
    paper's text leaves a detail open. The paper's method section could not be read (only its
    abstract), so the formulas below are stated from the official code and cite the paper's
    terms (GMM policy, frequency approximate gradient) rather than equation numbers; no
    disagreement between the paper and rlkit's spec could be checked.

    The policy is the GMM pi(a|s) = sum_k alpha_k(s) pi_k(a|s) of K tanh-Gaussian experts
    (:class:`~rlkit.pmoe.policies.PMOEActor`). The choice of an expert is not differentiable;
    the paper's frequency approximate gradient replaces it. On each batch:

    1. one reparameterised sample per expert and state, a_k = tanh(mu_k(s) + sigma_k(s) eps_k),
       with its *component* log-density l_k = log pi_k(a_k|s);
    2. Q_k(s) = min(Q1, Q2)(s, a_k) for all K samples in ONE batched critic call;
       k*(s) = argmax_k Q_k(s);
    3. actor loss: L_pi = mean_s [ ent_coef * l_{k*} - Q_{k*}(s) ]: only the best expert (and the
       shared trunk) gets a gradient. It is computed with a second critic call on the B best
       actions only, back-propagated into the actor's parameters only (no critic weight
       gradients): the same gradient as back-propagating through the selection in step 2,
       without a backward pass through the B * K evaluations;
    4. routing ("frequency") loss: L_alpha = MSE(alpha(s), onehot(k*(s))), the mean over the batch
       and the K weights; its minimiser is alpha_k(s) = P(k is the best expert | s). The mixing
       layer reads the detached trunk, so L_alpha trains the mixing layer only;
    5. one Adam step on L_pi + L_alpha;
    6. temperature (``ent_coef="auto"``): L(log ent_coef) = -mean[log ent_coef * (l_{k*} + H_target)];
    7. critic target: at s' the expert j is *sampled* from alpha(s') (not the argmax), and
       y = r + gamma (1 - d) [min(Q1', Q2')(s', a'_j) - ent_coef * log pi_j(a'_j|s')].

    With K = 1 every loss is exactly SB3's SAC's on the same batch and random stream.

    Deterministic actions: ``predict(obs, deterministic=True)`` returns tanh(mu_j(s)) of the most
    probable expert j = argmax_k alpha_k(s) (``deterministic_expert="argmax"``). The official
    evaluation policy samples j from alpha(s) instead; ``deterministic_expert="sample"`` does that
    (at construction, or later with ``model.deterministic_expert = "sample"``).

    Deviations from the official code, on purpose:

    * deterministic actions use the most probable expert by default (above);
    * SB3's SAC update order: the critic is updated first, then k* and the actor loss use the
      updated critic; the official code scores the experts with the critic before its update
      (and back-propagates through weights changed in place, an error in current PyTorch).
      The target and the actor loss use ent_coef before this batch's temperature step, as SB3
      does; the official code uses the value after it;
    * SB3's network initialisation (PyTorch defaults) instead of rlkit's fan-in init with
      heads in U(+-1e-3), so that PMOE-SAC and SB3's SAC differ only in the mixture;
    * one twin-critic optimizer and SB3's critic loss 0.5 * (MSE1 + MSE2) instead of two Adam
      optimizers on MSE1 and MSE2 (the same Adam steps, Adam being invariant to the factor 0.5);
    * the target's next action samples expert j first and then only that expert; the official
      code samples all K and keeps j's (the same distribution).

    :param policy: The policy model to use (MlpPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: learning rate for adam optimizer (actor, critics and temperature; paper's code: 3e-4),
        it can be a function of the current progress remaining (from 1 to 0)
    :param buffer_size: size of the replay buffer
    :param learning_starts: how many steps of the model to collect transitions for before learning starts
        (paper's code: 1000, the default here; SB3's SAC: 100)
    :param batch_size: Minibatch size for each gradient update (paper's code: 256)
    :param tau: the soft update coefficient ("Polyak update", between 0 and 1; paper's code: 5e-3)
    :param gamma: the discount factor
    :param train_freq: Update the model every ``train_freq`` steps. Alternatively pass a tuple of frequency and unit
        like ``(5, "step")`` or ``(2, "episode")``.
    :param gradient_steps: How many gradient steps to do after each rollout (see ``train_freq``)
        Set to ``-1`` means to do as many gradient steps as steps done in the environment
        during the rollout.
    :param action_noise: the action noise type (None by default), added to the behaviour actions
    :param replay_buffer_class: Replay buffer class to use. If ``None``, it will be automatically selected.
    :param replay_buffer_kwargs: Keyword arguments to pass to the replay buffer on creation.
    :param optimize_memory_usage: Enable a memory efficient variant of the replay buffer
        at a cost of more complexity.
    :param n_steps: When n_step > 1, uses n-step return (with the NStepReplayBuffer) when updating the Q-value network.
    :param ent_coef: Entropy regularization coefficient ("auto": learned, as in the paper's code, starting at 1.0;
        "auto_0.1": learned, starting at 0.1; a float: fixed)
    :param target_update_interval: update the target network every ``target_update_interval`` gradient steps.
    :param target_entropy: target entropy when learning ``ent_coef`` ("auto": -dim(A), as in the paper's code)
    :param n_experts: Number K of experts (paper's code: 4)
    :param deterministic_expert: Expert of a deterministic action: ``"argmax"`` (most probable, default)
        or ``"sample"`` (drawn from the mixing weights, as the official evaluation policy)
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
        (``n_experts`` and ``deterministic_expert`` are set from the arguments above)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or wrappers used), 2 for
        debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": PMOESACPolicy}
    policy: PMOESACPolicy
    actor: PMOEActor

    def __init__(
        self,
        policy: str | type[PMOESACPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 1000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        ent_coef: str | float = "auto",
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
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
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            ent_coef=ent_coef,
            target_update_interval=target_update_interval,
            target_entropy=target_entropy,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _current_ent_coef(self) -> th.Tensor:
        """The entropy coefficient, detached from the temperature's graph."""
        if self.log_ent_coef is not None:
            return th.exp(self.log_ent_coef.detach())
        return self.ent_coef_tensor

    def _critic_loss(self, replay_data: ReplayBufferSamples, ent_coef: th.Tensor) -> th.Tensor:
        """0.5 * sum_i MSE(Q_i(s, a), y), with the next expert j ~ Categorical(alpha(s')) in the target y.

        :param replay_data: the batch
        :param ent_coef: the entropy coefficient
        :return: the critic loss
        """
        discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
        with th.no_grad():
            next_actions, next_log_prob = self.actor.action_log_prob(replay_data.next_observations)
            next_q_values = th.cat(self.critic_target(replay_data.next_observations, next_actions), dim=1)
            next_q_values, _ = th.min(next_q_values, dim=1, keepdim=True)
            next_q_values = next_q_values - ent_coef * next_log_prob.reshape(-1, 1)
            target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values
        current_q_values = self.critic(replay_data.observations, replay_data.actions)
        critic_loss = 0.5 * sum(F.mse_loss(current_q, target_q_values) for current_q in current_q_values)
        assert isinstance(critic_loss, th.Tensor)
        return critic_loss

    def _policy_losses(
        self,
        observations: th.Tensor,
        expert_actions: th.Tensor,
        expert_log_prob: th.Tensor,
        weights: th.Tensor,
        ent_coef: th.Tensor,
    ) -> PMOELosses:
        """The actor loss through the best expert and the routing (frequency) loss.

        The K samples are scored in ONE batched critic call, without gradient; the actor loss
        then evaluates the critic once more on the B best actions only (``train`` back-propagates
        it into the actor's parameters only). This is the gradient of back-propagating through
        the argmax selection of the K scores, at a fraction of the cost (no backward pass through
        the B * K critic evaluations, no critic weight gradients).

        :param observations: the states s, batch of size B
        :param expert_actions: one reparameterised action per expert, shape ``(B, K, action_dim)``
        :param expert_log_prob: their component log-densities log pi_k(a_k|s), shape ``(B, K)``
        :param weights: the mixing weights alpha(s), shape ``(B, K)``
        :param ent_coef: the entropy coefficient
        :return: the losses, see :class:`PMOELosses`
        """
        batch_size, n_experts = expert_log_prob.shape
        with th.no_grad():
            repeated_obs = observations.repeat_interleave(n_experts, dim=0)
            q_values = th.cat(self.critic(repeated_obs, expert_actions.reshape(batch_size * n_experts, -1)), dim=1)
            best_index = th.min(q_values, dim=1).values.reshape(batch_size, n_experts).argmax(dim=1)
        best_q_values = th.cat(self.critic(observations, gather_expert(expert_actions, best_index)), dim=1)
        best_q = th.min(best_q_values, dim=1, keepdim=True).values
        best_log_prob = expert_log_prob.gather(1, best_index.unsqueeze(1))
        actor_loss = (ent_coef * best_log_prob - best_q).mean()
        routing_loss = F.mse_loss(weights, F.one_hot(best_index, n_experts).to(weights.dtype))
        return PMOELosses(actor_loss, routing_loss, best_log_prob.detach(), best_index)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)

        # Statistics stay tensors until the end of the call: one device synchronisation per call
        stats: dict[str, list[th.Tensor]] = {}
        for gradient_step in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            # The experts' samples are drawn first, as SAC draws its actor sample first
            expert_actions, expert_log_prob, weights = self.actor.expert_actions_log_prob(replay_data.observations)
            ent_coef = self._current_ent_coef()

            critic_loss = self._critic_loss(replay_data, ent_coef)
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            losses = self._policy_losses(replay_data.observations, expert_actions, expert_log_prob, weights, ent_coef)

            step_stats = {
                "ent_coef": ent_coef.reshape(()),
                "actor_loss": losses.actor_loss.detach(),
                "critic_loss": critic_loss.detach(),
                "routing_loss": losses.routing_loss.detach(),
                "mixing_entropy": th.special.entr(weights.detach()).sum(dim=1).mean(),
            }
            if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
                assert isinstance(self.target_entropy, float)
                ent_coef_loss = -(self.log_ent_coef * (losses.best_log_prob + self.target_entropy)).mean()
                self.ent_coef_optimizer.zero_grad()
                ent_coef_loss.backward()
                self.ent_coef_optimizer.step()
                step_stats["ent_coef_loss"] = ent_coef_loss.detach()

            self.actor.optimizer.zero_grad()
            self.fast_path.backward(losses.actor_loss + losses.routing_loss, "actor")
            self.actor.optimizer.step()

            if gradient_step % self.target_update_interval == 0:
                self.fast_path.soft_update("critic", "critic_target", self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

            for key, value in step_stats.items():
                stats.setdefault(key, []).append(value)

        self._n_updates += gradient_steps

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in stats.items():
            self.logger.record(f"train/{key}", th.stack(values).mean().item())

    @property
    def deterministic_expert(self) -> str:
        """Expert of deterministic actions: ``"argmax"`` (most probable) or ``"sample"`` (drawn from alpha(s))."""
        return self.actor.deterministic_expert

    @deterministic_expert.setter
    def deterministic_expert(self, mode: str) -> None:
        check_deterministic_expert(mode)
        self.actor.deterministic_expert = mode
        self.policy_kwargs["deterministic_expert"] = mode  # what ``save`` stores

    def learn(
        self: SelfPMOESAC,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "PMOESAC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPMOESAC:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
