"""FamO2O and IQL offline-to-online: encoding, phases, the universal policy, the balance model, the SB3 contract."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from rlkit.common.buffers import DatasetReplayBuffer
from rlkit.data import OfflineDataset
from rlkit.envs import make_env
from rlkit.famo2o import FamO2O, IQLO2O, OfflineToOnlineReplayBuffer, balance_encoding, coefficient_from_unit

SMALL = dict(policy_kwargs=dict(net_arch=[32, 32]), batch_size=64, device="cpu")


def random_reach_dataset(n_episodes: int = 12, seed: int = 0) -> OfflineDataset:
    """Episodes of the toy reach task under a uniformly random policy."""
    env = make_env("toy/reach-v0")
    rng = np.random.default_rng(seed)
    keys = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    rows: dict[str, list] = {key: [] for key in keys}
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed * 1000 + episode)
        done = False
        while not done:
            action = rng.uniform(-1, 1, 2).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(keys, (obs, action, reward, next_obs, terminated, truncated), strict=True):
                rows[key].append(value)
            obs, done = next_obs, terminated or truncated
    return OfflineDataset.from_dict(
        {key: np.asarray(value) for key, value in rows.items()},
        observation_space=env.observation_space,
        action_space=env.action_space,
        ref_min_score=env.unwrapped.ref_min_score,
        ref_max_score=env.unwrapped.ref_max_score,
        dataset_id="test/random-reach-v0",
    )


@pytest.fixture(scope="module")
def reach_dataset() -> OfflineDataset:
    return random_reach_dataset()


def two_mode_bandit(n: int = 2000, seed: int = 0) -> OfflineDataset:
    """One-step episodes: half the actions at -0.5 (reward 0), half at +0.5 (reward 1, the high-advantage mode).

    Observations are ``(kind, noise)`` with ``kind`` in {-1, +1}: the two kinds of states
    of the balance-model test, identical for the universal policy.
    """
    rng = np.random.default_rng(seed)
    obs = np.stack([rng.choice([-1.0, 1.0], n), rng.uniform(-1, 1, n)], axis=1).astype(np.float32)
    good = rng.random(n) < 0.5
    return OfflineDataset.from_dict(
        {
            "observations": obs,
            "actions": np.where(good, 0.5, -0.5).astype(np.float32)[:, None],
            "rewards": good.astype(np.float32),
            "next_observations": obs,
            "terminals": np.ones(n, dtype=np.float32),
        },
        observation_space=gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (1,), np.float32),
    )


BANDIT_BETA_RANGE = (0.0, 4.0)


@pytest.fixture(scope="module")
def bandit_model() -> FamO2O:
    """FamO2O after its offline phase on the two-mode bandit."""
    model = FamO2O(
        "MlpPolicy",
        None,
        dataset=two_mode_bandit(),
        beta_range=BANDIT_BETA_RANGE,
        learning_rate=1e-3,
        batch_size=256,
        policy_kwargs=dict(net_arch=[64, 64]),
        seed=0,
        device="cpu",
    )
    return model.learn_offline(1500)


def test_encoding_values_and_coefficient_mapping():
    beta = th.tensor([[0.0], [1.0], [3.0]])
    encoding = balance_encoding(beta)
    assert encoding.shape == (3, 6)
    for row, b in zip(encoding, (0.0, 1.0, 3.0), strict=True):
        expected = []
        for i in range(3):
            angle = b / 10000.0 ** (2 * i / 6)
            expected += [math.sin(angle), math.cos(angle)]
        np.testing.assert_allclose(row.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(encoding[1, :2].numpy(), [math.sin(1.0), math.cos(1.0)], atol=1e-7)
    angle = 3.0 / 10000 ** (1 / 3)
    np.testing.assert_allclose(encoding[2, 2:4].numpy(), [math.sin(angle), math.cos(angle)], atol=1e-6)

    u = th.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(coefficient_from_unit(u, 1.0, 5.0).numpy(), [1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(coefficient_from_unit(u, 8.0, 14.0).numpy(), [8.0, 9.5, 11.0, 12.5, 14.0])


def test_balance_model_coefficients_stay_in_range(reach_dataset):
    model = FamO2O("MlpPolicy", None, dataset=reach_dataset, beta_range=(8.0, 14.0), seed=0, **SMALL)
    obs = th.as_tensor(reach_dataset.observations[:64])
    with th.no_grad():
        model.balance.mu[-1].bias.fill_(10.0)  # tanh saturates: the coefficient approaches the top of the range
        high = model.policy.balance_coefficient(obs)
        u, log_prob = model.balance.sample(obs)
    assert th.all((high > 13.9) & (high <= 14.0))
    assert u.shape == (64, 1) and log_prob.shape == (64,) and th.all(u.abs() <= 1.0)
    assert model.policy.actor_input(obs, high).shape == (64, 4 + 6)


def _decoded_coefficients(actor_inputs: th.Tensor) -> th.Tensor:
    """``beta`` back from the second sin/cos pair of the universal policy's input (exact for |beta| < 67)."""
    period = 10000.0 ** (1 / 3)
    return th.atan2(actor_inputs[:, -4], actor_inputs[:, -3]) * period


def test_offline_phase_never_uses_balance_samples_in_the_actor_loss_and_online_phase_does(reach_dataset):
    model = FamO2O("MlpPolicy", make_env("toy/reach-v0"), dataset=reach_dataset, beta_range=(1.0, 5.0), seed=0, **SMALL)
    with th.no_grad():  # balance model: beta = 1 + 0.75 * 4 = 4 at the mean, std about 0.2
        model.balance.mu[-1].weight.zero_()
        model.balance.mu[-1].bias.fill_(math.atanh(0.5))
        model.balance.log_std.fill_(-2.0)
    seen: list[th.Tensor] = []
    log_prob = model.actor.log_prob

    def recording_log_prob(actor_input: th.Tensor, actions: th.Tensor) -> th.Tensor:
        seen.append(_decoded_coefficients(actor_input.detach()))
        return log_prob(actor_input, actions)

    model.actor.log_prob = recording_log_prob
    model.learn_offline(4)
    offline = th.cat(seen)
    seen.clear()
    model.learn(4)
    online = th.cat(seen)

    assert len(offline) == len(online) == 4 * 64
    # offline: uniform on (1, 5), whatever the balance model says (measured: std 1.14, 16% within 0.3 of 4;
    # with the phases swapped this test fails)
    assert offline.min() >= 1.0 and offline.max() <= 5.0
    assert offline.std() > 0.9 and offline.max() - offline.min() > 3.0
    assert ((offline - 4.0).abs() < 0.3).float().mean() < 0.25
    # online: samples of the balance model (around 4, spread, not its deterministic mean)
    assert (online.mean() - 4.0).abs() < 0.1
    assert 0.08 < online.std() < 0.4


def test_larger_coefficient_moves_the_universal_policy_to_the_high_advantage_mode(bandit_model):
    """Advantage-weighted cloning of {-0.5, +0.5} gives the mean ``0.5 tanh(beta / 2)`` (V = 0.7 at expectile 0.7).

    Measured (seed 0): 0.12, 0.37, 0.46 at beta = 0.5, 2, 3.5. With the universal policy conditioned on a
    constant coefficient in the actor loss (the weights still per-sample) it gives 0.29, 0.34, 0.31 and fails.
    """
    obs = th.as_tensor(two_mode_bandit(n=200, seed=1).observations)
    obs = bandit_model.replay_buffer.normalize_obs(obs)
    means = []
    for beta in (0.5, 2.0, 3.5):
        with th.no_grad():
            action = bandit_model.policy.universal_action(obs, th.full((len(obs), 1), beta))
        means.append(float(action.mean()))
    assert means[0] + 0.1 < means[1] and means[1] + 0.03 < means[2], means
    assert means[0] < 0.3 and means[2] > 0.35, means


def test_balance_model_learns_high_and_low_coefficients_for_two_kinds_of_states(bandit_model):
    """The universal policy's action grows with beta in every state (previous test). A critic with
    ``Q(s, a) = 5 kind(s) a`` makes a high beta best where ``kind = +1`` and a low beta best where ``kind = -1``:
    the balance model, trained through the frozen universal policy and target critic, must separate them.
    Measured (seed 0): beta 3.35 vs 0.18 (range 0 to 4). With the balance loss's Q term detached: 2.03 vs 2.06.
    """
    model = bandit_model
    th.manual_seed(0)
    obs = model.replay_buffer.sample(512).observations
    kind = th.sign(obs[:, :1])

    def designed_q(actions: th.Tensor) -> th.Tensor:
        return 5.0 * kind * actions

    for _ in range(400):
        actions = 2.0 * th.rand(len(obs), 1) - 1.0
        loss = sum(((q - designed_q(actions)) ** 2).mean() for q in model.critic(obs, actions))
        model.critic.optimizer.zero_grad()
        loss.backward()
        model.critic.optimizer.step()
    model.critic_target.load_state_dict(model.critic.state_dict())
    universal_before = [p.detach().clone() for p in model.actor.parameters()]
    target_before = [p.detach().clone() for p in model.critic_target.parameters()]

    for _ in range(300):
        model._update_balance(obs[th.randint(len(obs), (128,))])

    with th.no_grad():
        beta = model.policy.balance_coefficient(obs)
    high, low = float(beta[kind > 0].mean()), float(beta[kind < 0].mean())
    assert high > 2.8 and low < 1.0, (high, low)
    # the balance update leaves the universal policy and the target critic alone
    assert all(th.equal(a, b) for a, b in zip(universal_before, model.actor.parameters(), strict=True))
    assert all(th.equal(a, b) for a, b in zip(target_before, model.critic_target.parameters(), strict=True))


@pytest.mark.parametrize("algo", [IQLO2O, FamO2O])
def test_learn_offline_then_online_with_save_load_between_phases(algo, reach_dataset, tmp_path):
    model = algo("MlpPolicy", make_env("toy/reach-v0"), dataset=reach_dataset, seed=0, **SMALL).learn_offline(20)
    assert model.num_timesteps == 20 and model.offline_gradient_steps == 20 and not model.online
    assert isinstance(model.replay_buffer, DatasetReplayBuffer)
    obs = reach_dataset.observations[:16]
    actions = model.predict(obs, deterministic=True)[0]
    assert actions.shape == (16, 2) and np.all(np.abs(actions) <= 1.0)

    model.save(tmp_path / "offline.zip")
    loaded = algo.load(tmp_path / "offline.zip", env=make_env("toy/reach-v0"), dataset=reach_dataset, device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)

    loaded.learn(60)
    assert loaded.online and loaded.num_timesteps == 60 and loaded._n_updates == 80 and loaded.offline_gradient_steps == 20
    buffer = loaded.replay_buffer
    n = len(reach_dataset)
    assert isinstance(buffer, OfflineToOnlineReplayBuffer) and buffer.size() == n + 60
    np.testing.assert_array_equal(buffer.observations[:n, 0], reach_dataset.observations)
    assert np.all(np.abs(buffer.observations[n : n + 60, 0]).sum(axis=1) > 0)
    # the reach task never terminates: its one truncation (50-step episodes) is stored as a timeout and bootstraps
    assert buffer.dones[: n + 60].sum() == 1 and buffer.timeouts[: n + 60].sum() == 1
    assert loaded.replay_buffer.sample(n + 60).dones.sum() == 0
    assert loaded._episode_num == 1
    with pytest.raises(ValueError, match="online phase"):
        loaded.learn_offline(5)

    loaded.save(tmp_path / "online.zip")
    reloaded = algo.load(tmp_path / "online.zip", device="cpu")
    assert reloaded.online
    np.testing.assert_array_equal(reloaded.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    with pytest.raises(ValueError, match="needs an env"):
        algo("MlpPolicy", None, dataset=reach_dataset, **SMALL).learn(5)


@pytest.mark.parametrize("algo", [IQLO2O, FamO2O])
def test_no_new_data_control_takes_the_same_steps_on_the_dataset_alone(algo, reach_dataset):
    """online_data=False: the online phase acts and updates as often, its buffer keeps only the dataset; the same
    seed with online data differs only once the first online transition is sampled."""
    control = algo("MlpPolicy", make_env("toy/reach-v0"), dataset=reach_dataset, seed=0, online_data=False, **SMALL)
    control.learn_offline(10).learn(40)
    assert control.online and control._n_updates == 50 and control.num_timesteps == 40
    assert control.replay_buffer.size() == len(reach_dataset)
    full = algo("MlpPolicy", make_env("toy/reach-v0"), dataset=reach_dataset, seed=0, **SMALL).learn_offline(10).learn(40)
    assert full.replay_buffer.size() == len(reach_dataset) + 40
    obs = reach_dataset.observations[:32]
    assert not np.allclose(control.predict(obs, deterministic=True)[0], full.predict(obs, deterministic=True)[0])


@pytest.mark.parametrize("algo", [IQLO2O, FamO2O])
def test_seeds_deterministic(algo, reach_dataset):
    def actions(seed: int) -> np.ndarray:
        model = algo("MlpPolicy", make_env("toy/reach-v0"), dataset=reach_dataset, seed=seed, **SMALL)
        model.learn_offline(10).learn(10)
        return model.predict(reach_dataset.observations[:32], deterministic=True)[0]

    np.testing.assert_array_equal(actions(1), actions(1))
    assert not np.allclose(actions(1), actions(2))


@pytest.mark.parametrize("algo", [IQLO2O, FamO2O])
def test_bad_input_rejected_at_construction(algo, reach_dataset):
    with pytest.raises(ValueError, match="continuous Box action space"):
        algo("MlpPolicy", gym.make("CartPole-v1"), dataset=reach_dataset, **SMALL)
    with pytest.raises(ValueError, match="needs dataset="):
        algo("MlpPolicy", make_env("toy/reach-v0"), **SMALL)
    with pytest.raises(ValueError, match="buffer_size must be positive"):
        algo("MlpPolicy", None, dataset=reach_dataset, buffer_size=0, **SMALL)


def test_bad_coefficient_range_rejected(reach_dataset):
    with pytest.raises(ValueError, match="low < high"):
        FamO2O("MlpPolicy", None, dataset=reach_dataset, beta_range=(5.0, 1.0), **SMALL)


@pytest.mark.parametrize(
    ("log_std", "rises"), [(-4.0, True), (0.0, False)], ids=["entropy-below-target", "entropy-above-target"]
)
def test_balance_temperature_rises_below_the_target_entropy_and_falls_above(reach_dataset, log_std: float, rises: bool):
    """The balance model's temperature descends alpha_b (H_b - H_target): it grows when the balance model's entropy
    is below the target (-0.5) and shrinks above it. A flipped sign of the temperature loss fails the test."""
    model = FamO2O("MlpPolicy", None, dataset=reach_dataset, seed=0, **SMALL)
    with th.no_grad():
        model.balance.log_std.fill_(log_std)
    obs = model.replay_buffer.sample(64).observations
    log_alpha = model.balance.log_alpha.item()
    _, _, entropy = model._update_balance(obs)
    assert (entropy < model.balance_target_entropy) == rises, entropy
    assert (model.balance.log_alpha.item() > log_alpha) == rises


def test_balance_step_follows_its_entropy_term_when_the_critic_is_flat(reach_dataset):
    """With a target critic that is zero everywhere, the balance loss alpha_b log pi_b(u|s) - min_j Q'_j(s, a) reduces
    to its entropy term: one step widens a narrow balance model (its log-std grows). A balance loss without the
    alpha_b log pi_b term has no gradient here and fails the test."""
    model = FamO2O("MlpPolicy", None, dataset=reach_dataset, seed=0, **SMALL)
    with th.no_grad():
        model.balance.log_std.fill_(-2.0)
        for q_net in model.critic_target.q_networks:
            q_net[-1].weight.zero_()
            q_net[-1].bias.zero_()
    obs = model.replay_buffer.sample(64).observations
    for _ in range(3):
        model._update_balance(obs)
    assert model.balance.log_std.item() > -2.0 + 1e-4


def test_balance_loss_uses_the_min_of_the_target_critic_heads(reach_dataset):
    """``L_b = mean(alpha_b log pi_b(u|s) - min_j Q'_j(s, a))``, recomputed by hand with the same draws, on target
    heads that differ from each other and from the online critic's."""
    model = FamO2O("MlpPolicy", None, dataset=reach_dataset, seed=0, **SMALL)
    with th.no_grad():
        model.critic_target.q_networks[0][-1].bias.add_(3.0)  # head 1 above head 2 by 3
        model.critic_target.q_networks[1][-1].bias.add_(-1.0)
        for q_net in model.critic.q_networks:  # the online critic is 10 above its target
            q_net[-1].bias.add_(10.0)
    obs = model.replay_buffer.sample(64).observations
    th.manual_seed(7)
    with th.no_grad():
        u, log_prob = model.balance.sample(obs)
        beta = model.policy.coefficient(u)
        actions = model.actor.distribution(model.policy.actor_input(obs, beta)).rsample()
        q1, q2 = model.critic_target(obs, actions)
        alpha = model.balance.log_alpha.exp()
        expected = (alpha * log_prob - th.min(q1, q2).squeeze(1)).mean().item()
    assert th.all(q1 > q2 + 2.0)  # the min is the second head everywhere
    th.manual_seed(7)
    balance_loss, _, _ = model._update_balance(obs)
    assert balance_loss == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_advantage_weights_are_capped_at_exp_adv_max(reach_dataset):
    """The universal policy's loss is ``-mean(min(exp(beta_i A_i), exp_adv_max) log pi_u(a_i|s_i, beta_i))``,
    recomputed from the coefficients, advantages and log-likelihoods of one training step."""
    model = FamO2O("MlpPolicy", None, dataset=reach_dataset, seed=0, exp_adv_max=2.0, **SMALL)
    with th.no_grad():
        model.value.v_net[-1].bias.sub_(0.5)  # advantages of about +0.5: weights above and below the cap
    record: dict[str, th.Tensor] = {}
    coefficients, update, log_prob = model.actor_coefficients, model._update_value_and_critic, model.actor.log_prob

    def recording_coefficients(obs: th.Tensor) -> th.Tensor:
        record["beta"] = coefficients(obs)
        return record["beta"]

    def recording_update(replay_data):
        result = update(replay_data)
        record["advantage"] = result[0]
        return result

    def recording_log_prob(actor_input: th.Tensor, actions: th.Tensor) -> th.Tensor:
        record["log_prob"] = log_prob(actor_input, actions)
        return record["log_prob"]

    model.actor_coefficients = recording_coefficients
    model._update_value_and_critic = recording_update
    model.actor.log_prob = recording_log_prob
    model.learn_offline(1)
    weights = th.exp(record["beta"] * record["advantage"]).squeeze(1)
    assert 0.2 < (weights > 2.0).float().mean() < 0.8  # the cap binds on part of the batch
    expected = -(weights.clamp(max=2.0) * record["log_prob"].detach()).mean().item()
    assert model.logger.name_to_value["train/actor_loss"] == pytest.approx(expected, rel=1e-5)


def test_online_coefficients_of_the_actor_loss_come_from_the_balance_model_before_its_update(reach_dataset):
    """Online, the universal policy's loss uses ``beta_i ~ pi_b(.|s_i)`` drawn before this step's balance update.
    The balance model is made almost deterministic (std ``e^-30``) and its update large, so the coefficients used
    match the balance model's deterministic coefficient before the update and not the one after it."""
    model = FamO2O("MlpPolicy", make_env("toy/reach-v0"), dataset=reach_dataset, learning_rate=0.05, seed=0, **SMALL)
    model.balance.log_std_min = -30.0
    with th.no_grad():
        model.balance.log_std.fill_(-30.0)
    record: dict[str, th.Tensor] = {}
    coefficients, update_balance = model.actor_coefficients, model._update_balance

    def recording_coefficients(obs: th.Tensor) -> th.Tensor:
        record["used"] = coefficients(obs)
        return record["used"]

    def recording_update_balance(obs: th.Tensor) -> tuple[float, float, float]:
        with th.no_grad():
            record["before"] = model.policy.balance_coefficient(obs)
        result = update_balance(obs)
        with th.no_grad():
            record["after"] = model.policy.balance_coefficient(obs)
        return result

    model.actor_coefficients = recording_coefficients
    model._update_balance = recording_update_balance
    model.learn(1)
    assert model.online
    th.testing.assert_close(record["used"], record["before"], rtol=0, atol=1e-5)
    assert (record["after"] - record["before"]).abs().min() > 1e-3  # the update moved every coefficient
