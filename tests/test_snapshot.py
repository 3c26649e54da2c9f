"""Tests of SnapshotRL / S3RL resets: collection, restore, status classification, truncation, learning."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.vec_env import DummyVecEnv

from benchmarks import algorithms
from benchmarks.kinds import snapshot as snapshot_kind
from benchmarks.suite import RunSpec
from rlkit.envs import make_env
from rlkit.envs.snapshot import (
    VARIANTS,
    SnapshotReset,
    SnapshotSet,
    collect_snapshots,
    kmeans_1d,
    load_teacher,
    state_adapter,
)
from rlkit.envs.toy import PointReachEnv

th.set_num_threads(1)

#: chi-square critical values at p = 0.001 by degrees of freedom
CHI2_CRIT = {1: 10.83, 2: 13.82, 9: 27.88}


class SparseLineEnv(gym.Env):
    """A point on [-1, 1] starting at 0; reward 1 and termination on reaching x = 1, else 0; 30 steps.

    Ten full-speed steps reach the goal, so a uniformly random policy reaches it in
    about one episode of a thousand: its reward is rare from the start state.
    """

    def __init__(self, speed: float = 0.1, horizon: int = 30) -> None:
        super().__init__()
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.speed, self.horizon = speed, horizon
        self.x, self.t = 0.0, 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.x, self.t = 0.0, 0
        return np.array([self.x], dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.x = float(np.clip(self.x + self.speed * float(np.clip(action[0], -1.0, 1.0)), -1.0, 1.0))
        self.t += 1
        terminated = self.x >= 1.0 - 1e-9
        return np.array([self.x], dtype=np.float32), float(terminated), terminated, self.t >= self.horizon, {}

    def get_state(self) -> np.ndarray:
        return np.array([self.x])

    def set_state(self, state: np.ndarray) -> None:
        self.x = float(state[0])


def go_right(obs: np.ndarray) -> np.ndarray:
    """Scripted teacher of :class:`SparseLineEnv`: full speed to the goal."""
    return np.ones(1, dtype=np.float32)


def reach_expert(obs: np.ndarray) -> np.ndarray:
    """Scripted teacher of :class:`PointReachEnv` from its observation ``(x, y, dx, dy)``."""
    return np.clip(obs[2:] / 0.1, -1.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def hopper_snapshots() -> tuple[SnapshotSet, list[np.ndarray], list[np.ndarray]]:
    """Snapshots of a scripted Hopper teacher every 5 steps, with its actions and observations."""
    actions = list(np.random.default_rng(0).uniform(-0.3, 0.3, size=(1000, 3)))
    seen: list[np.ndarray] = []

    def teacher(obs: np.ndarray) -> np.ndarray:
        seen.append(obs.copy())
        return actions[len(seen) - 1]

    snapshots = collect_snapshots(teacher, "Hopper-v5", n_episodes=1, every=5, seed=3)
    return snapshots, actions, seen


def test_hopper_restore_replays_teacher_observations(hopper_snapshots: Any) -> None:
    snapshots, actions, seen = hopper_snapshots
    assert snapshots.state_kind == "mujoco-integration" and len(snapshots) >= 4
    env = SnapshotReset(make_env("Hopper-v5"), snapshots, snapshot_steps=10_000, truncate_step=1000, n_clusters=None)
    checked = 0
    for seed in range(8):
        obs, info = env.reset(seed=seed)
        start = int(snapshots.steps[info["snapshot_index"]])
        assert np.array_equal(obs, seen[start])
        replay = range(start, min(start + 15, len(seen) - 1))
        for t in replay:
            obs, *_ = env.step(actions[t])
            assert np.max(np.abs(obs - seen[t + 1])) < 1e-9
        checked += start > 0
    assert checked >= 3


def test_hopper_passes_check_env(hopper_snapshots: Any) -> None:
    check_env(SnapshotReset(make_env("Hopper-v5"), hopper_snapshots[0], snapshot_steps=1000), warn=False)


def test_pendulum_state_adapter_round_trip_and_check_env() -> None:
    rng = np.random.default_rng(1)
    actions = rng.uniform(-2, 2, size=(400, 1)).astype(np.float32)
    seen: list[np.ndarray] = []

    def teacher(obs: np.ndarray) -> np.ndarray:
        seen.append(obs.copy())
        return actions[len(seen) - 1]

    snapshots = collect_snapshots(teacher, "Pendulum-v1", n_episodes=1, every=20)
    assert snapshots.state_kind == "state-attribute"
    env = SnapshotReset(make_env("Pendulum-v1"), snapshots, snapshot_steps=1000, truncate_step=50, n_clusters=3)
    obs, info = env.reset(seed=0)
    start = int(snapshots.steps[info["snapshot_index"]])
    assert np.array_equal(obs, seen[start])
    for t in range(start, start + 10):
        obs, *_ = env.step(actions[t])
        np.testing.assert_allclose(obs, seen[t + 1], atol=1e-9)
    check_env(env, warn=False)


def test_env_without_settable_state_gets_a_clear_error() -> None:
    class Opaque(gym.Env):
        observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    with pytest.raises(ValueError, match=r"Opaque.*MujocoEnv.*`state` attribute.*get_state\(\)"):
        state_adapter(Opaque())


def test_truncation_at_truncate_step_and_termination_passes_through() -> None:
    snapshots = collect_snapshots(go_right, SparseLineEnv(), n_episodes=1, every=1)
    far = SnapshotSet(**{**vars(snapshots), "states": np.zeros_like(snapshots.states)})  # all start at x = 0
    env = SnapshotReset(SparseLineEnv(), far, snapshot_steps=10_000, truncate_step=7, n_clusters=None)
    for _ in range(3):
        env.reset()
        flags = [env.step(np.zeros(1, dtype=np.float32))[2:4] for _ in range(7)]
        assert flags == [(False, False)] * 6 + [(False, True)]
    # a snapshot one step from the goal: termination passes through, not turned into a truncation
    near = SnapshotSet(**{**vars(snapshots), "states": np.full_like(snapshots.states, 0.95)})
    env = SnapshotReset(SparseLineEnv(), near, snapshot_steps=10_000, truncate_step=1, n_clusters=None)
    env.reset()
    _, reward, terminated, truncated, _ = env.step(np.ones(1, dtype=np.float32))
    assert (reward, terminated, truncated) == (1.0, True, False)
    env.reset()
    assert env.step(-np.ones(1, dtype=np.float32))[2:4] == (False, True)


def test_cluster_choice_is_uniform_over_non_empty_clusters() -> None:
    snapshots = collect_snapshots(reach_expert, PointReachEnv(), n_episodes=3, every=1)
    n = len(snapshots)
    # three statuses of very different sizes; six clusters requested, three non-empty
    values = np.zeros(n)
    values[n - 40 : n - 10] = 5.0
    values[n - 10 :] = 10.0
    snapshots.values = values
    env = SnapshotReset(PointReachEnv(), snapshots, snapshot_steps=10**6, n_clusters=6)
    assert [len(c) for c in env.clusters] == [n - 40, 30, 10]
    counts, picked = np.zeros(3), np.zeros(n)
    for seed in range(3000):
        obs, info = env.reset(seed=seed)
        index = info["snapshot_index"]
        assert np.array_equal(obs, snapshots.observations[index])
        assert np.array_equal(env.unwrapped.get_state(), snapshots.states[index])
        assert index in env.clusters[info["snapshot_cluster"]]  # the snapshot is drawn inside the chosen cluster
        counts[info["snapshot_cluster"]] += 1
        picked[index] += 1
    expected = np.full(3, 1000.0)
    assert ((counts - expected) ** 2 / expected).sum() < CHI2_CRIT[2]
    # and uniform inside a cluster: the ten snapshots of the smallest one
    small = picked[env.clusters[2]]
    assert ((small - small.mean()) ** 2 / small.mean()).sum() < CHI2_CRIT[9]
    # without status classification the choice is uniform over snapshots (sizes n-40 : 30 : 10)
    plain = SnapshotReset(PointReachEnv(), snapshots, snapshot_steps=10**6, n_clusters=None)
    by_status = np.zeros(3)
    for seed in range(3000):
        by_status[np.searchsorted([n - 40, n - 10], plain.reset(seed=seed)[1]["snapshot_index"], side="right")] += 1
    expected = 3000 * np.array([n - 40, 30, 10]) / n
    assert ((by_status - expected) ** 2 / expected).sum() < CHI2_CRIT[2]


def test_after_snapshot_steps_resets_are_the_envs_own() -> None:
    snapshots = collect_snapshots(reach_expert, PointReachEnv(), n_episodes=2, every=5)
    env = SnapshotReset(PointReachEnv(), snapshots, snapshot_steps=23, truncate_step=10, n_clusters=2)
    plain = PointReachEnv()
    env.reset(seed=0)
    steps, flags = 0, []
    while env.in_snapshot_phase:
        _, _, terminated, truncated, _ = env.step(np.zeros(2, dtype=np.float32))
        steps += 1
        flags.append(truncated)
        if terminated or truncated:
            env.reset()
    # truncated every 10 steps, and at step 23 when the phase ends mid-episode
    assert steps == 23 and [i + 1 for i, f in enumerate(flags) if f] == [10, 20, 23]
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        assert "snapshot_index" not in info
        assert np.array_equal(obs, plain.reset(seed=seed)[0])
        truncations = [env.step(np.zeros(2, dtype=np.float32))[3] for _ in range(50)]
        assert truncations == [False] * 49 + [True]  # the env's own 50-step limit


def test_teacher_values_save_load_and_zip_teacher(tmp_path: Any) -> None:
    env = PointReachEnv()
    sac = SAC("MlpPolicy", env, learning_starts=10, policy_kwargs=dict(net_arch=[16, 16]), seed=0)
    sac.learn(40)
    snapshots = collect_snapshots(sac, env, n_episodes=2, every=7, deterministic=True)
    obs = th.as_tensor(snapshots.observations)
    with th.no_grad():
        q1 = sac.critic.q1_forward(obs, sac.actor(obs, deterministic=True)).ravel().numpy()
    np.testing.assert_allclose(snapshots.values, q1, rtol=1e-5, atol=1e-6)
    assert snapshots.steps.tolist() == [0, 7, 14, 21, 28, 35, 42, 49] * 2
    path = snapshots.save(tmp_path / "snaps.npz")
    loaded = SnapshotSet.load(path)
    for key in ("states", "observations", "steps", "values", "episodes", "returns_so_far"):
        assert np.array_equal(getattr(loaded, key), getattr(snapshots, key))
    assert loaded.infos == snapshots.infos and loaded.state_kind == snapshots.state_kind
    assert loaded.meta["teacher_returns"] == snapshots.meta["teacher_returns"]
    # a saved teacher: its algorithm is found from the zip, and it gives the same snapshots
    sac.save(tmp_path / "sac.zip")
    teacher = load_teacher(tmp_path / "sac.zip")
    assert isinstance(teacher, SAC)
    again = collect_snapshots(str(tmp_path / "sac.zip"), env, n_episodes=2, every=7, deterministic=True)
    np.testing.assert_allclose(again.values, snapshots.values, rtol=1e-6)
    # on-policy teachers give V(s)
    ppo = PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, policy_kwargs=dict(net_arch=[16]), seed=0)
    snaps = collect_snapshots(ppo, env, n_episodes=1, every=10)
    with th.no_grad():
        v = ppo.policy.predict_values(th.as_tensor(snaps.observations)).ravel().numpy()
    assert snaps.values.shape == (5,)
    np.testing.assert_allclose(snaps.values, v, rtol=1e-5, atol=1e-6)


def test_kmeans_ranks_clusters_by_value_and_drops_empty_ones() -> None:
    values = np.array([5.0, 1.0, 2.0, 100.0, 101.0, 50.0])
    assert kmeans_1d(values, 3).tolist() == [0, 0, 0, 2, 2, 1]
    assert kmeans_1d(np.array([3.0, 3.0, 7.0]), 6).tolist() == [0, 0, 1]
    labels = kmeans_1d(np.random.default_rng(0).normal(size=500), 6)
    assert sorted(set(labels.tolist())) == list(range(6))


def test_works_in_a_vec_env_under_sac_and_ppo() -> None:
    snapshots = collect_snapshots(reach_expert, PointReachEnv(), n_episodes=2, every=5)

    def make() -> gym.Env:
        return SnapshotReset(PointReachEnv(), snapshots, snapshot_steps=100, truncate_step=20, n_clusters=6)

    vec = DummyVecEnv([make, make])
    sac = SAC("MlpPolicy", vec, learning_starts=50, batch_size=32, policy_kwargs=dict(net_arch=[16, 16]), seed=0)
    sac.learn(300)
    assert [e.num_steps for e in vec.envs] == [150, 150] and not any(e.in_snapshot_phase for e in vec.envs)
    # STT truncations are stored as timeouts, not terminal transitions
    timeouts = sac.replay_buffer.timeouts[: sac.replay_buffer.pos]
    assert timeouts[:50].sum() == 2 * 2  # both envs truncated at steps 20 and 40
    assert np.array_equal(sac.replay_buffer.dones[:50], timeouts[:50])
    vec = DummyVecEnv([make, make])
    ppo = PPO("MlpPolicy", vec, n_steps=64, batch_size=64, n_epochs=1, policy_kwargs=dict(net_arch=[16]), seed=0)
    ppo.learn(256)
    assert [e.num_steps for e in vec.envs] == [128, 128]


ONLINE_LEARNERS = {
    "TD3": dict(learning_starts=50, batch_size=32, policy_kwargs=dict(net_arch=[16])),
    "MDPO": dict(n_steps=64, batch_size=64, n_epochs=1, policy_kwargs=dict(net_arch=[16])),
    "MDPOOff": dict(learning_starts=50, batch_size=32, sgd_steps=2, policy_kwargs=dict(net_arch=[16])),
    "PMOESAC": dict(learning_starts=50, batch_size=32, policy_kwargs=dict(net_arch=[16])),
    "PMOEPPO": dict(n_steps=64, batch_size=64, n_epochs=1, policy_kwargs=dict(net_arch=[16])),
}


@pytest.mark.parametrize("name", sorted(ONLINE_LEARNERS))
def test_works_unchanged_under_the_other_online_learners(name: str) -> None:
    snapshots = collect_snapshots(reach_expert, PointReachEnv(), n_episodes=2, every=5)

    def make() -> gym.Env:
        return SnapshotReset(PointReachEnv(), snapshots, snapshot_steps=100, truncate_step=20, n_clusters=6)

    vec = DummyVecEnv([make, make])
    model = algorithms.get(name).load()("MlpPolicy", vec, seed=0, device="cpu", **ONLINE_LEARNERS[name])
    model.learn(256)
    # 128 steps per env: the snapshot phase (100 steps) ended in both, and resets are the env's own again
    assert [e.num_steps for e in vec.envs] == [128, 128] and not any(e.in_snapshot_phase for e in vec.envs)


def first_solved_step(use_snapshots: bool, seed: int, budget: int = 1000, eval_every: int = 125) -> int:
    """Env steps SAC needs until its deterministic policy reaches the goal of SparseLineEnv from the start.

    :return: the first evaluation step at which it does, or ``budget + 1`` if never within the budget
    """
    env: gym.Env = SparseLineEnv()
    if use_snapshots:
        snapshots = collect_snapshots(go_right, SparseLineEnv(), n_episodes=1, every=1)
        env = SnapshotReset(env, snapshots, snapshot_steps=750, **{**VARIANTS["S3RL"], "truncate_step": 10})
    model = SAC(
        "MlpPolicy", env, learning_starts=100, batch_size=64, learning_rate=3e-3, gamma=0.9, tau=0.02, ent_coef=0.01,
        policy_kwargs=dict(net_arch=[32, 32]), seed=seed,
    )  # fmt: skip
    probe = SparseLineEnv()
    for step in range(eval_every, budget + 1, eval_every):
        model.learn(eval_every, reset_num_timesteps=False)
        obs, _ = probe.reset()
        for _ in range(probe.horizon):
            obs, _, terminated, truncated, _ = probe.step(model.predict(obs, deterministic=True)[0])
            if terminated:
                return step
            if truncated:
                break
    return budget + 1


def test_s3rl_solves_a_sparse_task_sooner_than_sac() -> None:
    # teacher = a scripted controller; values = discounted return-to-go; equal student steps
    with_snapshots = [first_solved_step(True, seed) for seed in (0, 1)]
    without = [first_solved_step(False, seed) for seed in (0, 1)]
    assert max(with_snapshots) <= 500
    assert all(a < b for a, b in zip(with_snapshots, without, strict=True))


def test_benchmark_kind_trains_from_a_saved_teacher_and_tabulates(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("RLKIT_CACHE_DIR", str(tmp_path / "cache"))
    teacher = SAC("MlpPolicy", PointReachEnv(), learning_starts=10, policy_kwargs=dict(net_arch=[16, 16]), seed=0)
    teacher.learn(20)
    teacher.save(tmp_path / "teacher.zip")
    spec = RunSpec(
        entry=algorithms.get("SAC+S3RL"), task="toy/reach-v0", seed=0, budget=200, eval_freq=100, eval_episodes=2,
        hyperparams={"learning_starts": 50, "batch_size": 32, "policy_kwargs": {"net_arch": [16, 16]}},
        env="toy/reach-v0", options={"teacher_path": str(tmp_path / "teacher.zip"), "snapshot_fraction": 0.5},
    )  # fmt: skip
    outcome = snapshot_kind.train(spec)
    record = {**outcome, "task": spec.task, "algo": spec.algo, "budget": 200, "status": "ok", "kind": "snapshot"}
    assert [p["step"] for p in record["curve"]] == [100, 200]
    assert record["snapshot"]["snapshot_steps"] == 100 and record["snapshot"]["truncate_step"] == 100
    assert record["teacher"]["n_snapshots"] == 10 * 5
    json.dumps(record)
    plain = {key: value for key, value in record.items() if key not in ("teacher", "snapshot")}
    curve = [{"step": 100, "return_mean": -30.0}, {"step": 200, "return_mean": -20.0}]
    plain = {**plain, "algo": "SAC", "kind": "online", "curve": curve}
    other = {**plain, "algo": "PPO"}
    lines = snapshot_kind.table([record, plain, other])
    rows = [line for line in lines if line.startswith("| toy/reach-v0")]
    assert [row.split(" | ")[1] for row in rows] == ["SAC", "SAC+S3RL"]
    assert "-30.0 ± 0.0 | -30.0 ± 0.0 | -20.0 ± 0.0" in rows[0]
    with pytest.raises(ValueError, match="variant"):
        snapshot_kind.variant_of("SAC+Unknown")


class RewardTapeEnv(gym.Env):
    """Seven steps whose rewards are a fixed tape drawn from the reset seed (:func:`reward_tape`); actions are ignored."""

    horizon = 7

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.tape, self.t = reward_tape(0), 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.tape, self.t = reward_tape(0 if seed is None else seed), 0
        return np.array([self.t], dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(self.tape[self.t])
        self.t += 1
        return np.array([self.t], dtype=np.float32), reward, False, self.t >= self.horizon, {}

    def get_state(self) -> np.ndarray:
        return np.array([self.t], dtype=np.float64)

    def set_state(self, state: np.ndarray) -> None:
        self.t = int(state[0])


def reward_tape(seed: int) -> np.ndarray:
    """The rewards of the :class:`RewardTapeEnv` episode reset with ``seed``."""
    return np.random.default_rng(seed).normal(size=RewardTapeEnv.horizon)


def idle(obs: np.ndarray) -> np.ndarray:
    return np.zeros(1, dtype=np.float32)


def test_return_to_go_values_are_discounted_by_gamma() -> None:
    snapshots = collect_snapshots(idle, RewardTapeEnv(), n_episodes=3, every=3, value="return_to_go", gamma=0.5, seed=10)
    assert snapshots.steps.tolist() == [0, 3, 6] * 3 and snapshots.episodes.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    expected = []
    for episode in range(3):
        rewards = reward_tape(10 + episode)
        for step in (0, 3, 6):
            expected.append(sum(0.5**k * r for k, r in enumerate(rewards[step:])))
    np.testing.assert_allclose(snapshots.values, expected, rtol=1e-12)
    # the undiscounted sums are far from these values on this tape
    undiscounted = [reward_tape(10 + e)[s:].sum() for e in range(3) for s in (0, 3, 6)]
    assert np.abs(np.array(undiscounted) - expected).max() > 0.1


def test_returns_so_far_sum_every_reward_before_the_snapshot() -> None:
    snapshots = collect_snapshots(idle, RewardTapeEnv(), n_episodes=2, every=2, seed=20)
    assert snapshots.steps.tolist() == [0, 2, 4, 6] * 2
    expected = [reward_tape(20 + e)[:s].sum() for e in range(2) for s in (0, 2, 4, 6)]
    np.testing.assert_allclose(snapshots.returns_so_far, expected, rtol=1e-12, atol=1e-12)
    assert snapshots.returns_so_far[0] == 0.0 and snapshots.returns_so_far[4] == 0.0  # nothing before a reset state


def test_keep_best_keeps_the_snapshots_of_the_highest_return_episodes() -> None:
    totals = [reward_tape(30 + e).sum() for e in range(6)]
    best = sorted(np.argsort(totals)[::-1][:2].tolist())
    assert best != [0, 1] and best != sorted(np.argsort(totals)[:2].tolist())  # the check tells orders apart
    snapshots = collect_snapshots(idle, RewardTapeEnv(), n_episodes=6, every=3, keep_best=2, value="return_to_go", seed=30)
    assert snapshots.episodes.tolist() == [best[0]] * 3 + [best[1]] * 3
    np.testing.assert_allclose(snapshots.meta["teacher_returns"], totals, rtol=1e-12)
    expected = [sum(0.99**k * r for k, r in enumerate(reward_tape(30 + e)[s:])) for e in best for s in (0, 3, 6)]
    np.testing.assert_allclose(snapshots.values, expected, rtol=1e-12)


def test_a_seeded_reset_reseeds_the_snapshot_draws() -> None:
    snapshots = collect_snapshots(idle, RewardTapeEnv(), n_episodes=3, every=1, seed=0)
    assert len(snapshots) == 21

    def make() -> SnapshotReset:
        return SnapshotReset(RewardTapeEnv(), snapshots, snapshot_steps=10**6, truncate_step=None, n_clusters=3)

    def draws(env: SnapshotReset, seed: int) -> list[tuple[int, int]]:
        infos = [env.reset(seed=seed)[1]] + [env.reset()[1] for _ in range(11)]
        return [(info["snapshot_index"], info["snapshot_cluster"]) for info in infos]

    first, second = make(), make()
    assert draws(first, 5) == draws(second, 5)
    assert draws(first, 5) == draws(make(), 5)  # after earlier draws, the seed restarts the sequence
    assert draws(first, 6) != draws(second, 5)
