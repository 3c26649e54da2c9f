"""Offline datasets: generation -> Minari -> load round trip, D4RL scores, bad input."""

from __future__ import annotations

import minari
import numpy as np
import pytest
from gymnasium import spaces

import rlkit.data.minari as minari_module
from rlkit.bc import BC
from rlkit.data import OfflineDataset, d4rl_normalized_score, d4rl_ref_scores, load_dataset
from rlkit.data.generate import generate, main
from rlkit.data.scores import d4rl_env_name
from rlkit.envs.toy import PointReachEnv
from rlkit.envs.toy_balance import TwoRegionsEnv

#: tiny budgets: SAC trains for 400 steps, snapshots every 100
TOY_BUDGET = dict(size=600, train_steps=400, learning_starts=100, eval_freq=100, n_eval_episodes=2, progress_bar=False)


@pytest.fixture
def minari_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


def _transitions(n_episodes: int = 3, length: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """D4RL-style dict of ``n_episodes`` episodes that end in a timeout."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n_episodes, length + 1, 3)).astype(np.float32)
    n = n_episodes * length
    timeouts = np.zeros(n, dtype=bool)
    timeouts[length - 1 :: length] = True
    return {
        "observations": obs[:, :-1].reshape(n, 3),
        "actions": rng.uniform(-1, 1, size=(n, 2)),
        "rewards": rng.normal(size=n),
        "next_observations": obs[:, 1:].reshape(n, 3),
        "terminals": np.zeros(n, dtype=bool),
        "timeouts": timeouts,
    }


def test_generate_load_round_trip(minari_store, monkeypatch):
    generate("toy/reach-v0", kinds=["medium-replay"], seed=3, **TOY_BUDGET)
    # the other kinds come from the cached SAC run: no second training
    monkeypatch.setattr("rlkit.data.generate.SAC", None)
    ids = generate("toy/reach-v0", seed=3, **TOY_BUDGET)
    assert set(ids) == {"random", "medium", "expert", "medium-replay", "medium-expert"}
    datasets = {kind: load_dataset(dataset_id) for kind, dataset_id in ids.items()}
    for kind, data in datasets.items():
        assert data.env_id == "toy/reach-v0" and data.dataset_id == ids[kind]
        for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
            assert getattr(data, key).dtype == np.float32, key
        assert data.observations.shape[1:] == (4,) and data.actions.shape[1:] == (2,)
        assert np.abs(data.actions).max() <= 1.0
        # D4RL-style flattening: next_obs[t] == obs[t + 1] inside episodes, episodes end at a flag
        starts = np.concatenate([[0], data.episode_ends[:-1]])
        inner = np.setdiff1d(np.arange(len(data) - 1), data.episode_ends - 1)
        np.testing.assert_array_equal(data.next_observations[inner], data.observations[inner + 1])
        assert np.all(data.timeouts[data.episode_ends - 1] + data.terminals[data.episode_ends - 1] == 1)
        assert data.episode_lengths.sum() == len(data) and len(data.episodes) == len(starts)
        episode = data.episodes[-1]
        assert np.shares_memory(episode.observations, data.observations)  # a view, not a copy
        assert episode.rewards.sum() == pytest.approx(data.episode_returns[-1], rel=1e-5)
        # the env's declared reference returns travel with the data, and agree with Minari's own formula
        assert (data.ref_min_score, data.ref_max_score) == (PointReachEnv.ref_min_score, PointReachEnv.ref_max_score)
        minari_score = minari.get_normalized_score(minari.load_dataset(ids[kind]), np.array([-20.0]))
        assert data.normalized_score(-20.0) == pytest.approx(100 * minari_score[0])
        assert data.metadata["generate_command"].startswith("python -m rlkit.data.generate --env toy/reach-v0 --kinds")
    for kind in ("random", "medium", "expert"):
        assert len(datasets[kind]) == TOY_BUDGET["size"]
    assert len(datasets["medium-expert"]) == 2 * TOY_BUDGET["size"]
    np.testing.assert_array_equal(datasets["medium-expert"].actions[: TOY_BUDGET["size"]], datasets["medium"].actions)
    assert 0 < len(datasets["medium-replay"]) <= TOY_BUDGET["train_steps"]
    assert datasets["medium-replay"].episode_lengths.max() <= 50

    # expert-random: expert_share of the transitions from the expert policy (whole episodes, the last one cut),
    # then uniformly random ones, which a rollout of the random actor written here reproduces exactly
    (mixed_id,) = generate("toy/reach-v0", kinds=["expert-random"], seed=3, expert_share=0.25, **TOY_BUDGET).values()
    mixed = load_dataset(mixed_id)
    assert len(mixed) == TOY_BUDGET["size"] and mixed.metadata["rlkit_generate"]["expert_share"] == 0.25
    n_expert = round(0.25 * TOY_BUDGET["size"])
    assert n_expert in mixed.episode_ends
    env = PointReachEnv()
    env.action_space.seed(3 + 1)
    obs, _ = env.reset(seed=3 + 70_000)
    for t in range(50):
        action = env.action_space.sample()
        np.testing.assert_allclose(mixed.observations[n_expert + t], obs, atol=1e-6)
        np.testing.assert_allclose(mixed.actions[n_expert + t], action, atol=1e-6)
        obs, *_ = env.step(action)
    assert np.abs(mixed.actions[:n_expert]).mean() != pytest.approx(np.abs(mixed.actions[n_expert:]).mean(), abs=1e-3)

    # the folder of a dataset loads too
    assert len(load_dataset(minari_store / "rlkit" / "toy-reach-v0" / "random-v0")) == TOY_BUDGET["size"]
    # cached: a second call reuses the datasets without writing; other settings are refused
    stamp = (minari_store / "rlkit" / "toy-reach-v0" / "expert-v0" / "data" / "metadata.json").stat().st_mtime_ns
    assert generate("toy/reach-v0", seed=3, **TOY_BUDGET) == ids
    assert (minari_store / "rlkit" / "toy-reach-v0" / "expert-v0" / "data" / "metadata.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"size.*overwrite"):
        generate("toy/reach-v0", kinds=["random"], seed=3, **{**TOY_BUDGET, "size": 300})
    # an algorithm takes the id (and the env id); the reference scores come with the data
    model = BC("MlpPolicy", "toy/reach-v0", dataset=ids["medium-replay"], device="cpu").learn(5)
    assert (model.ref_min_score, model.ref_max_score) == (PointReachEnv.ref_min_score, PointReachEnv.ref_max_score)
    # the command line; a random dataset of a task with known reference scores trains no agent
    argv = ["--env", "toy/reach-v0", "--kinds", "random", "--size", "300", "--namespace", "cli", "--no-progress"]
    assert main(argv) == {"random": "cli/toy-reach-v0/random-v0"}
    assert len(load_dataset("cli/toy-reach-v0/random-v0")) == 300


def test_scripted_noisy_ranges_from_success_to_failure(minari_store, monkeypatch):
    """Meta-World's scripted policy at two noise levels: the noiseless share beats the noisy one; no SAC trains."""
    monkeypatch.setattr("rlkit.data.generate.SAC", None)
    settings = dict(size=2_000, noise_levels=[0, 10], n_ref_episodes=1, seed=1, progress_bar=False)
    env_id = "metaworld/button-press-topdown-v3"
    (dataset_id,) = generate(env_id, kinds=["scripted"], **settings).values()
    data = load_dataset(dataset_id)
    assert dataset_id == "rlkit/metaworld-button-press-topdown-v3/scripted-v0" and data.env_id == env_id
    assert len(data) == 2_000 and 1_000 in data.episode_ends  # an equal share per level, 500-step episodes
    assert data.metadata["rlkit_generate"]["noise_levels"] == [0.0, 10.0]
    assert "--kinds scripted" in data.metadata["generate_command"]
    assert "--noise-levels 0 10" in data.metadata["generate_command"]
    assert np.abs(data.actions).max() <= 1.0
    noiseless, noisiest = np.array_split(data.episode_returns, 2)
    # the scripted policy presses the button (return ~3,800); at sigma = 10 the clipped actions are nearly random
    assert noiseless.min() > 3_000 and noisiest.max() < 0.5 * noiseless.min()
    assert np.mean(np.abs(data.actions[1_000:]) == 1.0) > 0.8 > np.mean(np.abs(data.actions[:1_000]) == 1.0)
    # reference scores measured: uniformly random and the noiseless scripted policy
    assert "noiseless scripted behaviour" in data.metadata["ref_scores_source"]
    assert data.ref_min_score < 500 and data.ref_max_score == pytest.approx(noiseless.mean(), rel=0.05)

    # cached: the command line with the same settings reuses it; other noise levels are refused
    stamp = (minari_store / "rlkit" / "metaworld-button-press-topdown-v3" / "scripted-v0").stat().st_mtime_ns
    argv = ["--env", env_id, "--kinds", "scripted", "--size", "2000", "--noise-levels", "0", "10"]
    assert main([*argv, "--n-ref-episodes", "1", "--seed", "1", "--no-progress"]) == {"scripted": dataset_id}
    assert (minari_store / "rlkit" / "metaworld-button-press-topdown-v3" / "scripted-v0").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"noise_levels.*overwrite"):
        generate(env_id, kinds=["scripted"], **{**settings, "noise_levels": [0.0, 1.0]})


def test_generate_scripted_records_the_envs_behaviour_without_training(minari_store):
    """The scripted kind rolls out the env's scripted behaviour (its noise from its own generator, seeded
    seed + 80000, so a rollout written here reproduces it exactly); no SAC agent is trained."""
    (dataset_id,) = generate("toy/two-regions-v0", ["scripted"], size=300, seed=3, progress_bar=False).values()
    data = load_dataset(dataset_id)
    assert dataset_id == "rlkit/toy-two-regions-v0/scripted-v0" and len(data) == 300
    assert not (minari_store / ".rlkit-agents").exists()
    assert (data.metadata["ref_min_score"], data.metadata["ref_max_score"]) == (-20.7, -4.2)
    env, rng = TwoRegionsEnv(), np.random.default_rng(3 + 80_000)
    obs, _ = env.reset(seed=3 + 80_000)
    for t in range(env.max_episode_steps):
        action = env.scripted_behaviour(rng)
        np.testing.assert_allclose(data.observations[t], obs, atol=1e-6)
        np.testing.assert_allclose(data.actions[t], action, atol=1e-6)
        obs, *_ = env.step(action)
    with pytest.raises(ValueError, match="scripted_behaviour"):
        generate("toy/reach-v0", ["scripted"], size=100, progress_bar=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kinds=["mediocre"]), r"Unknown dataset kind\(s\) \['mediocre'\]"),
        (
            dict(kinds=["scripted"]),
            r"scripted kind records an env's scripted behaviour: 'toy/reach-v0' declares no scripted_behaviour.*"
            r"Choose such a task, or a kind recorded from SAC for toy/reach-v0 \(random, medium",
        ),
        (dict(kinds=["scripted"], noise_levels=[0.5, -1]), "noise_levels must be finite and non-negative"),
        (dict(size=0), "size must be positive"),
        (dict(train_steps=100, learning_starts=100), r"learning_starts \(100\) must be in"),
        (dict(medium_fraction=1.5), "medium_fraction must be in"),
        (dict(kinds=["expert-random"], expert_share=1.0), "expert_share must be in"),
    ],
)
def test_generate_rejects_bad_settings(minari_store, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate("toy/reach-v0", **kwargs)


def test_normalized_score_matches_d4rl():
    # D4RL's infos.py reference returns; 100 * (R - random) / (expert - random)
    assert d4rl_ref_scores("hopper-medium-v2") == (-20.272305, 3234.3)
    assert d4rl_ref_scores("HalfCheetah-v5") == (-280.178953, 12135.0)
    assert d4rl_ref_scores("mujoco/walker2d/medium-v0") == (1.629008, 4592.3)
    assert d4rl_ref_scores("rlkit/ant-v5/medium-replay-v0") == (-325.6, 3879.7)
    assert d4rl_env_name("toy/reach-v0") is None and d4rl_env_name("AntMaze_UMaze-v5") is None
    assert d4rl_normalized_score("halfcheetah-medium-v2", 5000.0) == pytest.approx(42.530026937099436)
    assert d4rl_normalized_score("Hopper-v5", 1500.0) == pytest.approx(46.71189214829873)
    assert d4rl_normalized_score("walker2d", 3000.0) == pytest.approx(65.31443872203333)
    assert d4rl_normalized_score("Ant-v5", 2000.0) == pytest.approx(55.30164316457803)
    np.testing.assert_allclose(d4rl_normalized_score("hopper", np.array([-20.272305, 3234.3])), [0.0, 100.0])
    with pytest.raises(ValueError, match="no reference scores"):
        d4rl_normalized_score("toy/reach-v0", 1.0)


def test_dataset_from_dict_and_episode_view():
    data = OfflineDataset.from_dict(_transitions(), ref_min_score=0.0, ref_max_score=10.0)
    assert len(data) == 120 and len(data.episodes) == 3 and list(data.episode_lengths) == [40, 40, 40]
    assert data.normalized_score(5.0) == pytest.approx(50.0)
    mean, std = data.observation_statistics()
    np.testing.assert_allclose(mean, data.observations.mean(0), atol=1e-6)
    assert mean.dtype == std.dtype == np.float32
    # an observation discontinuity also ends an episode (D4RL datasets without timeouts)
    raw = _transitions()
    del raw["timeouts"]
    assert len(OfflineDataset.from_dict(raw).episodes) == 3


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d.pop("next_observations"), r"missing key\(s\) \['next_observations'\]"),
        (lambda d: d["rewards"].__setitem__(5, np.nan), r"rewards has 1 NaN/inf"),
        (lambda d: d["observations"].__setitem__((3, 1), np.inf), r"observations has 1 NaN/inf"),
        (lambda d: d["actions"].__setitem__((7, 0), 1.5), r"actions lie outside.*clip"),
        (lambda d: d.__setitem__("rewards", d["rewards"][:-1]), r"rewards has 119 rows but observations has 120"),
        (lambda d: d.__setitem__("next_observations", d["next_observations"][:, :2]), r"next_observations has shape"),
        (lambda d: d.__setitem__("terminals", np.full(120, 0.5)), r"terminals must hold 0/1"),
    ],
)
def test_bad_dataset_rejected(change, match):
    data = _transitions()
    change(data)
    with pytest.raises(ValueError, match=match):
        OfflineDataset.from_dict(data)


def test_actions_checked_against_given_bounds():
    data = _transitions()
    data["actions"] = 2.0 * data["actions"]
    box = spaces.Box(-2.0, 2.0, (2,), np.float32)
    assert OfflineDataset.from_dict(data, action_space=box).action_space == box
    with pytest.raises(ValueError, match="outside the bounds of the env"):
        OfflineDataset.from_dict(data, action_space=box).check_compatible(
            spaces.Box(-np.inf, np.inf, (3,)), spaces.Box(-1.0, 1.0, (2,)), where="the env"
        )


def test_unknown_dataset_says_how_to_generate(minari_store, monkeypatch):
    def offline(dataset_id: str) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(minari, "download_dataset", offline)
    monkeypatch.setattr(minari_module, "_unreachable_hub", lambda: None)  # a network whose download fails
    advice = r"ConnectionError.*`python -m rlkit\.data\.generate --env Hopper-v5 --kinds medium-replay`"
    with pytest.raises(ValueError, match=advice):
        load_dataset("mujoco/hopper/medium-replay-v0")
    with pytest.raises(ValueError, match=r"--env Walker2d-v5 --kinds expert"):
        load_dataset("mujoco/walker2d/expert-v0", download=False)
    with pytest.raises(ValueError, match="neither a folder nor a Minari id"):
        load_dataset("not a dataset id!")
    (minari_store / "empty").mkdir(parents=True)
    with pytest.raises(ValueError, match="not a Minari dataset folder"):
        load_dataset(minari_store / "empty")


def test_missing_datasets_fail_fast_in_one_line(minari_store, monkeypatch):
    """rlkit/ ids are never downloaded; without a network the download is not tried (no 25 s of retries)."""

    def must_not_download(dataset_id: str) -> None:
        raise AssertionError(f"download of {dataset_id} attempted")

    monkeypatch.setattr(minari, "download_dataset", must_not_download)
    with pytest.raises(ValueError, match=r"never downloaded.*--env toy/reach-v0 --kinds medium-replay") as error:
        load_dataset("rlkit/toy-reach-v0/medium-replay-v0")
    assert error.value.__cause__ is None and len(str(error.value).splitlines()) == 1
    monkeypatch.setattr(minari_module, "_unreachable_hub", lambda: "no network: cannot reach huggingface.co:443")
    with pytest.raises(ValueError, match=r"no network.*--env Hopper-v5 --kinds medium") as error:
        load_dataset("mujoco/hopper/medium-v0")
    assert len(str(error.value).splitlines()) == 1

    def failing_download(dataset_id: str) -> None:
        raise ConnectionError("refused")

    monkeypatch.setattr(minari_module, "_unreachable_hub", lambda: None)
    monkeypatch.setattr(minari, "download_dataset", failing_download)
    with pytest.raises(ValueError, match="ConnectionError: refused") as error:
        load_dataset("mujoco/hopper/medium-v0")
    assert error.value.__cause__ is None and error.value.__suppress_context__, "no chained traceback of the download"


def test_unreachable_hub_answers_within_its_timeout(monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "https://127.0.0.1:9")  # the discard port: nothing listens
    start = time.perf_counter()
    assert "cannot reach 127.0.0.1:9" in minari_module._unreachable_hub(timeout=1.0)
    assert time.perf_counter() - start < 2.0
