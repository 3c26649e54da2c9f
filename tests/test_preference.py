"""Tests of the preference machinery: scripted teacher, Bradley-Terry ensemble, query selection (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from rlkit.common.preference import (
    TEACHER_PRESETS,
    EpisodeStore,
    PreferenceDataset,
    RewardEnsemble,
    ScriptedTeacher,
    Segments,
    bradley_terry_log_likelihood,
    sample_segment_pairs,
    select_queries,
)
from rlkit.envs.toy import PointReachEnv

th.set_num_threads(1)


def _reward_pairs(n: int, horizon: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, horizon)), rng.normal(size=(n, horizon))


def test_presets_are_the_b_pref_table():
    assert set(TEACHER_PRESETS) == {"oracle", "mistake", "noisy", "skip", "myopic", "equal"}
    assert TEACHER_PRESETS["mistake"].eps_mistake == 0.1
    assert TEACHER_PRESETS["noisy"].beta == 1.0
    assert TEACHER_PRESETS["myopic"].gamma == 0.9
    assert TEACHER_PRESETS["skip"].eps_skip == 0.1 and TEACHER_PRESETS["equal"].eps_equal == 0.1


def test_oracle_labels_are_the_sign_of_the_return_difference():
    r0, r1 = _reward_pairs(1000)
    r1[:10] = r0[:10]  # ties go to segment 0
    labels = ScriptedTeacher("oracle", seed=0).label(r0, r1)
    assert labels.keep.all()
    np.testing.assert_array_equal(labels.targets, (r1.sum(1) > r0.sum(1)).astype(float))
    assert (labels.targets[:10] == 0).all()


def test_mistake_teacher_flips_ten_percent():
    r0, r1 = _reward_pairs(100_000)
    labels = ScriptedTeacher("mistake", seed=1).label(r0, r1)
    flipped = np.mean(labels.targets != (r1.sum(1) > r0.sum(1)))
    assert abs(flipped - 0.1) < 0.01


def test_noisy_teacher_follows_bradley_terry():
    r0, r1 = _reward_pairs(100_000)
    labels = ScriptedTeacher("noisy", seed=2).label(r0, r1)
    prob = 1 / (1 + np.exp(-(r1.sum(1) - r0.sum(1))))
    for low, high in [(0.0, 0.2), (0.4, 0.6), (0.8, 1.0)]:
        inside = (prob >= low) & (prob < high)
        assert abs(labels.targets[inside].mean() - prob[inside].mean()) < 0.02


def test_skip_drops_exactly_the_pairs_under_the_threshold():
    r0, r1 = _reward_pairs(2000)
    teacher = ScriptedTeacher("skip", seed=0)
    teacher.set_thresholds(scale=5.0)  # theta_skip = 0.5
    labels = teacher.label(r0, r1)
    np.testing.assert_array_equal(labels.keep, np.maximum(r0.sum(1), r1.sum(1)) > 0.5)
    assert 0 < labels.keep.sum() < len(r0)
    np.testing.assert_array_equal(labels.targets, (r1.sum(1) > r0.sum(1))[labels.keep].astype(float))


def test_equal_teacher_gives_soft_targets_inside_the_band():
    r0, r1 = _reward_pairs(2000)
    teacher = ScriptedTeacher("equal", seed=0)
    teacher.set_thresholds(scale=5.0)  # theta_equal = 0.5
    labels = teacher.label(r0, r1)
    diff = r1.sum(1) - r0.sum(1)
    equal = np.abs(diff) < 0.5
    assert 0 < equal.sum() < len(r0)
    assert (labels.targets[equal] == 0.5).all()
    np.testing.assert_array_equal(labels.targets[~equal], (diff > 0)[~equal].astype(float))
    # a soft target is fitted best by equal segment returns
    logits = th.linspace(-3, 3, 61)
    best = logits[bradley_terry_log_likelihood(logits, th.tensor(0.5)).argmax()]
    assert abs(float(best)) < 1e-6


def test_myopic_teacher_weights_recent_steps():
    np.testing.assert_allclose(ScriptedTeacher.myopic_weights(4, 0.9), [0.9**3, 0.9**2, 0.9, 1.0])
    # segment 0 has the larger sum but its reward comes first: the myopic teacher prefers segment 1
    r0 = np.array([[10.0, 0, 0, 0, 0, 0, 0, 0, 0, 0]] * 3)
    r1 = np.array([[0, 0, 0, 0, 0, 0, 0, 0, 0, 9.0]] * 3)
    assert (ScriptedTeacher("myopic").label(r0, r1).targets == 1).all()
    assert (ScriptedTeacher("oracle").label(r0, r1).targets == 0).all()


def test_teacher_is_deterministic_by_seed():
    r0, r1 = _reward_pairs(500)
    a = ScriptedTeacher("noisy", seed=3).label(r0, r1).targets
    b = ScriptedTeacher("noisy", seed=3).label(r0, r1).targets
    c = ScriptedTeacher("noisy", seed=4).label(r0, r1).targets
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="Unknown teacher"):
        ScriptedTeacher("perfect")


def _random_episodes(n: int, seed: int) -> EpisodeStore:
    env = PointReachEnv()
    rng = np.random.default_rng(seed)
    store = EpisodeStore(max_episodes=n)
    for episode in range(n):
        obs, _ = env.reset(seed=seed * 1000 + episode)
        observations, actions, rewards = [], [], []
        done = False
        while not done:
            action = rng.uniform(-1, 1, size=2).astype(np.float32)
            observations.append(obs)
            actions.append(action)
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards.append(reward)
            done = terminated or truncated
        store.add(np.array(observations), np.array(actions), np.array(rewards))
    return store


def test_segments_are_windows_of_stored_episodes():
    store = _random_episodes(3, seed=0)
    seg0, seg1 = sample_segment_pairs(list(store.episodes), 20, 10, np.random.default_rng(0))
    assert seg0.observations.shape == (20, 10, 4) and seg1.actions.shape == (20, 10, 2)
    episode = store.episodes[0]
    for i in range(20):
        for ep in store.episodes:
            starts = [s for s in range(41) if np.array_equal(ep.rewards[s : s + 10], seg0.rewards[i])]
            if starts:
                np.testing.assert_array_equal(ep.observations[starts[0] : starts[0] + 10], seg0.observations[i])
                break
        else:
            pytest.fail("a segment is not a window of a stored episode")
    assert store.mean_segment_return(10) == pytest.approx(np.mean([ep.rewards.sum() / 5 for ep in store.episodes]))
    with pytest.raises(ValueError, match="segment_length"):
        sample_segment_pairs([episode], 1, 51, np.random.default_rng(0))


def test_reward_ensemble_ranks_held_out_pairs():
    th.manual_seed(0)
    rng = np.random.default_rng(0)
    train, held_out = _random_episodes(30, seed=1), _random_episodes(10, seed=2)
    teacher = ScriptedTeacher("oracle", seed=0)
    model = RewardEnsemble(4, 2, n_members=3, net_arch=[64, 64], learning_rate=1e-3)
    data = PreferenceDataset()
    seg0, seg1 = sample_segment_pairs(list(train.episodes), 400, 20, rng)
    data.add(seg0, seg1, teacher.label(seg0.rewards, seg1.rewards).targets)
    stats = model.fit(data, n_epochs=100, batch_size=64, rng=rng)
    test0, test1 = sample_segment_pairs(list(held_out.episodes), 500, 20, rng)
    truth = test1.rewards.sum(1) > test0.rewards.sum(1)
    accuracy = np.mean((model.preference_probs(test0, test1).mean(0) > 0.5) == truth)
    assert stats["accuracy"] > 0.97  # stopped early, as B-Pref does
    assert accuracy >= 0.85


def test_disagreement_and_entropy_selection():
    model = RewardEnsemble(2, 1, n_members=3, net_arch=[])
    with th.no_grad():
        for member, weight in zip(model.members, (1.0, -1.0, 0.0), strict=True):
            linear = member[0]
            linear.weight.zero_()
            linear.bias.zero_()
            linear.weight[0, 0] = weight  # members disagree on feature 0 only
            linear.weight[0, 1] = 0.5  # and agree on feature 1
    n, horizon = 40, 3
    gap = np.random.default_rng(0).uniform(0, 1, size=n)  # how far segment 1 is from segment 0
    actions = np.zeros((n, horizon, 1), np.float32)
    obs0 = np.zeros((n, horizon, 2), np.float32)

    def pairs(feature: int) -> tuple[Segments, Segments]:
        obs1 = np.zeros((n, horizon, 2), np.float32)
        obs1[:, :, feature] = gap[:, None]
        return Segments(obs0, actions, np.zeros((n, horizon))), Segments(obs1, actions, np.zeros((n, horizon)))

    # pairs that differ in the disputed feature: the members disagree most where the gap is largest
    seg0, seg1 = pairs(0)
    assert set(select_queries(model, seg0, seg1, 5, "disagreement")) == set(np.argsort(-gap)[:5])
    # pairs that differ in the agreed feature: the ensemble-mean preference is closest to 1/2 where the gap is smallest
    seg0, seg1 = pairs(1)
    assert set(select_queries(model, seg0, seg1, 5, "entropy")) == set(np.argsort(gap)[:5])
    np.testing.assert_array_equal(select_queries(model, seg0, seg1, 5, "uniform"), np.arange(5))
    # B-Pref's entropy is the members' mean entropy: on the disputed feature the ensemble-mean preference is exactly
    # 1/2 for every pair (members at +g, -g and 0), yet the confident members make the large gaps low-entropy
    seg0, seg1 = pairs(0)
    np.testing.assert_allclose(model.preference_probs(seg0, seg1).mean(0), 0.5, atol=1e-6)
    members_entropy = th.distributions.Bernoulli(probs=th.as_tensor(model.preference_probs(seg0, seg1))).entropy()
    reference = np.argsort(-members_entropy.mean(0).numpy(), kind="stable")[:5]
    np.testing.assert_array_equal(select_queries(model, seg0, seg1, 5, "entropy"), reference)
    assert set(reference) == set(np.argsort(gap)[:5])
    with pytest.raises(ValueError, match="query scheme"):
        select_queries(model, seg0, seg1, 5, "k-center")


def test_each_member_trains_on_its_own_permutation_and_the_loss_is_the_mean_cross_entropy():
    """B-Pref's ``train_reward``: one permutation of the pairs per member; the reported loss is per pair and member."""
    th.manual_seed(0)
    n, horizon, batch_size = 20, 3, 8
    rng = np.random.default_rng(0)
    obs0, obs1 = rng.normal(size=(2, n, horizon, 2)).astype(np.float32)
    obs0[:, :, 0], obs1[:, :, 0] = np.arange(n)[:, None], np.arange(n)[:, None]  # feature 0 names the pair
    actions = rng.normal(size=(n, horizon, 1)).astype(np.float32)
    targets = rng.choice([0.0, 0.5, 1.0], size=n).astype(np.float32)
    data = PreferenceDataset()
    data.add(Segments(obs0, actions, np.zeros((n, horizon))), Segments(obs1, actions, np.zeros((n, horizon))), targets)
    model = RewardEnsemble(2, 1, n_members=3, net_arch=[8], learning_rate=0.0)  # lr 0: the loss of the initial model
    with th.no_grad():
        logits = model.logits(th.as_tensor(obs0), th.as_tensor(actions), th.as_tensor(obs1), th.as_tensor(actions))
    p = th.sigmoid(logits).numpy().astype(np.float64)
    cross_entropy = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))  # (members, pairs)
    calls: list[tuple[int, list[int]]] = []
    member_returns = model._member_returns

    def spy(member: int, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        calls.append((member, observations[:, 0, 0].long().tolist()))
        return member_returns(member, observations, actions)

    model._member_returns = spy  # type: ignore[method-assign]
    stats = model.fit(data, n_epochs=1, batch_size=batch_size, rng=np.random.default_rng(5), stop_accuracy=2.0)
    perm_rng = np.random.default_rng(5)
    perms = [perm_rng.permutation(n) for _ in range(3)]
    assert len({tuple(perm) for perm in perms}) == 3
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for member, index in calls[::2]:  # each member's minibatch is read twice (segment 1, then segment 0)
        seen[member] += index
    for member in range(3):
        assert seen[member] == perms[member].tolist(), f"member {member} trains on its own permutation"
    assert stats["loss"] == pytest.approx(cross_entropy.mean(), rel=1e-5)
