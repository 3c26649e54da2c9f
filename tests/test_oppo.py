"""OPPO: the alternating update, the triplet roles, masking, history resets, learning on a toy task; and IQL+BT.

Each test below fails on a broken OPPO. Deliberate bugs applied once each, and the tests that failed:

(theta, phi) step, ``update_encoder_policy``
- z* not detached in the (theta, phi) loss and stepped with it: ``test_encoder_policy_step_leaves_z_star_bit_identical``.
- triplet roles swapped in :func:`triplet_roles` (positive = the dispreferred segment):
  ``test_label_convention_and_swapped_pairs``, ``test_learns_preferred_behaviour_on_mixed_toy_data``.
- causal mask removed from the policy (``causal=False``): ``test_action_ignores_its_own_and_later_steps``,
  ``test_learns_preferred_behaviour_on_mixed_toy_data``.
- padding attended to (the key-padding part of the attention mask dropped):
  ``test_masked_positions_do_not_change_action_or_context``.
- the triplet margin ignored (always 1) or an L1 distance: ``test_preference_loss_is_the_triplet_margin_loss_by_hand``.
- HIM summed over the action entries (not averaged), the norm penalty pulling z to 0, the triplet term's sign flipped
  or detached, the encoder's gradient not clipped, z* not detached:
  ``test_encoder_policy_step_is_the_hand_computed_loss_with_separately_clipped_gradients``.
- unlimited labels inverted, or a pair's second window shifted by one:
  ``test_unlimited_labels_compare_each_pair_by_its_foresee_return``.

z* step, ``update_optimal_context``
- no skip on an all-tied batch (AdamW's weight decay moves z*): ``test_all_tied_batch_is_finite_and_keeps_z_star``.
- encoder not frozen (contexts computed with gradients and the encoder's optimizer stepped):
  ``test_context_step_leaves_encoder_and_policy_identical``.
- gradient ascent on the triplet loss (``(-loss).backward()``): ``test_context_step_moves_z_star_toward_the_positive``.

Acting
- ``episode_start`` ignored by ``predict`` (history kept): ``test_episode_start_resets_history_and_timestep``.
- ``evaluate()`` calling ``predict`` without ``state`` / ``episode_start``: ``test_evaluate_passes_state_and_episode_start``.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from rlkit import BC, IQLBT, OPPO
from rlkit.common.evaluation import evaluate
from rlkit.common.preference import PreferencePool
from rlkit.data import OfflineDataset
from rlkit.envs import make_env
from rlkit.oppo.oppo import OPPOBatch, WindowTensors, preference_loss, triplet_roles
from toy_data import reach_episodes

ENV = "toy/reach-v0"
TINY = dict(
    context_length=4,
    network_size="cpu",
    batch_size=8,
    warmup_steps=10,
    device="cpu",
    policy_kwargs=dict(hidden_size=16, ffn_size=32, dropout=0.0, max_timestep=64),
)


def toy_dataset(n_episodes: int = 60, seed: int = 0) -> OfflineDataset:
    """Toy reach episodes of mixed quality: one in four from the straight-line expert, the others uniformly random."""
    return reach_episodes(ENV, n_episodes, lambda episode, _: episode % 4 == 0, seed, "test/oppo-reach-v0")


@pytest.fixture(scope="module")
def dataset() -> OfflineDataset:
    return toy_dataset()


@pytest.fixture(scope="module")
def pool(dataset) -> PreferencePool:
    return PreferencePool.create(dataset, 100, mode="window", seed=0, segment_length=4)


def tiny_model(dataset, pool=None, seed: int = 0, **kwargs) -> OPPO:
    return OPPO("TransformerPolicy", make_env(ENV), dataset=dataset, preference_pool=pool, seed=seed, **{**TINY, **kwargs})


def parameters(module: th.nn.Module) -> list[th.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(before: list[th.Tensor], module: th.nn.Module) -> bool:
    return all(th.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def fixed_batch(model: OPPO, targets: np.ndarray, seed: int = 0) -> OPPOBatch:
    """Windows 0..n-1 are the first segments and n..2n-1 the second ones (all reconstructed)."""
    n = len(targets)
    windows = model.window_sampler().sample(2 * n, np.random.default_rng(seed))
    first = th.arange(n)
    return OPPOBatch(
        WindowTensors.from_windows(windows, model.device), 2 * n, first, first + n, th.as_tensor(targets, dtype=th.float32)
    )


# --------------------------------------------------------------------------- the alternating update


def test_encoder_policy_step_leaves_z_star_bit_identical(dataset, pool):
    model = tiny_model(dataset, pool)
    model.learn(3)  # optimiser states exist
    z_star, encoder, actor = (
        model.policy.z_star.detach().clone(),
        parameters(model.policy.encoder),
        parameters(model.policy.actor),
    )
    model.update_encoder_policy(model._sample_batch(8))
    assert th.equal(model.policy.z_star, z_star)
    assert not same(encoder, model.policy.encoder) and not same(actor, model.policy.actor)


def test_context_step_leaves_encoder_and_policy_identical(dataset, pool):
    model = tiny_model(dataset, pool)
    model.learn(3)
    z_star, encoder, actor = (
        model.policy.z_star.detach().clone(),
        parameters(model.policy.encoder),
        parameters(model.policy.actor),
    )
    model.update_optimal_context(model._sample_batch(8))
    assert same(encoder, model.policy.encoder) and same(actor, model.policy.actor)
    assert not th.equal(model.policy.z_star, z_star)
    model.update_encoder_policy(model._sample_batch(8))  # the z* step left no gradient behind in the encoder
    assert not same(encoder, model.policy.encoder)


def test_context_step_moves_z_star_toward_the_positive(dataset):
    model = tiny_model(dataset, context_learning_rate=1e-3)
    targets = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    batch = fixed_batch(model, targets)
    model.policy.set_training_mode(False)
    with th.no_grad():
        z = model.policy.encoder(*batch.windows)
    positive, negative = triplet_roles(z[batch.first], z[batch.second], batch.targets)
    before = model.policy.z_star.detach().clone()
    loss_before = preference_loss(before, positive, negative, 1.0).item()
    model.update_optimal_context(batch)
    after = model.policy.z_star.detach()

    def closer_to_positive(z: th.Tensor) -> th.Tensor:
        return ((z - positive).norm(dim=1) - (z - negative).norm(dim=1)).mean()

    assert closer_to_positive(after) < closer_to_positive(before)
    assert preference_loss(after, positive, negative, 1.0).item() < loss_before


def test_label_convention_and_swapped_pairs(dataset):
    a, b, c, d = (th.full((1, 2), float(v)) for v in (1, 2, 3, 4))
    # rlkit's target is P(second preferred): 1 -> the second segment is the positive; 0 -> the first (OPPO's `lb`)
    positive, negative = triplet_roles(th.cat([a, c]), th.cat([b, d]), th.tensor([1.0, 0.0]))
    assert sorted(positive[:, 0].tolist()) == [2.0, 3.0] and sorted(negative[:, 0].tolist()) == [1.0, 4.0]

    targets = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    results = []
    for swap in (False, True):
        model = tiny_model(dataset, seed=3)
        batch = fixed_batch(model, targets)
        if swap:
            batch = batch._replace(first=batch.second, second=batch.first, targets=1.0 - batch.targets)
        model.update_optimal_context(batch)
        results.append(model.policy.z_star.detach().clone())
    th.testing.assert_close(results[0], results[1], rtol=0, atol=1e-6)


def test_preference_loss_is_the_triplet_margin_loss_by_hand():
    generator = th.Generator().manual_seed(2)
    z_star = th.randn(3, generator=generator)
    positive, negative = th.randn(6, 3, generator=generator), th.randn(6, 3, generator=generator)
    references = []
    for margin in (0.3, 1.0, 2.5):
        # PyTorch's pairwise distance ||x - y + eps||_2, eps = 1e-6
        terms = [
            max(0.0, (z_star - p + 1e-6).norm().item() - (z_star - n + 1e-6).norm().item() + margin)
            for p, n in zip(positive, negative, strict=True)
        ]
        assert 0 < sum(t > 0 for t in terms) < 6, "some triplets inside the margin, some outside"
        assert preference_loss(z_star, positive, negative, margin).item() == pytest.approx(np.mean(terms), abs=1e-6)
        references.append(np.mean(terms))
    assert len(set(np.round(references, 6))) == 3, "the margin matters"
    assert preference_loss(z_star, positive[:0], negative[:0], 1.0).item() == 0.0


def _edge_batch(model: OPPO, targets: np.ndarray) -> OPPOBatch:
    """Pairs of fixed windows, some of them left-padded (starts at the episode's last steps)."""
    n = len(targets)
    sampler = model.window_sampler()
    episodes = np.arange(2 * n) % sampler.n_episodes
    lengths = sampler.episode_lengths[episodes]
    starts = np.where(np.arange(2 * n) % 3 == 0, lengths - 1 - np.arange(2 * n) % 2, (7 * np.arange(2 * n)) % (lengths - 4))
    windows = sampler.windows(episodes, starts)
    assert not windows.mask.all() and windows.mask.any(axis=1).all()
    first = th.arange(n)
    return OPPOBatch(
        WindowTensors.from_windows(windows, model.device), 2 * n, first, first + n, th.as_tensor(targets, dtype=th.float32)
    )


def test_encoder_policy_step_is_the_hand_computed_loss_with_separately_clipped_gradients(dataset):
    """L_HIM(B1) + L_HIM(B2) + lambda_PM L_PM(sg(z*)) + lambda_N L_N, each network's gradient clipped to norm 0.25."""
    coefs = dict(margin=0.5, pref_loss_coef=0.3, norm_loss_coef=0.2)
    model = tiny_model(dataset, **coefs)
    model.policy.set_training_mode(True)
    targets = np.array([0.0, 1.0, 0.5, 1.0, 0.0, 1.0])
    batch = _edge_batch(model, targets)
    n = len(targets)
    reference = copy.deepcopy(model.policy)
    w = batch.windows
    z = reference.encoder(w.observations, w.actions, w.timesteps, w.mask)
    predicted = reference.actor(z, w.observations, w.actions, w.timesteps, w.mask)
    # the mean squared action error over the real steps (and action entries) of each half
    him = sum(((predicted[h] - w.actions[h]) ** 2)[w.mask[h]].mean() for h in (slice(0, n), slice(n, 2 * n)))
    z_star, triplets = reference.z_star.detach(), []
    for i, y in enumerate(targets):
        if y != 0.5:
            better, worse = (z[n + i], z[i]) if y == 1.0 else (z[i], z[n + i])
            d_better, d_worse = (z_star - better + 1e-6).norm(), (z_star - worse + 1e-6).norm()
            triplets.append(th.relu(d_better - d_worse + coefs["margin"]))
    pref = th.stack(triplets).mean()
    norm = sum(((z[h].norm(dim=1) - 1.0) ** 2).mean() for h in (slice(0, n), slice(n, 2 * n)))
    (him + coefs["pref_loss_coef"] * pref + coefs["norm_loss_coef"] * norm).backward()
    expected = {}
    for name in ("encoder", "actor"):
        grads = [p.grad.clone() for p in getattr(reference, name).parameters()]
        total = th.sqrt(sum((g**2).sum() for g in grads))
        assert total > 0.25, f"the {name}'s gradient is clipped (the test can fail)"
        expected[name] = [g * min(1.0, 0.25 / (total.item() + 1e-6)) for g in grads]

    losses = model.update_encoder_policy(batch)
    assert losses["him_loss"] == pytest.approx(him.item(), rel=1e-5)
    assert losses["preference_loss"] == pytest.approx(pref.item(), rel=1e-5) and pref.item() > 0
    assert losses["norm_loss"] == pytest.approx(norm.item(), rel=1e-5)
    for name, grads in expected.items():
        for got, want in zip((p.grad for p in getattr(model.policy, name).parameters()), grads, strict=True):
            th.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    assert model.policy.z_star.grad is None, "z* gets no gradient from the (theta, phi) loss"


def test_unlimited_labels_compare_each_pair_by_its_foresee_return(dataset):
    model = tiny_model(dataset, foresee=20)
    rng = copy.deepcopy(model._rng)
    batch = model._sample_batch(16)
    fresh = model.window_sampler().sample(32, rng)  # the same draw: the batch's windows
    np.testing.assert_array_equal(batch.windows.observations.numpy(), fresh.observations)
    first, second = batch.first.numpy(), batch.second.numpy()
    assert sorted(np.concatenate([first, second]).tolist()) == list(range(32)), "B1 against B2, each window once"
    score = model.window_sampler().foresee_returns(fresh.episodes, fresh.starts, 20)
    expected = np.where(score[second] > score[first], 1.0, np.where(score[second] < score[first], 0.0, 0.5))
    np.testing.assert_array_equal(batch.targets.numpy(), expected)  # P(second preferred)
    assert {0.0, 1.0} <= set(expected.tolist())


def test_all_tied_batch_is_finite_and_keeps_z_star(dataset):
    model = tiny_model(dataset)
    model.learn(2)
    batch = fixed_batch(model, np.full(6, 0.5))
    z_star = model.policy.z_star.detach().clone()
    losses = model.update_encoder_policy(batch)
    assert all(np.isfinite(v) for v in losses.values()) and losses["preference_loss"] == 0.0
    losses = model.update_optimal_context(batch)
    assert np.isfinite(losses["context_loss"]) and losses["strict_pairs"] == 0.0
    assert th.equal(model.policy.z_star, z_star)


def test_warmup_schedule_on_the_policy_only(dataset, pool):
    model = tiny_model(dataset, pool, learning_rate=1e-3).learn(4)
    assert model.actor_optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 4 / 10)
    assert model.encoder_optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert model.context_optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


# --------------------------------------------------------------------------- masks and acting


def _history(model: OPPO, n_real: int, seed: int) -> WindowTensors:
    rng = np.random.default_rng(seed)
    k = model.context_length
    mask = np.zeros((2, k), dtype=bool)
    mask[:, k - n_real :] = True
    obs = rng.normal(size=(2, k, 4)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(2, k, 2)).astype(np.float32)
    steps = np.tile(np.arange(k), (2, 1)) + 5
    return WindowTensors(th.as_tensor(obs), th.as_tensor(act), th.as_tensor(steps), th.as_tensor(mask))


def test_masked_positions_do_not_change_action_or_context(dataset):
    model = tiny_model(dataset)
    model.policy.set_training_mode(False)
    base = _history(model, n_real=2, seed=0)
    noise = _history(model, n_real=2, seed=1)
    pad = ~base.mask
    changed = WindowTensors(
        th.where(pad[..., None], noise.observations * 100, base.observations),
        th.where(pad[..., None], noise.actions - 10, base.actions),
        th.where(pad, th.randint(0, 60, pad.shape), base.timesteps),
        base.mask,
    )
    context = model._context(2)
    with th.no_grad():
        th.testing.assert_close(model.policy.act(context, *changed), model.policy.act(context, *base), rtol=0, atol=1e-6)
        th.testing.assert_close(model.policy.encoder(*changed), model.policy.encoder(*base), rtol=0, atol=1e-6)
        # a real step does change them (the test can fail)
        real = base.mask.clone()
        real[:, 1] = True
        assert not th.allclose(model.policy.act(context, *base._replace(mask=real)), model.policy.act(context, *base))


def test_action_ignores_its_own_and_later_steps(dataset):
    model = tiny_model(dataset)
    model.policy.set_training_mode(False)
    base = _history(model, n_real=4, seed=0)
    later = base.observations.clone()
    later[:, 2:] += 5.0
    actions = base.actions.clone()
    actions[:, 1:] = -actions[:, 1:]
    context = model._context(2)
    with th.no_grad():
        out = model.policy.actor(context, *base)
        moved = model.policy.actor(context, later, actions, base.timesteps, base.mask)
    th.testing.assert_close(moved[:, :2], out[:, :2], rtol=0, atol=1e-6)  # a_0 and a_1 see neither a_1 nor s_2 on
    assert not th.allclose(moved[:, 2:], out[:, 2:])


def _first_actions(model: OPPO, env: gym.Env, n_steps: int, reset_between: bool) -> tuple[np.ndarray, np.ndarray]:
    runs, state = [], None
    for _ in range(2):
        obs, _ = env.reset(seed=7)
        actions = []
        for t in range(n_steps):
            start = np.array([t == 0 and reset_between])
            action, state = model.predict(obs, state=state, episode_start=start)
            actions.append(action)
            obs, *_ = env.step(action)
        runs.append(np.asarray(actions))
    return runs[0], runs[1]


def test_episode_start_resets_history_and_timestep(dataset, pool):
    model = tiny_model(dataset, pool).learn(20)
    env = make_env(ENV)
    first, second = _first_actions(model, env, 6, reset_between=True)
    np.testing.assert_array_equal(first, second)
    first, second = _first_actions(model, env, 6, reset_between=False)
    assert not np.allclose(first, second)  # the history matters: without a reset the second episode differs
    action, state = model.predict(dataset.observations[:3])
    assert action.shape == (3, 2) and state[2][:, -1].tolist() == [0, 0, 0]
    _, state = model.predict(dataset.observations[:3], state=state, episode_start=np.array([False, True, False]))
    assert state[2][:, -1].tolist() == [1, 0, 1] and state[3].sum(axis=1).tolist() == [2, 1, 2]


def test_evaluate_passes_state_and_episode_start():
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[object, bool]] = []

        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            self.calls.append((state, bool(episode_start[0])))
            return np.zeros(2, np.float32), len(self.calls)

    recorder = Recorder()
    evaluate(recorder, make_env(ENV), n_episodes=2, seed=0)  # type: ignore[arg-type]
    starts = [i for i, (_, start) in enumerate(recorder.calls) if start]
    assert starts == [0, 50]
    assert recorder.calls[0][0] is None and recorder.calls[1][0] == 1 and recorder.calls[50][0] is None


def test_zero_context_eval_flag(dataset, pool):
    model = tiny_model(dataset, pool).learn(10)
    obs = dataset.observations[:2]
    default_1, state_default = model.predict(obs)
    model.zero_context_eval = True
    zero_1, state_zero = model.predict(obs)
    np.testing.assert_array_equal(default_1, zero_1)  # one step of history: only the last position
    model.zero_context_eval = False
    default_2, _ = model.predict(obs, state=state_default)
    model.zero_context_eval = True
    zero_2, _ = model.predict(obs, state=state_zero)
    assert not np.allclose(default_2, zero_2)


# --------------------------------------------------------------------------- API


def test_save_load_keeps_everything(dataset, pool, tmp_path):
    model = tiny_model(dataset, pool).learn(12)
    obs = dataset.observations[:5]
    actions, state = model.predict(obs)
    actions2, _ = model.predict(obs, state=state)
    model.save(tmp_path / "oppo.zip")
    loaded = OPPO.load(tmp_path / "oppo.zip", device="cpu")
    loaded_actions, loaded_state = loaded.predict(obs)
    np.testing.assert_array_equal(loaded_actions, actions)
    np.testing.assert_array_equal(loaded.predict(obs, state=loaded_state)[0], actions2)
    assert th.equal(loaded.policy.z_star, model.policy.z_star)
    for name in ("encoder_optimizer", "actor_optimizer", "context_optimizer"):
        saved, restored = getattr(model, name).state_dict(), getattr(loaded, name).state_dict()
        assert saved["param_groups"][0]["lr"] == restored["param_groups"][0]["lr"]
        for key, value in saved["state"].items():
            th.testing.assert_close(restored["state"][key]["exp_avg"], value["exp_avg"], rtol=0, atol=0)
    assert loaded.policy.encoder.head.out_features == 8 and loaded.policy.actor.max_timestep == 64
    resumed = OPPO.load(tmp_path / "oppo.zip", device="cpu", dataset=dataset, preference_pool=pool)
    resumed.learn(2, reset_num_timesteps=False)
    assert resumed.num_timesteps == 14 and resumed._n_updates == 14


def test_seeds_deterministic(dataset, pool):
    def actions(seed: int) -> np.ndarray:
        return tiny_model(dataset, pool, seed=seed).learn(5).predict(dataset.observations[:8])[0]

    np.testing.assert_array_equal(actions(1), actions(1))
    assert not np.allclose(actions(1), actions(2))


def test_unlimited_labels_as_the_official_code(dataset):
    model = tiny_model(dataset, foresee=20)
    batch = model._sample_batch(16)
    assert batch.n_him == 32 and len(batch.windows.mask) == 32  # the labelled pairs are the HIM windows
    assert set(batch.targets.tolist()) <= {0.0, 0.5, 1.0}
    model.learn(3)


def test_bad_input_rejected(dataset, pool):
    discrete = make_env(ENV)
    discrete.action_space = spaces.Discrete(3)  # type: ignore[assignment]
    with pytest.raises(ValueError, match="action space"):
        OPPO("TransformerPolicy", discrete, dataset=dataset, **TINY)
    with pytest.raises(ValueError, match="Unknown network_size"):
        OPPO("TransformerPolicy", None, dataset=dataset, network_size="huge")
    with pytest.raises(ValueError, match="margin must be positive"):
        OPPO("TransformerPolicy", None, dataset=dataset, margin=0.0)
    with pytest.raises(ValueError, match="segment_length=6"):
        tiny_model(dataset, pool, context_length=6)
    with pytest.raises(ValueError, match="max_timestep=50"):
        tiny_model(dataset, policy_kwargs=dict(hidden_size=16, ffn_size=32, max_timestep=20))
    with pytest.raises(ValueError, match="z_dim=8 entries"):
        tiny_model(dataset).set_context(np.zeros(3))


# --------------------------------------------------------------------------- learning


@pytest.fixture(scope="module")
def trained(dataset) -> tuple[OPPO, PreferencePool]:
    labels = PreferencePool.create(dataset, 300, mode="window", seed=0, segment_length=10)
    held_out = PreferencePool.create(dataset, 300, mode="window", seed=1, segment_length=10)
    model = OPPO(
        "TransformerPolicy",
        make_env(ENV),
        dataset=dataset,
        preference_pool=labels,
        seed=0,
        context_length=10,
        network_size="cpu",
        batch_size=16,
        warmup_steps=100,
        learning_rate=1e-3,
        context_learning_rate=1e-2,
        device="cpu",
        policy_kwargs=dict(hidden_size=32, ffn_size=64, dropout=0.0),
    ).learn(1200)
    return model, held_out


def test_learns_preferred_behaviour_on_mixed_toy_data(trained, dataset):
    model, held_out = trained
    accuracy = model.preference_accuracy(held_out)
    assert accuracy > 0.8
    env = make_env(ENV)
    with_z_star = model.evaluate(env, n_episodes=10, seed=100)["return_mean"]
    windows = model.window_sampler().sample(1000, np.random.default_rng(5), full=True)
    returns = dataset.episode_returns[windows.episodes]  # quality of the behaviour that made each window
    model.set_context(model.encode(windows)[returns <= np.quantile(returns, 0.25)].mean(axis=0))
    with_bottom_z = model.evaluate(env, n_episodes=10, seed=100)["return_mean"]
    model.set_context(None)
    bc = BC("MlpPolicy", env, dataset=dataset, seed=0, batch_size=64, policy_kwargs=dict(net_arch=[32, 32]), device="cpu")
    bc_return = bc.learn(1000).evaluate(env, n_episodes=10, seed=100)["return_mean"]
    print(
        f"OPPO: held-out accuracy {accuracy:.3f}, return with z* {with_z_star:.1f}, "
        f"with a bottom-quartile z {with_bottom_z:.1f}, BC {bc_return:.1f}"
    )
    assert with_z_star > with_bottom_z + 5.0
    assert with_z_star >= bc_return


# --------------------------------------------------------------------------- IQL+BT


def test_iql_bt_relabels_with_the_pool_reward_model(dataset, tmp_path):
    kwargs = dict(
        n_labels=300,
        label_mode="window",
        segment_length=10,
        pool_dir=tmp_path,
        seed=0,
        batch_size=64,
        policy_kwargs=dict(net_arch=[32, 32]),
        reward_net_arch=(32, 32),
        reward_epochs=100,
        device="cpu",
    )
    model = IQLBT("MlpPolicy", make_env(ENV), dataset=dataset, **kwargs)
    held_out = PreferencePool.create(dataset, 300, mode="window", seed=1, segment_length=10)
    assert model.preference_accuracy(held_out, dataset) > 0.8
    learned = model.learned_rewards(dataset.observations, dataset.actions)
    assert np.corrcoef(learned, dataset.rewards)[0, 1] > 0.8
    # IQL trains on the learned rewards, never on the true ones
    np.testing.assert_array_equal(model.replay_buffer.rewards.numpy().ravel(), learned)
    assert model.replay_buffer.dataset.dataset_id == dataset.dataset_id
    model.learn(20)
    model.save(tmp_path / "iqlbt.zip")
    loaded = IQLBT.load(tmp_path / "iqlbt.zip", device="cpu")
    obs = dataset.observations[:8]
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    np.testing.assert_array_equal(loaded.learned_rewards(obs, dataset.actions[:8]), learned[:8])
    # the same settings reuse the cached pool: a second model fits the same reward model
    again = IQLBT("MlpPolicy", make_env(ENV), dataset=dataset, **kwargs)
    np.testing.assert_array_equal(again.learned_rewards(obs, dataset.actions[:8]), learned[:8])
    # labels read with the wrong convention make the reward model order held-out pairs backwards
    flipped = PreferencePool.create(dataset, 300, mode="window", seed=0, segment_length=10)
    flipped.targets = np.where(flipped.targets == 0.5, 0.5, 1.0 - flipped.targets).astype(np.float32)
    backwards = IQLBT("MlpPolicy", None, dataset=dataset, preference_pool=flipped, **{**kwargs, "pool_dir": None})
    assert backwards.preference_accuracy(held_out, dataset) < 0.2


def test_iql_bt_fits_its_reward_model_on_normalised_windows(dataset, monkeypatch):
    """The reward model sees the observations as IQL and the relabelling do: normalised with the dataset's statistics."""
    from rlkit.iql import iql_bt

    samplers = []

    class RecordingSampler(iql_bt.WindowSampler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            samplers.append(self)

    monkeypatch.setattr(iql_bt, "WindowSampler", RecordingSampler)
    model = IQLBT(
        "MlpPolicy", None, dataset=dataset, n_labels=20, label_mode="window", segment_length=4, seed=0,
        reward_net_arch=(8,), reward_epochs=1, policy_kwargs=dict(net_arch=[8]), device="cpu",
    )  # fmt: skip
    assert samplers and np.abs(model.obs_mean).max() > 0.1  # statistics that change the observations
    for sampler in samplers:
        np.testing.assert_allclose(sampler.observations, model.normalize_observation(dataset.observations), atol=1e-6)


# --------------------------------------------------------------------------- benchmark kind


def test_pbrl_offline_table_shows_labels_accuracy_and_score():
    from benchmarks.kinds import pbrl_offline

    def record(algo: str, kind: str, seed: int, score: float, **final) -> dict:
        return {
            "algo": algo,
            "kind": kind,
            "task": "hopper-mr",
            "seed": seed,
            "status": "ok",
            "final": {"step": 10, "return_mean": 0.0, "normalized": score, **final},
        }

    records = [
        record("OPPO", "pbrl_offline", 0, 40.0, labels=500.0, preference_accuracy=0.8),
        record("OPPO", "pbrl_offline", 1, 50.0, labels=500.0, preference_accuracy=0.9),
        # the score is the run's mean of its last 3 evaluations, as in the main table and the verdicts
        {**record("IQL", "offline", 0, 40.0), "curve": [{"step": s, "normalized": v} for s, v in enumerate([0, 20, 30, 40])]},
        record("BC", "offline", 0, 20.0),
        {**record("IQL", "offline", 0, 99.0), "task": "other"},  # a task without preference runs is left out
    ]
    lines = pbrl_offline.table(records)
    rows = {line.split(" | ")[1]: line for line in lines if line.startswith("| hopper-mr")}
    assert set(rows) == {"OPPO", "IQL", "BC"} and not any("other" in line for line in lines)
    assert "| 2 | 500 | 0.850 ± 0.050 | 45.0 ± 5.0 |" in rows["OPPO"]
    assert "| true reward | — | 30.0 ± 0.0 |" in rows["IQL"] and "| none |" in rows["BC"]
    assert pbrl_offline.table([records[2]]) == []
