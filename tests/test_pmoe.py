"""Tests of PMOE-SAC and PMOE-PPO: K = 1 is SAC, the estimator, the mixture, the update steps, learning, the SB3 contract."""

from __future__ import annotations

import copy
import math
from statistics import NormalDist
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from rlkit.common.evaluation import evaluate
from rlkit.envs.toy import PointReachEnv
from rlkit.pmoe import PMOEPPO, PMOESAC, GaussianMixtureDistribution

th.set_num_threads(1)

SMALL_SAC = dict(learning_starts=50, batch_size=32, policy_kwargs=dict(net_arch=[16, 16]))
SMALL_PPO = dict(n_steps=64, batch_size=32, n_epochs=1, policy_kwargs=dict(net_arch=[16, 16], q_net_arch=[16]))

# Learning threshold on PointReachEnv (ref_min_score -52.6 random, ref_max_score -5.1 scripted expert):
# untrained agents (deterministic, near-zero actions) score about -60.
REACH_THRESHOLD = -20.0


class TwoPeakBandit(gym.Env):
    """One-step task, a in [-1, 1], reward max of two Gaussian bumps of height 1 at +-``peak``.

    The observation is constant, so the optimal policies are bimodal: a unimodal Gaussian
    policy that starts centred between the peaks has no gradient towards either.

    :param peak: position of the two peaks
    :param width: standard deviation of each bump
    """

    def __init__(self, peak: float = 0.7, width: float = 0.25):
        super().__init__()
        self.peak, self.width = peak, width
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reward(self, action: float) -> float:
        return math.exp(-0.5 * ((abs(action) - self.peak) / self.width) ** 2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = self.reward(float(np.clip(action[0], -1.0, 1.0)))
        return np.zeros(1, dtype=np.float32), reward, True, False, {}


def _flat_params(module: th.nn.Module) -> th.Tensor:
    return th.cat([p.detach().flatten() for p in module.parameters()])


def _make(algo: type, variant: dict, seed: int = 0, env: gym.Env | None = None, **kwargs: Any) -> PMOESAC | PMOEPPO:
    return algo("MlpPolicy", env or PointReachEnv(), seed=seed, device="cpu", **variant, **kwargs)


def _set_linear_critic(critic: th.nn.Module, obs_dim: int) -> None:
    """Make every Q-network of a critic built with ``qf=[]`` compute Q(s, a) = a_0."""
    with th.no_grad():
        for q_net in critic.q_networks:
            (layer,) = q_net
            layer.weight.zero_()
            layer.bias.zero_()
            layer.weight[0, obs_dim] = 1.0


def _set_constant_experts(
    model: PMOESAC, pre_tanh_means: list[list[float]], log_std: float, mixing_logits: list[float]
) -> None:
    """Experts independent of the state: expert k has pre-tanh mean ``pre_tanh_means[k]``."""
    actor = model.actor
    with th.no_grad():
        for layer in (actor.mu, actor.log_std, actor.mixing):
            layer.weight.zero_()
        actor.mu.bias.copy_(th.tensor(pre_tanh_means).flatten())
        actor.log_std.bias.fill_(log_std)
        actor.mixing.bias.copy_(th.tensor(mixing_logits))


# --------------------------------------------------------------------------- PMOE-SAC with K = 1 is SAC


def test_one_expert_gives_exactly_sac_losses_and_updates():
    kwargs = dict(learning_starts=10_000, batch_size=32, policy_kwargs=dict(net_arch=[32, 32]), seed=0, device="cpu")
    sac = SAC("MlpPolicy", PointReachEnv(), **kwargs)
    # SAC's (unfused) Adam, so that the updates can be compared bit for bit
    model = PMOESAC(
        "MlpPolicy", PointReachEnv(), n_experts=1, **{**kwargs, "policy_kwargs": dict(net_arch=[32, 32], optimizer_kwargs={})}
    )
    sac.learn(200)  # random warm-up transitions only, no gradient step
    missing, unexpected = model.policy.load_state_dict(sac.policy.state_dict(), strict=False)
    assert set(missing) == {"actor.mixing.weight", "actor.mixing.bias"} and not unexpected
    model.replay_buffer = sac.replay_buffer
    keys = ("train/actor_loss", "train/critic_loss", "train/ent_coef_loss", "train/ent_coef")
    for algo in (sac, model):
        algo.set_logger(configure(None, []))
    for step in range(4):
        logged = []
        for algo in (sac, model):
            np.random.seed(step)
            th.manual_seed(step)
            algo.train(gradient_steps=1, batch_size=32)
            logged.append([algo.logger.name_to_value[key] for key in keys])
        assert logged[0] == logged[1], f"step {step}: SAC {logged[0]} != PMOE-SAC {logged[1]}"
        assert model.logger.name_to_value["train/routing_loss"] == 0.0
    assert logged[0][2] != 0.0  # the temperature moved
    pmoe_params = model.policy.state_dict()
    for name, param in sac.policy.state_dict().items():
        assert th.equal(param, pmoe_params[name]), name
    assert th.equal(sac.log_ent_coef, model.log_ent_coef)


def _digest(module: th.nn.Module) -> list[float]:
    """Six fixed random projections of all the parameters, and the first three."""
    values = th.cat([p.detach().double().flatten() for p in module.parameters()]).numpy()
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(6, values.size)) / np.sqrt(values.size)
    return [*(signs @ values), *values[:3]]


# Parameters after a fixed run, computed with the update before it moved onto the fast path (commit b816136):
# the fast path must not change what the update computes
PMOE_SAC_REFERENCE = [-0.097284648, -0.019605213, -0.163037327, 0.081182689, 0.038480143, -0.192228201]
PMOE_SAC_REFERENCE += [-0.002889918, 0.268820614, -0.412516505]
PMOE_PPO_REFERENCE = [0.02267668, 0.445756191, 0.38796024, 0.106333452, 0.445898498, -0.297438772]
PMOE_PPO_REFERENCE += [0.000423704, 0.002234417, 0.000455731]


def test_pmoe_sac_updates_give_the_same_parameters_as_before_the_fast_path():
    model = PMOESAC(
        "MlpPolicy", PointReachEnv(), learning_starts=100, batch_size=32, n_experts=3,
        policy_kwargs=dict(net_arch=[16, 16]), seed=0, device="cpu",
    )  # fmt: skip
    model.learn(100)  # random warm-up transitions only
    model.set_logger(configure(None, []))
    th.manual_seed(1)
    np.random.seed(1)
    model.train(gradient_steps=5, batch_size=32)
    np.testing.assert_allclose(_digest(model.policy), PMOE_SAC_REFERENCE, rtol=0, atol=1e-6)
    assert model.log_ent_coef.item() == pytest.approx(-0.0014994118, abs=1e-6)


def test_pmoe_ppo_updates_give_the_same_parameters_as_before_the_fast_path():
    model = PMOEPPO(
        "MlpPolicy", PointReachEnv(), n_steps=64, batch_size=16, n_epochs=2, n_experts=3,
        policy_kwargs=dict(net_arch=[16, 16], q_net_arch=[16]), seed=0, device="cpu",
    )  # fmt: skip
    model.learn(128)
    np.testing.assert_allclose(_digest(model.policy), PMOE_PPO_REFERENCE, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- the PMOE-SAC estimator


def test_mixing_weights_converge_to_the_frequency_of_the_best_expert():
    """Frozen experts and critic; expert 0's sample has the higher Q 70% of the time: alpha -> (0.7, 0.3)."""
    model = _make(PMOESAC, dict(policy_kwargs=dict(net_arch=dict(pi=[16, 16], qf=[]))), n_experts=2)
    # a_k0 = tanh(m_k + eps_k), Q = a_0: P(expert 0 best) = Phi((m_0 - m_1) / sqrt(2)) = 0.7
    gap = math.sqrt(2) * NormalDist().inv_cdf(0.7)
    _set_constant_experts(model, [[gap / 2, 0.0], [-gap / 2, 0.0]], log_std=0.0, mixing_logits=[0.0, 0.0])
    _set_linear_critic(model.critic, obs_dim=4)
    model.policy.requires_grad_(False)
    model.actor.mixing.requires_grad_(True)
    optimizer = th.optim.Adam(model.actor.mixing.parameters(), lr=0.01)
    scheduler = th.optim.lr_scheduler.StepLR(optimizer, step_size=200, gamma=0.1)
    generator = th.Generator().manual_seed(0)
    th.manual_seed(1)  # not 0: the experts' noise must not be the same numbers as the states
    best_counts = 0
    for _ in range(400):
        obs = th.randn(256, 4, generator=generator)
        samples = model.actor.expert_actions_log_prob(obs)
        losses = model._policy_losses(obs, *samples, ent_coef=th.tensor(0.1))
        optimizer.zero_grad()
        losses.routing_loss.backward()
        optimizer.step()
        scheduler.step()
        best_counts += (losses.best_index == 0).sum().item()
    assert best_counts / (400 * 256) == pytest.approx(0.7, abs=0.01)
    with th.no_grad():
        weights = model.actor.mixture_params(th.randn(2000, 4, generator=generator))[2]
    np.testing.assert_allclose(weights.mean(0).numpy(), [0.7, 0.3], atol=0.03)
    assert (weights[:, 0] - 0.7).abs().mean().item() < 0.05  # the same weights in every state


def test_actor_gradient_reaches_only_the_best_expert():
    model = _make(PMOESAC, SMALL_SAC, n_experts=3)
    actor, action_dim = model.actor, 2
    generator = th.Generator().manual_seed(1)
    best_experts = set()
    for seed in range(8):
        obs = th.randn(1, 4, generator=generator)
        th.manual_seed(seed)
        expert_actions, expert_log_prob, weights = actor.expert_actions_log_prob(obs)
        losses = model._policy_losses(obs, expert_actions, expert_log_prob, weights, th.tensor(0.2))
        with th.no_grad():
            q_values = th.cat(model.critic(obs.repeat(3, 1), expert_actions[0]), dim=1).min(dim=1).values
        best = losses.best_index.item()
        assert best == q_values.argmax().item()
        best_experts.add(best)

        actor.zero_grad()
        losses.actor_loss.backward()
        for layer in (actor.mu, actor.log_std):
            for expert in range(3):
                rows = slice(expert * action_dim, (expert + 1) * action_dim)
                grad = th.cat([layer.weight.grad[rows].flatten(), layer.bias.grad[rows]])
                assert (grad.abs().sum() > 0) == (expert == best), (layer, expert, best)
        assert all(p.grad.abs().sum() > 0 for p in actor.latent_pi.parameters())
        assert actor.mixing.weight.grad is None and actor.mixing.bias.grad is None
    assert len(best_experts) > 1


def test_routing_loss_trains_only_the_mixing_layer():
    model = _make(PMOESAC, SMALL_SAC, n_experts=3)
    obs = th.randn(64, 4, generator=th.Generator().manual_seed(2))
    losses = model._policy_losses(obs, *model.actor.expert_actions_log_prob(obs), ent_coef=th.tensor(0.2))
    model.policy.zero_grad()
    losses.routing_loss.backward()
    assert all(p.grad.abs().sum() > 0 for p in model.actor.mixing.parameters())
    others = [p for name, p in model.policy.named_parameters() if not name.startswith("actor.mixing")]
    assert others and all(p.grad is None for p in others)


def test_critic_target_samples_the_expert_from_the_mixing_weights():
    """y = gamma * Q'(s', a'_j) with Q' = a_0: E[y^2] tells which expert j the target used."""
    model = _make(PMOESAC, dict(gamma=0.5, ent_coef=0.0, policy_kwargs=dict(net_arch=dict(pi=[8], qf=[]))), n_experts=2)
    # alpha = (0.25, 0.75); expert 0 acts 0, expert 1 acts 0.8 (on a_0), both almost deterministic
    _set_constant_experts(model, [[0.0, 0.0], [math.atanh(0.8), 0.0]], log_std=-20.0, mixing_logits=[0.0, math.log(3.0)])
    _set_linear_critic(model.critic_target, obs_dim=4)
    with th.no_grad():
        for param in model.critic.parameters():
            param.zero_()  # Q = 0, so the loss is E[y^2]
    n = 20_000
    batch = ReplayBufferSamples(th.zeros(n, 4), th.zeros(n, 2), th.randn(n, 4), th.zeros(n, 1), th.zeros(n, 1))
    th.manual_seed(3)
    loss = model._critic_loss(batch, ent_coef=th.tensor(0.0)).item()
    # sampled j: 0.75 * (0.5 * 0.8)^2 = 0.12; the argmax would give 0.16, uniform weights 0.08
    assert loss == pytest.approx(0.12, abs=0.004)


def test_deterministic_predict_uses_the_most_probable_expert_or_samples_it():
    model = _make(PMOESAC, SMALL_SAC, n_experts=2)
    _set_constant_experts(model, [[0.0, 0.0], [math.atanh(0.8), 0.0]], log_std=-20.0, mixing_logits=[0.0, math.log(3.0)])
    obs = np.random.default_rng(4).normal(size=(4000, 4)).astype(np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(actions, np.tile([0.8, 0.0], (4000, 1)), atol=1e-5)
    th.manual_seed(4)
    for deterministic in (False, True):
        if deterministic:
            model.deterministic_expert = "sample"  # the official evaluation policy
        actions, _ = model.predict(obs, deterministic=deterministic)
        on_expert_1 = np.abs(actions[:, 0] - 0.8) < 1e-3
        assert np.all(on_expert_1 | (np.abs(actions[:, 0]) < 1e-3))
        assert on_expert_1.mean() == pytest.approx(0.75, abs=0.03)


# --------------------------------------------------------------------------- the PMOE-PPO mixture


def test_ppo_forward_without_gradient_gives_the_numbers_of_the_forward_with_gradient():
    """Collection calls the policy under ``no_grad`` (PMOE-PPO's forward then runs in inference mode):
    the same actions, values and log-likelihoods, bit for bit, and ``deterministic`` is honoured."""
    model = _make(PMOEPPO, SMALL_PPO, n_experts=3)
    policy = model.policy
    obs = th.as_tensor(np.random.default_rng(5).normal(size=(50, 4)), dtype=th.float32)
    for deterministic in (False, True):
        th.manual_seed(11)
        expected = [t.detach() for t in policy(obs, deterministic=deterministic)]
        th.manual_seed(11)
        with th.no_grad():
            got = policy(obs, deterministic=deterministic)
        for name, a, b in zip(("actions", "values", "log_prob"), got, expected, strict=True):
            assert th.equal(a, b), (name, deterministic)
    with th.no_grad():
        actions = policy(obs, deterministic=True)[0]
        distribution = policy.get_distribution(obs)
    best = distribution.weights.argmax(dim=1)
    assert th.equal(actions, distribution.means[th.arange(len(obs)), best])


def test_mixture_log_prob_is_a_stable_logsumexp():
    distribution = GaussianMixtureDistribution(action_dim=2, n_experts=3)
    generator = th.Generator().manual_seed(5)
    params, log_std = th.randn(6, 3 * 2 + 3, generator=generator), 0.3 * th.randn(6, generator=generator)
    distribution.proba_distribution(params, log_std)
    actions = th.randn(6, 2, generator=generator)

    weights = th.softmax(params[:, 6:].double(), dim=1)
    means, std = params[:, :6].double().reshape(6, 3, 2), log_std.double().exp().reshape(3, 2)
    density = th.exp(-0.5 * ((actions.double()[:, None] - means) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    expected = (weights * density.prod(dim=-1)).sum(dim=1).log()
    th.testing.assert_close(distribution.log_prob(actions).double(), expected, rtol=1e-5, atol=1e-5)

    far_log_prob = distribution.log_prob(actions + 1e3)
    assert th.isfinite(far_log_prob).all()  # log(sum(exp(.))) would give -inf
    experts = th.distributions.Normal(distribution.means, distribution.log_stds.exp())
    components = distribution.log_weights + experts.log_prob((actions + 1e3)[:, None]).sum(-1)
    best_component = components.max(dim=1).values
    slack = 1e-3 + 1e-6 * best_component.abs()  # float32 resolution at |log p| ~ 7e5
    assert th.all(far_log_prob >= best_component - slack) and th.all(far_log_prob <= best_component + math.log(3) + slack)

    assert distribution.entropy() is None
    most_probable = distribution.weights.argmax(dim=1)
    th.testing.assert_close(distribution.mode(), distribution.means[th.arange(6), most_probable])
    assert distribution.sample().shape == (6, 2)


def test_ppo_routing_loss_targets_the_best_expert_of_the_q_network():
    model = _make(PMOEPPO, {**SMALL_PPO, "policy_kwargs": dict(net_arch=[16, 16], q_net_arch=[])}, n_experts=3)
    model.learn(64)
    _set_linear_critic(model.policy.q_net, obs_dim=4)
    with th.no_grad():
        model.policy.action_net.mu.weight.zero_()
        model.policy.action_net.mu.bias.copy_(th.tensor([0.0, 0.0, 2.0, 0.0, -2.0, 0.0]))  # expert 1 has the largest a_0
        model.policy.log_std.fill_(-10.0)
    rollout_data = next(model.rollout_buffer.get(32))
    losses = model._minibatch_losses(rollout_data, clip_range=0.2, clip_range_vf=None)
    weights = model.policy.get_distribution(rollout_data.observations).weights.detach()
    expected = ((weights - th.tensor([0.0, 1.0, 0.0])) ** 2).mean()
    th.testing.assert_close(losses["routing"].detach(), expected)


def test_ppo_losses_train_their_own_networks():
    model = _make(PMOEPPO, SMALL_PPO, n_experts=3).learn(64)
    rollout_data = next(model.rollout_buffer.get(32))
    losses = model._minibatch_losses(rollout_data, clip_range=0.2, clip_range_vf=None)
    expected_prefixes = {
        "routing": ("action_net.mixing",),
        "q": ("q_net",),
        "value": ("mlp_extractor.value_net", "value_net"),
        "policy": ("mlp_extractor.policy_net", "action_net.mu", "action_net.mixing", "log_std"),
    }
    for key, prefixes in expected_prefixes.items():
        model.policy.zero_grad()
        losses[key].backward(retain_graph=True)
        with_grad = {name for name, p in model.policy.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert with_grad, key
        assert all(name.startswith(prefixes) for name in with_grad), (key, with_grad)
        assert any(name.startswith(prefixes[-1]) for name in with_grad), (key, with_grad)


# --------------------------------------------------------------------------- learning


def test_experts_specialise_on_two_peaks_and_do_at_least_as_well_as_sac():
    """PMOE-SAC (K = 2) against SAC on the two-peak bandit, 5 seeds each.

    Specialised: the experts' mean actions are more than 0.5 apart (typically one expert sits on a
    peak and carries most of the mixing weight while the other stays off it, often towards the other
    peak). Final reward: the reward of the deterministic action (PMOE: the most probable expert).
    """
    kwargs = dict(
        learning_starts=100, batch_size=32, learning_rate=3e-3, ent_coef="auto_0.05", policy_kwargs=dict(net_arch=[32, 32])
    )
    env = TwoPeakBandit()
    obs = np.zeros(1, dtype=np.float32)
    pmoe_rewards, sac_rewards, gaps = [], [], []
    for seed in range(5):
        model = _make(PMOESAC, kwargs, seed=seed, env=env, n_experts=2).learn(800)
        with th.no_grad():
            means = th.tanh(model.actor.mixture_params(th.zeros(1, 1))[0][0, :, 0])
        gaps.append((means.max() - means.min()).item())
        pmoe_rewards.append(env.reward(float(model.predict(obs, deterministic=True)[0][0])))
        sac = SAC("MlpPolicy", env, seed=seed, device="cpu", **kwargs).learn(800)
        sac_rewards.append(env.reward(float(sac.predict(obs, deterministic=True)[0][0])))
    message = f"PMOE rewards {np.round(pmoe_rewards, 2)}, SAC rewards {np.round(sac_rewards, 2)}, gaps {np.round(gaps, 2)}"
    assert sum(gap > 0.5 for gap in gaps) >= 3, message
    assert np.mean(pmoe_rewards) >= np.mean(sac_rewards), message
    assert np.mean(pmoe_rewards) > 0.7, message


LEARNING = [
    pytest.param(
        PMOESAC,
        dict(learning_starts=300, batch_size=128, learning_rate=3e-3, policy_kwargs=dict(net_arch=[64, 64])),
        2000,
        id="PMOESAC",
    ),
    pytest.param(PMOEPPO, dict(n_steps=1024, batch_size=128, learning_rate=3e-3), 15_000, id="PMOEPPO"),
]


@pytest.mark.parametrize(("algo", "variant", "steps"), LEARNING)
def test_learns_point_reach(algo: type, variant: dict, steps: int):
    untrained = _make(algo, variant)
    untrained_return = evaluate(untrained, PointReachEnv(), n_episodes=20, seed=100).return_mean
    model = _make(algo, variant).learn(steps)
    trained_return = evaluate(model, PointReachEnv(), n_episodes=20, seed=100).return_mean
    assert untrained_return < REACH_THRESHOLD
    assert trained_return > REACH_THRESHOLD, f"{algo.__name__} return {trained_return:.1f} (untrained {untrained_return:.1f})"


# --------------------------------------------------------------------------- SB3 contract

VARIANTS = [pytest.param(PMOESAC, SMALL_SAC, id="PMOESAC"), pytest.param(PMOEPPO, SMALL_PPO, id="PMOEPPO")]


@pytest.mark.parametrize(("algo", "variant"), VARIANTS)
def test_learn_predict_save_load_round_trip(algo: type, variant: dict, tmp_path):
    model = _make(algo, variant, n_experts=3).learn(128)
    obs = np.stack([PointReachEnv().reset(seed=i)[0] for i in range(10)])
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (10, 2)
    assert np.all(np.abs(actions) <= 1.0)
    single, _ = model.predict(obs[0], deterministic=True)
    assert single.shape == (2,)
    stochastic, _ = model.predict(obs, deterministic=False)
    assert stochastic.shape == (10, 2) and not np.array_equal(stochastic, actions)

    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip", env=PointReachEnv(), device="cpu")
    assert loaded.policy.n_experts == 3
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    for (name, param), loaded_param in zip(
        model.policy.state_dict().items(), loaded.policy.state_dict().values(), strict=True
    ):
        assert th.equal(param, loaded_param), name
    before = _flat_params(loaded.policy)
    loaded.learn(64)  # training goes on after loading, and changes the loaded parameters
    assert not th.equal(before, _flat_params(loaded.policy))

    model.deterministic_expert = "sample"
    model.save(tmp_path / "sampled.zip")
    assert algo.load(tmp_path / "sampled.zip", device="cpu").deterministic_expert == "sample"
    with pytest.raises(ValueError, match="deterministic_expert"):
        model.deterministic_expert = "mean"


@pytest.mark.parametrize(("algo", "variant"), VARIANTS)
def test_callbacks_and_logger_work_unchanged(algo: type, variant: dict):
    class KeyRecorder(BaseCallback):
        """Records every logger key seen during training."""

        def __init__(self) -> None:
            super().__init__()
            self.keys: set[str] = set()

        def _on_step(self) -> bool:
            self.keys.update(self.logger.name_to_value)
            return True

    evaluation, recorder = EvalCallback(Monitor(PointReachEnv()), n_eval_episodes=1, eval_freq=64), KeyRecorder()
    _make(algo, variant).learn(192, callback=[evaluation, recorder])
    assert evaluation.n_calls == 192 and np.isfinite(evaluation.last_mean_reward)
    assert {"train/routing_loss", "train/mixing_entropy"} <= recorder.keys


@pytest.mark.parametrize("algo", [PMOESAC, PMOEPPO])
@pytest.mark.parametrize("env", ["CartPole-v1", gym.make("CartPole-v1")], ids=["id", "instance"])
def test_non_box_action_space_is_rejected_at_construction(algo: type, env):
    with pytest.raises(ValueError, match=rf"{algo.__name__}.*Box.*Discrete\(2\)"):
        algo("MlpPolicy", env)


@pytest.mark.parametrize(("algo", "variant"), VARIANTS)
def test_same_seed_same_run(algo: type, variant: dict):
    obs = np.stack([PointReachEnv().reset(seed=i)[0] for i in range(10)])

    def run(seed: int) -> tuple[th.Tensor, np.ndarray]:
        model = _make(algo, variant, seed=seed).learn(128)
        return _flat_params(model.policy), model.predict(obs, deterministic=False)[0]

    (first_params, first_actions), (second_params, second_actions) = run(3), run(3)
    other_params, other_actions = run(4)
    th.testing.assert_close(first_params, second_params, atol=0, rtol=0)
    np.testing.assert_array_equal(first_actions, second_actions)
    assert not th.equal(first_params, other_params)
    assert not np.array_equal(first_actions, other_actions)


@pytest.mark.parametrize("algo", [PMOESAC, PMOEPPO])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_experts=0), "n_experts"),
        (dict(n_experts=2.5), "n_experts"),
        (dict(deterministic_expert="mean"), "deterministic_expert"),
        (dict(n_experts=2, policy_kwargs=dict(n_experts=3)), "n_experts"),
    ],
)
def test_bad_arguments_are_rejected(algo: type, kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        algo("MlpPolicy", PointReachEnv(), device="cpu", **kwargs)


def test_temperature_loss_uses_the_log_prob_of_the_selected_expert():
    """With K = 2, the temperature step descends -log(ent_coef) (l_{k*} + H_target) with l_{k*} the log-density of
    the best expert k*(s) = argmax_k min_i Q_i(s, a_k), not the mean over the experts (which fails the test).

    Plain SGD on log(ent_coef): its change is lr * mean_s(l_{k*} + H_target). The experts' samples are redrawn
    from a copy of the actor with the same seed and scored with the critic after its step, as ``train`` does.
    """
    learning_rate, n = 0.1, 64
    model = _make(PMOESAC, dict(learning_rate=learning_rate, policy_kwargs=dict(net_arch=[16, 16])), n_experts=2)
    model.ent_coef_optimizer = th.optim.SGD([model.log_ent_coef], lr=learning_rate)
    model.set_logger(configure(None, []))
    gen = th.Generator().manual_seed(11)
    batch = ReplayBufferSamples(
        th.randn(n, 4, generator=gen),
        th.rand(n, 2, generator=gen) * 2 - 1,
        th.randn(n, 4, generator=gen),
        th.zeros(n, 1),
        th.randn(n, 1, generator=gen),
    )
    model.replay_buffer.sample = lambda *args, **kwargs: batch  # type: ignore[method-assign]
    actor = copy.deepcopy(model.actor)
    log_ent_coef = model.log_ent_coef.item()

    th.manual_seed(12)
    model.train(gradient_steps=1, batch_size=n)

    th.manual_seed(12)
    with th.no_grad():
        expert_actions, expert_log_prob, _ = actor.expert_actions_log_prob(batch.observations)
        q_values = [th.minimum(*model.critic(batch.observations, expert_actions[:, k])).flatten() for k in range(2)]
        best = th.stack(q_values, dim=1).argmax(dim=1)
    selected = expert_log_prob[th.arange(n), best]
    expected = log_ent_coef + learning_rate * (selected + model.target_entropy).mean().item()
    assert model.log_ent_coef.item() == pytest.approx(expected, abs=1e-6)
    # the test can fail: both experts are selected somewhere, and the mean over experts gives another step
    assert 0 < best.sum().item() < n
    mean_over_experts = log_ent_coef + learning_rate * (expert_log_prob.mean(dim=1) + model.target_entropy).mean().item()
    assert abs(mean_over_experts - expected) > 1e-3


def test_ppo_policy_loss_is_the_clipped_surrogate_of_the_mixture_ratio_with_normalised_advantages():
    """PMOE-PPO's actor loss on a fixed minibatch: -mean min(r A, clip(r, 1 -+ 0.2) A) with the advantages standardised
    and r = pi(a|s) / pi_old(a|s), pi the Gaussian mixture written with torch.distributions.MixtureSameFamily.

    The policy is moved away from the one that collected the rollout, so that the ratio leaves the clip range:
    a surrogate without the clip, or without the advantage normalisation, fails the test.
    """
    model = _make(PMOEPPO, SMALL_PPO, n_experts=3).learn(64)
    gen = th.Generator().manual_seed(13)
    with th.no_grad():
        for param in (*model.policy.action_net.parameters(), model.policy.log_std):
            param.add_(0.3 * th.randn(param.shape, generator=gen))
    batch = next(model.rollout_buffer.get(64))
    losses = model._minibatch_losses(batch, clip_range=0.2, clip_range_vf=None)
    with th.no_grad():
        mixture = model.policy.get_distribution(batch.observations)
        experts = th.distributions.Independent(th.distributions.Normal(mixture.means, mixture.log_stds.exp()), 1)
        policy = th.distributions.MixtureSameFamily(th.distributions.Categorical(probs=mixture.weights), experts)
        ratio = th.exp(policy.log_prob(batch.actions) - batch.old_log_prob)
    advantages = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
    expected = -th.minimum(ratio * advantages, th.clamp(ratio, 0.8, 1.2) * advantages).mean()
    th.testing.assert_close(losses["policy"].detach(), expected, atol=1e-5, rtol=1e-4)
    assert ((ratio - 1).abs() > 0.2).float().mean() > 0.2  # the clip is active
    assert (batch.advantages - advantages).abs().max() > 0.1  # normalising changes the advantages


def test_train_step_regresses_the_critics_on_terminal_aware_targets_and_fits_the_mixing_layer_to_the_best_expert():
    """One ``train`` step with plain SGD in place of both optimizers, against a reference written out here.

    Critics: y = r + (1 - d) gamma (min_i Q'_i(s', a'_j) - alpha log pi_j(a'_j|s')) with j ~ alpha(s'), and the
    step is lr * grad of 0.5 * sum_i MSE(Q_i(s, a), y); half of the batch is terminal. Mixing layer: it gets the
    gradient of the routing loss MSE(alpha(s), onehot(k*)) only, with k* scored by the critic after its step.
    """
    learning_rate, n = 0.05, 64
    model = _make(PMOESAC, dict(learning_rate=learning_rate, gamma=0.9, policy_kwargs=dict(net_arch=[16, 16])), n_experts=2)
    model.critic.optimizer = th.optim.SGD(model.critic.parameters(), lr=learning_rate)
    model.actor.optimizer = th.optim.SGD(model.actor.parameters(), lr=learning_rate)
    model.set_logger(configure(None, []))
    gen = th.Generator().manual_seed(21)
    with th.no_grad():  # the target critic away from the online one, so that using one for the other shows
        for param in model.critic_target.parameters():
            param.add_(0.3 * th.randn(param.shape, generator=gen))
    batch = ReplayBufferSamples(
        th.randn(n, 4, generator=gen),
        th.rand(n, 2, generator=gen) * 2 - 1,
        th.randn(n, 4, generator=gen),
        (th.arange(n) % 2).reshape(n, 1).float(),
        th.randn(n, 1, generator=gen),
    )
    model.replay_buffer.sample = lambda *args, **kwargs: batch  # type: ignore[method-assign]
    actor, critic, critic_target = (copy.deepcopy(m) for m in (model.actor, model.critic, model.critic_target))
    ent_coef = model.log_ent_coef.exp().item()

    th.manual_seed(12)
    model.train(gradient_steps=1, batch_size=n)

    th.manual_seed(12)
    actor.expert_actions_log_prob(batch.observations)  # the experts' samples, drawn first
    with th.no_grad():
        next_actions, next_log_prob = actor.action_log_prob(batch.next_observations)
        next_q = th.minimum(*critic_target(batch.next_observations, next_actions)) - ent_coef * next_log_prob.reshape(-1, 1)

    def critic_step(dones: th.Tensor) -> th.Tensor:
        target = batch.rewards + (1 - dones) * 0.9 * next_q
        loss = 0.5 * sum(((q - target) ** 2).mean() for q in critic(batch.observations, batch.actions))
        grads = th.autograd.grad(loss, list(critic.parameters()))
        return th.cat([(p - learning_rate * g).flatten() for p, g in zip(critic.parameters(), grads, strict=True)])

    th.testing.assert_close(_flat_params(model.critic), critic_step(batch.dones), atol=1e-6, rtol=1e-5)
    # the check can fail: bootstrapping through the terminal transitions gives another step
    assert (critic_step(th.zeros(n, 1)) - _flat_params(model.critic)).abs().max() > 1e-3

    th.manual_seed(12)
    expert_actions, _, weights = actor.expert_actions_log_prob(batch.observations)
    with th.no_grad():
        q_values = [th.minimum(*model.critic(batch.observations, expert_actions[:, k])).flatten() for k in range(2)]
        best = th.stack(q_values, dim=1).argmax(dim=1)
    routing_loss = ((weights - th.nn.functional.one_hot(best, 2).float()) ** 2).mean()
    grads = th.autograd.grad(routing_loss, list(actor.mixing.parameters()))
    expected = th.cat([(p - learning_rate * g).flatten() for p, g in zip(actor.mixing.parameters(), grads, strict=True)])
    th.testing.assert_close(_flat_params(model.actor.mixing), expected, atol=1e-6, rtol=1e-5)
    assert (expected - _flat_params(actor.mixing)).abs().max() > 1e-4  # the routing step moved the layer
    assert 0 < best.sum().item() < n


def test_expert_log_stds_are_clamped_to_sacs_range():
    model = _make(PMOESAC, SMALL_SAC, n_experts=2)
    obs = th.randn(8, 4, generator=th.Generator().manual_seed(3))
    with th.no_grad():
        model.actor.log_std.weight.zero_()
        model.actor.log_std.bias.copy_(th.tensor([5.0, -30.0, 0.5, -1.0]))  # expert 0: (5, -30), expert 1: (0.5, -1)
        _, log_std, _ = model.actor.mixture_params(obs)
    expected = th.tensor([[LOG_STD_MAX, LOG_STD_MIN], [0.5, -1.0]]).expand(8, 2, 2)
    th.testing.assert_close(log_std, expected)


def test_ppo_train_step_descends_the_sum_of_its_five_losses_with_the_global_norm_clipped():
    """One PMOE-PPO minibatch step with plain SGD, against a reference written out here with torch.distributions:
    loss = L_clip + c_ent mean(log pi) + c_vf MSE(R, V) + MSE(alpha, onehot(k*)) + MSE(Q(s, a), R), with k* the
    argmax of Q over one noisy sample per expert (obs repeated expert by expert), and the gradient clipped to a
    global norm of half its own.
    """
    learning_rate, n, n_experts = 0.1, 64, 3
    variant = {
        **SMALL_PPO,
        "n_steps": n,
        "batch_size": n,
        "learning_rate": learning_rate,
        "ent_coef": 0.5,
        "vf_coef": 0.7,
        "policy_kwargs": dict(net_arch=[16, 16], q_net_arch=[16], optimizer_class=th.optim.SGD, optimizer_kwargs={}),
    }
    model = _make(PMOEPPO, variant, n_experts=n_experts)
    model.learn(n)  # collects a rollout and takes one step
    batch = next(model.rollout_buffer.get(n))
    # float64 observations (as a MuJoCo env's): the update converts them once, the reference's networks each time
    batch = batch._replace(observations=batch.observations.double())
    model.rollout_buffer.get = lambda *args, **kwargs: iter([batch])  # type: ignore[method-assign]
    policy = model.policy  # the reference reads the parameters before the step, without touching their gradients
    params = list(policy.parameters())
    obs, actions = batch.observations, batch.actions

    dist = policy.get_distribution(obs)
    means, log_stds, weights = dist.means, dist.log_stds, dist.weights
    experts = th.distributions.Independent(th.distributions.Normal(means, log_stds.exp()), 1)
    mixture = th.distributions.MixtureSameFamily(th.distributions.Categorical(probs=weights), experts)
    log_prob = mixture.log_prob(actions)
    ratio = th.exp(log_prob - batch.old_log_prob)
    advantages = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
    policy_loss = -th.minimum(ratio * advantages, th.clamp(ratio, 0.8, 1.2) * advantages).mean()
    value_loss = ((batch.returns - policy.predict_values(obs).flatten()) ** 2).mean()
    q_loss = ((policy.q_net(obs, actions)[0].flatten() - batch.returns) ** 2).mean()
    th.manual_seed(7)
    with th.no_grad():
        samples = means + log_stds.exp() * th.randn_like(means)
        pairs = [policy.q_net(obs, samples[:, k])[0].flatten() for k in range(n_experts)]
        best = th.stack(pairs, dim=1).argmax(dim=1)
    routing_loss = ((weights - F.one_hot(best, n_experts).float()) ** 2).mean()
    loss = policy_loss + 0.5 * log_prob.mean() + 0.7 * value_loss + routing_loss + q_loss
    grads = th.autograd.grad(loss, params)
    norm = th.linalg.vector_norm(th.cat([g.flatten() for g in grads]))
    model.max_grad_norm = 0.5 * norm.item()
    expected = th.cat([(p - learning_rate * 0.5 * g).detach().flatten() for p, g in zip(params, grads, strict=True)])

    th.manual_seed(7)
    model.train()
    th.testing.assert_close(_flat_params(model.policy), expected, atol=1e-6, rtol=1e-5)
    assert len(set(best.tolist())) > 1  # the routing target is not one expert everywhere
