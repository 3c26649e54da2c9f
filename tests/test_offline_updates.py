"""One gradient step of each offline update on a fixed batch, against a reference written out in the test.

Every algorithm is built with plain SGD (its optimizers replaced), its target networks moved away from
the online ones, and a dataset with terminals, timeouts, costs, observations far from zero mean and
actions in [-2, 2]. ``train(1)`` draws its batch with torch's generator: the reference reseeds, draws
the same indices and builds the batch from the dataset's raw arrays by hand (normalised observations,
actions rescaled to [-1, 1], scaled rewards), then applies the paper's losses to copies of the networks
taken before the step. The parameters after the step must agree to float precision, so a flipped sign,
a removed normalisation, a bypassed target network, a missing (1 - d) or a term forced to a constant
fails the test that names that update.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.logger import configure
from torch import nn

from rlkit.a2pr import A2PR
from rlkit.bc import BC
from rlkit.common.diffusion import denoising_loss
from rlkit.data import OfflineDataset
from rlkit.fisor import FISOR
from rlkit.iql import IQL
from rlkit.safe_baselines import BCAll, TD3BCLag
from rlkit.td3bc import TD3BC

th.set_num_threads(1)

N_EPISODES, EPISODE_LENGTH, BATCH, LR = 30, 10, 64, 0.05
ACTION_HIGH = 2.0
NET = dict(net_arch=[16, 16])


def synthetic_dataset(seed: int = 0) -> OfflineDataset:
    """30 episodes of 10 steps, random data; even episodes end in a terminal, odd ones in a timeout."""
    rng = np.random.default_rng(seed)
    n = N_EPISODES * EPISODE_LENGTH
    ends = np.zeros(n, dtype=bool)
    ends[EPISODE_LENGTH - 1 :: EPISODE_LENGTH] = True
    terminal_episode = np.repeat(np.arange(N_EPISODES) % 2 == 0, EPISODE_LENGTH)
    observations = rng.normal(3.0, 2.0, (n, 3)).astype(np.float32)
    next_observations = np.roll(observations, -1, axis=0)  # the next row within an episode
    next_observations[ends] = rng.normal(3.0, 2.0, (int(ends.sum()), 3))
    return OfflineDataset.from_dict(
        {
            "observations": observations,
            "actions": rng.uniform(-ACTION_HIGH, ACTION_HIGH, (n, 2)).astype(np.float32),
            "rewards": rng.normal(0.5, 1.0, n).astype(np.float32),
            "next_observations": next_observations,
            "terminals": ends & terminal_episode,
            "timeouts": ends & ~terminal_episode,
            "costs": (rng.random(n) < 0.3).astype(np.float32),
        },
        observation_space=spaces.Box(-np.inf, np.inf, (3,), np.float32),
        action_space=spaces.Box(-ACTION_HIGH, ACTION_HIGH, (2,), np.float32),
        dataset_id="test/synthetic-v0",
    )


@pytest.fixture(scope="module")
def dataset() -> OfflineDataset:
    return synthetic_dataset()


class Batch(NamedTuple):
    """A batch built by hand from the dataset's raw arrays."""

    obs: th.Tensor
    actions: th.Tensor
    next_obs: th.Tensor
    rewards: th.Tensor
    dones: th.Tensor
    timeouts: th.Tensor
    costs: th.Tensor


def episode_reward_scale(data: OfflineDataset) -> float:
    """IQL's and FISOR's reward scale: episode length / (best - worst episode return), from the fixed episodes."""
    returns = data.rewards.astype(np.float64).reshape(N_EPISODES, EPISODE_LENGTH).sum(axis=1)
    return EPISODE_LENGTH / (returns.max() - returns.min())


def hand_batch(data: OfflineDataset, seed: int, normalize_obs: bool = True, reward_scale: float = 1.0) -> Batch:
    """The batch ``train`` draws after ``th.manual_seed(seed)``: the same indices, transformed by hand."""
    th.manual_seed(seed)
    inds = th.randint(len(data), (BATCH,)).numpy()
    mean = data.observations.astype(np.float64).mean(axis=0)
    std = data.observations.astype(np.float64).std(axis=0) + 1e-3

    def observations(x: np.ndarray) -> th.Tensor:
        x = x[inds].astype(np.float64)
        return th.as_tensor((x - mean) / std if normalize_obs else x, dtype=th.float32)

    def column(x: np.ndarray, scale: float = 1.0) -> th.Tensor:
        return th.as_tensor(scale * x[inds].astype(np.float64), dtype=th.float32).reshape(-1, 1)

    return Batch(
        observations(data.observations),
        th.as_tensor(data.actions[inds] / ACTION_HIGH, dtype=th.float32),
        observations(data.next_observations),
        column(data.rewards, reward_scale),
        column(data.terminals),
        column(data.timeouts),
        column(data.costs),
    )


def use_sgd(*modules: nn.Module) -> None:
    """Replace each module's optimizer by plain SGD over the same parameters, at the same learning rate."""
    for module in modules:
        optimizer = module.optimizer
        params = [param for group in optimizer.param_groups for param in group["params"]]
        module.optimizer = th.optim.SGD(params, lr=optimizer.param_groups[0]["lr"])


def perturb(*modules: nn.Module, scale: float = 0.3, seed: int = 99) -> None:
    """Move target networks away from the online ones, so that using one for the other shows."""
    gen = th.Generator().manual_seed(seed)
    with th.no_grad():
        for module in modules:
            for param in module.parameters():
                param.add_(scale * th.randn(param.shape, generator=gen))


def sgd_step(module: nn.Module, loss: th.Tensor, lr: float) -> None:
    """One plain gradient step of ``module`` on ``loss`` (other modules in the graph are left alone).

    The gradient must not vanish, so that agreement with the algorithm's step is not trivial.
    """
    params = [param for param in module.parameters() if param.requires_grad]
    grads = th.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    assert sum(float((grad**2).sum()) for grad in grads if grad is not None) > 1e-12, "a vanishing gradient"
    with th.no_grad():
        for param, grad in zip(params, grads, strict=True):
            if grad is not None:
                param.sub_(lr * grad)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    with th.no_grad():
        for target_param, param in zip(target.parameters(), source.parameters(), strict=True):
            target_param.copy_(tau * param + (1 - tau) * target_param)


def assert_same(actual: nn.Module, expected: nn.Module, name: str) -> None:
    for (key, param), other in zip(actual.named_parameters(), expected.parameters(), strict=True):
        th.testing.assert_close(
            param.detach(), other.detach(), atol=2e-5, rtol=1e-4, msg=lambda m, key=key: f"{name}.{key}: {m}"
        )


def mse(prediction: th.Tensor, target: th.Tensor) -> th.Tensor:
    return ((prediction - target) ** 2).mean()


def min_q(critic: nn.Module, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
    q1, q2 = critic(obs, actions)
    return th.minimum(q1, q2)


def max_q(critic: nn.Module, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
    q1, q2 = critic(obs, actions)
    return th.maximum(q1, q2)


def smoothed_next_actions(
    actor_target: nn.Module, next_obs: th.Tensor, noise_std: float = 0.2, noise_clip: float = 0.5
) -> th.Tensor:
    """TD3's target policy smoothing, the noise drawn right after the batch indices as ``train`` draws it."""
    noise = th.empty(next_obs.shape[0], 2).normal_(0, noise_std).clamp(-noise_clip, noise_clip)
    return (actor_target(next_obs) + noise).clamp(-1, 1)


def _prepare(model, *modules: nn.Module) -> None:
    model.set_logger(configure(None, []))
    use_sgd(*modules)


# --------------------------------------------------------------------------- BC, BC-All


@pytest.mark.parametrize("algo", [BC, BCAll])
def test_bc_step_regresses_normalised_states_on_rescaled_dataset_actions(algo, dataset):
    """BC: one SGD step on mean ||pi(s) - a||^2, s normalised by the dataset statistics, a rescaled to [-1, 1].

    A flipped sign, unnormalised training states or a state-independent target fails the test.
    """
    model = algo("MlpPolicy", None, dataset=dataset, learning_rate=LR, policy_kwargs=NET, seed=0, device="cpu")
    _prepare(model, model.actor)
    actor = copy.deepcopy(model.actor)
    th.manual_seed(1)
    model.train(1, BATCH)
    batch = hand_batch(dataset, 1)
    sgd_step(actor, mse(actor(batch.obs), batch.actions), LR)
    assert_same(model.actor, actor, "actor")


# --------------------------------------------------------------------------- TD3+BC


def test_td3bc_step_is_td3s_critic_and_the_lambda_normalised_bc_actor(dataset):
    """TD3+BC (Fujimoto & Gu, 2021): y = r + gamma (1 - d) min_i Q'_i(s', clip(pi'(s') + clip(eps))), then the actor on
    -lambda Q_1(s, pi(s)) + (pi(s) - a)^2 with lambda = alpha / mean|Q_1(s, pi(s))| (detached), then Polyak updates.

    Fails with the target networks bypassed, max instead of min over the critics, no (1 - d), lambda = alpha
    (no normalisation), the Q term's sign flipped or the BC term dropped.
    """
    gamma, tau, alpha = 0.9, 0.1, 2.5
    model = TD3BC(
        "MlpPolicy", None, dataset=dataset, learning_rate=LR, gamma=gamma, tau=tau, alpha=alpha, policy_delay=1,
        policy_kwargs=NET, seed=0, device="cpu",
    )  # fmt: skip
    _prepare(model, model.actor, model.critic)
    perturb(model.actor_target, model.critic_target)
    actor, actor_target, critic, critic_target = (
        copy.deepcopy(m) for m in (model.actor, model.actor_target, model.critic, model.critic_target)
    )
    th.manual_seed(2)
    model.train(1, BATCH)

    batch = hand_batch(dataset, 2)
    with th.no_grad():
        next_actions = smoothed_next_actions(actor_target, batch.next_obs)
        y = batch.rewards + gamma * (1 - batch.dones) * min_q(critic_target, batch.next_obs, next_actions)
    sgd_step(critic, sum(mse(q, y) for q in critic(batch.obs, batch.actions)), LR)
    pi = actor(batch.obs)
    q_pi = critic.q1_forward(batch.obs, pi)
    sgd_step(actor, -alpha / q_pi.abs().mean().detach() * q_pi.mean() + mse(pi, batch.actions), LR)
    soft_update(critic_target, critic, tau)
    soft_update(actor_target, actor, tau)

    for name, expected in (
        ("critic", critic),
        ("actor", actor),
        ("critic_target", critic_target),
        ("actor_target", actor_target),
    ):
        assert_same(getattr(model, name), expected, name)


# --------------------------------------------------------------------------- IQL


def iql_value_and_critic_reference(
    value: nn.Module, critic: nn.Module, critic_target: nn.Module, batch: Batch, expectile: float, gamma: float, tau: float
) -> th.Tensor:
    """IQL's eq. (5) and (6) on copies: V by expectile regression on min_i Q'_i(s, a), Q on r + gamma (1 - d) V(s').

    :return: the advantage min_i Q'_i(s, a) - V(s) with V before its step
    """
    with th.no_grad():
        target_q = min_q(critic_target, batch.obs, batch.actions)
        next_v = value(batch.next_obs)
    diff = target_q - value(batch.obs)
    weight = th.where(diff > 0, th.full_like(diff, expectile), th.full_like(diff, 1 - expectile))
    sgd_step(value, (weight * diff**2).mean(), LR)
    y = batch.rewards + gamma * (1 - batch.dones) * next_v
    sgd_step(critic, sum(mse(q, y) for q in critic(batch.obs, batch.actions)), LR)
    soft_update(critic_target, critic, tau)
    return diff.detach()


def test_iql_step_is_expectile_value_td_critic_and_advantage_weighted_actor(dataset):
    """IQL (Kostrikov et al., 2022): V on the upper expectile of min_i Q'_i(s, a) (eq. 5), Q on
    r + gamma (1 - d) V(s') with rewards scaled by length / (max - min return) (eq. 6), Polyak on Q', and the actor on
    -min(exp(beta (Q'(s, a) - V(s))), 100) log pi(a|s) (eq. 7).

    Fails with the expectile's side flipped, V regressed on the online critic, no (1 - d), constant weights,
    or no reward scaling.
    """
    gamma, tau, expectile, beta = 0.9, 0.1, 0.7, 3.0
    model = IQL(
        "MlpPolicy", None, dataset=dataset, learning_rate=LR, gamma=gamma, tau=tau, expectile=expectile, beta=beta,
        policy_kwargs=NET, seed=0, device="cpu",
    )  # fmt: skip
    _prepare(model, model.actor, model.critic, model.value)
    perturb(model.critic_target)
    value, critic, critic_target, actor = (
        copy.deepcopy(m) for m in (model.value, model.critic, model.critic_target, model.actor)
    )
    th.manual_seed(3)
    model.train(1, BATCH)

    batch = hand_batch(dataset, 3, reward_scale=episode_reward_scale(dataset))
    advantage = iql_value_and_critic_reference(value, critic, critic_target, batch, expectile, gamma, tau)
    weights = th.exp(beta * advantage).clamp(max=100.0).flatten()
    sgd_step(actor, -(weights * actor.log_prob(batch.obs, batch.actions)).mean(), LR)

    assert weights.std() > 0.1  # the weights are not constant
    for name, expected in (("value", value), ("critic", critic), ("critic_target", critic_target), ("actor", actor)):
        assert_same(getattr(model, name), expected, name)


# --------------------------------------------------------------------------- A2PR


def test_a2pr_step_critic_value_masked_vae_and_gated_actor(dataset):
    """A2PR (Liu et al., 2024), one step with the actor updated: TD3's critic; V(s) on
    min(r + gamma (1 - d) min_i Q_i(s', a~') with the updated critics, y); the VAE on its reconstruction error
    masked to Q_1(s, a) > V(s) plus its KL term; the actor on -lambda Q_1(s, pi(s)) + gate (pi(s) - a*)^2 with
    lambda = alpha / mean|Q_1(s, pi(s))|, a* the dataset action or the VAE's reconstruction of pi(s), whichever has
    the higher advantage, and gate = 1(A(a_vae) >= 0 or A(a) > 0); then the Polyak updates.

    Fails with the critic target network bypassed, the value target without its min, the VAE's mask removed, the
    gate forced to 1 or lambda = alpha (no normalisation).
    """
    gamma, tau, alpha, lr, vae_lr = 0.9, 0.1, 2.5, 0.005, 0.05  # a small step of Q, so that the mask stays mixed
    model = A2PR(
        "MlpPolicy", None, dataset=dataset, learning_rate=lr, vae_learning_rate=vae_lr, gamma=gamma, tau=tau,
        alpha=alpha, policy_delay=1, policy_kwargs=dict(net_arch=[16, 16], vae_net_arch=[16]), seed=0, device="cpu",
    )  # fmt: skip
    _prepare(model, model.actor, model.critic, model.value, model.vae)
    perturb(model.actor_target, model.critic_target)
    everything = model.replay_buffer._get_samples(th.arange(len(dataset)))
    with th.no_grad():
        # Q'(s, a) on both sides of Q(s, a), so that both branches of the value target's min occur
        for q_target, q in zip(model.critic_target.q_networks, model.critic.q_networks, strict=True):
            inputs = th.cat([everything.observations, everything.actions], dim=1)
            q_target[-1].bias.sub_((q_target(inputs) - q(inputs)).median())
        # V(s) in the middle of Q_1(s, a), so that the advantage mask keeps some actions and drops others
        gap = model.critic.q1_forward(everything.observations, everything.actions) - model.value(everything.observations)
        model.value.v_net[-1].bias.add_(gap.median())
    names = ("actor", "actor_target", "critic", "critic_target", "value", "vae")
    nets = {name: copy.deepcopy(getattr(model, name)) for name in names}
    actor, critic, value, vae = (nets[name] for name in ("actor", "critic", "value", "vae"))
    th.manual_seed(4)
    model.train(1, BATCH)

    batch = hand_batch(dataset, 4)
    not_done = 1 - batch.dones
    with th.no_grad():
        next_actions = smoothed_next_actions(nets["actor_target"], batch.next_obs)
        y = batch.rewards + gamma * not_done * min_q(nets["critic_target"], batch.next_obs, next_actions)
    sgd_step(critic, sum(mse(q, y) for q in critic(batch.obs, batch.actions)), lr)
    with th.no_grad():
        bootstrap = batch.rewards + gamma * not_done * min_q(critic, batch.next_obs, next_actions)
        q_data = critic.q1_forward(batch.obs, batch.actions)
        values = value(batch.obs)
    sgd_step(value, mse(value(batch.obs), th.minimum(bootstrap, y)), lr)
    positive = (q_data > values).float()
    reconstruction, mean, std = vae(batch.obs, batch.actions)
    kl = (-0.5 * (1 + 2 * th.log(std) - mean**2 - std**2)).mean()
    sgd_step(vae, (positive * (reconstruction - batch.actions) ** 2).mean() + 0.5 * kl, vae_lr)

    pi = actor(batch.obs)
    q_pi = critic.q1_forward(batch.obs, pi)
    vae_actions, _, _ = vae(batch.obs, pi)
    with th.no_grad():
        q_vae = critic.q1_forward(batch.obs, vae_actions)
    advantage_data, advantage_vae = q_data - values, q_vae - values
    target = th.where(advantage_vae >= advantage_data, vae_actions, batch.actions)
    gate = ((advantage_vae >= 0) | (advantage_data > 0)).float()
    sgd_step(actor, -alpha / q_pi.abs().mean().detach() * q_pi.mean() + (gate * (pi - target) ** 2).mean(), lr)
    soft_update(nets["critic_target"], critic, tau)
    soft_update(nets["actor_target"], actor, tau)

    # the check can fail: both sides of the value target's min, of the mask and of the gate occur
    assert (bootstrap < y).any() and (bootstrap > y).any()
    assert 0.1 < positive.mean().item() < 0.9 and 0 < gate.mean().item() < 1
    for name in names:
        assert_same(getattr(model, name), nets[name], name)


# --------------------------------------------------------------------------- TD3BC-Lag


@pytest.mark.parametrize("cost_limit", [0.0, 1000.0], ids=["multiplier-moves", "multiplier-projected-to-zero"])
def test_td3bc_lag_step_cost_critic_lagrangian_actor_and_dual_ascent(dataset, cost_limit: float):
    """TD3BC-Lag: TD3's reward critic; the cost critic on c + gamma (1 - d) max_i Q'_c,i(s', a~') (pessimistic); the
    actor on -lambda (Q_1 - mu max_i Q_c,i)(s, pi(s)) + (pi(s) - a)^2; then
    mu <- max(0, mu + lr_mu (mean max_i Q_c,i(s, pi(s)) - q_limit)), q_limit = kappa (1 - gamma^T) / (T (1 - gamma)).

    Fails with the dual step's sign flipped, no projection to mu >= 0, the cost term's sign flipped, an optimistic
    (min) cost target, a cost target without the costs or the actor's cost term from Q_c,1 alone.
    """
    gamma, tau, alpha, mu, mu_lr = 0.9, 0.1, 2.5, 0.5, 5.0
    model = TD3BCLag(
        "MlpPolicy", None, dataset=dataset, cost_limit=cost_limit, lagrangian_lr=mu_lr, initial_multiplier=mu,
        learning_rate=LR, gamma=gamma, tau=tau, alpha=alpha, policy_delay=1, policy_kwargs=NET, seed=0, device="cpu",
    )  # fmt: skip
    _prepare(model, model.actor, model.critic, model.cost_critic)
    perturb(model.actor_target, model.critic_target, model.cost_critic_target)
    everything = model.replay_buffer._get_samples(th.arange(len(dataset)))
    with th.no_grad():
        # Q_c,2(s, pi(s)) above Q_c,1 on about half of the states, so that the actor's max over the cost critics shows
        qc1, qc2 = model.cost_critic(everything.observations, model.actor(everything.observations))
        model.cost_critic.q_networks[1][-1].bias.sub_((qc2 - qc1).median())
    actor, actor_target, critic, critic_target, cost_critic, cost_critic_target = (
        copy.deepcopy(m)
        for m in (
            model.actor,
            model.actor_target,
            model.critic,
            model.critic_target,
            model.cost_critic,
            model.cost_critic_target,
        )
    )
    th.manual_seed(5)
    model.train(1, BATCH)

    batch = hand_batch(dataset, 5)
    with th.no_grad():
        next_actions = smoothed_next_actions(actor_target, batch.next_obs)
        y = batch.rewards + gamma * (1 - batch.dones) * min_q(critic_target, batch.next_obs, next_actions)
        y_cost = batch.costs + gamma * (1 - batch.dones) * max_q(cost_critic_target, batch.next_obs, next_actions)
    sgd_step(critic, sum(mse(q, y) for q in critic(batch.obs, batch.actions)), LR)
    sgd_step(cost_critic, sum(mse(q, y_cost) for q in cost_critic(batch.obs, batch.actions)), LR)
    pi = actor(batch.obs)
    q_pi, qc_pi = critic.q1_forward(batch.obs, pi), max_q(cost_critic, batch.obs, pi)
    lmbda = alpha / q_pi.abs().mean().detach()
    sgd_step(actor, -lmbda * (q_pi - mu * qc_pi).mean() + mse(pi, batch.actions), LR)
    q_limit = cost_limit * (1 - gamma**EPISODE_LENGTH) / (EPISODE_LENGTH * (1 - gamma))
    expected_mu = max(0.0, mu + mu_lr * (qc_pi.mean().item() - q_limit))
    for target, source in ((critic_target, critic), (cost_critic_target, cost_critic), (actor_target, actor)):
        soft_update(target, source, tau)

    qc1, qc2 = cost_critic(batch.obs, pi)
    assert (qc1 > qc2).any() and (qc1 < qc2).any()
    assert model.multiplier == pytest.approx(expected_mu, rel=1e-4, abs=1e-6)
    unprojected = mu + mu_lr * (qc_pi.mean().item() - q_limit)
    assert (unprojected > 0 and abs(unprojected - mu) > 1e-3) if cost_limit < 1 else unprojected < 0
    for name, expected in (
        ("critic", critic), ("cost_critic", cost_critic), ("actor", actor),
        ("critic_target", critic_target), ("cost_critic_target", cost_critic_target), ("actor_target", actor_target),
    ):  # fmt: skip
        assert_same(getattr(model, name), expected, name)


# --------------------------------------------------------------------------- FISOR


def fisor_weight(v_h: th.Tensor, q_h: th.Tensor, advantage: th.Tensor) -> th.Tensor:
    """Eq. (10), element by element: infeasible s -> clip(exp(5 (V_h - Q_h)), 0, 150); feasible s, safe a ->
    clip(exp(3 A), 0, 100); feasible s, unsafe a -> 0."""
    weights = []
    for vh, qh, adv in zip(v_h.flatten().tolist(), q_h.flatten().tolist(), advantage.flatten().tolist(), strict=True):
        if vh > 0:
            weights.append(min(math.exp(5.0 * (vh - qh)), 150.0))
        elif qh <= 0:
            weights.append(min(math.exp(3.0 * adv), 100.0))
        else:
            weights.append(0.0)
    return th.tensor(weights)


def test_fisor_step_weighted_denoising_iql_critics_and_hj_feasibility(dataset):
    """FISOR (Zheng et al., 2024), one step: two weighted denoising steps on the halves of the batch with eq. (10)'s
    weights from the critics before the step, and the EMA actor; V (upper expectile) and Q on r + gamma m V(s');
    V_h by the lower expectile of max_i Q'_h,i(s, a) (eq. 6) and Q_h on the HJ target
    m ((1 - gamma) h + gamma max(h, V_h(s'))) + (1 - m) h with h = 25 where c > 0 else -1 (eq. 5), m = 1 - (terminal
    or timeout); Polyak updates of both target critics.

    Fails with unweighted denoising, h's sign flipped, V_h(s) in place of V_h(s'), min in place of max in the HJ
    target, or the lower expectile's side flipped.
    """
    gamma, tau, ema, expectile = 0.9, 0.1, 0.2, 0.9
    model = FISOR(
        "MlpPolicy", None, dataset=dataset, batch_size=BATCH, critic_batch_size=48, learning_rate=LR, gamma=gamma,
        tau=tau, actor_ema=ema, policy_kwargs=dict(net_arch=[16, 16], time_embed_dim=8, n_candidates=4), seed=0, device="cpu",
    )  # fmt: skip
    _prepare(model, model.actor, model.critic, model.value, model.cost_critic, model.cost_value)
    perturb(model.critic_target, model.cost_critic_target)
    # a feasibility value with both signs, so that the three cases of the weight all occur
    everything = model.replay_buffer._get_samples(th.arange(len(dataset)))
    with th.no_grad():
        model.cost_value.v_net[-1].bias.sub_(model.cost_value(everything.observations).median())
    names = ("actor", "actor_target", "critic", "critic_target", "value", "cost_critic", "cost_critic_target", "cost_value")
    nets = {name: copy.deepcopy(getattr(model, name)) for name in names}
    th.manual_seed(6)
    model.train(1, BATCH)

    batch = hand_batch(dataset, 6, normalize_obs=False, reward_scale=episode_reward_scale(dataset))
    actions = batch.actions.clamp(-1 + 1e-5, 1 - 1e-5)
    mask = 1 - th.clamp(batch.dones + batch.timeouts, max=1)
    h = th.where(batch.costs > 0, th.full_like(batch.costs, 25.0), th.full_like(batch.costs, -1.0))
    with th.no_grad():
        advantage = min_q(nets["critic_target"], batch.obs, actions) - nets["value"](batch.obs)
        v_h = nets["cost_value"](batch.obs)
        weights = fisor_weight(v_h, max_q(nets["cost_critic_target"], batch.obs, actions), advantage)
    for part in (slice(0, BATCH // 2), slice(BATCH // 2, BATCH)):
        loss = denoising_loss(nets["actor"], model.policy.schedule, batch.obs[part], actions[part], weights[part])
        sgd_step(nets["actor"], loss, LR)
        soft_update(nets["actor_target"], nets["actor"], ema)

    part = slice(0, 48)
    obs, next_obs, actions, mask, h, rewards = (
        batch.obs[part],
        batch.next_obs[part],
        actions[part],
        mask[part],
        h[part],
        batch.rewards[part],
    )
    with th.no_grad():
        target_q = min_q(nets["critic_target"], obs, actions)
    diff = target_q - nets["value"](obs)
    weight = th.where(diff > 0, th.full_like(diff, expectile), th.full_like(diff, 1 - expectile))
    sgd_step(nets["value"], (weight.detach() * diff**2).mean(), LR)
    with th.no_grad():
        y = rewards + mask * gamma * nets["value"](next_obs)
    sgd_step(nets["critic"], sum(mse(q, y) for q in nets["critic"](obs, actions)), LR)
    soft_update(nets["critic_target"], nets["critic"], tau)

    with th.no_grad():
        q_h = max_q(nets["cost_critic_target"], obs, actions)
    diff_h = q_h - nets["cost_value"](obs)
    weight_h = th.where(diff_h < 0, th.full_like(diff_h, expectile), th.full_like(diff_h, 1 - expectile))
    sgd_step(nets["cost_value"], (weight_h.detach() * diff_h**2).mean(), LR)
    with th.no_grad():
        next_v_h = nets["cost_value"](next_obs)
        y_h = mask * ((1 - gamma) * h + gamma * th.maximum(h, next_v_h)) + (1 - mask) * h
    sgd_step(nets["cost_critic"], sum(mse(q, y_h) for q in nets["cost_critic"](obs, actions)), LR)
    soft_update(nets["cost_critic_target"], nets["cost_critic"], tau)

    # the check can fail: all three weight cases, both signs of h and of the HJ max, masked and unmasked rows
    assert (v_h > 0).any() and (v_h <= 0).any() and (weights == 0).any() and (weights > 0).any()
    assert (h > 0).any() and (h < 0).any() and (mask == 0).any() and (next_v_h > h).any() and (next_v_h < h).any()
    for name in names:
        assert_same(getattr(model, name), nets[name], name)


# --------------------------------------------------------------------------- policy delay, noise clip, weight cap, horizon


def _changed(model, before: dict[str, nn.Module], name: str) -> bool:
    return any(not th.equal(a, b) for a, b in zip(getattr(model, name).parameters(), before[name].parameters(), strict=True))


@pytest.mark.parametrize("algo", [TD3BC, TD3BCLag])
def test_actor_targets_and_multiplier_wait_for_the_policy_delay(algo, dataset):
    """With policy_delay=2 the first step moves the critics only: the actor, every target network and TD3BC-Lag's
    multiplier keep their values; the second step moves all of them."""
    kwargs = dict(cost_limit=0.0, lagrangian_lr=5.0, initial_multiplier=0.5) if algo is TD3BCLag else {}
    model = algo(
        "MlpPolicy", None, dataset=dataset, learning_rate=LR, tau=0.1, policy_delay=2, policy_kwargs=NET, seed=0,
        device="cpu", **kwargs,
    )  # fmt: skip
    critics = ("critic", "cost_critic") if algo is TD3BCLag else ("critic",)
    targets = tuple(f"{name}_target" for name in ("actor", *critics))
    _prepare(model, model.actor, *(getattr(model, name) for name in critics))
    perturb(*(getattr(model, name) for name in targets))
    before = {name: copy.deepcopy(getattr(model, name)) for name in ("actor", *critics, *targets)}
    multiplier = getattr(model, "multiplier", None)
    th.manual_seed(7)
    model.train(1, BATCH)
    assert all(_changed(model, before, name) for name in critics)
    assert not any(_changed(model, before, name) for name in ("actor", *targets))
    assert getattr(model, "multiplier", None) == multiplier
    model.train(1, BATCH)
    assert all(_changed(model, before, name) for name in before)
    if algo is TD3BCLag:
        assert model.multiplier != multiplier


def test_td3bc_target_policy_noise_is_clipped_before_it_is_added(dataset):
    """The target action is clip(pi'(s') + clip(eps, -c, c), -1, 1) with eps ~ N(0, sigma^2): with sigma = 1 and
    c = 0.05 most draws are clipped, and the critic's step must use the clipped noise (the actor waits: policy_delay 10)."""
    gamma, sigma, clip = 0.9, 1.0, 0.05
    model = TD3BC(
        "MlpPolicy", None, dataset=dataset, learning_rate=LR, gamma=gamma, policy_delay=10, target_policy_noise=sigma,
        target_noise_clip=clip, policy_kwargs=NET, seed=0, device="cpu",
    )  # fmt: skip
    _prepare(model, model.actor, model.critic)
    perturb(model.actor_target, model.critic_target)
    actor_target, critic, critic_target = (copy.deepcopy(m) for m in (model.actor_target, model.critic, model.critic_target))
    th.manual_seed(8)
    model.train(1, BATCH)

    batch = hand_batch(dataset, 8)
    with th.no_grad():
        noise = th.empty(BATCH, 2).normal_(0, sigma)
        next_actions = (actor_target(batch.next_obs) + noise.clamp(-clip, clip)).clamp(-1, 1)
        y = batch.rewards + gamma * (1 - batch.dones) * min_q(critic_target, batch.next_obs, next_actions)
    sgd_step(critic, sum(mse(q, y) for q in critic(batch.obs, batch.actions)), LR)

    # the check can fail: most draws are clipped and most target actions are inside the bounds
    assert (noise.abs() > clip).float().mean() > 0.5 and (next_actions.abs() < 1).float().mean() > 0.5
    assert_same(model.critic, critic, "critic")


def test_iql_advantage_weights_are_capped_at_exp_adv_max(dataset):
    """IQL's actor weights are min(exp(beta A), exp_adv_max): with a cap of 1.5 some weights are capped and others
    are not, and the actor's step must use the capped weights."""
    gamma, tau, expectile, beta, cap = 0.9, 0.1, 0.7, 3.0, 1.5
    model = IQL(
        "MlpPolicy", None, dataset=dataset, learning_rate=LR, gamma=gamma, tau=tau, expectile=expectile, beta=beta,
        exp_adv_max=cap, policy_kwargs=NET, seed=0, device="cpu",
    )  # fmt: skip
    _prepare(model, model.actor, model.critic, model.value)
    perturb(model.critic_target)
    value, critic, critic_target, actor = (
        copy.deepcopy(m) for m in (model.value, model.critic, model.critic_target, model.actor)
    )
    th.manual_seed(3)
    model.train(1, BATCH)

    batch = hand_batch(dataset, 3, reward_scale=episode_reward_scale(dataset))
    advantage = iql_value_and_critic_reference(value, critic, critic_target, batch, expectile, gamma, tau)
    uncapped = th.exp(beta * advantage).flatten()
    sgd_step(actor, -(uncapped.clamp(max=cap) * actor.log_prob(batch.obs, batch.actions)).mean(), LR)

    assert (uncapped > cap).float().mean() > 0.1 and (uncapped < cap).float().mean() > 0.1
    assert_same(model.actor, actor, "actor")


class _SyntheticSpacesEnv(gym.Env):
    """An env with the synthetic dataset's spaces and a time limit of 40 steps as an attribute (as rlkit's toy tasks)."""

    observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = spaces.Box(-ACTION_HIGH, ACTION_HIGH, (2,), np.float32)
    max_episode_steps = 40

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, False, False, {}


def _time_limited_env() -> gym.Env:
    """The same spaces through gymnasium's registry, with ``max_episode_steps=40`` in the spec."""
    env_id = "rlkit-tests/synthetic-spaces-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=_SyntheticSpacesEnv, max_episode_steps=40)
    return gym.make(env_id)


@pytest.mark.parametrize(
    ("make_env", "horizon"),
    [(lambda: None, EPISODE_LENGTH), (_SyntheticSpacesEnv, 40), (_time_limited_env, 40)],
    ids=["no-env-longest-episode", "env-attribute", "time-limit-spec"],
)
def test_per_episode_scales_use_the_envs_time_limit_else_the_longest_episode(dataset, make_env, horizon):
    """IQL's reward scale T / (max - min return) and TD3BC-Lag's per-state budget
    q_limit = kappa (1 - gamma^T) / (T (1 - gamma)) take T from the env's time limit (40) when there is an env,
    else from the dataset's longest episode (10)."""
    returns = dataset.rewards.astype(np.float64).reshape(N_EPISODES, EPISODE_LENGTH).sum(axis=1)
    iql = IQL("MlpPolicy", make_env(), dataset=dataset, policy_kwargs=NET, seed=0, device="cpu")
    assert iql.replay_buffer.reward_scale == pytest.approx(horizon / (returns.max() - returns.min()), rel=1e-5)
    kappa, gamma = 5.0, 0.9
    lag = TD3BCLag("MlpPolicy", make_env(), dataset=dataset, cost_limit=kappa, gamma=gamma, policy_kwargs=NET, device="cpu")
    assert lag.q_limit == pytest.approx(kappa * (1 - gamma**horizon) / (horizon * (1 - gamma)), rel=1e-6)
