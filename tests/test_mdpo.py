"""Tests of on-policy MDPO and off-policy MDPOOff: the objective, the update steps, learning, the SB3 contract."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.logger import configure
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from rlkit.common.evaluation import evaluate
from rlkit.envs.toy import PointReachEnv
from rlkit.mdpo import MDPO, MDPOOff, MDPOOffPolicy, diagonal_gaussian_kl, mdpo_objective

th.set_num_threads(1)

SMALL_ON = dict(n_steps=64, batch_size=32, n_epochs=1, policy_kwargs=dict(net_arch=[16, 16]))
SMALL_OFF = dict(learning_starts=50, batch_size=32, sgd_steps=5, policy_kwargs=dict(net_arch=[16, 16]))

# Learning threshold on PointReachEnv: untrained agents (deterministic, near-zero actions) score about -60,
# a uniformly random one about -40, the straight-line expert about -1.6; trained ones -8 to -12.
REACH_THRESHOLD = -20.0


def _flat_params(module: th.nn.Module) -> th.Tensor:
    return th.cat([p.detach().flatten() for p in module.parameters()])


def _make(algo: type, variant: dict, seed: int = 0, env: gym.Env | None = None) -> MDPO | MDPOOff:
    return algo("MlpPolicy", env or PointReachEnv(), seed=seed, device="cpu", **variant)


# --------------------------------------------------------------------------- KL and the MDPO objective


def test_diagonal_gaussian_kl_matches_torch():
    gen = th.Generator().manual_seed(0)
    mean_new, mean_old = th.randn(64, 3, generator=gen), th.randn(64, 3, generator=gen)
    std_new, std_old = th.rand(64, 3, generator=gen) + 0.1, th.rand(64, 3, generator=gen) + 0.1
    expected = th.distributions.kl_divergence(
        th.distributions.Normal(mean_new, std_new), th.distributions.Normal(mean_old, std_old)
    )
    kl = diagonal_gaussian_kl(mean_new, std_new, mean_old, std_old)
    assert kl.shape == (64,)
    th.testing.assert_close(kl, expected.sum(-1))
    # The direction matters: KL(new || old) != KL(old || new) in general.
    assert not th.allclose(kl, diagonal_gaussian_kl(mean_old, std_old, mean_new, std_new))


def test_kl_is_zero_with_zero_gradient_at_the_anchor():
    gen = th.Generator().manual_seed(1)
    mean_old, log_std_old = th.randn(32, 2, generator=gen), th.randn(32, 2, generator=gen) * 0.3
    mean = mean_old.clone().requires_grad_(True)
    log_std = log_std_old.clone().requires_grad_(True)
    kl = diagonal_gaussian_kl(mean, log_std.exp(), mean_old, log_std_old.exp()).mean()
    kl.backward()
    assert kl.item() == pytest.approx(0.0, abs=1e-6)
    assert mean.grad.abs().max().item() < 1e-6
    assert log_std.grad.abs().max().item() < 1e-6


def _bandit_objective(logits: th.Tensor, logits_k: th.Tensor, advantages: th.Tensor, step_size: float) -> th.Tensor:
    """Psi of a K-armed bandit with a tabular softmax policy, evaluated exactly.

    The batch holds every arm once, with the advantage weighted by K * pi_k(a), so that
    the batch mean of ratio * advantage is exactly E_{a~pi_theta}[A(a)].
    """
    n_arms = logits.shape[0]
    log_pi, log_pi_k = th.log_softmax(logits, 0), th.log_softmax(logits_k, 0)
    weighted_advantages = n_arms * log_pi_k.exp() * advantages
    kl = th.distributions.kl_divergence(
        th.distributions.Categorical(logits=logits), th.distributions.Categorical(logits=logits_k)
    ).expand(n_arms)
    return mdpo_objective(log_pi, log_pi_k, weighted_advantages, kl, step_size)


def test_bandit_inner_loop_converges_to_closed_form():
    gen = th.Generator().manual_seed(2)
    logits_k, rewards = th.randn(5, generator=gen), th.randn(5, generator=gen)
    advantages = rewards - (th.softmax(logits_k, 0) * rewards).sum()
    step_size = 0.7
    logits = logits_k.clone().requires_grad_(True)
    optimizer = th.optim.Adam([logits], lr=0.1)
    for _ in range(600):
        optimizer.zero_grad()
        (-_bandit_objective(logits, logits_k, advantages, step_size)).backward()
        optimizer.step()
    # argmax_pi E_pi[A] - (1/t) KL(pi || pi_k)  is  pi propto pi_k exp(t A)
    closed_form = th.softmax(logits_k + step_size * advantages, 0)
    assert (th.softmax(logits.detach(), 0) - closed_form).abs().max().item() < 1e-4
    # the update moves the policy: the test is not satisfied by staying at pi_k
    assert (th.softmax(logits_k, 0) - closed_form).abs().max().item() > 1e-2


def test_bandit_first_inner_gradient_is_vanilla_policy_gradient():
    gen = th.Generator().manual_seed(3)
    logits_k, rewards = th.randn(6, generator=gen), th.randn(6, generator=gen)
    advantages = rewards - (th.softmax(logits_k, 0) * rewards).sum()
    logits = logits_k.clone().requires_grad_(True)
    (mdpo_grad,) = th.autograd.grad(_bandit_objective(logits, logits_k, advantages, 0.3), logits)
    # vanilla policy gradient: E_{a~pi_k}[grad log pi(a) A(a)]
    pi_k = th.softmax(logits_k, 0)
    log_pi = th.log_softmax(logits, 0)
    (pg_grad,) = th.autograd.grad((pi_k * log_pi * advantages).sum(), logits)
    th.testing.assert_close(mdpo_grad, pg_grad)


def test_first_inner_step_of_mdpo_is_a_vanilla_policy_gradient_step():
    """With plain SGD (lr 1) and m = 1, MDPO's update of the policy parameters equals grad mean(log pi * A_hat)."""
    model = MDPO(
        "MlpPolicy",
        PointReachEnv(),
        n_steps=128,
        sgd_steps=1,
        n_epochs=1,
        max_grad_norm=1e9,
        learning_rate=1.0,
        policy_kwargs=dict(net_arch=[16, 16], optimizer_class=th.optim.SGD, optimizer_kwargs={}),
        seed=0,
        device="cpu",
    )
    reference = copy.deepcopy(model.policy)
    model.learn(128)
    buffer = model.rollout_buffer
    obs = th.as_tensor(buffer.observations.reshape(128, -1))
    actions = th.as_tensor(buffer.actions.reshape(128, -1))
    advantages = th.as_tensor(buffer.advantages.flatten())
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg_objective = (reference.get_distribution(obs).log_prob(actions) * advantages).mean()
    pg_objective.backward()
    policy_names = [name for name, _ in reference.named_parameters() if "value" not in name]
    assert policy_names
    new_params = dict(model.policy.named_parameters())
    for name, param in reference.named_parameters():
        if name in policy_names:
            th.testing.assert_close(new_params[name].detach() - param.detach(), param.grad, atol=1e-5, rtol=1e-4)


def _sgd_mdpo(sgd_steps: int, step_size: float, learning_rate: float = 0.05, ent_coef: float = 0.0) -> MDPO:
    """MDPO with plain SGD, no gradient clipping and a constant step size t, on a 128-step rollout."""
    return MDPO(
        "MlpPolicy",
        PointReachEnv(),
        ent_coef=ent_coef,
        n_steps=128,
        sgd_steps=sgd_steps,
        step_size=step_size,
        n_epochs=1,
        max_grad_norm=1e9,
        learning_rate=learning_rate,
        policy_kwargs=dict(net_arch=[16, 16], optimizer_class=th.optim.SGD, optimizer_kwargs={}),
        seed=0,
        device="cpu",
    )


def _one_iteration(model: MDPO) -> ActorCriticPolicy:
    """Collect one rollout and run ``train()`` once; return the policy that collected it (the anchor pi_k)."""
    anchors: list[ActorCriticPolicy] = []
    train = model.train

    def recording_train() -> None:
        anchors.append(copy.deepcopy(model.policy))
        train()

    model.train = recording_train  # type: ignore[method-assign]
    model.learn(model.n_steps)
    return anchors[0]


def _policy_parameters(policy: ActorCriticPolicy) -> dict[str, th.Tensor]:
    """The parameters of the policy head (the value network is fitted separately)."""
    return {name: param for name, param in policy.named_parameters() if "value" not in name}


def _reference_mirror_descent(
    anchor: ActorCriticPolicy,
    buffer: RolloutBuffer,
    sgd_steps: int,
    kl_weight: float,
    learning_rate: float,
    kl_new_old: bool = True,
    ent_coef: float = 0.0,
) -> tuple[ActorCriticPolicy, list[float]]:
    """m plain-SGD steps on -Psi - ent_coef * E[H(pi_theta)], written with torch.distributions:
    Psi = E[r A] - kl_weight * E[KL(new || old)].

    :return: the policy after the m steps and the KL of each step's loss
    """
    policy = copy.deepcopy(anchor)
    obs = th.as_tensor(buffer.observations.reshape(buffer.buffer_size, -1))
    actions = th.as_tensor(buffer.actions.reshape(buffer.buffer_size, -1))
    advantages = th.as_tensor(buffer.advantages.flatten())
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    with th.no_grad():
        old = anchor.get_distribution(obs).distribution
        old = th.distributions.Normal(old.mean.clone(), old.stddev.clone())
        old_log_prob = old.log_prob(actions).sum(-1)
    optimizer = th.optim.SGD(_policy_parameters(policy).values(), lr=learning_rate)
    kls = []
    for _ in range(sgd_steps):
        new = policy.get_distribution(obs).distribution
        ratio = th.exp(new.log_prob(actions).sum(-1) - old_log_prob)
        kl = th.distributions.kl_divergence(new, old) if kl_new_old else th.distributions.kl_divergence(old, new)
        kl = kl.sum(-1).mean()
        loss = -((ratio * advantages).mean() - kl_weight * kl) - ent_coef * new.entropy().sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        kls.append(kl.item())
    return policy, kls


def _max_difference(first: ActorCriticPolicy, second: ActorCriticPolicy) -> float:
    second_params = _policy_parameters(second)
    return max((param - second_params[name]).abs().max().item() for name, param in _policy_parameters(first).items())


def test_mdpo_train_optimises_kl_new_old_with_weight_one_over_t_over_m_steps():
    """train() with m = 5 inner steps equals 5 SGD steps on E[r A] - (1/t) E[KL(pi_theta || pi_k)], pi_k frozen.

    The reference loop takes the KL from torch.distributions.kl_divergence(new, old). With t = 0.2 the KL
    term is active from the second step on, so a reversed KL, KL(pi_k || pi_theta), or the weight t instead
    of 1/t moves the parameters far more than the tolerance (checked below), and the test fails.
    """
    sgd_steps, step_size, learning_rate = 5, 0.2, 0.05
    model = _sgd_mdpo(sgd_steps, step_size, learning_rate)
    anchor = _one_iteration(model)
    buffer = model.rollout_buffer
    expected, kls = _reference_mirror_descent(anchor, buffer, sgd_steps, 1.0 / step_size, learning_rate)
    assert _max_difference(model.policy, expected) < 1e-5
    # the train/kl logged is the KL of the last inner step's loss (the optimised tensor), not a recomputation
    assert kls[0] == pytest.approx(0.0, abs=1e-7) and kls[-1] > 5e-4
    assert model.logger.name_to_value["train/kl"] == pytest.approx(kls[-1], rel=1e-5)
    with th.no_grad():
        obs = th.as_tensor(buffer.observations.reshape(buffer.buffer_size, -1))
        new, old = model.policy.get_distribution(obs).distribution, anchor.get_distribution(obs).distribution
        kl_after = th.distributions.kl_divergence(new, old).sum(-1).mean().item()
    assert model.logger.name_to_value["train/kl"] != pytest.approx(kl_after, rel=1e-2)
    # the test can fail: the wrong direction or the wrong weight gives other parameters
    reversed_kl, _ = _reference_mirror_descent(anchor, buffer, sgd_steps, 1.0 / step_size, learning_rate, kl_new_old=False)
    weight_t, _ = _reference_mirror_descent(anchor, buffer, sgd_steps, step_size, learning_rate)
    assert _max_difference(reversed_kl, expected) > 1e-4
    assert _max_difference(weight_t, expected) > 1e-4


def test_mdpo_entropy_bonus_is_added_to_the_objective():
    """With ent_coef > 0 the inner steps maximise Psi + ent_coef * E[H(pi_theta)] (a bonus: the loss subtracts it)."""
    sgd_steps, step_size, learning_rate, ent_coef = 2, 0.5, 0.05, 0.5
    model = _sgd_mdpo(sgd_steps, step_size, learning_rate, ent_coef=ent_coef)
    anchor = _one_iteration(model)
    buffer = model.rollout_buffer
    kwargs = dict(sgd_steps=sgd_steps, kl_weight=1.0 / step_size, learning_rate=learning_rate)
    expected, _ = _reference_mirror_descent(anchor, buffer, ent_coef=ent_coef, **kwargs)
    assert _max_difference(model.policy, expected) < 1e-5
    # the test can fail: the opposite sign (an entropy penalty) gives other parameters
    penalty, _ = _reference_mirror_descent(anchor, buffer, ent_coef=-ent_coef, **kwargs)
    assert _max_difference(penalty, expected) > 1e-3


def test_mdpo_step_shrinks_as_the_kl_weight_one_over_t_grows():
    """On the same rollout, a smaller step size t (a larger KL weight 1/t) gives a smaller KL(pi_{k+1} || pi_k).

    A KL weighted by t instead of 1/t reverses the order and fails the test.
    """
    achieved = []
    for step_size in (5.0, 0.5, 0.05):
        model = _sgd_mdpo(sgd_steps=10, step_size=step_size, learning_rate=0.02)
        anchor = _one_iteration(model)
        obs = th.as_tensor(model.rollout_buffer.observations.reshape(128, -1))
        with th.no_grad():
            new, old = model.policy.get_distribution(obs).distribution, anchor.get_distribution(obs).distribution
            achieved.append(th.distributions.kl_divergence(new, old).sum(-1).mean().item())
    assert achieved[0] > achieved[1] > achieved[2] > 0, achieved


def test_step_size_follows_the_official_annealing_with_floor():
    recorded: list[float] = []
    model = _make(MDPO, {**SMALL_ON, "schedule_horizon": None})
    model.train = lambda: recorded.append(model._current_step_size())  # type: ignore[method-assign]
    model.learn(4 * 64)
    # t_k = 1 - (k - 1) / K with K = 4 (the horizon is this learn() call's budget)
    assert recorded == pytest.approx([1.25, 1.0, 0.75, 0.5])
    recorded.clear()
    model.min_step_size = 0.8
    model.learn(4 * 64)
    assert recorded == pytest.approx([1.25, 1.0, 0.8, 0.8])
    recorded.clear()
    model = _make(MDPO, {**SMALL_ON, "step_size": 0.3})
    model.train = lambda: recorded.append(model._current_step_size())  # type: ignore[method-assign]
    model.learn(2 * 64)
    assert recorded == pytest.approx([0.3, 0.3])


def test_step_size_anneals_over_the_configured_horizon_not_the_run():
    """The default horizon is the official code's 10M env steps whatever learn() is given: over a short run t_k
    stays near 1; the same run with an 8-iteration horizon follows 1 - (k - 1)/8."""
    recorded: list[float] = []
    model = _make(MDPO, SMALL_ON)
    assert model.schedule_horizon == 10_000_000
    model.train = lambda: recorded.append(model._current_step_size())  # type: ignore[method-assign]
    model.learn(4 * 64)
    n_iterations = 10_000_000 // 64
    assert recorded == pytest.approx([1 - (k - 1) / n_iterations for k in range(4)])
    recorded.clear()
    model = _make(MDPO, {**SMALL_ON, "schedule_horizon": 8 * 64})
    model.train = lambda: recorded.append(model._current_step_size())  # type: ignore[method-assign]
    model.learn(4 * 64)
    assert recorded == pytest.approx([1.125, 1.0, 0.875, 0.75])


def test_mdpo_value_epochs_are_the_clipped_value_regression():
    """After the policy steps, ``n_epochs`` steps (one minibatch of the whole rollout each) on
    mean max((R - V)^2, (R - V_clip)^2), V_clip = V_old + clip(V - V_old, -0.2, 0.2), written out with plain SGD.

    The first step moves V by more than 0.2 on some states, so the clipping binds afterwards: an unclipped value
    loss fails the test.
    """
    model = MDPO(
        "MlpPolicy",
        PointReachEnv(),
        n_steps=128,
        batch_size=128,
        n_epochs=3,
        sgd_steps=1,
        learning_rate=0.01,
        policy_kwargs=dict(net_arch=[16, 16], optimizer_class=th.optim.SGD, optimizer_kwargs={}),
        seed=0,
        device="cpu",
    )
    anchor = _one_iteration(model)
    buffer = model.rollout_buffer
    obs = th.as_tensor(buffer.observations.reshape(128, -1))
    returns = th.as_tensor(buffer.returns.flatten())
    value = copy.deepcopy(anchor)
    value_params = [param for name, param in value.named_parameters() if "value" in name]
    with th.no_grad():
        old_values = anchor.predict_values(obs).flatten()
    moved = []
    for _ in range(3):
        values = value.predict_values(obs).flatten()
        moved.append((values - old_values).abs().max().item())
        clipped = old_values + th.clamp(values - old_values, -0.2, 0.2)
        loss = th.maximum((returns - values) ** 2, (returns - clipped) ** 2).mean()
        grads = th.autograd.grad(loss, value_params)
        with th.no_grad():
            for param, grad in zip(value_params, grads, strict=True):
                param.sub_(0.01 * grad)
    actual = dict(model.policy.named_parameters())
    for name, param in value.named_parameters():
        if "value" in name:
            th.testing.assert_close(actual[name].detach(), param.detach(), atol=1e-5, rtol=1e-4, msg=name)
    assert moved[0] == 0.0 and moved[1] > 0.2  # the clip binds from the second step on


# --------------------------------------------------------------------------- off-policy actor loss


def _off_policy_pair(kl_coef: float, ent_coef: float, seed: int = 0) -> tuple[MDPOOff, SAC]:
    kwargs = dict(learning_starts=10, policy_kwargs=dict(net_arch=[32, 32]), seed=seed, device="cpu")
    model = MDPOOff(
        "MlpPolicy",
        PointReachEnv(),
        kl_coef=kl_coef,
        ent_coef=ent_coef,
        use_sac_v1_critics=False,
        actor_reg_coef=0.0,
        **kwargs,
    )
    sac = SAC("MlpPolicy", PointReachEnv(), ent_coef=kl_coef, **kwargs)
    sac.actor.load_state_dict(model.actor.state_dict())
    sac.critic.load_state_dict(model.critic.state_dict())
    return model, sac


def _sac_actor_gradient(sac: SAC, obs: th.Tensor, temperature: float) -> th.Tensor:
    """SB3 SAC's actor loss (ent_coef * log pi - min_i Q_i) and its gradient w.r.t. the actor."""
    sac.actor.zero_grad()
    actions, log_prob = sac.actor.action_log_prob(obs)
    min_q = th.min(th.cat(sac.critic(obs, actions), dim=1), dim=1, keepdim=True).values
    loss = (temperature * log_prob.reshape(-1, 1) - min_q).mean()
    loss.backward()
    return th.cat([p.grad.flatten() for p in sac.actor.parameters()]), loss.detach()


def _mdpo_actor_gradient(model: MDPOOff, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    model.actor.zero_grad()
    loss, _ = model._actor_loss(obs)
    loss.backward()
    return th.cat([p.grad.flatten() for p in model.actor.parameters()]), loss.detach()


def test_off_policy_loss_with_constant_anchor_density_is_sac_actor_loss():
    kl_coef, ent_coef, constant = 0.7, 0.2, -1.3
    model, sac = _off_policy_pair(kl_coef, ent_coef)
    model._anchor_log_prob = lambda obs, actions, gaussian_actions: th.full((obs.shape[0],), constant)  # type: ignore[method-assign]
    obs = th.randn(256, 4, generator=th.Generator().manual_seed(4))
    th.manual_seed(5)
    mdpo_grad, mdpo_loss = _mdpo_actor_gradient(model, obs)
    th.manual_seed(5)
    sac_grad, sac_loss = _sac_actor_gradient(sac, obs, kl_coef)
    th.testing.assert_close(mdpo_grad, sac_grad, atol=1e-6, rtol=1e-5)
    # the constant only shifts the loss: c*(log pi - C) + lambda*C - Q = (c*log pi - Q) + (lambda - c)*C
    assert (mdpo_loss - sac_loss).item() == pytest.approx((ent_coef - kl_coef) * constant, abs=1e-5)


def test_off_policy_gradient_at_the_anchor_is_sac_gradient_with_temperature_lambda():
    """At theta = theta_k the KL term has zero expected gradient and lambda*log pi_k(a_theta) acts as SAC's entropy term.

    This only holds if the gradient reaches log pi_k through the action a_theta (pathwise).
    """
    kl_coef, ent_coef = 1.0, 0.2
    model, sac = _off_policy_pair(kl_coef, ent_coef)
    model.anchor_actor.load_state_dict(model.actor.state_dict())
    obs = th.randn(8, 4, generator=th.Generator().manual_seed(6)).repeat(20_000, 1)
    th.manual_seed(7)
    mdpo_grad, _ = _mdpo_actor_gradient(model, obs)
    th.manual_seed(7)
    sac_grad_lambda, _ = _sac_actor_gradient(sac, obs, ent_coef)
    th.manual_seed(7)
    sac_grad_c, _ = _sac_actor_gradient(sac, obs, kl_coef)
    # Monte-Carlo error is about 2% of the gap to the wrong answer (SAC with temperature c)
    assert (mdpo_grad - sac_grad_lambda).norm() < 0.1 * (sac_grad_c - sac_grad_lambda).norm()


def test_off_policy_v1_actor_loss_uses_q1_and_the_squared_log_std_regulariser():
    """The SAC-v1 actor loss on a fixed batch against the spec's formula written by hand:

    mean[c (log pi_theta - log pi_k)(a_theta) + lambda log pi_k(a_theta) - Q1(s, a_theta)]
    + r (mean(mu^2) + mean(log sigma^2)), with Q1 only (not min(Q1, Q2)) and log sigma squared.
    """
    kl_coef, ent_coef, reg = 0.7, 0.2, 0.5
    model = MDPOOff(
        "MlpPolicy",
        PointReachEnv(),
        kl_coef=kl_coef,
        ent_coef=ent_coef,
        actor_reg_coef=reg,
        learning_starts=10,
        policy_kwargs=dict(net_arch=[16, 16]),
        seed=0,
        device="cpu",
    )
    with th.no_grad():  # an anchor different from the actor, so that the KL term is not zero
        for param in model.anchor_actor.parameters():
            param.add_(0.1 * th.randn_like(param))
    obs = th.randn(64, 4, generator=th.Generator().manual_seed(3))
    th.manual_seed(11)
    loss, _ = model._actor_loss(obs)

    def squashed_log_prob(actor, gaussian: th.Tensor) -> th.Tensor:
        mean, log_std, _ = actor.get_action_dist_params(obs)
        log_prob = th.distributions.Normal(mean, log_std.exp()).log_prob(gaussian).sum(-1)
        return log_prob - th.log(1 - th.tanh(gaussian) ** 2 + 1e-6).sum(-1)

    with th.no_grad():
        mean, log_std, _ = model.actor.get_action_dist_params(obs)
        th.manual_seed(11)
        gaussian = th.distributions.Normal(mean, log_std.exp()).rsample()
        actions = th.tanh(gaussian)
        log_prob = squashed_log_prob(model.actor, gaussian)
        anchor_log_prob = squashed_log_prob(model.anchor_actor, gaussian)
        q1, q2 = model.critic(obs, actions)
        expected = (kl_coef * (log_prob - anchor_log_prob) + ent_coef * anchor_log_prob - q1.flatten()).mean()
        expected = expected + reg * ((mean**2).mean() + (log_std**2).mean())
        min_q = th.min(q1, q2).flatten()
        with_min_q = expected + (q1.flatten() - min_q).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-4)
    # the test can fail: min(Q1, Q2) differs from Q1 by more than the tolerance
    assert abs(with_min_q.item() - expected.item()) > 1e-3


def _fixed_batch(n: int = 32, seed: int = 8) -> ReplayBufferSamples:
    """A replay batch of PointReachEnv's shapes with a few terminal transitions."""
    gen = th.Generator().manual_seed(seed)
    dones = (th.rand(n, 1, generator=gen) < 0.25).float()
    return ReplayBufferSamples(
        th.randn(n, 4, generator=gen),
        th.rand(n, 2, generator=gen) * 2 - 1,
        th.randn(n, 4, generator=gen),
        dones,
        th.randn(n, 1, generator=gen),
    )


def test_mdpo_off_critic_step_regresses_q_on_the_v_target_and_v_on_min_q_minus_lambda_log_pi():
    """One SAC-v1 critic step on a fixed batch, against hand-computed targets and plain SGD:

    y_Q = r + gamma (1 - d) V_target(s'), y_V = min_i Q_i(s, a_theta) - lambda log pi_theta(a_theta|s),
    loss 0.5 sum_i MSE(Q_i, y_Q) + 0.5 MSE(V, y_V), then V_target <- tau V + (1 - tau) V_target.
    V_target is moved away from V first, so a Q target that bootstraps from the online V fails, as do
    a V target without -lambda log pi, a missing (1 - d) and a skipped Polyak update.
    """
    gamma, tau, ent_coef, learning_rate, n = 0.9, 0.1, 0.3, 0.1, 32
    model = MDPOOff(
        "MlpPolicy",
        PointReachEnv(),
        gamma=gamma,
        tau=tau,
        ent_coef=ent_coef,
        learning_rate=learning_rate,
        policy_kwargs=dict(net_arch=[16, 16], optimizer_class=th.optim.SGD, optimizer_kwargs={}),
        seed=0,
        device="cpu",
    )
    model.set_logger(configure(None, []))
    batch = _fixed_batch(n)
    model.replay_buffer.sample = lambda *args, **kwargs: batch  # type: ignore[method-assign]
    with th.no_grad():
        for param in model.value_target.parameters():
            param.add_(0.3 * th.randn(param.shape, generator=th.Generator().manual_seed(9)))
    critic, value, value_target, actor = (
        copy.deepcopy(m) for m in (model.critic, model.value_net, model.value_target, model.actor)
    )

    th.manual_seed(10)
    model.train(gradient_steps=1, batch_size=n)

    th.manual_seed(10)  # the same reparameterised sample as the actor loss's
    with th.no_grad():
        actions_pi, log_pi = actor.action_log_prob(batch.observations)
        q_pi = th.minimum(*critic(batch.observations, actions_pi)).flatten()
        value_targets = q_pi - ent_coef * log_pi
        q_targets = (
            batch.rewards.flatten() + gamma * (1 - batch.dones.flatten()) * value_target(batch.next_observations).flatten()
        )
    loss = sum(0.5 * ((q.flatten() - q_targets) ** 2).mean() for q in critic(batch.observations, batch.actions))
    loss = loss + 0.5 * ((value(batch.observations).flatten() - value_targets) ** 2).mean()
    loss.backward()
    for before, after in ((critic, model.critic), (value, model.value_net)):
        for (name, param), new in zip(before.named_parameters(), after.parameters(), strict=True):
            th.testing.assert_close(new.detach(), param.detach() - learning_rate * param.grad, atol=1e-6, rtol=1e-5, msg=name)
    for old, new_v, new_target in zip(
        value_target.parameters(), model.value_net.parameters(), model.value_target.parameters(), strict=True
    ):
        th.testing.assert_close(new_target, tau * new_v.detach() + (1 - tau) * old.detach(), atol=1e-6, rtol=1e-5)
    # the check can fail: V and V_target differ where the target is read
    with th.no_grad():
        gap = (value(batch.next_observations) - value_target(batch.next_observations)).abs().mean().item()
    assert gap > 0.1 and (ent_coef * log_pi).abs().mean().item() > 0.1


def test_anchor_is_hard_copied_every_m_gradient_steps():
    model = _make(MDPOOff, {**SMALL_OFF, "sgd_steps": 3})
    model.learn(60)  # fills the buffer (50 warm-up steps) and does 10 gradient steps
    start = model._n_updates
    snapshots = {}
    for step in range(start, start + 8):
        snapshots[step] = _flat_params(model.actor)
        model.train(gradient_steps=1, batch_size=32)
        last_copy = step - step % 3
        if last_copy >= start:
            th.testing.assert_close(_flat_params(model.anchor_actor), snapshots[last_copy], atol=0, rtol=0)
        assert not th.equal(_flat_params(model.anchor_actor), _flat_params(model.actor))
    assert not any(p.requires_grad for p in model.anchor_actor.parameters())


def test_deterministic_rollouts_store_the_mean_action():
    model = _make(MDPOOff, {**SMALL_OFF, "deterministic_rollouts": True, "learning_rate": 0.0})
    model.learn(80)
    obs = th.as_tensor(model.replay_buffer.observations[50:80, 0])
    with th.no_grad():
        mean_actions = model.actor(obs, deterministic=True).numpy()
    np.testing.assert_allclose(model.replay_buffer.actions[50:80, 0], mean_actions, atol=1e-6)
    stochastic = _make(MDPOOff, {**SMALL_OFF, "learning_rate": 0.0})
    stochastic.learn(80)
    obs = th.as_tensor(stochastic.replay_buffer.observations[50:80, 0])
    with th.no_grad():
        mean_actions = stochastic.actor(obs, deterministic=True).numpy()
    assert np.abs(stochastic.replay_buffer.actions[50:80, 0] - mean_actions).max() > 0.1


# --------------------------------------------------------------------------- learning on a toy task


def test_mdpo_learns_point_reach():
    kwargs = dict(n_steps=512, batch_size=64, learning_rate=1e-3)
    untrained = _make(MDPO, kwargs)
    untrained_return = evaluate(untrained, PointReachEnv(), n_episodes=20, seed=100).return_mean
    model = _make(MDPO, kwargs).learn(20_000)
    trained_return = evaluate(model, PointReachEnv(), n_episodes=20, seed=100).return_mean
    assert untrained_return < REACH_THRESHOLD
    assert trained_return > REACH_THRESHOLD, f"MDPO return {trained_return:.1f} (untrained {untrained_return:.1f})"


@pytest.mark.parametrize("use_sac_v1_critics", [True, False], ids=["v1-critics", "v2-critics"])
def test_mdpo_off_learns_point_reach(use_sac_v1_critics: bool):
    kwargs = dict(
        learning_starts=500,
        sgd_steps=100,
        use_sac_v1_critics=use_sac_v1_critics,
        learning_rate=1e-3,
        policy_kwargs=dict(net_arch=[64, 64]),
    )
    untrained = _make(MDPOOff, kwargs)
    untrained_return = evaluate(untrained, PointReachEnv(), n_episodes=20, seed=100).return_mean
    model = _make(MDPOOff, kwargs).learn(3_000)
    trained_return = evaluate(model, PointReachEnv(), n_episodes=20, seed=100).return_mean
    assert untrained_return < REACH_THRESHOLD
    assert trained_return > REACH_THRESHOLD, f"MDPOOff return {trained_return:.1f} (untrained {untrained_return:.1f})"


# --------------------------------------------------------------------------- SB3 contract

VARIANTS = [
    pytest.param(MDPO, SMALL_ON, id="MDPO"),
    pytest.param(MDPOOff, SMALL_OFF, id="MDPOOff-v1"),
    pytest.param(MDPOOff, {**SMALL_OFF, "use_sac_v1_critics": False}, id="MDPOOff-v2"),
]


@pytest.mark.parametrize(("algo", "variant"), VARIANTS)
def test_learn_predict_save_load_round_trip(algo: type, variant: dict, tmp_path):
    model = _make(algo, variant).learn(128)
    obs = np.stack([PointReachEnv().reset(seed=i)[0] for i in range(10)])
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (10, 2)
    assert np.all(np.abs(actions) <= 1.0)
    single, _ = model.predict(obs[0], deterministic=True)
    assert single.shape == (2,)

    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip", env=PointReachEnv(), device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    for (name, param), loaded_param in zip(
        model.policy.state_dict().items(), loaded.policy.state_dict().values(), strict=True
    ):
        assert th.equal(param, loaded_param), name
    loaded.learn(64)  # training goes on after loading


@pytest.mark.parametrize("algo", [MDPO, MDPOOff])
@pytest.mark.parametrize("env", ["CartPole-v1", gym.make("CartPole-v1")], ids=["id", "instance"])
def test_non_box_action_space_is_rejected_at_construction(algo: type, env):
    with pytest.raises(ValueError, match=rf"{algo.__name__}.*Box.*Discrete\(2\)"):
        algo("MlpPolicy", env)


@pytest.mark.parametrize(("algo", "variant"), VARIANTS)
def test_same_seed_same_run(algo: type, variant: dict):
    first = _make(algo, variant, seed=3).learn(128)
    second = _make(algo, variant, seed=3).learn(128)
    other = _make(algo, variant, seed=4).learn(128)
    th.testing.assert_close(_flat_params(first.policy), _flat_params(second.policy), atol=0, rtol=0)
    assert not th.equal(_flat_params(first.policy), _flat_params(other.policy))


@pytest.mark.parametrize(
    ("algo", "kwargs", "message"),
    [
        (MDPO, dict(sgd_steps=0), "sgd_steps"),
        (MDPO, dict(step_size=-1.0), "step_size"),
        (MDPO, dict(min_step_size=0.0), "min_step_size"),
        (MDPO, dict(schedule_horizon=0), "schedule_horizon"),
        (MDPO, dict(clip_range_vf=0.0), "clip_range_vf"),
        (MDPOOff, dict(ent_coef="auto"), "ent_coef"),
        (MDPOOff, dict(kl_coef=0.0), "kl_coef"),
        (MDPOOff, dict(sgd_steps=0), "sgd_steps"),
        (MDPOOff, dict(actor_reg_coef=-1.0), "actor_reg_coef"),
    ],
)
def test_bad_hyperparameters_are_rejected(algo: type, kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        algo("MlpPolicy", PointReachEnv(), **kwargs)


def test_off_policy_policy_rejects_gsde():
    env = PointReachEnv()
    with pytest.raises(ValueError, match="gSDE"):
        MDPOOffPolicy(env.observation_space, env.action_space, lambda _: 3e-4, use_sde=True)
