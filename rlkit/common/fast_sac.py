"""The off-policy family's fast path on SB3's SAC: fused optimizers, and SAC's update on :class:`FastPath`."""

from __future__ import annotations

import torch as th
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.sac import SAC
from torch.nn import functional as F

from rlkit.common.utils import FastPath, fused_adam_kwargs, fused_like


class FastSAC(SAC):
    """SAC's update, with the same numbers, on the off-policy family's fast path (:class:`~rlkit.common.utils.FastPath`).

    The base of rlkit's algorithms built on SAC, in place of SB3's ``SAC``: PEBBLE and PARL
    keep this update as their inner loop; MDPOOff and PMOE-SAC write their own ``train``
    on :attr:`fast_path`. What it changes against SB3's ``SAC``:

    * the policy's optimizers default to fused Adam (:func:`~rlkit.common.utils.fused_adam_kwargs`;
      a user's ``optimizer_kwargs`` or another optimizer class are kept), and the temperature's
      optimizer follows the policy's (:func:`~rlkit.common.utils.fused_like`);
    * :meth:`train` is SB3's SAC update in the same order, on the same random stream, with
      the actor's gradient computed for the actor only (SB3 also forms the critic's weight
      gradients of the actor loss, and zeroes them unused), the Polyak update as two
      multi-tensor operations, the networks' ReLUs in place (:func:`~rlkit.common.utils.relu_in_place`),
      and the logged statistics kept as tensors until the end of the call. With the same
      optimizers it gives SB3's parameters bit for bit.
    """

    fast_path: FastPath

    def _setup_model(self) -> None:
        optimizer_class = self.policy_kwargs.get("optimizer_class", th.optim.Adam)
        optimizer_kwargs = fused_adam_kwargs(optimizer_class, self.policy_kwargs.get("optimizer_kwargs"))
        if optimizer_kwargs is not None:
            self.policy_kwargs["optimizer_kwargs"] = optimizer_kwargs
        super()._setup_model()
        if self.ent_coef_optimizer is not None:
            self.ent_coef_optimizer = fused_like(self.ent_coef_optimizer, self.policy.optimizer_kwargs)
        self.fast_path = FastPath(**self._fast_path_networks())

    def _fast_path_networks(self) -> dict[str, th.nn.Module]:
        """The networks of the update, by name, for :attr:`fast_path` (an algorithm with more networks adds them here)."""
        return {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target}

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "fast_path"]

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)

        stats: dict[str, list[th.Tensor]] = {}
        for gradient_step in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            if self.use_sde:
                self.actor.reset_noise()
            actions_pi, log_prob = self.actor.action_log_prob(replay_data.observations)
            log_prob = log_prob.reshape(-1, 1)

            step_stats: dict[str, th.Tensor] = {}
            if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
                ent_coef = th.exp(self.log_ent_coef.detach())
                assert isinstance(self.target_entropy, float)
                ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()
                self.ent_coef_optimizer.zero_grad()
                ent_coef_loss.backward()
                self.ent_coef_optimizer.step()
                step_stats["ent_coef_loss"] = ent_coef_loss.detach()
            else:
                ent_coef = self.ent_coef_tensor
            step_stats["ent_coef"] = ent_coef.reshape(())

            with th.no_grad():
                next_actions, next_log_prob = self.actor.action_log_prob(replay_data.next_observations)
                next_q_values = th.cat(self.critic_target(replay_data.next_observations, next_actions), dim=1)
                next_q_values = th.min(next_q_values, dim=1, keepdim=True).values - ent_coef * next_log_prob.reshape(-1, 1)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values
            current_q_values = self.critic(replay_data.observations, replay_data.actions)
            critic_loss = 0.5 * sum(F.mse_loss(current_q, target_q_values) for current_q in current_q_values)
            assert isinstance(critic_loss, th.Tensor)
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            min_qf_pi = th.min(th.cat(self.critic(replay_data.observations, actions_pi), dim=1), dim=1, keepdim=True).values
            actor_loss = (ent_coef * log_prob - min_qf_pi).mean()
            self.actor.optimizer.zero_grad()
            self.fast_path.backward(actor_loss, "actor")
            self.actor.optimizer.step()

            if gradient_step % self.target_update_interval == 0:
                self.fast_path.soft_update("critic", "critic_target", self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

            step_stats["actor_loss"] = actor_loss.detach()
            step_stats["critic_loss"] = critic_loss.detach()
            for key, value in step_stats.items():
                stats.setdefault(key, []).append(value)

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in stats.items():
            self.logger.record(f"train/{key}", th.stack(values).mean().item())
