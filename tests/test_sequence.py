"""Windows over dataset episodes (left padding, absolute timesteps, masks), rolling histories, and label pools."""

from __future__ import annotations

import numpy as np
import pytest

from rlkit.common.preference import (
    PreferencePool,
    dataset_fingerprint,
    load_or_create_pool,
    pool_path,
    preference_accuracy,
)
from rlkit.common.sequence import RollingHistory, WindowSampler
from rlkit.data import OfflineDataset


def chain_dataset(lengths=(7, 3, 12), terminated=(False, False, False)) -> OfflineDataset:
    """Episodes whose observation is (episode, step) and whose reward is 1 + 0.1 * episode at every step."""
    obs, act, rew, term, tout = [], [], [], [], []
    for e, (n, dead) in enumerate(zip(lengths, terminated, strict=True)):
        for t in range(n):
            obs.append([e, t])
            act.append([np.tanh(0.1 * t), -np.tanh(0.1 * e)])
            rew.append(1.0 + 0.1 * e)
            term.append(dead and t == n - 1)
            tout.append(not dead and t == n - 1)
    obs = np.asarray(obs, np.float32)
    ends = np.cumsum(lengths)
    return OfflineDataset(
        obs,
        np.asarray(act),
        np.asarray(rew),
        obs + 0.5,
        np.asarray(term),
        np.asarray(tout),
        episode_ends=ends,
        dataset_id="test/chain-v0",
    )


def test_windows_left_padded_with_absolute_timesteps():
    data = chain_dataset()
    sampler = WindowSampler(data, window=5, pad_action=-10.0)
    w = sampler.windows(np.array([0, 0, 1, 2]), np.array([0, 4, 1, 7]))
    assert w.observations.shape == (4, 5, 2) and w.actions.shape == (4, 5, 2) and w.timesteps.dtype == np.int64
    np.testing.assert_array_equal(w.mask[0], [True] * 5)
    np.testing.assert_array_equal(w.timesteps[0], [0, 1, 2, 3, 4])
    # episode 0 has 7 steps: the window at step 4 keeps steps 4, 5, 6 at the right end
    np.testing.assert_array_equal(w.mask[1], [False, False, True, True, True])
    np.testing.assert_array_equal(w.timesteps[1], [0, 0, 4, 5, 6])
    np.testing.assert_array_equal(w.observations[1, 2:, 1], [4, 5, 6])
    assert np.all(w.observations[1, :2] == 0.0) and np.all(w.actions[1, :2] == -10.0) and np.all(w.rewards[1, :2] == 0)
    # episode 1 has 3 steps
    np.testing.assert_array_equal(w.mask[2], [False, False, False, True, True])
    np.testing.assert_array_equal(w.observations[2, 3:, 0], [1, 1])
    np.testing.assert_array_equal(w.timesteps[3], [7, 8, 9, 10, 11])
    np.testing.assert_array_equal(w.observations[3, :, 0], [2] * 5)
    with pytest.raises(ValueError, match="start must be a step"):
        sampler.windows(np.array([1]), np.array([3]))


def test_normalisation_and_action_scaling():
    data = chain_dataset()
    mean, std = np.array([1.0, 2.0], np.float32), np.array([2.0, 4.0], np.float32)
    sampler = WindowSampler(data, 3, mean, std, action_low=np.array([-2.0, -2.0]), action_high=np.array([2.0, 2.0]))
    w = sampler.windows(np.array([2]), np.array([5]))
    np.testing.assert_allclose(w.observations[0, :, 1], (np.arange(5, 8) - 2.0) / 4.0)
    np.testing.assert_allclose(w.actions[0, :, 0], np.tanh(0.1 * np.arange(5, 8)) / 2.0, rtol=1e-6)


def test_sampling_weights_and_full_windows():
    data = chain_dataset()
    sampler = WindowSampler(data, window=5)
    rng = np.random.default_rng(0)
    episodes, starts = sampler.sample_starts(20_000, rng)
    # length-weighted: 7 : 3 : 12, start uniform over the whole episode
    np.testing.assert_allclose(np.bincount(episodes) / 20_000, np.array([7, 3, 12]) / 22, atol=0.02)
    assert starts[episodes == 1].max() == 2 and starts[episodes == 2].max() == 11
    episodes, starts = sampler.sample_starts(5_000, rng, full=True)
    assert 1 not in episodes and np.all(starts + 5 <= sampler.episode_lengths[episodes])
    assert sampler.sample(64, rng, full=True).mask.all()
    uniform, _ = sampler.sample_starts(9_000, rng, weighting="uniform")
    np.testing.assert_allclose(np.bincount(uniform) / 9_000, [1 / 3] * 3, atol=0.03)
    with pytest.raises(ValueError, match="No episode of the dataset has at least 20 steps"):
        WindowSampler(data, window=20).sample(4, rng, full=True)
    with pytest.raises(ValueError, match="window must be a positive"):
        WindowSampler(data, window=0)


def test_foresee_returns_extrapolate_only_truncated_episodes():
    timeout = WindowSampler(chain_dataset((30,), (False,)), window=5)
    terminated = WindowSampler(chain_dataset((30,), (True,)), window=5)
    np.testing.assert_allclose(timeout.window_returns(np.array([0]), np.array([2])), [5.0])
    # 10 steps from step 20: 10 remain of a 10-step horizon; 15 from step 25 would need 5 more
    np.testing.assert_allclose(timeout.foresee_returns(np.array([0, 0]), np.array([20, 25]), horizon=10), [10.0, 10.0])
    np.testing.assert_allclose(timeout.foresee_returns(np.array([0]), np.array([25]), 10, extrapolate_truncated=False), [5])
    np.testing.assert_allclose(terminated.foresee_returns(np.array([0, 0]), np.array([20, 25]), horizon=10), [10.0, 5.0])


def test_rolling_history_layout_and_reset():
    history = RollingHistory(n_envs=2, window=3, obs_dim=1, action_dim=1, pad_action=-10.0)
    for step in range(4):
        history.push(np.array([[step], [10 + step]], np.float32))
        history.set_last_action(np.array([[0.1 * step], [-0.1 * step]], np.float32))
    np.testing.assert_array_equal(history.observations[0, :, 0], [1, 2, 3])
    np.testing.assert_array_equal(history.timesteps[1], [1, 2, 3])
    history = RollingHistory.from_state(history.as_state(), pad_action=-10.0)
    history.reset(np.array([False, True]))
    history.push(np.array([[4], [20]], np.float32))
    np.testing.assert_array_equal(history.mask, [[True, True, True], [False, False, True]])
    np.testing.assert_array_equal(history.timesteps, [[2, 3, 4], [0, 0, 0]])
    assert history.actions[1, -1, 0] == -10.0 and history.step.tolist() == [5, 1]
    with pytest.raises(ValueError, match="tuple returned by the previous predict"):
        RollingHistory.from_state(None)  # type: ignore[arg-type]


def test_pool_labels_modes_and_cache(tmp_path):
    data = chain_dataset((40, 40, 40), (False, False, False))  # episode 2 has the highest reward per step
    pool = PreferencePool.create(data, 200, mode="window", seed=3, segment_length=5)
    assert pool.n_pairs == 200 and pool.episodes.shape == (200, 2)
    assert np.all(pool.starts + 5 <= 40)
    better_second = pool.episodes[:, 1] > pool.episodes[:, 0]
    np.testing.assert_array_equal(pool.targets[better_second], 1.0)
    np.testing.assert_array_equal(pool.targets[pool.episodes[:, 1] < pool.episodes[:, 0]], 0.0)
    np.testing.assert_array_equal(pool.targets[pool.episodes[:, 1] == pool.episodes[:, 0]], 0.5)  # exact ties
    # foresee with extrapolation: the per-step reward decides, wherever the window starts
    foresee = PreferencePool.create(data, 200, mode="foresee", seed=3, segment_length=5, horizon=30)
    strict = foresee.episodes[:, 0] != foresee.episodes[:, 1]
    np.testing.assert_array_equal(foresee.targets[strict], (foresee.episodes[strict, 1] > foresee.episodes[strict, 0]))
    assert preference_accuracy(foresee.scores[:, 1] > foresee.scores[:, 0], foresee.targets) == 1.0

    first = load_or_create_pool(data, 50, "foresee", seed=1, segment_length=5, horizon=30, pool_dir=tmp_path)
    path = pool_path("test/chain-v0", 50, "foresee", 1, 5, 30, "oracle", tmp_path, dataset_fingerprint(data))
    assert path.is_file()
    again = load_or_create_pool(data, 50, "foresee", seed=1, segment_length=5, horizon=30, pool_dir=tmp_path)
    np.testing.assert_array_equal(again.starts, first.starts)
    np.testing.assert_array_equal(again.targets, first.targets)
    other = load_or_create_pool(data, 50, "foresee", seed=2, segment_length=5, horizon=30, pool_dir=tmp_path)
    assert not np.array_equal(other.starts, first.starts)
    with pytest.raises(ValueError, match="Unknown label mode"):
        PreferencePool.create(data, 10, mode="episode")
    with pytest.raises(ValueError, match="drawn from 'test/chain-v0' with 120 transitions"):
        first.check_dataset(chain_dataset((40, 40), (False, False)))
    # the same id and size, other data: another fingerprint, another cache file, and the old pool is refused
    other_data = chain_dataset((30, 50, 40), (False, False, False))
    with pytest.raises(ValueError, match="fingerprint"):
        first.check_dataset(other_data)
    fresh = load_or_create_pool(other_data, 50, "foresee", seed=1, segment_length=5, horizon=30, pool_dir=tmp_path)
    assert fresh.fingerprint == dataset_fingerprint(other_data) != first.fingerprint


def test_pool_of_an_unnamed_dataset_is_not_cached(tmp_path):
    data = chain_dataset((40, 40), (False, False))
    data.dataset_id = None
    first = load_or_create_pool(data, 20, "window", seed=0, segment_length=5, pool_dir=tmp_path)
    again = load_or_create_pool(data, 20, "window", seed=0, segment_length=5, pool_dir=tmp_path)
    np.testing.assert_array_equal(first.starts, again.starts)
    assert not any(tmp_path.iterdir())
