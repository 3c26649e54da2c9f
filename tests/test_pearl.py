"""PEARL: Gromov-Wasserstein alignment, label transfer, the robust reward model, relabelling and the toy pair.

End to end, the reward model fitted on transferred labels orders held-out target pairs better than one fitted on
10 true target labels, and IQL on its rewards reaches at least the target return of IQL on those 10 labels
(``test_zero_shot_reward_beats_ten_target_labels``, 3 seeds, 3,000 IQL steps on 60 toy episodes). The same
comparison at the suite's scale, with a confidence interval, is the claim ``pearl-zero-shot-beats-10-labels`` of
``pearl-local`` (``python -m benchmarks.run --suite pearl-local``).

Each test below fails on a broken PEARL. Deliberate bugs applied once each, and the tests that failed:

Alignment and label transfer (:mod:`rlkit.pearl.alignment`)
- coupling transposed in :func:`transfer_labels` (``plan.T`` read as T_ik): ``test_self_transfer_to_a_permuted_copy``,
  ``test_rotated_and_translated_target``, ``test_transfer_preferences_onto_the_rotated_task``,
  ``test_zero_shot_reward_beats_ten_target_labels``.
- normalisation over all pairs (the denominator T[:, i]^T 1 1^T T[:, j] = v_i v_j) instead of the labelled ones:
  ``test_identity_coupling_returns_the_source_labels``, ``test_uniform_plan_gives_the_mean_source_label``.
- reversed pairs added with label y instead of 1 - y: ``test_swapping_a_target_pair_gives_one_minus_the_label``.
- the highest GW distance kept instead of the lowest: ``test_plan_marginals_and_lowest_restart_kept``.
- one standard deviation for every channel, or POT's default squared Euclidean distances:
  ``test_features_are_standardised_per_channel_and_distances_are_euclidean``.
- collapsed images (both segments of a pair on one target segment) kept:
  ``test_matched_target_pairs_are_the_images_and_drop_collapsed_pairs``.
- target segments drawn with padding (``full=False``): ``test_transferred_target_segments_lie_inside_their_episodes``.
- the plan's rows renormalised to 1 (the conditional P(i | k) returned as the plan):
  ``test_plan_marginals_and_lowest_restart_kept``.
- ``epsilon`` ignored (exact GW always) or the entropic restart scored by the product plan's objective instead of its
  own: ``test_entropic_and_exact_gw_agree_on_small_problems``.

Robust reward (:class:`~rlkit.common.preference.GaussianRewardModel`)
- regulariser sign flipped (``- lambda_u * L_u``): ``test_sigma_stays_in_its_clamp_and_follows_the_regulariser``.
- noise not scaled by sigma (``mu + eps``: the cross-entropy no longer moves sigma):
  ``test_sigma_stays_in_its_clamp_and_follows_the_regulariser``.
- log sigma unbounded (the map into ``log_sigma_bounds`` dropped):
  ``test_sigma_stays_in_its_clamp_and_follows_the_regulariser``.
- the noise scaled by the variance (sigma^2) instead of sigma:
  ``test_robust_loss_is_the_hand_computed_cross_entropy_on_sampled_scores_plus_the_kl``.

Relabelling (:class:`~rlkit.iql.IQLBT` with ``reward_type="gaussian"``, :class:`~rlkit.pearl.PEARL`)
- relabelled with a reparameterised sample mu + sigma eps instead of mu: ``test_relabelled_rewards_equal_mu``.
- the transferred pool ignored (IQL+BT's cached target pool used): ``test_pearl_uses_no_target_label``.

Label pools (:meth:`~rlkit.common.preference.PreferencePool.create`)
- the teacher seeded with the sampling seed (its noise then follows the segments' positions: random labels agreed
  with the rational teacher 69% of the time on medium-expert data):
  ``test_random_and_flipped_teachers_are_independent_of_the_segments``.
"""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch as th
from torch.nn import functional as F

from rlkit import IQLBT, PEARL
from rlkit.common.preference import (
    GaussianRewardModel,
    PreferenceDataset,
    PreferencePool,
    Segments,
    pool_label_accuracy,
    preference_accuracy,
    uncertainty_regularizer,
)
from rlkit.common.sequence import Windows, WindowSampler
from rlkit.data import OfflineDataset
from rlkit.envs import make_env
from rlkit.pearl.alignment import (
    gromov_wasserstein_alignment,
    gw_objective,
    matched_target_pairs,
    random_vertex_plan,
    segment_features,
    transfer_labels,
    transfer_preferences,
    within_task_distances,
)
from toy_data import reach_episodes

SOURCE, TARGET = "toy/reach-v0", "toy/reach-rot90-v0"
SMALL = dict(
    segment_length=10,
    batch_size=128,
    policy_kwargs=dict(net_arch=[32, 32]),
    reward_net_arch=(32, 32),
    reward_epochs=60,
    device="cpu",
    pool_dir=None,
)


def toy_dataset(env_id: str, n_episodes: int = 60, seed: int = 0, ordered: bool = False) -> OfflineDataset:
    """Episodes of mixed quality: one in four from the env's straight-line expert, the others uniformly random
    (with ``ordered`` the expert episodes come last, as in a medium-expert dataset)."""

    def is_expert(episode: int, _: np.random.Generator) -> bool:
        return episode >= 0.75 * n_episodes if ordered else episode % 4 == 0

    return reach_episodes(env_id, n_episodes, is_expert, seed, f"test/pearl-{env_id.replace('/', '-')}-{seed}")


@pytest.fixture(autouse=True)
def pool_cache(tmp_path, monkeypatch):
    """Label pools of these tests are cached in a temporary folder, never in the user's cache."""
    monkeypatch.setenv("RLKIT_PREFERENCE_POOLS", str(tmp_path / "pools"))


@pytest.fixture(scope="module")
def source() -> OfflineDataset:
    return toy_dataset(SOURCE, seed=0)


@pytest.fixture(scope="module")
def target() -> OfflineDataset:
    return toy_dataset(TARGET, seed=1)


def oracle_labels(returns: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """P(second preferred) of each pair from its segments' true returns."""
    return (returns[pairs[:, 1]] > returns[pairs[:, 0]]).astype(np.float64)


# --------------------------------------------------------------------------- GW alignment


def test_plan_marginals_and_lowest_restart_kept():
    rng = np.random.default_rng(0)
    cost_source = within_task_distances(rng.exponential(size=(30, 5)))
    cost_target = within_task_distances(rng.exponential(size=(40, 3)))
    alignment = gromov_wasserstein_alignment(cost_source, cost_target, n_restarts=4, seed=0)
    np.testing.assert_allclose(alignment.plan.sum(axis=1), ot.unif(30), atol=1e-6)
    np.testing.assert_allclose(alignment.plan.sum(axis=0), ot.unif(40), atol=1e-6)
    assert len(alignment.gw_dists) == 4 and len(set(np.round(alignment.gw_dists, 12))) > 1, "restarts start apart"
    assert alignment.gw_dist == min(alignment.gw_dists) == alignment.gw_dists[alignment.restart]
    start = random_vertex_plan(ot.unif(30), ot.unif(40), rng)
    np.testing.assert_allclose(start.sum(axis=1), ot.unif(30), atol=1e-12)
    np.testing.assert_allclose(start.sum(axis=0), ot.unif(40), atol=1e-12)
    cost = within_task_distances(rng.normal(size=(5, 2)))
    assert cost.max() == 1.0 and np.all(np.diag(cost) == 0) and np.allclose(cost, cost.T)
    with pytest.raises(ValueError, match="square"):
        gromov_wasserstein_alignment(cost_source[:, :5], cost_target)
    with pytest.raises(ValueError, match="n_restarts"):
        gromov_wasserstein_alignment(cost_source, cost_target, n_restarts=0)


def test_entropic_and_exact_gw_agree_on_small_problems():
    rng = np.random.default_rng(4)
    features = rng.exponential(size=(30, 6)) * np.array([3.0, 2.0, 1.5, 1.0, 0.7, 0.4])
    rotation = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    perm = rng.permutation(30)  # target segment i is source segment perm[i]
    cost_source = within_task_distances(features)
    cost_target = within_task_distances(features[perm] @ rotation + 5.0)
    exact = gromov_wasserstein_alignment(cost_source, cost_target, n_restarts=2, seed=0)
    assert exact.gw_dist < 1e-10 and np.all(exact.plan.argmax(axis=1) == np.argsort(perm))
    objectives = []
    for epsilon in (1e-2, 5e-3, 1e-3):
        entropic = gromov_wasserstein_alignment(cost_source, cost_target, n_restarts=2, seed=0, epsilon=epsilon)
        np.testing.assert_allclose(entropic.plan.sum(axis=1), ot.unif(30), atol=1e-5)  # Sinkhorn's tolerance
        np.testing.assert_allclose(entropic.plan.sum(axis=0), ot.unif(30), atol=1e-5)
        assert entropic.gw_dist == pytest.approx(gw_objective(cost_source, cost_target, entropic.plan))
        objectives.append(entropic.gw_dist)
        print(f"epsilon {epsilon:g}: GW objective {entropic.gw_dist:.2e}, L1 {abs(entropic.plan - exact.plan).sum():.3f}")
    assert objectives[0] > objectives[1] > objectives[2] > exact.gw_dist, "entropic GW tends to exact GW"
    assert np.all(entropic.plan.argmax(axis=1) == exact.plan.argmax(axis=1))
    pairs = rng.permutation(30).reshape(15, 2)
    labels = rng.integers(0, 2, size=15).astype(np.float64)
    target_pairs, _ = matched_target_pairs(exact.plan, pairs)
    np.testing.assert_allclose(
        transfer_labels(entropic.plan, pairs, labels, target_pairs),
        transfer_labels(exact.plan, pairs, labels, target_pairs),
        atol=0.05,
    )
    # unrelated structures: the objectives agree within a few percent (the plans may be near-tied local minima)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        cost_source = within_task_distances(rng.exponential(size=(25, 5)))
        cost_target = within_task_distances(rng.exponential(size=(30, 3)))
        exact = gromov_wasserstein_alignment(cost_source, cost_target, seed=0)
        entropic = gromov_wasserstein_alignment(cost_source, cost_target, seed=0, epsilon=1e-3)
        assert entropic.gw_dist == pytest.approx(exact.gw_dist, rel=0.1)
    with pytest.raises(ValueError, match="epsilon"):
        gromov_wasserstein_alignment(cost_source, cost_target, epsilon=-1.0)


def test_features_are_standardised_per_channel_and_distances_are_euclidean():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(4, 3, 2)) * np.array([100.0, 0.01]) + np.array([5.0, -2.0])  # channels of other scales
    act = np.concatenate([rng.normal(size=(4, 3, 1)), np.full((4, 3, 1), 0.7)], axis=-1)  # a constant channel
    steps, mask = np.tile(np.arange(3), (4, 1)), np.ones((4, 3), bool)
    windows = Windows(obs, act, np.zeros((4, 3)), steps, mask, np.arange(4), np.zeros(4))
    features = segment_features(windows)
    expected = np.zeros((4, 3, 4))
    for channel, values in enumerate([obs[..., 0], obs[..., 1], act[..., 0], act[..., 1]]):
        spread = values.std() if values.std() > 0 else 1.0  # over all 12 steps of the set
        expected[..., channel] = (values - values.mean()) / spread
    np.testing.assert_allclose(features, expected.reshape(4, 12), atol=1e-12)  # step by step: (s_t, a_t), t = 0, 1, 2
    # plain Euclidean distances (not POT's default squared ones), divided by the largest
    triangle = within_task_distances(np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]))
    np.testing.assert_allclose(triangle, np.array([[0, 3, 4], [3, 0, 5], [4, 5, 0]]) / 5.0, atol=1e-12)


def test_matched_target_pairs_are_the_images_and_drop_collapsed_pairs():
    plan = np.array([[0.2, 0.05, 0.0], [0.15, 0.1, 0.0], [0.0, 0.2, 0.05], [0.0, 0.0, 0.25]])  # 0, 1 -> 0; 2 -> 1; 3 -> 2
    pairs, kept = matched_target_pairs(plan, np.array([[0, 1], [0, 2], [2, 3], [3, 1], [1, 0]]))
    np.testing.assert_array_equal(pairs, [[0, 1], [1, 2], [2, 0]])
    np.testing.assert_array_equal(kept, [1, 2, 3])  # (0, 1) and (1, 0) both land on target segment 0: no pair


def test_transferred_target_segments_lie_inside_their_episodes(source, target):
    pool = PreferencePool.create(source, 40, mode="window", seed=0, segment_length=10)
    transferred, _ = transfer_preferences(source, pool, target, n_target_segments=120, seed=0, n_restarts=1)
    lengths = target.episode_lengths[transferred.episodes]
    assert np.all(transferred.starts + 10 <= lengths), "no padded target segment"
    first, second = transferred.windows(WindowSampler(target, 10))
    assert first.mask.all() and second.mask.all()


def test_identity_coupling_returns_the_source_labels():
    rng = np.random.default_rng(1)
    pairs = np.array([[0, 1], [2, 3], [4, 5], [1, 4], [0, 5]])
    labels = np.array([1.0, 0.0, 0.5, 0.0, 1.0])
    transferred = transfer_labels(np.eye(6) / 6, pairs, labels, pairs)
    np.testing.assert_allclose(transferred, labels, atol=1e-12)
    # the counterexample to an unnormalised sum: three identical segments, one labelled pair -> 1, not 1/9
    np.testing.assert_allclose(transfer_labels(np.eye(3) / 3, np.array([[0, 1]]), np.array([1.0]), np.array([[0, 1]])), [1.0])
    # an unsupported target pair gets no label
    assert np.isnan(transfer_labels(np.eye(6) / 6, pairs, labels, np.array([[2, 4]])))[0]
    # a permutation coupling carries each label to the permuted pair
    perm = rng.permutation(6)
    plan = np.zeros((6, 6))
    plan[np.arange(6), perm] = 1 / 6
    np.testing.assert_allclose(transfer_labels(plan, pairs, labels, perm[pairs]), labels, atol=1e-12)


def test_swapping_a_target_pair_gives_one_minus_the_label():
    rng = np.random.default_rng(2)
    plan = ot.sinkhorn(ot.unif(12), ot.unif(9), rng.random((12, 9)), reg=0.05)
    pairs = rng.choice(12, size=(20, 2), replace=True)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    labels = rng.choice([0.0, 0.5, 1.0], size=len(pairs), p=[0.6, 0.1, 0.3])
    target_pairs = np.array([[i, j] for i in range(9) for j in range(9) if i != j])
    forward = transfer_labels(plan, pairs, labels, target_pairs)
    backward = transfer_labels(plan, pairs, labels, target_pairs[:, ::-1])
    np.testing.assert_allclose(forward + backward, 1.0, atol=1e-12)
    assert forward.std() > 0.01, "the labels depend on the pair"


def test_uniform_plan_gives_the_mean_source_label():
    pairs = np.array([[0, 1], [2, 3], [1, 2], [3, 0]])
    labels = np.array([1.0, 1.0, 1.0, 0.0])
    uniform = np.full((4, 7), 1 / 28)
    target_pairs = np.array([[0, 1], [5, 2], [6, 3]])
    np.testing.assert_allclose(transfer_labels(uniform, pairs, labels, target_pairs, symmetrize=False), 0.75, atol=1e-12)
    # symmetrised, every labelled pair also counts reversed: the mean label is 1/2
    np.testing.assert_allclose(transfer_labels(uniform, pairs, labels, target_pairs), 0.5, atol=1e-12)


def _source_windows(dataset: OfflineDataset, n_pairs: int, length: int) -> tuple[Windows, np.ndarray]:
    pool = PreferencePool.create(dataset, n_pairs, mode="window", seed=0, segment_length=length)
    first, second = pool.windows(WindowSampler(dataset, length))
    windows = Windows(*(np.concatenate([a, b]) for a, b in zip(first, second, strict=True)))
    return windows, np.stack([np.arange(n_pairs), np.arange(n_pairs) + n_pairs], axis=1)


def test_self_transfer_to_a_permuted_copy(source):
    windows, pairs = _source_windows(source, 60, 10)
    returns = windows.rewards.sum(axis=1)
    labels = oracle_labels(returns, pairs)
    perm = np.random.default_rng(3).permutation(len(returns))  # target segment i is source segment perm[i]
    features = segment_features(windows)
    alignment = gromov_wasserstein_alignment(
        within_task_distances(features), within_task_distances(features[perm]), n_restarts=3, seed=0
    )
    target_pairs, kept = matched_target_pairs(alignment.plan, pairs)
    transferred = transfer_labels(alignment.plan, pairs, labels, target_pairs)
    accuracy = preference_accuracy(transferred, oracle_labels(returns[perm], target_pairs))
    print(f"self-transfer: accuracy {accuracy:.3f} over {len(kept)} pairs, GW distance {alignment.gw_dist:.2e}")
    assert len(kept) == len(pairs) and accuracy >= 0.95


def test_rotated_and_translated_target():
    rng = np.random.default_rng(4)
    features = rng.exponential(size=(80, 6)) * np.array([3.0, 2.0, 1.5, 1.0, 0.7, 0.4])  # no symmetry to exploit
    scores = features @ rng.normal(size=6)
    pairs = rng.permutation(80).reshape(40, 2)
    labels = oracle_labels(scores, pairs)
    rotation = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    perm = rng.permutation(80)
    target = features[perm] @ rotation + rng.normal(size=6) * 5.0
    alignment = gromov_wasserstein_alignment(within_task_distances(features), within_task_distances(target), seed=0)
    target_pairs, _ = matched_target_pairs(alignment.plan, pairs)
    transferred = transfer_labels(alignment.plan, pairs, labels, target_pairs)
    accuracy = preference_accuracy(transferred, oracle_labels(scores[perm], target_pairs))
    print(f"rotated and translated: accuracy {accuracy:.3f}")
    assert accuracy >= 0.9


def test_transfer_preferences_onto_the_rotated_task(source, target):
    pool = PreferencePool.create(source, 100, mode="window", seed=0, segment_length=10)
    transferred, report = transfer_preferences(source, pool, target, seed=0, n_restarts=3)
    transferred.check_dataset(target)
    assert report.n_source_segments == report.n_target_segments == 200 and report.n_transferred == transferred.n_pairs
    assert 90 <= transferred.n_pairs <= 100 and report.peak_alloc_mib > 0.5 and report.peak_rss_mib > 50
    accuracy = pool_label_accuracy(transferred)
    print(f"transferred-label accuracy on the rotated task: {accuracy:.3f} ({transferred.n_pairs} pairs)")
    assert accuracy > 0.7
    # the scores are the target's true window returns: the hidden teacher
    sampler = WindowSampler(target, 10)
    np.testing.assert_allclose(
        transferred.scores[:, 0], sampler.window_returns(transferred.episodes[:, 0], transferred.starts[:, 0])
    )


# --------------------------------------------------------------------------- robust reward model


def _pairs(dataset: OfflineDataset, n: int, seed: int) -> PreferenceDataset:
    pool = PreferencePool.create(dataset, n, mode="window", seed=seed, segment_length=10)
    return pool.preference_dataset(WindowSampler(dataset, 10))


def test_uncertainty_regularizer_is_the_kl_toward_eta():
    log_sigma = th.linspace(-3, 1, 41)
    values = th.stack([uncertainty_regularizer(x, 0.5) for x in log_sigma])
    assert abs(log_sigma[values.argmin()].item() - np.log(0.5)) < 0.1
    assert uncertainty_regularizer(th.tensor(np.log(0.5)), 0.5).item() == pytest.approx(0.0, abs=1e-7)
    sigma = 0.2
    kl = th.distributions.kl_divergence(th.distributions.Normal(0.0, sigma), th.distributions.Normal(0.0, 0.5))
    assert uncertainty_regularizer(th.tensor(np.log(sigma)), 0.5).item() == pytest.approx(kl.item(), rel=1e-5)


def test_sigma_stays_in_its_clamp_and_follows_the_regulariser(source):
    data = _pairs(source, 100, seed=0)
    obs = th.as_tensor(source.observations[:500])
    act = th.as_tensor(source.actions[:500])

    def sigma_after(eta: float, lambda_u: float = 1.0, epochs: int = 15) -> tuple[float, float, float, float]:
        th.manual_seed(0)
        model = GaussianRewardModel(
            4, 2, net_arch=(32, 32), learning_rate=3e-3, eta=eta, lambda_u=lambda_u, log_sigma_bounds=(-3, 1)
        )
        with th.no_grad():
            start = model(obs, act)[1].exp().mean().item()
        stats = model.fit(data, epochs, 50, np.random.default_rng(0), stop_accuracy=1.1)
        with th.no_grad():
            log_sigma = model(obs, act)[1]
        assert np.isfinite(stats["loss"]) and stats["sigma"] > 0
        return start, log_sigma.exp().mean().item(), log_sigma.min().item(), log_sigma.max().item()

    start, up, _, _ = sigma_after(eta=1.5)
    _, down, _, _ = sigma_after(eta=0.1)
    _, beyond, _, largest = sigma_after(eta=20.0)
    _, below, smallest, _ = sigma_after(eta=1e-4)
    # without the regulariser the noise only hurts on these clean labels: the cross-entropy shrinks sigma
    _, free, _, _ = sigma_after(eta=1.0, lambda_u=0.0)
    print(
        f"sigma: start {start:.3f}; toward eta 1.5 -> {up:.3f}, 0.1 -> {down:.3f}, 20 -> {beyond:.3f}, "
        f"1e-4 -> {below:.3f}; no regulariser -> {free:.3f}"
    )
    assert up > start + 0.3 and abs(up - 1.5) < abs(start - 1.5)
    assert down < start - 0.2 and abs(down - 0.1) < abs(start - 0.1)
    assert beyond > up and largest <= 1.0, "pushed toward an eta above the clamp, sigma stays inside it"
    assert below < down and smallest >= -3.0
    assert free < start - 0.05


def test_robust_loss_is_the_hand_computed_cross_entropy_on_sampled_scores_plus_the_kl():
    """L_RRL = BCE(sigmoid(S1 - S0), y) + lambda_u mean KL(N(mu, sigma^2) || N(mu, eta^2)), S = sum_t mu_t + sigma_t eps_t."""
    th.manual_seed(0)
    eta, lambda_u, (low, high) = 0.7, 0.4, (-2.0, 1.0)
    model = GaussianRewardModel(3, 2, net_arch=(8,), eta=eta, lambda_u=lambda_u, log_sigma_bounds=(low, high))
    generator = th.Generator().manual_seed(1)
    obs0, obs1 = th.randn(2, 5, 4, 3, generator=generator)
    act0, act1 = th.randn(2, 5, 4, 2, generator=generator)
    targets = th.tensor([0.0, 1.0, 0.5, 1.0, 0.3])
    th.manual_seed(7)
    total, cross_entropy, regularizer = model.loss(obs0, act0, obs1, act1, targets)

    th.manual_seed(7)
    noise0, noise1 = th.randn(5, 4), th.randn(5, 4)  # the model draws eps for segment 0, then segment 1
    scores, log_sigmas = [], []
    for obs, act, noise in ((obs0, act0, noise0), (obs1, act1, noise1)):
        out = model.net(th.cat([obs, act], dim=-1))
        mu, log_sigma = th.tanh(out[..., 0]), low + (high - low) * th.sigmoid(out[..., 1])
        scores.append((mu + log_sigma.exp() * noise).sum(dim=1))
        log_sigmas.append(log_sigma)
    logit = scores[1] - scores[0]
    ce_reference = -(targets * F.logsigmoid(logit) + (1 - targets) * F.logsigmoid(-logit)).mean()
    sigma = th.cat(log_sigmas).exp()
    kl_reference = (th.log(eta / sigma) + sigma**2 / (2 * eta**2) - 0.5).mean()
    total_reference = ce_reference + lambda_u * kl_reference
    for value, reference in ((cross_entropy, ce_reference), (regularizer, kl_reference), (total, total_reference)):
        assert value.item() == pytest.approx(reference.item(), rel=1e-5)
    parameters = list(model.parameters())
    for got, want in zip(th.autograd.grad(total, parameters), th.autograd.grad(total_reference, parameters), strict=True):
        th.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_robust_model_orders_pairs_and_rejects_bad_settings(source):
    th.manual_seed(0)
    model = GaussianRewardModel(4, 2, net_arch=(32, 32), learning_rate=1e-3)
    model.fit(_pairs(source, 200, seed=0), 60, 64, np.random.default_rng(0))
    held_out = PreferencePool.create(source, 200, mode="window", seed=5, segment_length=10)
    first, second = held_out.windows(WindowSampler(source, 10))
    probs = model.preference_probs(
        Segments(first.observations, first.actions, first.rewards),
        Segments(second.observations, second.actions, second.rewards),
    )
    assert probs.shape == (1, 200) and preference_accuracy(probs[0], held_out.targets) > 0.8
    with pytest.raises(ValueError, match="log_sigma_bounds"):
        GaussianRewardModel(4, 2, log_sigma_bounds=(1.0, -1.0))
    with pytest.raises(ValueError, match="eta"):
        GaussianRewardModel(4, 2, eta=0.0)


# --------------------------------------------------------------------------- relabelling and PEARL


def test_relabelled_rewards_equal_mu(target):
    model = IQLBT(
        "MlpPolicy",
        make_env(TARGET),
        dataset=target,
        n_labels=100,
        label_mode="window",
        seed=0,
        reward_type="gaussian",
        **SMALL,
    )
    assert isinstance(model.reward_model, GaussianRewardModel)
    obs = th.as_tensor(model.normalize_observation(target.observations))
    with th.no_grad():
        mu = model.reward_model(obs, th.as_tensor(target.actions))[0].numpy()
    np.testing.assert_array_equal(model.replay_buffer.rewards.numpy().ravel(), mu)
    np.testing.assert_array_equal(model.learned_rewards(target.observations, target.actions), mu)
    assert model.progress_info()["label_accuracy"] == 1.0


def test_random_and_flipped_teachers_are_independent_of_the_segments():
    """The teacher's noise has its own stream: random labels agree with the rational teacher half the time."""
    target = toy_dataset(TARGET, seed=2, ordered=True)
    random = PreferencePool.create(target, 400, mode="window", seed=0, segment_length=10, teacher={"beta": 0.0})
    flipped = PreferencePool.create(target, 400, mode="window", seed=0, segment_length=10, teacher={"eps_mistake": 0.3})
    assert abs(pool_label_accuracy(random) - 0.5) < 0.07
    assert abs(pool_label_accuracy(flipped) - 0.7) < 0.07
    with pytest.raises(ValueError, match="reward_type"):
        IQLBT("MlpPolicy", None, dataset=target, n_labels=10, reward_type="gauss", **SMALL)
    with pytest.raises(ValueError, match="takes no eta"):
        IQLBT("MlpPolicy", None, dataset=target, n_labels=10, reward_kwargs={"eta": 1.0}, **SMALL)


def test_pearl_uses_no_target_label(source, target, tmp_path):
    kwargs = dict(SMALL, n_labels=100, gw_restarts=2, seed=0, heldout_labels=100, heldout_teacher="oracle", pool_dir=tmp_path)
    model = PEARL("MlpPolicy", make_env(TARGET), dataset=target, source_dataset=source, **kwargs)
    info = model.progress_info()
    assert info["labels"] == 0.0 and info["source_labels"] == 100.0
    assert info["label_accuracy"] == pool_label_accuracy(model.preference_pool) > 0.7
    assert info["gw_source_segments"] == 200 and info["transferred_pairs"] == model.labels_used
    assert model.preference_pool.teacher["transferred_from"] == source.dataset_id
    # no target pool was drawn: only the source pool and the held-out target pool are cached
    cached = sorted(p.name for p in tmp_path.iterdir())
    assert len(cached) == 2 and sum(name.startswith("test-pearl-toy-reach-v0") for name in cached) == 1
    assert info["preference_accuracy"] > 0.7
    model.learn(20)
    model.save(tmp_path / "pearl.zip")
    loaded = PEARL.load(tmp_path / "pearl.zip", device="cpu")
    obs = target.observations[:8]
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    np.testing.assert_array_equal(
        loaded.learned_rewards(obs, target.actions[:8]), model.learned_rewards(obs, target.actions[:8])
    )
    again = PEARL("MlpPolicy", make_env(TARGET), dataset=target, source_dataset=source, **kwargs)
    np.testing.assert_array_equal(again.preference_pool.targets, model.preference_pool.targets)
    np.testing.assert_array_equal(
        again.learned_rewards(obs, target.actions[:8]), model.learned_rewards(obs, target.actions[:8])
    )


def test_pearl_rejects_bad_input(target):
    with pytest.raises(ValueError, match="source_dataset"):
        PEARL("MlpPolicy", None, dataset=target, **SMALL)
    with pytest.raises(ValueError, match="source_pool"):
        PEARL("MlpPolicy", None, dataset=target, source_dataset=target, preference_pool=object(), **SMALL)
    with pytest.raises(ValueError, match="gw_restarts"):
        PEARL("MlpPolicy", None, dataset=target, source_dataset=target, gw_restarts=0, **SMALL)


# --------------------------------------------------------------------------- the toy pair


def test_rotated_task_needs_other_actions():
    env, source_env = make_env(TARGET), make_env(SOURCE)
    np.testing.assert_allclose(env.unwrapped.action_map @ env.unwrapped.action_map.T, np.eye(2), atol=1e-12)

    def episode_return(policy_env, acting_env) -> float:
        acting_env.reset(seed=3)
        policy_env.reset(seed=3)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = acting_env.step(policy_env.unwrapped.expert_action())
            policy_env.unwrapped.set_state(acting_env.unwrapped.get_state())
            total, done = total + reward, terminated or truncated
        return total

    assert episode_return(env, env) > -10.0
    assert episode_return(source_env, env) < episode_return(env, env) - 10.0, "the source's expert goes the wrong way"
    mirrored = make_env(TARGET, angle=0.0, mirror=True).unwrapped
    np.testing.assert_allclose(mirrored.action_map, np.diag([1.0, -1.0]))


def test_zero_shot_reward_beats_ten_target_labels(source, target):
    """End to end over 3 seeds: held-out accuracy of the reward, then the target return after 3,000 IQL steps."""
    accuracy: dict[str, list[float]] = {"PEARL": [], "IQL+BT-10": []}
    returns: dict[str, list[float]] = {"PEARL": [], "IQL+BT-10": []}
    for seed in range(3):
        common = dict(SMALL, pool_seed=seed, seed=seed, label_mode="window", heldout_labels=300, heldout_teacher="oracle")
        pearl = PEARL("MlpPolicy", None, dataset=target, source_dataset=source, n_labels=200, gw_restarts=2, **common)
        few = IQLBT("MlpPolicy", None, dataset=target, n_labels=10, **common)
        for name, model in (("PEARL", pearl), ("IQL+BT-10", few)):
            accuracy[name].append(model.heldout_accuracy)
            model.learn(3000)
            returns[name].append(model.evaluate(TARGET, n_episodes=20, seed=1000 + seed)["return_mean"])
    print({name: np.round(values, 3).tolist() for name, values in accuracy.items()})
    print({name: np.round(values, 1).tolist() for name, values in returns.items()})
    assert np.mean(accuracy["PEARL"]) > np.mean(accuracy["IQL+BT-10"]) + 0.03
    assert np.mean(returns["PEARL"]) >= np.mean(returns["IQL+BT-10"])


# --------------------------------------------------------------------------- benchmark kind


def test_pearl_table_shows_labels_accuracy_score_and_memory():
    from benchmarks.kinds import pearl as kind

    def record(algo: str, seed: int, score: float, teacher=None, **final) -> dict:
        return {
            "algo": algo,
            "kind": "pearl",
            "task": "toy-pair",
            "seed": seed,
            "status": "ok",
            "label_pool": {"teacher": teacher or "oracle"},
            "peak_rss_mib": 500.0 + seed,
            "final": {"step": 10, "return_mean": 0.0, "normalized": score, **final},
        }

    gw = dict(gw_source_segments=1000.0, gw_target_segments=1000.0, transferred_pairs=500.0, gw_seconds=30.0)
    records = [
        record("PEARL", 0, 80.0, labels=0.0, source_labels=500.0, label_accuracy=0.8, gw_peak_alloc_mib=100.0, **gw),
        record("PEARL", 1, 90.0, labels=0.0, source_labels=500.0, label_accuracy=0.9, gw_peak_alloc_mib=120.0, **gw),
        record("IQL+BT-flip30", 0, 50.0, {"preset": "oracle", "eps_mistake": 0.3}, labels=500.0, label_accuracy=0.7),
        record("IQL+RRL-random", 0, 40.0, {"preset": "oracle", "beta": 0.0}, labels=500.0, label_accuracy=0.5),
        {**record("IQL", 0, 99.0), "kind": "offline"},
    ]
    lines = kind.table(records)
    rows = {line.split(" | ")[1]: line for line in lines if line.startswith("| toy-pair") and line.count(" | ") == 6}
    assert "| 2 | 0 (from 500 source) | 0.850 ± 0.050 | — | 85.0 ± 5.0 |" in rows["PEARL"]
    assert "500 (30% flipped)" in rows["IQL+BT-flip30"] and "500 random" in rows["IQL+RRL-random"]
    assert "IQL" not in rows
    assert any(line.startswith("| toy-pair | PEARL | 1000 | 1000 | 500 ± 0 | 30.0 ± 0.0 | 120.0 | 501 |") for line in lines)
    assert kind.table([records[-1]]) == []
