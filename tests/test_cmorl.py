"""C-MORL: vector rollout buffer, archive rules, the barrier extension, learning against the baseline, contract."""

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
            scalar.add(np.zeros((n_envs, 3)), np.zeros((n_envs, 2)), rewards[t, :, j], starts[t], th.tensor(values[t, :, j]), th.zeros(n_envs))
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
    assert len(hvs) >= 2 and all(b >= a - 1e-9 for a, b in zip(hvs, hvs[1:]))


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
