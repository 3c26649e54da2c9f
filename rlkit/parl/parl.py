"""PARL / A-PARL: policy alignment as a bilevel problem, on PEBBLE's loop (Chakraborty et al., ICLR 2024)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from torch.func import functional_call

from rlkit.common.preference import Episode, Segments, bradley_terry_log_likelihood, sample_segment_pairs
from rlkit.parl.hypergradient import Hypergradient, hypergradient
from rlkit.pebble import PEBBLE


def _flat(tensors: Sequence[th.Tensor]) -> th.Tensor:
    return th.cat([t.detach().flatten() for t in tensors])


class PARL(PEBBLE):
    """
    PARL: preference-based RL in which the reward nu (upper level) is fitted on preferences over
    the trajectories of the policy theta*(nu) that it induces (lower level), with the
    hypergradient correction of A-PARL.

    Paper: https://arxiv.org/abs/2308.02585 (Chakraborty, Bedi, Koppel, Wang, Manocha, Wang,
    Huang, "PARL: A Unified Framework for Policy Alignment in Reinforcement Learning from Human
    Feedback", ICLR 2024). No official code exists, and only the paper's abstract could be read: it
    states the bilevel formulation (the distribution of the upper objective depends on the lower
    optimal policy), the algorithm A-PARL with an O(1/T) rate, and DMC/Meta-World experiments with
    "up to 63%" fewer samples. The equations below are the reconstruction of the project's spec
    (``online.md`` 4(b), the standard implicit-function derivation for this problem class), not
    the paper's text; its equation numbers could not be checked.

    Formulation (spec 4(b), "Lower" and "Upper"):

    * lower level: theta*(nu) = argmax_theta V(nu, theta), the policy optimal for r_nu (SAC on
      r_nu, PEBBLE's inner loop, ``num_interact`` steps between upper steps);
    * upper level: G(nu) = E_{y ~ rho(theta*(nu))}[U_nu(y)], the Bradley-Terry log-likelihood U of
      the teacher's labels on segment pairs y cut from the *current* policy's episodes.

    Hypergradient (spec 4(b), "Hypergradient", implicit function theorem at grad_theta V = 0)::

        dG/dnu = grad_nu U  -  (grad^2_theta,nu V)^T [grad^2_theta V]^-1 grad_theta G
               = direct     +  correction

    with grad_theta G = E[(U(y) - b) sum_{t in y} grad_theta log pi_theta(a_t|s_t)] (score function,
    b the batch mean: spec 4(e)). The two second-order terms must come from the same V. The spec
    leaves V open for an off-policy lower level ("document which surrogate you chose", 4(e)); rlkit
    takes the objective SAC's actor ascends, with the critic made a function of nu by one unrolled
    SGD step on r_nu-relabelled targets (the one-step unrolling of Meta-Reward-Net, spec 4(b)):

        phi'(nu) = phi - eta grad_phi 1/2 E_B[sum_i (Q_phi_i(s, a) - y_nu)^2],
        y_nu = r_nu(s, a) + gamma (1 - d) (min_i Qbar_i(s', a') - alpha log pi(a'|s')),  a' ~ pi(.|s'),
        V(nu, theta) = E_B[min_i Q_phi'_i(nu)(s, a_theta(s, eps)) - alpha log pi_theta(a_theta|s)],

    on a replay batch B with fixed noise eps, eta the critic's learning rate, Qbar the target
    critic, the next actions a' and their log-densities held fixed (as SAC's target is). Then
    grad^2_theta V is the Hessian of that actor objective and grad^2_theta,nu V reaches nu only
    through phi'(nu), whose Jacobian is d phi'/d nu = eta E_B[sum_i grad_phi Q_i(s, a) grad_nu r_nu(s, a)^T];
    grad_nu <grad_theta V, v> is computed by differentiating through the unrolled step (double
    backward), not by hand.

    The upper step (choices of rlkit, spec 4(b) steps 4-5 leave the step sizes open):

    * the hypergradient is taken at (nu_t, theta_t), the reward the policy was trained on and
      the policy, on the round's new labelled pairs and a replay batch of ``hypergradient_batch``;
    * the damped system (-H + lambda I) v = grad_theta G is solved by ``cg_iters`` conjugate-gradient
      steps with lambda = ``damping`` times a power-iteration estimate (``power_iters``
      Hessian-vector products) of max |eig(H)|, so that the solve follows the curvature;
    * the reward step is PEBBLE's fit (the direct term followed with Adam over all labelled pairs,
      up to ``reward_update`` epochs) plus a step along the correction whose norm is
      ``correction_ratio`` times the norm of the fit's change of nu: the unrolled critic step
      makes the correction O(eta) small against the direct term, so the correction gives the
      direction and the fit the size. The default 0.2 was set on the toy learning test (seed 0):
      0.5 took the reward far enough from the preferences that the policy fell to -47 (0.2: -26,
      no correction: -28). It is not applied in the first round (the policy was trained on the
      intrinsic reward, not on r_nu);
    * queries are cut from the episodes finished since the previous round only (current-policy data).

    ``use_correction=False`` gives the first-order method on current-policy queries (the ablation).
    Logged per round: ``parl/direct_norm``, ``parl/correction_norm`` (raw hypergradient terms),
    ``parl/correction_to_fit`` (||step along the correction|| / ||fit's step||), ``parl/damping``,
    ``parl/curvature_scale``, ``parl/cg_residual``, and with ``heldout_pairs`` the accuracy on
    pairs that are never trained on (labelled from the true segment returns, not counted as feedback):
    ``parl/heldout_accuracy`` after the fit and ``parl/heldout_accuracy_change`` the correction causes.

    Every other parameter is :class:`~rlkit.pebble.PEBBLE`'s.

    :param policy: The policy model to use (MlpPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param use_correction: add the hypergradient correction (``False``: first-order upper step)
    :param damping: lambda of the damped system, as a multiple of the estimate of max |eig(H)|
    :param power_iters: Hessian-vector products of that estimate
    :param cg_iters: conjugate-gradient iterations
    :param correction_ratio: norm of the step along the correction, as a multiple of the fit's step norm
    :param hypergradient_batch: replay transitions of the lower objective V
    :param heldout_pairs: diagnostic pairs per round for the held-out accuracy (0: not logged)
    :param kwargs: PEBBLE's parameters
    """

    def __init__(
        self,
        policy: Any,
        env: Any,
        use_correction: bool = True,
        damping: float = 0.1,
        power_iters: int = 5,
        cg_iters: int = 10,
        correction_ratio: float = 0.2,
        hypergradient_batch: int = 256,
        heldout_pairs: int = 100,
        **kwargs: Any,
    ):
        for name, value in (("damping", damping), ("correction_ratio", correction_ratio)):
            if value < 0:
                raise ValueError(f"PARL needs {name} >= 0, got {value}; 0 switches it off")
        for name, count in (
            ("power_iters", power_iters),
            ("cg_iters", cg_iters),
            ("hypergradient_batch", hypergradient_batch),
        ):
            if count < 1:
                raise ValueError(f"PARL needs {name} >= 1, got {count}")
        self.use_correction = use_correction
        self.damping = damping
        self.power_iters = power_iters
        self.cg_iters = cg_iters
        self.correction_ratio = correction_ratio
        self.hypergradient_batch = hypergradient_batch
        self.heldout_pairs = heldout_pairs
        self.episodes_at_last_query = 0
        super().__init__(policy, env, **kwargs)
        seed = kwargs.get("seed")
        self.heldout_rng = np.random.default_rng(None if seed is None else seed + 2)
        self.hypergradient_rng = np.random.default_rng(None if seed is None else seed + 3)

    def _query_episodes(self) -> list[Episode]:
        """The episodes finished since the previous query round (at least the latest one)."""
        new = self.episode_store.n_added - self.episodes_at_last_query
        return self.episode_store.latest(max(new, 1))

    def _learn_reward(self, scheme: str) -> None:
        super()._learn_reward(scheme)
        self.episodes_at_last_query = self.episode_store.n_added

    # ------------------------------------------------------------------ the two levels' objectives

    def _tensor(self, array: np.ndarray | th.Tensor) -> th.Tensor:
        dtype = next(self.actor.parameters()).dtype
        return th.as_tensor(array, device=self.device).to(dtype)

    def _log_prob(self, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """log pi_theta(a|s) for ``(..., dim)`` batches, differentiable in theta."""
        batch_shape = observations.shape[:-1]
        mean, log_std, kwargs = self.actor.get_action_dist_params(observations.reshape(-1, observations.shape[-1]))
        distribution = self.actor.action_dist.proba_distribution(mean, log_std, **kwargs)
        log_prob = distribution.log_prob(actions.reshape(-1, actions.shape[-1]).clamp(-0.999, 0.999))
        return log_prob.reshape(batch_shape)

    def _ent_coef(self) -> th.Tensor:
        return th.exp(self.log_ent_coef.detach()) if self.log_ent_coef is not None else self.ent_coef_tensor

    def _squashed_sample(self, states: th.Tensor, noise: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """a_theta = tanh(mu + sigma noise) and log pi_theta(a_theta|s), differentiable in theta."""
        mean, log_std, _ = self.actor.get_action_dist_params(states)
        std = log_std.exp()
        gaussian = mean + std * noise
        actions = th.tanh(gaussian)
        log_prob = th.distributions.Normal(mean, std).log_prob(gaussian).sum(-1)
        return actions, log_prob - th.log(1 - actions.pow(2) + 1e-6).sum(-1)

    def upper_objective(self, segments0: Segments, segments1: Segments, targets: np.ndarray) -> th.Tensor:
        """U's batch mean plus the score-function surrogate whose theta-gradient is grad_theta G.

        Its nu-gradient is grad_nu U (the direct term); its theta-gradient is
        mean[(U - mean U) (sum_t grad log pi(a0_t|s0_t) + sum_t grad log pi(a1_t|s1_t))].

        :param segments0: first segments of the pairs
        :param segments1: second segments
        :param targets: the teacher's P(segment 1 preferred)
        :return: the scalar surrogate
        """
        obs0, act0, obs1, act1 = (
            self._tensor(x) for x in (segments0.observations, segments0.actions, segments1.observations, segments1.actions)
        )
        logits = self.reward_model.logits(obs0, act0, obs1, act1)
        per_pair = bradley_terry_log_likelihood(logits, self._tensor(targets)).mean(dim=0)
        score = self._log_prob(obs0, act0).sum(dim=1) + self._log_prob(obs1, act1).sum(dim=1)
        return per_pair.mean() + ((per_pair - per_pair.mean()).detach() * score).mean()

    def unrolled_critic(self, batch: ReplayBufferSamples, next_noise: th.Tensor) -> dict[str, th.Tensor]:
        """phi'(nu): the critic's parameters after one SGD step (the critic's lr) on r_nu targets.

        :param batch: replay transitions (their stored rewards are not used: r_nu is recomputed)
        :param next_noise: the reparameterisation noise of the next actions a'
        :return: the stepped parameters by name, differentiable in nu
        """
        obs, actions, next_obs = (self._tensor(x) for x in (batch.observations, batch.actions, batch.next_observations))
        dones = self._tensor(batch.dones).reshape(-1)
        with th.no_grad():
            next_actions, next_log_prob = self._squashed_sample(next_obs, next_noise)
            next_q = th.min(th.cat(self.critic_target(next_obs, next_actions), dim=1), dim=1).values
            bootstrap = self.gamma * (1 - dones) * (next_q - self._ent_coef() * next_log_prob)
        targets = self.reward_model.reward(obs, actions) + bootstrap
        params: dict[str, th.Tensor] = dict(self.critic.named_parameters())
        q_values = functional_call(self.critic, params, (obs, actions))
        loss = 0.5 * sum(((q.reshape(-1) - targets) ** 2).mean() for q in q_values)
        grads = th.autograd.grad(loss, list(params.values()), create_graph=True)
        lr = self.critic.optimizer.param_groups[0]["lr"]
        return {name: param - lr * grad for (name, param), grad in zip(params.items(), grads, strict=True)}

    def lower_objective(self, batch: ReplayBufferSamples, noise: th.Tensor, next_noise: th.Tensor) -> th.Tensor:
        """V(nu, theta): SAC's actor objective on ``batch`` with the one-step unrolled critic phi'(nu).

        :param batch: replay transitions
        :param noise: the reparameterisation noise of a_theta
        :param next_noise: the noise of the next actions in the critic's targets
        :return: the scalar V, differentiable in theta and (through phi') in nu
        """
        critic_params = self.unrolled_critic(batch, next_noise)
        states = self._tensor(batch.observations)
        actions, log_prob = self._squashed_sample(states, noise)
        q_values = functional_call(self.critic, critic_params, (states, actions))
        return (th.min(th.cat(q_values, dim=1), dim=1).values - self._ent_coef() * log_prob).mean()

    def sample_lower_batch(self) -> tuple[ReplayBufferSamples, th.Tensor, th.Tensor]:
        """A replay batch of ``hypergradient_batch`` transitions and the two noises of V (own generator)."""
        size = self.replay_buffer.buffer_size if self.replay_buffer.full else self.replay_buffer.pos
        index = self.hypergradient_rng.integers(size, size=self.hypergradient_batch)
        batch = self.replay_buffer._get_samples(index, env=self._vec_normalize_env)
        shape = (len(index), batch.actions.shape[-1])
        noise, next_noise = (self._tensor(self.hypergradient_rng.standard_normal(shape)) for _ in range(2))
        return batch, noise, next_noise

    def hypergradient_terms(
        self,
        segments0: Segments,
        segments1: Segments,
        targets: np.ndarray,
        batch: ReplayBufferSamples,
        noise: th.Tensor,
        next_noise: th.Tensor,
    ) -> Hypergradient:
        """Both hypergradient terms at the current (nu, theta): G on these pairs, V on this replay batch.

        :param segments0: first segments of the round's labelled pairs
        :param segments1: their second segments
        :param targets: the teacher's labels
        :param batch: replay transitions of V (:meth:`sample_lower_batch`)
        :param noise: V's reparameterisation noise of a_theta
        :param next_noise: V's noise of the next actions
        :return: the direct term, the correction and the solve's diagnostics
        """
        return hypergradient(
            self.upper_objective(segments0, segments1, targets),
            self.lower_objective(batch, noise, next_noise),
            list(self.actor.parameters()),
            list(self.reward_model.parameters()),
            damping=self.damping,
            cg_iters=self.cg_iters,
            relative_damping=True,
            power_iters=self.power_iters,
        )

    # ------------------------------------------------------------------ the upper step

    def heldout_pairs_sample(self) -> tuple[Segments, Segments, np.ndarray]:
        """Fresh pairs of the query episodes and the sign of their true return difference (a diagnostic).

        The pairs use the true reward, are never trained on and are not counted as feedback.
        """
        segments0, segments1 = sample_segment_pairs(
            self._query_episodes(), self.heldout_pairs, self.segment_length, self.heldout_rng
        )
        return segments0, segments1, np.sign(segments1.rewards.sum(1) - segments0.rewards.sum(1))

    def pair_accuracy(self, segments0: Segments, segments1: Segments, truth: np.ndarray) -> float:
        """Accuracy of the ensemble-mean preference against ``truth`` (signs; ties left out)."""
        predicted = np.sign(self.reward_model.preference_probs(segments0, segments1).mean(0) - 0.5)
        decided = truth != 0
        return float(np.mean(predicted[decided] == truth[decided])) if decided.any() else float("nan")

    def _fit_reward(self, segments0: Segments, segments1: Segments, targets: np.ndarray) -> dict[str, float]:
        """PEBBLE's fit plus, after the first round, a step along the hypergradient correction taken at (nu_t, theta_t)."""
        correct = self.use_correction and self.correction_ratio > 0 and self.reward_learned and len(targets) > 1
        nu = list(self.reward_model.parameters())
        terms = self.hypergradient_terms(segments0, segments1, targets, *self.sample_lower_batch()) if correct else None
        before = _flat(nu)
        stats = self.reward_model.fit(self.preference_data, self.reward_update, self.reward_batch_size, self.preference_rng)
        self.actor.optimizer.zero_grad()
        self.critic.optimizer.zero_grad()
        if terms is None:
            return stats
        heldout = self.heldout_pairs_sample() if self.heldout_pairs > 0 else None
        accuracy = self.pair_accuracy(*heldout) if heldout is not None else float("nan")
        fit_norm = float((_flat(nu) - before).norm())
        correction_norm = float(_flat(terms.correction).norm())
        scale = self.correction_ratio * fit_norm / correction_norm if correction_norm > 0 else 0.0
        with th.no_grad():
            for param, corr in zip(nu, terms.correction, strict=True):
                param.add_(scale * corr)
        self.logger.record("parl/direct_norm", float(_flat(terms.direct).norm()))
        self.logger.record("parl/correction_norm", correction_norm)
        self.logger.record("parl/correction_to_fit", scale * correction_norm / max(fit_norm, 1e-30))
        self.logger.record("parl/damping", terms.damping)
        self.logger.record("parl/curvature_scale", terms.curvature_scale)
        self.logger.record("parl/cg_residual", terms.residual)
        if heldout is not None:
            self.logger.record("parl/heldout_accuracy", accuracy)
            self.logger.record("parl/heldout_accuracy_change", self.pair_accuracy(*heldout) - accuracy)
        return stats
