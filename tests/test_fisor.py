"""FISOR and the safe offline baselines: HJ feasibility update, three-case weights, toy safety, SB3 contract."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import configure

from rlkit import FISOR
from rlkit.common.diffusion import ddpm_sample, denoising_loss
from rlkit.common.evaluation import evaluate
from rlkit.data.minari import OfflineDataset
from rlkit.data.scores import dsrl_normalized_cost
from rlkit.envs import make_env
from rlkit.fisor.fisor import feasibility_target, fisor_weights, lower_expectile_loss
from rlkit.safe_baselines import BCAll, BCSafe, TD3BCLag

TOY_COST_LIMIT = 2.0


def toy_dataset(n_episodes: int = 60, detour_fraction: float = 1 / 3, noise: float = 0.3, seed: int = 0) -> OfflineDataset:
    """Scripted behaviour on toy/hazard-v0: two thirds straight through the hazard, one third around it."""
    env = make_env("toy/hazard-v0")
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {
        k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "costs")
    }
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed * 1000 + episode)
        detour, done = episode < n_episodes * detour_fraction, False
        while not done:
            action = np.clip(env.unwrapped.behaviour_action(detour) + noise * rng.standard_normal(2), -1, 1).astype(np.float32)
            next_obs, reward, terminated, truncated, info = env.step(action)
            for key, value in zip(rows, (obs, action, reward, next_obs, terminated, truncated, info["cost"]), strict=True):
                rows[key].append(value)
            obs, done = next_obs, terminated or truncated
    return OfflineDataset.from_dict({k: np.asarray(v) for k, v in rows.items()}, env_id="toy/hazard-v0")


@pytest.fixture(scope="module")
def dataset() -> OfflineDataset:
    return toy_dataset()


FISOR_KWARGS = dict(
    batch_size=256,
    critic_batch_size=128,
    learning_rate=1e-3,
    actor_ema=0.005,
    policy_kwargs=dict(net_arch=[64, 64], time_embed_dim=16, n_candidates=16),
)


def test_hj_feasibility_update_matches_tabular_value_iteration():
    """Chain 0-1-2-3-4, cell 4 unsafe; the data leaves cell 3 only to the right, so 3 is infeasible in-sample."""
    gamma, n = 0.9, 5
    support = {0: [0, 1], 1: [0, 2], 2: [1, 3], 3: [4], 4: [3]}  # state -> next states of its dataset actions
    pairs = [(s, s_next) for s, nexts in support.items() for s_next in nexts]
    states = th.tensor([s for s, _ in pairs])
    next_states = th.tensor([s_next for _, s_next in pairs])
    h = th.tensor([25.0 if s == 4 else -1.0 for s, _ in pairs])
    mask = th.ones(len(pairs))
    v_h = th.zeros(n, requires_grad=True)
    optimizer = th.optim.SGD([v_h], lr=2.0)
    for _ in range(200):
        q_h = feasibility_target(h, v_h.detach()[next_states], mask, gamma)  # exact Q_h update, eq. (5)
        for _ in range(50):  # V_h: minimise the lower-expectile loss, eq. (6)
            loss = lower_expectile_loss(q_h - v_h[states], expectile=0.99) * len(pairs)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    # tabular value iteration of V(s) = min_{a in supp} [(1 - gamma) h + gamma max(h, V(s'))]
    v = np.zeros(n)
    for _ in range(500):
        v = np.array(
            [
                min((1 - gamma) * (25.0 if s == 4 else -1.0) + gamma * max(25.0 if s == 4 else -1.0, v[x]) for x in support[s])
                for s in range(n)
            ]
        )
    learned = v_h.detach().numpy()
    np.testing.assert_array_equal(learned <= 0, v <= 0)
    np.testing.assert_array_equal(v <= 0, [True, True, True, False, False])
    np.testing.assert_allclose(learned, v, atol=0.6)


def test_weight_formula_three_cases():
    v_h = th.tensor([2.0, 2.0, -1.0, -1.0, -1.0])
    q_h = th.tensor([1.0, -5.0, -0.5, 3.0, 0.0])
    advantage = th.tensor([9.0, 9.0, 0.5, 9.0, 10.0])
    w = fisor_weights(
        v_h, q_h, advantage, reward_temperature=3.0, cost_temperature=5.0, max_reward_weight=100.0, max_cost_weight=150.0
    )
    expected = [np.exp(5.0 * 1.0), 150.0, np.exp(3.0 * 0.5), 0.0, 100.0]
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-5)


def test_acting_picks_the_candidate_with_the_least_feasibility_value(dataset):
    model = FISOR("MlpPolicy", "toy/hazard-v0", dataset=dataset, seed=0, **FISOR_KWARGS)
    model.learn(20)
    obs = th.as_tensor(dataset.observations[:3])
    generator = th.Generator().manual_seed(model.policy.sample_seed)
    repeated = obs.repeat_interleave(16, dim=0)
    candidates = ddpm_sample(model.actor_target, model.policy.schedule, repeated, generator=generator)
    q_h = model.policy.feasibility_q(repeated, candidates).view(3, 16)
    expected = candidates.view(3, 16, 2)[th.arange(3), q_h.argmin(dim=1)]
    action, _ = model.predict(dataset.observations[:3], deterministic=True)
    np.testing.assert_allclose(action, expected.numpy(), atol=1e-6)
    assert q_h.min(dim=1).values.lt(q_h.max(dim=1).values).all(), "candidates differ in Q_h"


def test_fisor_is_safe_on_the_toy_task_where_bc_all_is_not(dataset):
    th.set_num_threads(1)
    env = make_env("toy/hazard-v0")
    fisor = FISOR("MlpPolicy", env, dataset=dataset, seed=0, **FISOR_KWARGS).learn(1500)
    bc_all = BCAll("MlpPolicy", env, dataset=dataset, seed=0, policy_kwargs=dict(net_arch=[64, 64])).learn(1500)
    fisor_result = evaluate(fisor, env, 10, seed=100)
    bc_result = evaluate(bc_all, env, 10, seed=100)
    assert dsrl_normalized_cost(bc_result.cost_mean, TOY_COST_LIMIT) > 1.0
    assert dsrl_normalized_cost(fisor_result.cost_mean, TOY_COST_LIMIT) <= 1.0
    # and it still heads for the goal: far better than a uniformly random policy (about -62)
    assert fisor_result.return_mean > -50.0


def test_bc_safe_clones_only_safe_trajectories(dataset):
    model = BCSafe("MlpPolicy", "toy/hazard-v0", dataset=dataset, cost_limit=TOY_COST_LIMIT, seed=0)
    starts = np.concatenate([[0], dataset.episode_ends[:-1]])
    n_safe = int((np.add.reduceat(dataset.costs, starts) <= TOY_COST_LIMIT).sum())
    assert (
        len(model.replay_buffer.dataset.episode_ends) == n_safe and model.replay_buffer.costs.sum() <= n_safe * TOY_COST_LIMIT
    )


CONTRACT = [
    (FISOR, FISOR_KWARGS),
    (BCSafe, dict(cost_limit=TOY_COST_LIMIT, policy_kwargs=dict(net_arch=[16]))),
    (TD3BCLag, dict(cost_limit=TOY_COST_LIMIT, policy_kwargs=dict(net_arch=[16]))),
]


@pytest.mark.parametrize(("algo", "kwargs"), CONTRACT, ids=[c[0].__name__ for c in CONTRACT])
def test_contract_learn_predict_save_load_seed(algo, kwargs, dataset, tmp_path):
    obs = dataset.observations[:5]
    model = algo("MlpPolicy", "toy/hazard-v0", dataset=dataset, seed=3, **kwargs).learn(30)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (5, 2) and np.all(np.abs(action) <= 1.0)
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model")
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], action, atol=1e-6)
    again = algo("MlpPolicy", "toy/hazard-v0", dataset=dataset, seed=3, **kwargs).learn(30)
    np.testing.assert_allclose(again.predict(obs, deterministic=True)[0], action, atol=1e-6)


class DiscreteHazard(gym.Wrapper):
    def __init__(self) -> None:
        super().__init__(make_env("toy/hazard-v0"))
        self.action_space = gym.spaces.Discrete(4)


@pytest.mark.parametrize("algo", [FISOR, BCSafe, TD3BCLag])
def test_non_box_action_space_is_rejected(algo, dataset):
    with pytest.raises(ValueError, match="Box"):
        algo("MlpPolicy", DiscreteHazard(), dataset=dataset)


def test_fisor_needs_costs(dataset):
    no_costs = OfflineDataset(
        dataset.observations, dataset.actions, dataset.rewards, dataset.next_observations, dataset.terminals, dataset.timeouts
    )
    with pytest.raises(ValueError, match="costs"):
        FISOR("MlpPolicy", "toy/hazard-v0", dataset=no_costs)


def test_bc_safe_keeps_an_episode_exactly_at_the_cost_limit():
    """BC-Safe clones the episodes with sum_t c_t <= cost_limit: one below, one exactly at and one above the limit
    of 2; a strict inequality (dropping the episode at the limit) fails the test."""
    n, length = 30, 10
    costs = np.zeros(n, dtype=np.float32)
    costs[[10, 11]] = 1.0  # episode 1: cost 2, at the limit
    costs[[20, 21, 22]] = 1.0  # episode 2: cost 3, above it
    rng = np.random.default_rng(0)
    ends = np.zeros(n, dtype=bool)
    ends[length - 1 :: length] = True
    observations = rng.normal(size=(n, 2)).astype(np.float32)
    data = OfflineDataset.from_dict(
        {
            "observations": observations,
            "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
            "rewards": np.zeros(n, dtype=np.float32),
            "next_observations": np.roll(observations, -1, axis=0),
            "terminals": ends,
            "costs": costs,
        },
        observation_space=gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
    )
    model = BCSafe("MlpPolicy", None, dataset=data, cost_limit=2.0, policy_kwargs=dict(net_arch=[8]), seed=0)
    kept = model.replay_buffer.dataset
    assert data.episode_lengths.tolist() == [length] * 3
    np.testing.assert_array_equal(kept.observations, data.observations[:20])
    assert kept.costs.sum() == 2.0


def test_deterministic_acting_repeats_its_noise_unless_fresh_noise_is_asked(dataset):
    """Default: a fixed function of the observation (SB3's contract); ``fresh_noise``: the official code's
    new noise at every step from one generator seeded once (so two policies built alike act alike)."""
    obs = dataset.observations[:4]
    fixed = FISOR("MlpPolicy", "toy/hazard-v0", dataset=dataset, seed=0, **FISOR_KWARGS)
    assert np.array_equal(fixed.predict(obs, deterministic=True)[0], fixed.predict(obs, deterministic=True)[0])
    kwargs = {**FISOR_KWARGS, "policy_kwargs": {**FISOR_KWARGS["policy_kwargs"], "fresh_noise": True}}
    fresh = FISOR("MlpPolicy", "toy/hazard-v0", dataset=dataset, seed=0, **kwargs)
    twin = FISOR("MlpPolicy", "toy/hazard-v0", dataset=dataset, seed=0, **kwargs)
    first, second = (fresh.predict(obs, deterministic=True)[0] for _ in range(2))
    assert not np.array_equal(first, second)
    assert np.array_equal(twin.predict(obs, deterministic=True)[0], first)
    assert np.array_equal(twin.predict(obs, deterministic=True)[0], second)


def test_the_official_residual_denoiser_trains_and_acts_without_dropout(dataset, tmp_path):
    """The residual denoiser (blocks with dropout, as the official code's): the acting EMA copy never drops,
    so deterministic acting repeats itself and survives save/load; a residual block is the identity when
    its last layer is zero."""
    policy_kwargs = {
        **FISOR_KWARGS["policy_kwargs"],
        "net_arch": {"pi": [32], "qf": [32]},
        "residual_blocks": 2,
        "dropout": 0.5,
    }
    model = FISOR("MlpPolicy", "toy/hazard-v0", dataset=dataset, seed=0, **{**FISOR_KWARGS, "policy_kwargs": policy_kwargs})
    model.learn(20)
    assert sum(isinstance(m, th.nn.Dropout) for m in model.policy.actor.modules()) == 2
    assert not model.policy.actor_target.training
    obs = dataset.observations[:5]
    action = model.predict(obs, deterministic=True)[0]
    assert np.array_equal(action, model.predict(obs, deterministic=True)[0])
    model.save(tmp_path / "fisor")
    assert np.array_equal(FISOR.load(tmp_path / "fisor", dataset=dataset).predict(obs, deterministic=True)[0], action)
    block = model.policy.actor.net[1]
    th.nn.init.zeros_(block.net[-1].weight)
    th.nn.init.zeros_(block.net[-1].bias)
    x = th.randn(3, 32)
    assert th.equal(block.eval()(x), x)


def test_feasibility_guided_weights_alone_keep_fisor_safe(dataset):
    """Without candidate selection (one candidate) safety must come from the weighted denoising loss:
    with every weight forced to 1 the same run costs about 3x the budget (measured: 2.95-3.2 over seeds 0-2)."""
    th.set_num_threads(1)
    env = make_env("toy/hazard-v0")
    kwargs = {**FISOR_KWARGS, "policy_kwargs": {**FISOR_KWARGS["policy_kwargs"], "n_candidates": 1}}
    result = evaluate(FISOR("MlpPolicy", env, dataset=dataset, seed=0, **kwargs).learn(1500), env, 10, seed=100)
    assert dsrl_normalized_cost(result.cost_mean, TOY_COST_LIMIT) <= 1.0
    assert result.return_mean > -55.0  # still heading for the goal (a uniformly random policy: about -62)


def _perturb(*modules: th.nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    generator = th.Generator().manual_seed(seed)
    with th.no_grad():
        for module in modules:
            for parameter in module.parameters():
                parameter.add_(scale * th.randn(parameter.shape, generator=generator))


def test_target_networks_follow_with_the_actor_ema_rate_and_the_critics_tau(dataset):
    """With learning rate 0 the online networks stay put, so one step is two EMA moves of the actor copy at rate
    ``actor_ema`` (two actor updates per step) and one Polyak move of each target critic at rate ``tau``."""
    ema, tau = 0.2, 0.05
    kwargs = {**FISOR_KWARGS, "learning_rate": 0.0, "actor_ema": ema, "tau": tau}
    model = FISOR("MlpPolicy", "toy/hazard-v0", dataset=dataset, seed=0, **kwargs)
    model.set_logger(configure(None, []))
    policy = model.policy
    _perturb(policy.actor_target, policy.critic_target, policy.cost_critic_target)  # targets away from the online nets
    pairs = [("actor", "actor_target", 1 - (1 - ema) ** 2), ("critic", "critic_target", tau)]
    pairs.append(("cost_critic", "cost_critic_target", tau))
    before = {name: [p.detach().clone() for p in getattr(policy, name).parameters()] for pair in pairs for name in pair[:2]}
    model.train(1, FISOR_KWARGS["batch_size"])
    for online, target, rate in pairs:
        for now, online_before, target_before in zip(
            getattr(policy, target).parameters(), before[online], before[target], strict=True
        ):
            th.testing.assert_close(now.detach(), rate * online_before + (1 - rate) * target_before)
        for now, online_before in zip(getattr(policy, online).parameters(), before[online], strict=True):
            assert th.equal(now.detach(), online_before)  # learning rate 0: the online nets did not move


def test_actor_updates_get_clipped_actions_and_the_three_case_weights_of_the_target_critics(dataset, monkeypatch):
    """The two denoising updates of a step see the batch halves, the dataset actions clipped to +-(1 - 1e-5) and
    eq. (10)'s weights from A = min_j Q'_j(s, a) - V(s), Q_h = max_j Q'_h,j(s, a) and V_h(s), all three cases present."""
    model = FISOR("MlpPolicy", "toy/hazard-v0", dataset=dataset, seed=0, **FISOR_KWARGS)
    model.set_logger(configure(None, []))
    policy = model.policy
    _perturb(policy.critic_target, policy.cost_critic_target, policy.value, policy.cost_value, seed=1)
    batch = FISOR_KWARGS["batch_size"]
    th.manual_seed(5)
    inds = th.randint(model.replay_buffer.buffer_size, (batch,))
    data = model.replay_buffer._get_samples(inds)
    obs, raw_actions = data.observations, data.actions
    with th.no_grad():  # both signs of V_h and, among the feasible states, of Q_h
        policy.cost_value.v_net[-1].bias.sub_(policy.cost_value(obs).median())
        q_h = th.max(th.cat(policy.cost_critic_target(obs, raw_actions), dim=1), dim=1, keepdim=True)[0]
        feasible = policy.cost_value(obs) <= 0
        for q_net in policy.cost_critic_target.q_networks:
            q_net[-1].bias.sub_(q_h[feasible].median())
    actions = raw_actions.clamp(-1 + 1e-5, 1 - 1e-5)
    with th.no_grad():
        advantage = th.min(th.cat(policy.critic_target(obs, actions), dim=1), dim=1).values - policy.value(obs).squeeze(1)
        q_h = th.max(th.cat(policy.cost_critic_target(obs, actions), dim=1), dim=1).values
        v_h = policy.cost_value(obs).squeeze(1)
    reward_weight = th.exp(3.0 * advantage).clamp(max=100.0)
    cost_weight = th.exp(5.0 * (v_h - q_h)).clamp(max=150.0)
    expected = th.where(v_h > 0, cost_weight, th.where(q_h <= 0, reward_weight, th.zeros_like(q_h)))
    safe = (v_h <= 0) & (q_h <= 0)
    assert (v_h > 0).any() and safe.any() and ((v_h <= 0) & (q_h > 0)).any()
    assert (raw_actions.abs() == 1.0).any()  # the clip matters on this batch
    assert not th.allclose(reward_weight[safe], th.exp(-3.0 * advantage[safe]).clamp(max=100.0))

    calls = []

    def recording_loss(denoiser, schedule, obs, actions, weights=None):
        calls.append((obs.clone(), actions.clone(), weights.clone()))
        return denoising_loss(denoiser, schedule, obs, actions, weights)

    monkeypatch.setattr("rlkit.fisor.fisor.denoising_loss", recording_loss)
    th.manual_seed(5)
    model.train(1, batch)
    assert len(calls) == 2
    for (seen_obs, seen_actions, seen_weights), part in zip(
        calls, (slice(0, batch // 2), slice(batch // 2, batch)), strict=True
    ):
        th.testing.assert_close(seen_obs, obs[part])
        assert th.equal(seen_actions, actions[part])
        th.testing.assert_close(seen_weights, expected[part], rtol=1e-5, atol=1e-6)


def test_bc_safe_normalises_observations_with_the_statistics_of_the_kept_episodes(dataset):
    """BC-Safe's observation mean and std are those of the episodes it clones, not of the whole dataset."""
    model = BCSafe("MlpPolicy", None, dataset=dataset, cost_limit=TOY_COST_LIMIT, policy_kwargs=dict(net_arch=[8]), seed=0)
    kept_mean, kept_std = model.replay_buffer.dataset.observation_statistics(model.obs_norm_eps)
    all_mean, _ = dataset.observation_statistics(model.obs_norm_eps)
    assert len(model.replay_buffer.dataset.observations) < len(dataset.observations)
    assert np.abs(kept_mean - all_mean).max() > 0.05
    np.testing.assert_array_equal(model.obs_mean, kept_mean)
    np.testing.assert_array_equal(model.obs_std, kept_std)
