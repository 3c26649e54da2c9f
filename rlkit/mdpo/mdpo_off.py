"""Off-policy Mirror Descent Policy Optimization (MDPO), on top of SB3's SAC.

Tomar, Shani, Efroni, Ghavamzadeh, "Mirror Descent Policy Optimization", ICLR 2022
(arXiv:2005.09814). Official code: github.com/manantomar/Mirror-Descent-Policy-Optimization
(``mdpo_off/``), which this port follows where the paper leaves a detail open.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import polyak_update
from torch.nn import functional as F

from rlkit.common.evaluation import EvaluateMixin
from rlkit.common.fast_sac import FastSAC
from rlkit.common.utils import CheckedArguments, check_box_action_space
from rlkit.mdpo.policies import MDPOOffPolicy, StateValueCritic

SelfMDPOOff = TypeVar("SelfMDPOOff", bound="MDPOOff")


class MDPOOff(CheckedArguments, EvaluateMixin, FastSAC):
    """
    Off-policy Mirror Descent Policy Optimization (MDPO).

    Paper: https://arxiv.org/abs/2005.09814 (Tomar et al., ICLR 2022)
    Code: https://github.com/manantomar/Mirror-Descent-Policy-Optimization (``mdpo_off``)

    A SAC learner whose actor minimises the off-policy MDPO loss against an anchor
    pi_k, the actor as it was at the start of the current mirror-descent iteration:

    L(theta) = E_{s~D, eps}[ c * (log pi_theta(a_theta|s) - log pi_k(a_theta|s))
                             + lambda * log pi_k(a_theta|s) - Q(s, a_theta) ]
               + 1e-3 * E[mu_theta(s)^2] + 1e-3 * E[log sigma_theta(s)^2]   (``actor_reg_coef``)

    with a_theta = tanh(mu_theta(s) + sigma_theta(s) eps) the reparameterised action.
    c = 1/t_k is the KL coefficient (``kl_coef``, fixed: the paper uses a constant step size
    off-policy) and lambda the entropy weight (``ent_coef``): the entropy
    regulariser is linearised around pi_k, hence lambda * log pi_k. The anchor's
    parameters are frozen; the gradient reaches log pi_k only through the action
    a_theta. The anchor is hard-copied from the actor every ``sgd_steps`` (m) gradient
    steps, so each mirror-descent iteration is m single SGD steps. Replacing
    pi_k by the uniform policy gives SAC's actor loss with temperature c.

    Critics: by default the SAC-v1 critics of the paper's code, i.e. twin Q
    regressed on r + gamma (1 - d) V_target(s'), a state value V regressed on
    min_i Q_i(s, a_theta) - lambda log pi_theta(a_theta|s), and its Polyak target
    V_target; the actor uses Q1 only. With ``use_sac_v1_critics=False`` SB3's SAC-v2
    critics are used instead (target min_i Q_target_i(s', a') - lambda log pi_theta(a'|s'),
    no V) and the actor uses min_i Q_i, so that MDPOOff with a uniform anchor is
    exactly SB3's SAC.

    Deviations from the paper's code, on purpose:

    * Behaviour actions are sampled from pi_theta (``deterministic_rollouts=False``), as
      SAC does; the released code acts with tanh(mu_theta(s)) after the warm-up.
      Set ``deterministic_rollouts=True`` for the code's behaviour.
    * The anchor is copied every m *gradient* steps (``_n_updates``); the code
      counts env steps, which is the same with ``train_freq=1, gradient_steps=1``.
    * The code's update order is kept (actor step, then critic step on the same
      batch, with the V target built from the actor's samples before its step). With
      the SAC-v2 critics the next actions a' are sampled after the actor step.

    :param policy: The policy model to use (MlpPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: learning rate for the Adam optimizers of the actor, Q and V networks,
        it can be a function of the current progress remaining (from 1 to 0)
    :param buffer_size: size of the replay buffer
    :param learning_starts: how many uniform-random steps to collect before learning starts (paper: 10,000)
    :param batch_size: Minibatch size for each gradient update
    :param tau: the soft update coefficient of the target network ("Polyak update", between 0 and 1)
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
    :param ent_coef: The entropy weight lambda (fixed; paper: 0.2)
    :param kl_coef: The KL coefficient c = 1/t_k (fixed; paper's code: 1.0)
    :param sgd_steps: Number m of gradient steps per mirror-descent iteration, i.e. the anchor is
        hard-copied from the actor every m gradient steps (paper: 1000)
    :param use_sac_v1_critics: Use the paper's SAC-v1 critics (V network and V target);
        if False, use SB3's SAC-v2 critics
    :param deterministic_rollouts: Act with the deterministic action tanh(mu_theta(s)) after the
        warm-up, as the paper's code does; by default behaviour actions are sampled
    :param actor_reg_coef: Weight of the regularisers mean(mu^2) and mean(log sigma^2) of the actor loss
        (the paper's code: 1e-3)
    :param target_update_interval: update the target network every ``target_update_interval``
        gradient steps.
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
        (``use_value_net`` is set from ``use_sac_v1_critics``)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or wrappers used), 2 for
        debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MDPOOffPolicy}
    policy: MDPOOffPolicy
    value_net: StateValueCritic | None
    value_target: StateValueCritic | None

    def __init__(
        self,
        policy: str | type[MDPOOffPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 10_000,
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
        ent_coef: float = 0.2,
        kl_coef: float = 1.0,
        sgd_steps: int = 1000,
        use_sac_v1_critics: bool = True,
        deterministic_rollouts: bool = False,
        actor_reg_coef: float = 1e-3,
        target_update_interval: int = 1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        if isinstance(ent_coef, str) or ent_coef < 0:
            raise ValueError(f"MDPOOff needs a fixed, non-negative entropy weight ent_coef (lambda), got {ent_coef!r}")
        if kl_coef <= 0:
            raise ValueError(f"kl_coef (c = 1/t_k) must be positive, got {kl_coef}")
        if sgd_steps < 1:
            raise ValueError(f"sgd_steps (m, gradient steps between anchor copies) must be >= 1, got {sgd_steps}")
        if actor_reg_coef < 0:
            raise ValueError(f"actor_reg_coef must be non-negative, got {actor_reg_coef}")
        env = check_box_action_space(env, type(self).__name__, verbose)
        policy_kwargs = {**(policy_kwargs or {}), "use_value_net": use_sac_v1_critics}
        super().__init__(
            policy,
            env,
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
            ent_coef=float(ent_coef),
            target_update_interval=target_update_interval,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self.kl_coef = kl_coef
        self.sgd_steps = sgd_steps
        self.use_sac_v1_critics = use_sac_v1_critics
        self.deterministic_rollouts = deterministic_rollouts
        self.actor_reg_coef = actor_reg_coef

        if _init_setup_model:
            self._setup_model()

    def _create_aliases(self) -> None:
        super()._create_aliases()
        self.anchor_actor = self.policy.anchor_actor
        self.value_net = self.policy.value_net
        self.value_target = self.policy.value_target

    def _fast_path_networks(self) -> dict[str, th.nn.Module]:
        networks = {**super()._fast_path_networks(), "anchor_actor": self.anchor_actor}
        if self.value_net is not None and self.value_target is not None:
            networks.update(value_net=self.value_net, value_target=self.value_target)
        return networks

    def _sample_action(
        self,
        learning_starts: int,
        action_noise: ActionNoise | None = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.deterministic_rollouts or self.num_timesteps < learning_starts:
            return super()._sample_action(learning_starts, action_noise, n_envs)
        unscaled_action, _ = self.predict(self._last_obs, deterministic=True)  # type: ignore[arg-type]
        scaled_action = self.policy.scale_action(unscaled_action)
        if action_noise is not None:
            scaled_action = np.clip(scaled_action + action_noise(), -1, 1)
        return self.policy.unscale_action(scaled_action), scaled_action

    def _anchor_log_prob(self, observations: th.Tensor, actions: th.Tensor, gaussian_actions: th.Tensor) -> th.Tensor:
        """log pi_k(a_theta|s) of the reparameterised actions under the frozen anchor.

        The anchor's parameters get no gradient; the result is differentiable with
        respect to the actions (pathwise), as the MDPO loss needs.

        :param observations: the states s
        :param actions: the squashed actions a_theta = tanh(u_theta)
        :param gaussian_actions: the pre-squash actions u_theta
        :return: log pi_k(a_theta|s), shape ``(batch,)``
        """
        with th.no_grad():
            mean, log_std, _ = self.anchor_actor.get_action_dist_params(observations)
        return self.anchor_actor.action_dist.proba_distribution(mean, log_std).log_prob(actions, gaussian_actions)

    def _actor_loss(self, observations: th.Tensor) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        """The off-policy MDPO actor loss L(theta) on a batch of states (see the class docstring).

        :param observations: the states s of the batch
        :return: the loss and detached by-products: ``min_q_pi`` (min_i Q_i(s, a_theta)), ``log_prob``
            (log pi_theta(a_theta|s)) and ``kl`` (log pi_theta - log pi_k at a_theta, a one-sample KL estimate)
        """
        mean, log_std, kwargs = self.actor.get_action_dist_params(observations)
        distribution = self.actor.action_dist.proba_distribution(mean, log_std, **kwargs)
        actions = distribution.sample()
        gaussian_actions = distribution.gaussian_actions
        log_prob = distribution.log_prob(actions, gaussian_actions)
        anchor_log_prob = self._anchor_log_prob(observations, actions, gaussian_actions)

        q_values = self.critic(observations, actions)
        min_q_pi = th.min(th.cat([q.detach() for q in q_values], dim=1), dim=1, keepdim=True).values
        if self.use_sac_v1_critics:
            # Q1 only, as in the paper's code; indexing the tuple keeps Q2 out of the backward pass
            q_actor = q_values[0].flatten()
        else:
            q_actor = th.min(th.cat(q_values, dim=1), dim=1).values
        loss = (self.kl_coef * (log_prob - anchor_log_prob) + self.ent_coef_tensor * anchor_log_prob - q_actor).mean()
        loss = loss + self.actor_reg_coef * ((mean**2).mean() + (log_std**2).mean())
        extras = {"min_q_pi": min_q_pi, "log_prob": log_prob.detach(), "kl": (log_prob - anchor_log_prob).detach()}
        return loss, extras

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])
        ent_coef = self.ent_coef_tensor

        actor_losses, critic_losses, value_losses, kls, entropies = [], [], [], [], []
        for gradient_step in range(gradient_steps):
            if (self._n_updates + gradient_step) % self.sgd_steps == 0:
                self.anchor_actor.load_state_dict(self.actor.state_dict())

            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma

            actor_loss, extras = self._actor_loss(replay_data.observations)
            self.actor.optimizer.zero_grad()
            self.fast_path.backward(actor_loss, "actor")
            self.actor.optimizer.step()

            with th.no_grad():
                if self.value_target is not None:
                    next_values = self.value_target(replay_data.next_observations)
                else:
                    next_actions, next_log_prob = self.actor.action_log_prob(replay_data.next_observations)
                    next_q_values = th.cat(self.critic_target(replay_data.next_observations, next_actions), dim=1)
                    next_values = th.min(next_q_values, dim=1, keepdim=True).values - ent_coef * next_log_prob.reshape(-1, 1)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_values

            current_q_values = self.critic(replay_data.observations, replay_data.actions)
            critic_loss = 0.5 * sum(F.mse_loss(current_q, target_q_values) for current_q in current_q_values)
            assert isinstance(critic_loss, th.Tensor)
            values_loss = critic_loss
            if self.value_net is not None:
                # SAC-v1: V(s) regressed on min_i Q_i(s, a_theta) - lambda log pi_theta(a_theta|s);
                # Q and V share one optimizer, as in the paper's code
                target_values = extras["min_q_pi"] - ent_coef * extras["log_prob"].reshape(-1, 1)
                value_loss = 0.5 * F.mse_loss(self.value_net(replay_data.observations), target_values)
                value_losses.append(value_loss.item())
                values_loss = critic_loss + value_loss
            self.critic.optimizer.zero_grad()
            values_loss.backward()
            self.critic.optimizer.step()

            if gradient_step % self.target_update_interval == 0:
                if self.value_net is not None and self.value_target is not None:
                    self.fast_path.soft_update("value_net", "value_target", self.tau)
                else:
                    self.fast_path.soft_update("critic", "critic_target", self.tau)
                    polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

            actor_losses.append(actor_loss.item())
            critic_losses.append(critic_loss.item())
            kls.append(extras["kl"].mean())
            entropies.append(-extras["log_prob"].mean())

        self._n_updates += gradient_steps

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", ent_coef.item())
        self.logger.record("train/kl_coef", self.kl_coef)
        self.logger.record("train/kl", th.stack(kls).mean().item())
        self.logger.record("train/entropy", th.stack(entropies).mean().item())
        self.logger.record("train/actor_loss", np.mean(actor_losses))
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        if value_losses:
            self.logger.record("train/value_loss", np.mean(value_losses))

    def learn(
        self: SelfMDPOOff,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "MDPOOff",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMDPOOff:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "anchor_actor", "value_net", "value_target"]
