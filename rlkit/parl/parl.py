"""PARL / A-PARL: policy alignment as a bilevel problem, on PEBBLE's loop (Chakraborty et al., ICLR 2024)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th

from rlkit.common.preference import Episode, Segments, bradley_terry_log_likelihood
from rlkit.parl.hypergradient import hypergradient
from rlkit.pebble import PEBBLE


class PARL(PEBBLE):
    """
    PARL: preference-based RL in which the reward nu (upper level) is fitted on preferences over
    the trajectories of the policy theta*(nu) that it induces (lower level), with the
    hypergradient correction of A-PARL.

    Paper: https://arxiv.org/abs/2308.02585 (Chakraborty, Bedi, Koppel, Wang, Manocha, Wang,
    Huang, "PARL: A Unified Framework for Policy Alignment in Reinforcement Learning from Human
    Feedback", ICLR 2024). No official code exists. Only the paper's abstract could be read; it
    states the bilevel formulation (the distribution of the upper objective depends on the lower
    optimal policy), the algorithm name A-PARL and its O(1/T) rate, and DMC/Meta-World
    experiments with "up to 63%" fewer samples. Everything below the formulation is a
    reconstruction (standard implicit differentiation for this problem class), not the paper's text.

    From the formulation (paper, as far as the abstract states it):

    * lower level: theta*(nu) = argmax_theta V(nu, theta), the policy optimal for r_nu (here: SAC
      on r_nu, exactly PEBBLE's inner loop, ``num_interact`` steps between upper updates);
    * upper level: G(nu) = E_{y ~ rho(theta*(nu))}[U_nu(y)], the Bradley-Terry log-likelihood of the
      teacher's labels on segment pairs y drawn from the *current* policy's trajectories.

    Reconstructed hypergradient (:func:`~rlkit.parl.hypergradient.hypergradient`)::

        dG/dnu = grad_nu U                                   (direct: PEBBLE's reward-learning gradient)
               + grad^2_nu,theta V . (-grad^2_theta V + lambda I)^-1 grad_theta G   (correction)

    with grad_theta G = E[(U_nu(y) - b) sum_{t in y} grad_theta log pi_theta(a_t|s_t)] (score
    function, b the batch mean). Design choices of rlkit, for an off-policy (SAC) lower level:

    * grad_theta V for the mixed term is the likelihood-ratio policy gradient on the queried
      segments, sum_h grad log pi(a_h|s_h) (G_h(nu) - mean G_h), G_h the gamma-discounted
      reward-to-go of the ensemble-mean r_nu within the segment (truncated at its end);
    * the curvature grad^2_theta V is the Hessian of SAC's actor objective
      E_s[min_i Q_i(s, a_theta) - alpha log pi_theta(a_theta|s)] on the segments' states with a
      fixed reparameterisation noise (the objective the lower level actually ascends);
    * the damped system is solved by ``cg_iters`` conjugate-gradient steps on Hessian-vector
      products (stopping on non-positive curvature), damping ``damping``;
    * the upper step of a query round is split in two: the direct term is followed to a fit
      (PEBBLE's reward learning on all labelled pairs, up to ``reward_update`` epochs), then one
      gradient step of size ``correction_lr`` along the correction computed at the fitted nu on
      the round's pairs, its norm clipped to ``correction_clip`` (adding the correction to every
      Adam step of the fit instead compounds it over hundreds of steps and destroyed the fit in
      our runs); it is not applied in the first round, whose policy was trained on the intrinsic
      reward, not on r_nu;
    * queries are cut from the episodes finished since the previous round only (current-policy data).

    ``use_correction=False`` gives the first-order method on current-policy queries.
    Logged: ``parl/direct_norm``, ``parl/correction_norm`` (before clipping), ``parl/cg_residual``.

    Every other parameter is :class:`~rlkit.pebble.PEBBLE`'s.

    :param policy: The policy model to use (MlpPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param use_correction: add the hypergradient correction (``False``: first-order upper step)
    :param damping: lambda of the damped system
    :param cg_iters: conjugate-gradient iterations
    :param correction_lr: step size of the correction step on nu
    :param correction_clip: the correction's norm is clipped to at most this
    :param curvature_states: states (at most) on which the actor objective's Hessian is taken
    :param kwargs: PEBBLE's parameters
    """

    def __init__(
        self,
        policy: Any,
        env: Any,
        use_correction: bool = True,
        damping: float = 1.0,
        cg_iters: int = 5,
        correction_lr: float = 1e-3,
        correction_clip: float = 10.0,
        curvature_states: int = 512,
        **kwargs: Any,
    ):
        self.use_correction = use_correction
        self.damping = damping
        self.cg_iters = cg_iters
        self.correction_lr = correction_lr
        self.correction_clip = correction_clip
        self.curvature_states = curvature_states
        self.episodes_at_last_query = 0
        super().__init__(policy, env, **kwargs)

    def _query_episodes(self) -> list[Episode]:
        """The episodes finished since the previous query round (at least the latest one)."""
        new = self.episode_store.n_added - self.episodes_at_last_query
        return self.episode_store.latest(max(new, 1))

    def _learn_reward(self, scheme: str) -> None:
        super()._learn_reward(scheme)
        self.episodes_at_last_query = self.episode_store.n_added

    def _log_prob(self, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """log pi_theta(a|s) for ``(..., dim)`` batches, differentiable in theta."""
        batch_shape = observations.shape[:-1]
        mean, log_std, kwargs = self.actor.get_action_dist_params(observations.reshape(-1, observations.shape[-1]))
        distribution = self.actor.action_dist.proba_distribution(mean, log_std, **kwargs)
        log_prob = distribution.log_prob(actions.reshape(-1, actions.shape[-1]).clamp(-0.999, 0.999))
        return log_prob.reshape(batch_shape)

    def _actor_objective(self, states: th.Tensor, noise: th.Tensor) -> th.Tensor:
        """E_s[min_i Q_i(s, a_theta) - alpha log pi_theta(a_theta|s)] with a_theta = tanh(mu + sigma noise)."""
        mean, log_std, _ = self.actor.get_action_dist_params(states)
        std = log_std.exp()
        gaussian = mean + std * noise
        actions = th.tanh(gaussian)
        log_prob = th.distributions.Normal(mean, std).log_prob(gaussian).sum(-1)
        log_prob = log_prob - th.log(1 - actions.pow(2) + 1e-6).sum(-1)
        q_values = th.min(th.cat(self.critic(states, actions), dim=1), dim=1).values
        ent_coef = th.exp(self.log_ent_coef.detach()) if self.log_ent_coef is not None else self.ent_coef_tensor
        return (q_values - ent_coef * log_prob).mean()

    def _correction(self, segments0: Segments, segments1: Segments, targets: np.ndarray) -> list[th.Tensor]:
        """The clipped hypergradient correction on this round's pairs; logs both terms' norms."""
        as_tensor = lambda x: th.as_tensor(x, dtype=th.float32, device=self.device)  # noqa: E731
        obs0, act0, obs1, act1 = (
            as_tensor(x) for x in (segments0.observations, segments0.actions, segments1.observations, segments1.actions)
        )
        nu = list(self.reward_model.parameters())
        theta = list(self.actor.parameters())

        per_pair = bradley_terry_log_likelihood(self.reward_model.logits(obs0, act0, obs1, act1), as_tensor(targets)).sum(
            dim=0
        )
        score = self._log_prob(obs0, act0).sum(dim=1) + self._log_prob(obs1, act1).sum(dim=1)
        upper = per_pair.mean() + ((per_pair - per_pair.mean()).detach() * score).mean()

        observations, actions = th.cat([obs0, obs1]), th.cat([act0, act1])
        horizon = observations.shape[1]
        offsets = th.arange(horizon, device=self.device)
        lags = offsets.reshape(1, -1) - offsets.reshape(-1, 1)  # lags[h, h'] = h' - h
        discounts = th.where(lags >= 0, self.gamma ** lags.clamp(min=0).float(), th.zeros((), device=self.device))
        reward_to_go = self.reward_model.reward(observations, actions) @ discounts.T
        reward_to_go = reward_to_go - reward_to_go.mean(dim=0, keepdim=True)
        lower = (self._log_prob(observations, actions) * reward_to_go).mean()

        states = observations.reshape(-1, observations.shape[-1])
        pick = self.preference_rng.permutation(len(states))[: self.curvature_states]
        states = states[th.as_tensor(pick, device=self.device)]
        noise = th.as_tensor(
            self.preference_rng.standard_normal((len(states), actions.shape[-1])), dtype=th.float32, device=self.device
        )
        curvature = self._actor_objective(states, noise)

        result = hypergradient(upper, lower, theta, nu, self.damping, self.cg_iters, curvature=curvature)
        direct_norm = float(th.sqrt(sum((d**2).sum() for d in result.direct)))
        correction_norm = float(th.sqrt(sum((c**2).sum() for c in result.correction)))
        self.logger.record("parl/direct_norm", direct_norm)
        self.logger.record("parl/correction_norm", correction_norm)
        self.logger.record("parl/cg_residual", result.residual)
        scale = min(1.0, self.correction_clip / max(correction_norm, 1e-12))
        return [c * scale for c in result.correction]

    def _fit_reward(self, segments0: Segments, segments1: Segments, targets: np.ndarray) -> dict[str, float]:
        stats = self.reward_model.fit(self.preference_data, self.reward_update, self.reward_batch_size, self.preference_rng)
        if self.use_correction and self.reward_learned and len(targets) > 1:
            correction = self._correction(segments0, segments1, targets)
            with th.no_grad():
                for param, corr in zip(self.reward_model.parameters(), correction, strict=True):
                    param.add_(self.correction_lr * corr)
            self.actor.optimizer.zero_grad()
            self.critic.optimizer.zero_grad()
        return stats
