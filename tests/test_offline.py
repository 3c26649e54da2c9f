"""OfflineAlgorithm contract, the dataset buffer, and TD3+BC / IQL against BC on a mixed-quality toy dataset."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor

from rlkit.a2pr import A2PR
from rlkit.bc import BC
from rlkit.common.buffers import DatasetReplayBuffer
from rlkit.data import OfflineDataset
from rlkit.envs import make_env
from rlkit.iql import IQL
from rlkit.td3bc import TD3BC
from toy_data import reach_episodes

ALGOS = [BC, TD3BC, IQL, A2PR]
SMALL = dict(policy_kwargs=dict(net_arch=[32, 32]), batch_size=64, device="cpu")


def mixed_quality_dataset(n_episodes: int = 100, expert_fraction: float = 0.3, seed: int = 0) -> OfflineDataset:
    """Episodes of the toy reach task: 30% from the straight-line expert, the rest uniformly random.

    Cloning this mixture averages good and random actions; an offline RL method
    should pick out the expert's.
    """
    return reach_episodes(
        "toy/reach-v0", n_episodes, lambda _, rng: rng.random() < expert_fraction, seed, "test/mixed-reach-v0"
    )


@pytest.fixture(scope="module")
def dataset() -> OfflineDataset:
    return mixed_quality_dataset()


@pytest.mark.parametrize("algo", ALGOS)
def test_learn_predict_save_load(algo, dataset, tmp_path):
    env = make_env("toy/reach-v0")
    model = algo("MlpPolicy", env, dataset=dataset, seed=0, **SMALL).learn(40)
    assert model.num_timesteps == 40 and model._n_updates == 40
    obs = dataset.observations[:16]
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (16, 2) and np.all(np.abs(actions) <= 1.0)
    single, _ = model.predict(obs[0], deterministic=True)
    np.testing.assert_allclose(single, actions[0], atol=1e-6)
    # predict applies the dataset normalisation: same as the policy on normalised observations
    normalised = (obs - dataset.observations.mean(0)) / (dataset.observations.std(0) + 1e-3)
    np.testing.assert_allclose(model.policy.predict(normalised, deterministic=True)[0], actions, atol=1e-5)

    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip", device="cpu")  # no env, no dataset
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    np.testing.assert_array_equal(loaded.obs_mean, model.obs_mean)
    assert loaded.dataset is None and loaded.replay_buffer is None
    assert loaded.normalized_score(dataset.ref_max_score) == pytest.approx(100.0)
    assert loaded.dataset_id == "test/mixed-reach-v0"
    with pytest.raises(ValueError, match="no dataset to learn from"):
        loaded.learn(5)
    resumed = algo.load(tmp_path / "model.zip", device="cpu", dataset=dataset).learn(5, reset_num_timesteps=False)
    assert resumed.num_timesteps == 45

    result = model.evaluate(env, n_episodes=2, seed=0)
    assert result["n_episodes"] == 2 and result["normalized_score"] == pytest.approx(
        float(np.mean(model.normalized_score(np.asarray(result["episode_returns"]))))
    )


@pytest.mark.parametrize("algo", ALGOS)
def test_seeds_deterministic(algo, dataset):
    def actions(seed: int) -> np.ndarray:
        model = algo("MlpPolicy", None, dataset=dataset, seed=seed, **SMALL).learn(30)
        return model.predict(dataset.observations[:32], deterministic=True)[0]

    np.testing.assert_array_equal(actions(1), actions(1))
    assert not np.allclose(actions(1), actions(2))


@pytest.mark.filterwarnings("ignore::tqdm.TqdmExperimentalWarning")
def test_callbacks_logger_and_progress_bar(dataset, tmp_path):
    class Count(BaseCallback):
        def _on_step(self) -> bool:
            assert self.num_timesteps == self.n_calls  # one call per gradient step
            return self.n_calls < 25  # returning False stops training

    counter = Count()
    env = make_env("toy/reach-v0")
    evaluator = EvalCallback(
        Monitor(make_env("toy/reach-v0")), eval_freq=10, n_eval_episodes=1, log_path=str(tmp_path), verbose=0
    )
    model = TD3BC("MlpPolicy", env, dataset=dataset, seed=0, **SMALL)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(100, callback=[counter, evaluator], log_interval=10, progress_bar=True)
    assert counter.n_calls == 25 and model.num_timesteps == 25
    assert evaluator.evaluations_timesteps == [10, 20]
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"train/critic_loss", "train/actor_loss", "train/bc_loss", "time/fps", "eval/mean_reward"} <= set(header)


def test_buffer_shares_the_dataset_and_transforms_batches():
    rng = np.random.default_rng(0)
    n = 500
    data = OfflineDataset(
        rng.normal(3.0, 2.0, size=(n, 3)),
        rng.uniform(0.0, 4.0, size=(n, 2)),
        rng.normal(size=n),
        rng.normal(3.0, 2.0, size=(n, 3)),
        np.zeros(n),
        costs=rng.integers(0, 2, size=n),
        action_space=spaces.Box(0.0, 4.0, (2,), np.float32),
    )
    mean, std = data.observation_statistics()
    buffer = DatasetReplayBuffer(data, device="cpu", obs_mean=mean, obs_std=std, reward_scale=2.0, reward_shift=-1.0)
    assert buffer.observations.data_ptr() == data.observations.ctypes.data  # held once, no copy
    assert buffer.actions.data_ptr() == data.actions.ctypes.data
    inds = th.tensor([0, 7, 499])
    batch = buffer._get_samples(inds)
    np.testing.assert_allclose(batch.observations.numpy(), (data.observations[[0, 7, 499]] - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(batch.actions.numpy(), data.actions[[0, 7, 499]] / 2.0 - 1.0, atol=1e-6)  # to [-1, 1]
    np.testing.assert_allclose(batch.rewards.numpy()[:, 0], 2.0 * data.rewards[[0, 7, 499]] - 1.0, rtol=1e-6)
    np.testing.assert_array_equal(batch.costs.numpy()[:, 0], data.costs[[0, 7, 499]])
    sample = buffer.sample(64)
    assert sample.observations.shape == (64, 3) and sample.dones.shape == (64, 1) and sample.costs.shape == (64, 1)


def test_iql_reward_normalisation(dataset):
    model = IQL("MlpPolicy", None, dataset=dataset, seed=0, **SMALL)
    returns = dataset.episode_returns
    assert model.replay_buffer.reward_scale == pytest.approx(50 / (returns.max() - returns.min()))
    assert IQL("MlpPolicy", None, dataset=dataset, normalize_reward=False, **SMALL).replay_buffer.reward_scale == 1.0


def test_spaces_from_dataset_without_env(dataset):
    model = BC("MlpPolicy", None, dataset=dataset, **SMALL)
    assert model.observation_space == dataset.observation_space and model.action_space == dataset.action_space
    with pytest.raises(ValueError, match="needs an env"):
        model.evaluate()


def test_bad_input_rejected_before_training(dataset):
    with pytest.raises(ValueError, match=r"observations of test/mixed-reach-v0 have shape \(4,\).*expects \(3,\)"):
        TD3BC("MlpPolicy", gym.make("Pendulum-v1"), dataset=dataset, **SMALL)
    with pytest.raises(ValueError, match=r"actions of test/mixed-reach-v0 have shape \(2,\).*expects \(1,\)"):
        BC("MlpPolicy", _reshaped_env(action_dim=1), dataset=dataset, **SMALL)
    with pytest.raises(ValueError, match="continuous Box action space"):
        BC("MlpPolicy", gym.make("CartPole-v1"), dataset=dataset, **SMALL)
    with pytest.raises(ValueError, match="actions lie outside the bounds of the env"):
        TD3BC("MlpPolicy", _reshaped_env(action_dim=2, high=0.5), dataset=dataset, **SMALL)
    with pytest.raises(ValueError, match="needs dataset="):
        IQL("MlpPolicy", make_env("toy/reach-v0"), **SMALL)
    with pytest.raises(ValueError, match="expectile must be in"):
        IQL("MlpPolicy", None, dataset=dataset, expectile=1.5, **SMALL)


def _reshaped_env(action_dim: int, high: float = 1.0) -> gym.Env:
    """The toy task with another action space (shape or bounds) for the mismatch checks."""
    env = make_env("toy/reach-v0")
    env.action_space = spaces.Box(-high, high, (action_dim,), np.float32)
    return env


@pytest.mark.parametrize("algo", ALGOS)
def test_optimizers_default_to_fused_adam(algo, dataset):
    model = algo("MlpPolicy", make_env("toy/reach-v0"), dataset=dataset, **SMALL)
    optimizers = [module.optimizer for module in model.policy.modules() if hasattr(module, "optimizer")]
    assert optimizers and all(optimizer.defaults["fused"] for optimizer in optimizers)


LEARNING = dict(policy_kwargs=dict(net_arch=[64, 64]), batch_size=256, seed=0, device="cpu")


@pytest.fixture(scope="module")
def bc_score(dataset) -> float:
    env = make_env("toy/reach-v0")
    return (
        BC("MlpPolicy", env, dataset=dataset, **LEARNING)
        .learn(1500)
        .evaluate(env, n_episodes=20, seed=123)["normalized_score"]
    )


@pytest.mark.parametrize("algo", [TD3BC, IQL, A2PR])
def test_offline_rl_beats_bc_on_mixed_quality_data(algo, dataset, bc_score):
    """30% expert / 70% random episodes: BC clones the mixture, TD3+BC, IQL and A2PR pick out the expert.

    Normalised scores measured (seeds 0 / 1, 1500 steps, 64-64 nets): BC 19 / 16, TD3+BC 70 / 70,
    IQL 59 / 57, A2PR 95 / 95. Broken updates fail the thresholds: TD3+BC without its Q term (alpha=0) 21, with
    the Q term's sign flipped -35; IQL with constant weights (beta=0) 20, with gamma=0 29; A2PR with the Q term's
    sign flipped -15. A2PR's advantage-selected BC target alone already picks out the expert here (89 / 87
    without the Q term), so its gate and VAE mask are tested in tests/test_a2pr.py.
    """
    env = make_env("toy/reach-v0")
    kwargs = dict(LEARNING)
    if algo is A2PR:
        kwargs["policy_kwargs"] = dict(net_arch=[64, 64], vae_net_arch=[64, 64])
    score = algo("MlpPolicy", env, dataset=dataset, **kwargs).learn(1500).evaluate(env, n_episodes=20, seed=123)
    assert score["normalized_score"] > bc_score + 30, (bc_score, score["normalized_score"])
    assert score["normalized_score"] > 40


@pytest.mark.parametrize("algo", ALGOS)
def test_learn_draws_minibatches_of_the_models_batch_size(algo, dataset):
    model = algo("MlpPolicy", None, dataset=dataset, seed=0, **{**SMALL, "batch_size": 48})
    sizes = []
    sample = model.replay_buffer.sample

    def recording_sample(batch_size, *args, **kwargs):
        sizes.append(batch_size)
        return sample(batch_size, *args, **kwargs)

    model.replay_buffer.sample = recording_sample
    model.learn(3)
    assert sizes == [48, 48, 48]


def test_iql_reward_scale_and_shift_apply_only_without_reward_normalisation(dataset):
    """With normalize_reward the rewards are only scaled by T / (max - min return); without it they are
    reward_scale * r + reward_shift (antmaze's -1 shift)."""
    returns = dataset.episode_returns
    normalised = IQL("MlpPolicy", None, dataset=dataset, reward_scale=2.0, reward_shift=-1.0, **SMALL).replay_buffer
    assert normalised.reward_scale == pytest.approx(50 / (returns.max() - returns.min())) and normalised.reward_shift == 0.0
    raw = IQL(
        "MlpPolicy", None, dataset=dataset, normalize_reward=False, reward_scale=2.0, reward_shift=-1.0, **SMALL
    ).replay_buffer
    assert raw.reward_scale == 2.0 and raw.reward_shift == -1.0


def test_stats_kept_when_a_loaded_model_continues_on_another_dataset(dataset, tmp_path):
    """A loaded model keeps the observation normalisation its networks were trained with: continuing on another
    dataset neither recomputes obs_mean / obs_std nor changes the normalisation of the training batches."""
    model = TD3BC("MlpPolicy", None, dataset=dataset, seed=0, **SMALL).learn(5)
    model.save(tmp_path / "model.zip")
    other = reach_episodes("toy/reach-v0", 10, lambda _, rng: True, 1, "test/expert-reach-v0")
    assert not np.allclose(other.observation_statistics()[0], model.obs_mean, atol=1e-2)
    loaded = TD3BC.load(tmp_path / "model.zip", device="cpu", dataset=other)
    np.testing.assert_array_equal(loaded.obs_mean, model.obs_mean)
    np.testing.assert_array_equal(loaded.obs_std, model.obs_std)
    batch = loaded.replay_buffer._get_samples(th.arange(4))
    expected = (other.observations[:4] - model.obs_mean) / model.obs_std
    np.testing.assert_allclose(batch.observations.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_progress_remaining_stays_at_zero_past_the_schedule_horizon(dataset):
    """Past schedule_horizon gradient steps the progress remaining stays 0: a linear learning rate does not turn
    negative and IQL's cosine actor learning rate stays 0 instead of rising again."""
    model = IQL(
        "MlpPolicy", None, dataset=dataset, schedule_horizon=10, learning_rate=lambda progress: 1e-3 * progress, seed=0,
        **SMALL,
    )  # fmt: skip
    model.learn(15)
    assert model._current_progress_remaining == 0.0
    assert model.critic.optimizer.param_groups[0]["lr"] == 0.0 and model.value.optimizer.param_groups[0]["lr"] == 0.0
    assert model.actor.optimizer.param_groups[0]["lr"] == 0.0
