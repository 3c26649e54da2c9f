"""Tests of on-policy MDPO and off-policy MDPOOff (issue 5, item 6)."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC

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


def test_mdpo_penalises_kl_from_new_to_old_policy():
    """After one iteration the logged KL is KL(pi_{k+1} || pi_k) on the rollout, not KL(pi_k || pi_{k+1})."""
    model = _make(MDPO, {**SMALL_ON, "learning_rate": 0.05, "step_size": 10.0})
    anchor = copy.deepcopy(model.policy)
    model.learn(64)
    obs = th.as_tensor(model.rollout_buffer.observations.reshape(64, -1))
    with th.no_grad():
        new, old = model.policy.get_distribution(obs).distribution, anchor.get_distribution(obs).distribution
        kl_new_old = th.distributions.kl_divergence(new, old).sum(-1).mean().item()
        kl_old_new = th.distributions.kl_divergence(old, new).sum(-1).mean().item()
    logged = model.logger.name_to_value["train/kl"]
    assert logged == pytest.approx(kl_new_old, rel=1e-4)
    assert logged != pytest.approx(kl_old_new, rel=1e-2)


def test_step_size_follows_the_official_annealing_with_floor():
    recorded: list[float] = []
    model = _make(MDPO, SMALL_ON)
    model.train = lambda: recorded.append(model._current_step_size())  # type: ignore[method-assign]
    model.learn(4 * 64)
    # t_k = 1 - (k - 1) / K with K = 4
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
