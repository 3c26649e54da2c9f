"""C-MORL: vector rollout buffer, archive rules, actor losses, barrier extension, learning against the baseline, contract."""

import itertools
import math

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer

from rlkit import CMORL, make_env
from rlkit.cmorl import ArchiveMember, LinearScalarizationPPO, MOPPO, MORolloutBuffer, ParetoArchive
from rlkit.common.mo_metrics import hypervolume

th.set_num_threads(1)

TINY = {
    "weight_step": 0.5,
    "eval_episodes": 1,
    "eval_interval": 2,
    "n_steps": 128,
    "batch_size": 64,
    "n_epochs": 5,
    "learning_rate": 3e-3,
    "policy_kwargs": {"net_arch": [32, 32]},
}
EXTENSION = {"n_select": 2, "update_iter": 4, "extension_eval_interval": 2}
REF = [-1.0, -1.0]


def _member(returns) -> ArchiveMember:
    return ArchiveMember(np.asarray(returns, dtype=float), {}, None, None, np.array([0.5, 0.5]))


def test_vector_buffer_gives_sb3_gae_per_objective():
    rng = np.random.default_rng(0)
    obs_space, act_space = spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2,))
    n_steps, n_envs, k = 6, 2, 3
    vector = MORolloutBuffer(n_steps, obs_space, act_space, "cpu", gae_lambda=0.9, gamma=0.95, n_envs=n_envs, n_objectives=k)
    rewards, values = rng.normal(size=(n_steps, n_envs, k)), rng.normal(size=(n_steps, n_envs, k))
    starts = rng.random((n_steps, n_envs)) < 0.3
    for t in range(n_steps):
        vector.add(np.zeros((n_envs, 3)), np.zeros((n_envs, 2)), rewards[t], starts[t], th.tensor(values[t]), th.zeros(n_envs))
    last, dones = rng.normal(size=(n_envs, k)), np.array([True, False])
    vector.compute_returns_and_advantage(th.tensor(last), dones)
    for j in range(k):
        scalar = RolloutBuffer(n_steps, obs_space, act_space, "cpu", gae_lambda=0.9, gamma=0.95, n_envs=n_envs)
        for t in range(n_steps):
            scalar.add(
                np.zeros((n_envs, 3)),
                np.zeros((n_envs, 2)),
                rewards[t, :, j],
                starts[t],
                th.tensor(values[t, :, j]),
                th.zeros(n_envs),
            )
        scalar.compute_returns_and_advantage(th.tensor(last[:, j]), dones)
        np.testing.assert_allclose(vector.advantages[..., j], scalar.advantages, rtol=1e-5)
        np.testing.assert_allclose(vector.returns[..., j], scalar.returns, rtol=1e-5)
    batch = next(vector.get(4))
    assert batch.advantages.shape == (4, k) and batch.returns.shape == (4, k) and batch.old_values.shape == (4, k)


def test_archive_keeps_non_dominated_points_above_the_reference():
    archive = ParetoArchive(max_size=10, ref_point=np.array([0.0, 0.0]))
    archive.update([_member(r) for r in ([1, 1], [2, 0.5], [0.5, 0.5], [3, -1], [0, 3])])
    assert sorted(map(tuple, archive.returns)) == [(0, 3), (1, 1), (2, 0.5)]
    archive.update([_member([1.5, 1.5])])
    assert sorted(map(tuple, archive.returns)) == [(0, 3), (1.5, 1.5), (2, 0.5)]


def test_archive_selects_extremes_first_never_twice_and_prunes_by_crowding_distance():
    archive = ParetoArchive(max_size=4)
    front = [[0, 10], [0.5, 9.9], [1, 9.8], [5, 5], [10, 0]]
    archive.update([_member(r) for r in front])
    # over the limit: the most crowded point (0.5, 9.9) goes, the extremes stay
    assert sorted(map(tuple, archive.returns)) == [(0, 10), (1, 9.8), (5, 5), (10, 0)]
    first = {tuple(m.returns) for m in archive.select(2)}
    assert first == {(0, 10), (10, 0)}
    second = {tuple(m.returns) for m in archive.select(2)}
    assert not first & second and len(second) == 2
    assert archive.select(5) == [] and len(archive.selected) == 4


def _bandit_return(model: MOPPO) -> np.ndarray:
    action, _ = model.predict(np.ones(1, dtype=np.float32), deterministic=True)
    a = float(np.clip(action[0], -1, 1))
    return np.array([1 + a, 1 - a])


@pytest.mark.parametrize("legacy_ipo", [False, True])
def test_extension_raises_its_objective_and_keeps_the_other_above_beta(legacy_ipo):
    model = MOPPO(
        "MlpPolicy",
        make_env("toy/mo-bandit-v0"),
        actor_loss="barrier",
        objective=0,
        constraint_reference=[1.0, 1.0],
        beta=0.9,
        legacy_ipo=legacy_ipo,
        normalize=False,
        n_steps=128,
        batch_size=64,
        policy_kwargs={"net_arch": [16]},
        seed=0,
    )
    start = _bandit_return(model)
    model.current_return = start
    trace = []
    for _ in range(12):
        model.learn(128, reset_num_timesteps=False)
        model.current_return = _bandit_return(model)
        trace.append(model.current_return)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    if not legacy_ipo:
        final = np.mean(trace[-4:], axis=0)
        assert final[0] > start[0] + 0.005, trace
        assert final[1] >= 0.9 * start[1], trace


def _barrier_model(legacy_ipo: bool, current_return: list[float], env_id: str = "toy/mo-arc-v0") -> MOPPO:
    """MOPPO with the barrier loss on objective 0 after one 120-step rollout (12 episodes of the arc task by default)."""
    model = MOPPO(
        "MlpPolicy",
        make_env(env_id),
        actor_loss="barrier",
        objective=0,
        constraint_reference=[5.0, 5.0],
        beta=0.9,
        ref_point=[-2.0, -2.0],
        legacy_ipo=legacy_ipo,
        normalize=False,
        n_steps=120,
        batch_size=60,
        n_epochs=1,
        learning_rate=0.0,
        policy_kwargs={"net_arch": [16]},
        seed=0,
    )
    model.current_return = np.asarray(current_return)
    model.learn(120)
    return model


def _fixed_ratio_and_advantages(n: int, seed: int = 0) -> tuple[th.Tensor, th.Tensor]:
    gen = th.Generator().manual_seed(seed)
    ratio = th.exp(0.3 * th.randn(n, generator=gen)).requires_grad_(True)
    return ratio, 0.1 * th.randn(n, 2, generator=gen)


def test_legacy_barrier_is_the_released_codes_log_barrier_on_a_fixed_minibatch():
    """``legacy_ipo``: -(1/t) mean over minibatch rows i != l and objectives j of log(max(clip(rho_i) R_j - beta R_j, 1e-3)),
    R_j the minibatch mean of objective j's returns, written here as a loop. Value and gradient in rho are checked,
    so a barrier that returns a constant fails the test.
    """
    model = _barrier_model(legacy_ipo=True, current_return=[5.0, 5.0], env_id="toy/mo-bandit-v0")  # positive returns
    batch = next(model.rollout_buffer.get(60))
    ratio, advantages = _fixed_ratio_and_advantages(60)
    loss = model._barrier_loss(batch, ratio, advantages, clip=0.2)
    mean_returns = batch.returns.mean(dim=0)
    terms = []
    for i in range(60):
        if i == model.objective:
            continue
        clipped = th.clamp(ratio[i], 0.8, 1.2)
        for j in range(2):
            terms.append(th.log(th.clamp(clipped * mean_returns[j] - 0.9 * mean_returns[j], min=1e-3)))
    expected = -th.stack(terms).mean() / model.barrier_t
    th.testing.assert_close(loss, expected)
    (grad,) = th.autograd.grad(loss, ratio, retain_graph=True)
    (expected_grad,) = th.autograd.grad(expected, ratio)
    th.testing.assert_close(grad, expected_grad)
    assert mean_returns.min() > 0 and grad.abs().sum() > 0  # the check can fail: the barrier moves the ratio


@pytest.mark.parametrize("current", [6.0, 4.0], ids=["inside", "violated"])
def test_barrier_is_the_extended_log_barrier_of_the_first_order_return_estimate(current: float):
    """Paper form on a fixed minibatch: margin_j = (G_j + H * mean_i min(rho_i c_ij, clip(rho_i) c_ij) - r_j)
    - beta (G_j^ref - r_j) with c the centred advantages, r = (-2, -2) the reference point and
    H = min(1/(1-gamma), episode length) = 10 on the arc task; penalty
    -(1/t) log(margin) above 1/t^2, else the linear extension t(-margin) - (1/t) log(1/t^2) + 1/t; summed over j != l.
    ``inside`` has objective 1 feasible (margin about 1.7), ``violated`` below its threshold (margin about -0.3).
    """
    model = _barrier_model(legacy_ipo=False, current_return=[5.0, current])
    batch = next(model.rollout_buffer.get(60))
    ratio, advantages = _fixed_ratio_and_advantages(60, seed=1)
    loss = model._barrier_loss(batch, ratio, advantages, clip=0.2)
    t, horizon = model.barrier_t, 10.0
    centred = advantages[:, 1] - advantages[:, 1].mean()
    surrogate = th.minimum(ratio * centred, th.clamp(ratio, 0.8, 1.2) * centred).mean()
    margin = (current + horizon * surrogate + 2.0) - 0.9 * (5.0 + 2.0)
    if margin >= 1 / t**2:
        expected = -th.log(margin) / t
    else:
        expected = -t * margin - math.log(1 / t**2) / t + 1 / t
    assert (margin.item() > 0) == (current > 5.0)
    th.testing.assert_close(loss, expected)
    (grad,) = th.autograd.grad(loss, ratio, retain_graph=True)
    (expected_grad,) = th.autograd.grad(expected, ratio)
    th.testing.assert_close(grad, expected_grad)


def test_scalarized_loss_is_the_clipped_surrogate_of_the_weighted_unnormalised_advantage():
    """Pareto initialisation on a fixed minibatch: A = w^T (sigma * A_vec), sigma the running std of each objective's
    return (undoing the reward normalisation), standardised, in PPO's clipped surrogate. The policy is moved away
    from the one that collected the rollout so that the ratio leaves the clip range. Dropping sigma or the
    preference w (uniform weights) fails the test.
    """
    model = MOPPO(
        "MlpPolicy",
        make_env("toy/mo-arc-v0"),
        weights=[0.8, 0.2],
        n_steps=120,
        batch_size=60,
        n_epochs=1,
        learning_rate=0.0,
        policy_kwargs={"net_arch": [16]},
        seed=0,
    )
    model.learn(120)
    venv = model.get_vec_normalize_env()
    venv.ret_rms.var = np.array([4.0, 0.25])  # two very different return scales
    with th.no_grad():
        for param in model.policy.action_net.parameters():
            param.add_(0.5 * th.randn(param.shape, generator=th.Generator().manual_seed(2)))
    batch = next(model.rollout_buffer.get(60))
    losses = model._minibatch_losses(batch, clip=0.2, clip_vf=None)
    sigma = th.as_tensor(np.sqrt(np.array([4.0, 0.25]) + venv.epsilon), dtype=th.float32)
    advantages = batch.advantages[:, 0] * sigma[0] * 0.8 + batch.advantages[:, 1] * sigma[1] * 0.2
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    with th.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(batch.observations, batch.actions)
    ratio = th.exp(log_prob - batch.old_log_prob)
    expected = -th.minimum(advantages * ratio, advantages * th.clamp(ratio, 0.8, 1.2)).mean()
    th.testing.assert_close(losses["policy"].detach(), expected)
    assert ((ratio - 1).abs() > 0.2).float().mean() > 0.1  # the clip is active


@pytest.fixture(scope="module")
def trained():
    """C-MORL and the linear-scalarisation baseline on the arc task, same budget and seed."""
    cmorl = CMORL("MlpPolicy", "toy/mo-arc-v0", ref_point=REF, seed=0, **TINY, **EXTENSION)
    cmorl.learn(4000)
    baseline = LinearScalarizationPPO("MlpPolicy", "toy/mo-arc-v0", ref_point=REF, seed=0, **TINY)
    baseline.learn(4000)
    return cmorl, baseline


def test_cmorl_front_beats_the_baseline_at_equal_budget(trained):
    cmorl, baseline = trained
    hv_cmorl, hv_baseline = hypervolume(cmorl.archive.returns, REF), hypervolume(baseline.archive.returns, REF)
    # an untrained policy sits near the origin: HV about 1; the quarter circle of radius 10 gives about 99
    assert hv_baseline > 50
    assert hv_cmorl >= hv_baseline
    assert 3000 < cmorl.num_timesteps <= 4000 and 3000 < baseline.num_timesteps <= 4000
    assert len(cmorl.archive) > len(baseline.archive)
    assert any(m.objective is not None for m in cmorl.archive.members), "no extension policy made it into the archive"


def test_archive_hypervolume_never_decreases_below_the_size_bound(trained):
    cmorl, _ = trained
    hvs = [h["hypervolume"] for h in cmorl.history]
    assert len(hvs) >= 2 and all(b >= a - 1e-9 for a, b in itertools.pairwise(hvs))


def test_predict_uses_the_member_best_for_the_preference(trained):
    cmorl, _ = trained
    obs = make_env("toy/mo-arc-v0").reset(seed=0)[0]
    for w in ([1.0, 0.0], [0.0, 1.0]):
        best = int(np.argmax(cmorl.archive.returns @ np.array(w)))
        np.testing.assert_allclose(cmorl.predict(obs, preference=w)[0], cmorl.member_predictor(best)(obs))
    right, _ = cmorl.predict(obs, preference=[1.0, 0.0])
    up, _ = cmorl.predict(obs, preference=[0.0, 1.0])
    assert right[0] > right[1] and up[1] > up[0]


def test_save_load_keeps_the_archive_and_its_normalisation(trained, tmp_path):
    cmorl, baseline = trained
    obs = np.stack([make_env("toy/mo-arc-v0").reset(seed=s)[0] for s in range(3)])
    for model in (cmorl, baseline):
        model.save(tmp_path / "model.pt")
        loaded = type(model).load(tmp_path / "model.pt")
        np.testing.assert_array_equal(loaded.archive.returns, model.archive.returns)
        assert all(m.obs_rms is not None for m in loaded.archive.members)
        for w in ([1.0, 0.0], [0.5, 0.5], [0.2, 0.8]):
            np.testing.assert_array_equal(loaded.predict(obs, preference=w)[0], model.predict(obs, preference=w)[0])


def test_same_seed_same_archive():
    settings = {**TINY, "weight_step": 1.0, **EXTENSION, "n_select": 1, "update_iter": 1}
    runs = [CMORL("MlpPolicy", "toy/mo-arc-v0", seed=3, **settings).learn(800).returns for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_bad_spaces_and_single_objective_envs_are_rejected_at_construction():
    with pytest.raises(ValueError, match="Box"):
        CMORL("MlpPolicy", "mo/mo-mountaincar-v0")
    with pytest.raises(ValueError, match="reward_space"):
        CMORL("MlpPolicy", "toy/reach-v0")
    with pytest.raises(ValueError, match="Box"):
        MOPPO("MlpPolicy", make_env("mo/mo-mountaincar-v0"))


def test_return_estimate_refresh_moves_by_the_unnormalised_first_order_change():
    """After an update, ``current_return`` moves by H * mean_i min(rho_i c_ij, clip(rho_i) c_ij) over the whole rollout,
    c the centred advantages of objective j times sigma_j (the running return std that undoes the reward
    normalisation), H = 10 on the arc task. The return scales are set far from 1 and the policy is moved away from
    the one that collected the rollout, so that dropping sigma changes the result.
    """
    model = MOPPO(
        "MlpPolicy",
        make_env("toy/mo-arc-v0"),
        actor_loss="barrier",
        objective=0,
        constraint_reference=[5.0, 5.0],
        n_steps=120,
        batch_size=60,
        n_epochs=1,
        learning_rate=0.0,
        policy_kwargs={"net_arch": [16]},
        seed=0,
    )
    start = np.array([5.0, 4.0])
    model.current_return = start
    model.learn(120)
    venv = model.get_vec_normalize_env()
    venv.ret_rms.var = np.array([9.0, 0.04])
    with th.no_grad():
        for param in model.policy.action_net.parameters():
            param.add_(0.5 * th.randn(param.shape, generator=th.Generator().manual_seed(3)))
    model.current_return = start
    model._refresh_return_estimate(0.2)
    buffer = model.rollout_buffer
    obs = th.as_tensor(buffer.observations.reshape(120, -1))
    actions = th.as_tensor(buffer.actions.reshape(120, -1))
    with th.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(obs, actions)
    ratio = th.exp(log_prob - th.as_tensor(buffer.log_probs.reshape(120))).double()
    sigma = np.sqrt(np.array([9.0, 0.04]) + venv.epsilon)
    advantages = th.as_tensor(buffer.advantages.reshape(120, 2) * sigma)
    centred = advantages - advantages.mean(dim=0)
    clipped = th.clamp(ratio, 0.8, 1.2)[:, None]
    change = 10.0 * th.minimum(ratio[:, None] * centred, clipped * centred).mean(dim=0)
    np.testing.assert_allclose(model.current_return, start + change.numpy(), rtol=1e-4, atol=1e-5)
    assert np.abs(change.numpy()).min() > 1e-3 and ((ratio - 1).abs() > 0.2).any()  # the estimate moved, the clip acts
