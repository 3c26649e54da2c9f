"""Safe tasks: DSRL velocity costs, the toy hazard task, DSRL's normalised metrics, safe datasets."""

from __future__ import annotations

import numpy as np
import pytest

from rlkit.data.minari import OfflineDataset
from rlkit.data.safe import safe_episodes
from rlkit.data.scores import dsrl_normalized_cost, dsrl_normalized_reward
from rlkit.envs import make_env
import gymnasium as gym

from rlkit.envs.safety import VELOCITY_TASKS, CostPenalty, VelocityCost, make_velocity_env


@pytest.mark.parametrize("name", sorted(VELOCITY_TASKS))
def test_velocity_cost_is_one_exactly_when_speed_exceeds_the_threshold(name):
    env = make_env(f"safe/{name}")
    threshold = VELOCITY_TASKS[name][1]
    _, info = env.reset(seed=0)
    assert info["cost"] == 0.0
    env.action_space.seed(0)
    for _ in range(30):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        speed = np.hypot(info["x_velocity"], info["y_velocity"]) if name.startswith("Ant") else info["x_velocity"]
        assert info["cost"] == float(speed > threshold)
        if terminated or truncated:
            break


def test_velocity_cost_fires_on_a_fast_cheetah():
    env = make_env("safe/HalfCheetahVelocity-v5")
    env.reset(seed=0)
    data = env.unwrapped.data
    data.qvel[0] = 5.0  # push the torso forward faster than 3.2096
    _, _, _, _, info = env.step(np.zeros(6))
    assert info["x_velocity"] > 3.2096 and info["cost"] == 1.0


def _first_step_info(env: gym.Env) -> dict:
    env.reset(seed=0)
    return env.step(np.full(env.action_space.shape, 0.5, dtype=np.float32))[4]


def test_velocity_cost_is_strict_at_the_threshold_and_planar_for_ant():
    # the same seeded step, replayed with thresholds placed at the speeds it reaches (MuJoCo is deterministic)
    info = _first_step_info(gym.make("Ant-v5"))
    forward, planar = abs(info["x_velocity"]), float(np.hypot(info["x_velocity"], info["y_velocity"]))
    assert planar > forward
    between = (forward + planar) / 2
    assert _first_step_info(VelocityCost(gym.make("Ant-v5"), between, planar=True))["cost"] == 1.0
    assert _first_step_info(VelocityCost(gym.make("Ant-v5"), planar, planar=True))["cost"] == 0.0  # speed == threshold
    assert _first_step_info(VelocityCost(gym.make("Ant-v5"), between))["cost"] == float(info["x_velocity"] > between)
    assert make_velocity_env("AntVelocity-v5").planar and not make_velocity_env("HopperVelocity-v5").planar


def test_toy_hazard_straight_path_costs_and_detour_is_safe():
    env = make_env("toy/hazard-v0")
    totals = {}
    for detour in (False, True):
        env.reset(seed=0)
        cost, ret, done = 0.0, 0.0, False
        while not done:
            _, reward, terminated, truncated, info = env.step(env.unwrapped.behaviour_action(detour))
            cost, ret, done = cost + info["cost"], ret + reward, terminated or truncated
        totals[detour] = (ret, cost)
    assert totals[False][1] >= 5 and totals[True][1] == 0
    assert totals[False][0] > totals[True][0], "the shortest path (through the hazard) has the higher reward"


def test_cost_penalty_subtracts_lambda_times_cost():
    env = CostPenalty(make_env("toy/hazard-v0"), penalty=3.0)
    plain = make_env("toy/hazard-v0")
    env.reset(seed=0)
    plain.reset(seed=0)
    for _ in range(10):
        _, penalised, *_ = env.step(np.array([1.0, 0.0]))
        _, reward, _, _, info = plain.step(np.array([1.0, 0.0]))
        assert penalised == pytest.approx(reward - 3.0 * info["cost"])


def test_dsrl_normalised_cost_and_reward():
    assert dsrl_normalized_cost(20.0, 10.0) == 2.0 and type(dsrl_normalized_cost(20.0, 10.0)) is float
    assert dsrl_normalized_cost(0.0, 0.0) == 1.0  # eps = 1 for a zero budget
    assert dsrl_normalized_cost(1.0, 0.0) == 2.0
    np.testing.assert_allclose(dsrl_normalized_cost(np.array([0.0, 5.0]), 5.0), [0.0, 1.0])
    assert dsrl_normalized_reward(55.0, 10.0, 100.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="cost_limit"):
        dsrl_normalized_cost(1.0, -1.0)


def test_safe_episodes_keeps_trajectories_within_the_budget():
    n = 6
    data = {
        "observations": np.arange(n, dtype=np.float32)[:, None],
        "actions": np.zeros((n, 1), np.float32),
        "rewards": np.ones(n, np.float32),
        "next_observations": np.arange(1, n + 1, dtype=np.float32)[:, None],
        "terminals": np.zeros(n, np.float32),
        "timeouts": np.array([0, 1, 0, 1, 0, 1], np.float32),
        "costs": np.array([1, 1, 0, 0, 3, 0], np.float32),
    }
    kept = safe_episodes(OfflineDataset.from_dict(data), cost_limit=2.0)
    np.testing.assert_array_equal(kept.observations[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(kept.episode_ends, [2, 4])
    with pytest.raises(ValueError, match="no episode"):
        safe_episodes(OfflineDataset.from_dict(data), cost_limit=0.5 - 1.0)
