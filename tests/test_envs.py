import numpy as np
import pytest
from gymnasium import spaces

from rlkit import make_env
from rlkit.envs import known_env_ids
from rlkit.envs.toy import PointReachEnv, TwoRoutesEnv
from rlkit.envs.toy_balance import TwoRegionsEnv

# id -> (observation shape, action shape, reward shape)
FAMILIES = {
    "HalfCheetah-v5": ((17,), (6,), ()),
    "dmc/cheetah-run": ((17,), (6,), ()),
    "metaworld/reach-v3": ((39,), (4,), ()),
    "mo/mo-halfcheetah-v5": ((17,), (6,), (2,)),
    "toy/reach-v0": ((4,), (2,), ()),
}


@pytest.mark.parametrize("env_id", list(FAMILIES))
def test_family_constructs_resets_and_steps(env_id):
    obs_shape, act_shape, reward_shape = FAMILIES[env_id]
    env = make_env(env_id)
    assert isinstance(env.observation_space, spaces.Box) and env.observation_space.shape == obs_shape
    assert isinstance(env.action_space, spaces.Box) and env.action_space.shape == act_shape
    obs, _ = env.reset(seed=3)
    assert obs.shape == obs_shape and obs.dtype == env.observation_space.dtype
    env.action_space.seed(0)
    action = env.action_space.sample()
    obs2, reward, terminated, truncated, _ = env.step(action)
    assert obs2.shape == obs_shape
    assert np.shape(reward) == reward_shape
    assert isinstance(terminated, bool) and isinstance(truncated, bool)

    # the same seed gives the same start and the same transition, in a second instance too
    again = make_env(env_id)
    np.testing.assert_allclose(again.reset(seed=3)[0], obs)
    np.testing.assert_allclose(again.step(action)[0], obs2, rtol=1e-6)
    assert not np.allclose(again.reset(seed=4)[0], obs)


@pytest.mark.parametrize("env_id", ["dmc/cheetah-run", "metaworld/reach-v3"])
def test_float32_observations(env_id):
    env = make_env(env_id)
    assert env.observation_space.dtype == np.float32
    assert env.reset(seed=0)[0].dtype == np.float32


def test_metaworld_success_and_truncation_reset():
    env = make_env("metaworld/reach-v3")
    env.reset(seed=0)
    steps, truncated = 0, False
    while not truncated:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert "success" in info and not terminated
        steps += 1
    assert steps == 500
    # a reset after truncation gives a usable episode again
    env.reset()
    env.step(env.action_space.sample())


def test_unknown_id_lists_families_and_close_ids():
    with pytest.raises(ValueError, match=r"HalfCheetah-v5.*Families: gymnasium.*dmc/.*metaworld/.*mo/.*toy/"):
        make_env("HalfCheeta-v5")
    with pytest.raises(ValueError, match="dmc/cheetah-run"):
        make_env("dmc/cheetah-runn")
    with pytest.raises(ValueError, match="Unknown environment id"):
        make_env("metaworld/reach-v2")


def test_known_ids_cover_every_family():
    ids = set(known_env_ids())
    assert {"HalfCheetah-v5", "dmc/walker-walk", "metaworld/button-press-v3", "mo/mo-hopper-v5", "toy/reach-v0"} <= ids


def test_toy_reach_reference_policies():
    """The scripted expert reaches the goal; a random policy does not: the reference scores are ordered."""
    env = PointReachEnv()
    env.reset(seed=0)
    for _ in range(env.max_episode_steps):
        _, _, _, truncated, info = env.step(env.expert_action())
    assert truncated and info["success"] == 1.0
    assert PointReachEnv.ref_min_score < PointReachEnv.ref_max_score < 0


def _rollout(env: TwoRoutesEnv, policy, seed: int = 0, start_x: float | None = None) -> tuple[float, dict]:
    env.reset(seed=seed)
    if start_x is not None:
        env._pos[0] = start_x
    total, done, info = 0.0, False, {}
    while not done:
        _, reward, terminated, truncated, info = env.step(policy())
        total += float(reward)
        done = terminated or truncated
    return total, info


def test_two_routes_has_two_mirror_routes_of_equal_return_and_a_wall_between():
    """Straight up, the mean of the two routes, presses the point against the wall; the detours left and right
    are mirror images with the same return and reach the goal; a move into the wall is not made."""
    env = TwoRoutesEnv()
    straight, info = _rollout(env, lambda: np.array([0.0, 1.0]))
    assert info["success"] == 0.0 and env._pos[1] < env.wall[2]

    def mirrored_expert() -> np.ndarray:
        env._pos[0] *= -1  # the expert's action on the mirror image, mirrored back
        action = env.expert_action()
        env._pos[0] *= -1
        return action * np.array([-1.0, 1.0], dtype=np.float32)

    right, info_right = _rollout(env, env.expert_action, start_x=0.0)
    left, info_left = _rollout(env, mirrored_expert, start_x=0.0)
    assert info_right["success"] == info_left["success"] == 1.0
    assert left == pytest.approx(right, abs=1e-9) and straight < right - 20
    env.reset(seed=0)
    env._pos = np.array([0.0, -0.15])
    obs, *_ = env.step(np.array([0.0, 1.0]))
    assert np.allclose(obs, [0.0, -0.15])


def test_two_routes_reference_scores_are_the_measured_ones():
    env = TwoRoutesEnv()
    rng = np.random.default_rng(0)
    random_returns = [_rollout(env, lambda: rng.uniform(-1, 1, 2), seed)[0] for seed in range(200)]
    expert_returns = [_rollout(env, env.expert_action, seed)[0] for seed in range(200)]
    assert np.mean(random_returns) == pytest.approx(TwoRoutesEnv.ref_min_score, abs=2.0)
    assert np.mean(expert_returns) == pytest.approx(TwoRoutesEnv.ref_max_score, abs=0.2)


def test_two_regions_moves_exactly_on_the_right_slips_on_the_left_and_keeps_each_side():
    """Right: the point moves by exactly max_speed * action and the reward is minus the distance to (0.5, 0.5);
    left: the same move plus noise of std ``slip`` per axis, goal (-0.5, 0.5); no point crosses the wall."""
    env = make_env("toy/two-regions-v0")
    obs, _ = env.reset(seed=0, options={"side": "right"})
    assert 0.2 <= obs[0] <= 0.9 and -0.9 <= obs[1] <= 0.9
    action = np.array([0.5, -1.0], dtype=np.float32)
    obs2, reward, terminated, truncated, _ = env.step(action)
    np.testing.assert_allclose(obs2, obs + 0.1 * action, atol=1e-6)
    assert reward == pytest.approx(-np.linalg.norm(np.array([0.5, 0.5]) - obs2), abs=1e-6)
    assert not terminated and not truncated
    for _ in range(20):  # full speed left: stopped at the wall, never on the other side
        obs2, *_ = env.step(np.array([-1.0, 0.0]))
    assert obs2[0] == pytest.approx(0.1)

    base = env.unwrapped
    moves = []
    for seed in range(40):
        start, _ = env.reset(seed=seed, options={"side": "left"})
        assert -0.9 <= start[0] <= -0.2
        base._pos = np.array([-0.5, 0.0])
        obs, reward, *_ = env.step(np.array([0.0, 1.0]))
        assert reward == pytest.approx(-np.linalg.norm(np.array([-0.5, 0.5]) - obs), abs=1e-6)
        moves.append(obs - np.array([-0.5, 0.1]))
    assert np.std(moves) == pytest.approx(base.slip, rel=0.25) and abs(np.mean(moves)) < 0.03
    env.reset(seed=0, options={"side": "left"})
    base._pos = np.array([-0.12, 0.0])
    for _ in range(10):
        obs, *_ = env.step(np.array([1.0, 0.0]))
        assert obs[0] <= -0.1
    truncations = [env.step(np.zeros(2))[3] for _ in range(base.max_episode_steps - 10)]
    assert truncations[-1] and not any(truncations[:-1])
    with pytest.raises(ValueError, match="side"):
        env.reset(options={"side": "up"})


def _two_regions_return(env: TwoRegionsEnv, act, seed: int, side: str | None = None) -> float:
    env.reset(seed=seed, options={"side": side} if side else None)
    total, done = 0.0, False
    while not done:
        _, reward, terminated, truncated, _ = env.step(act())
        total += float(reward)
        done = terminated or truncated
    return total


def test_two_regions_behaviour_is_near_expert_on_the_left_and_random_on_the_right():
    """The scripted behaviour gets >= 90% of the way from random to the straight-line controller on the left and
    <= 10% on the right, over 100 fixed seeds per side; the declared reference scores are the measured returns."""
    env = TwoRegionsEnv()
    rng = np.random.default_rng(0)
    shares = {}
    for side in env.sides:
        random = np.mean([_two_regions_return(env, lambda: rng.uniform(-1, 1, 2), s, side) for s in range(100)])
        expert = np.mean([_two_regions_return(env, env.expert_action, s, side) for s in range(100)])
        behaviour = np.mean([_two_regions_return(env, lambda: env.scripted_behaviour(rng), s, side) for s in range(100)])
        assert expert > random + 10
        shares[side] = (behaviour - random) / (expert - random)
    assert shares["left"] >= 0.9 and shares["right"] <= 0.1
    random_returns = [_two_regions_return(env, lambda: rng.uniform(-1, 1, 2), s) for s in range(200)]
    expert_returns = [_two_regions_return(env, env.expert_action, s) for s in range(200)]
    assert np.mean(random_returns) == pytest.approx(TwoRegionsEnv.ref_min_score, abs=1.0)
    assert np.mean(expert_returns) == pytest.approx(TwoRegionsEnv.ref_max_score, abs=0.5)


def test_two_regions_behaviour_rests_on_the_pushes_it_sees_so_resting_looks_better_than_it_is():
    """On the left the behaviour rests exactly when the coming push carries the point more than a move towards the
    goal (about 16% of the steps, P(N(0, 1) > 1)): in its data a rest progresses further than a move, while a rest
    chosen without seeing the push progresses by nothing on average."""
    env = TwoRegionsEnv()
    rng = np.random.default_rng(0)
    progress: dict[str, list[float]] = {"rest": [], "move": [], "blind rest": []}
    for seed in range(60):
        env.reset(seed=seed, options={"side": "left"})
        for _ in range(10):
            direction = (env.goal - env._pos) / np.linalg.norm(env.goal - env._pos)
            rests = env.rests()
            assert rests == (float(env._push @ direction) > env.max_speed)
            action = env.scripted_behaviour(rng)
            assert (not np.any(action)) == rests
            before = env._pos.copy()
            env.step(action)
            progress["rest" if rests else "move"].append(float((env._pos - before) @ direction))
        env.reset(seed=1000 + seed, options={"side": "left"})
        for _ in range(10):
            direction = (env.goal - env._pos) / np.linalg.norm(env.goal - env._pos)
            before = env._pos.copy()
            env.step(np.zeros(2))
            progress["blind rest"].append(float((env._pos - before) @ direction))
    share = len(progress["rest"]) / (len(progress["rest"]) + len(progress["move"]))
    assert share == pytest.approx(0.16, abs=0.05)
    assert np.mean(progress["rest"]) > np.mean(progress["move"]) + 0.03 and np.mean(progress["move"]) > 0.05
    assert abs(np.mean(progress["blind rest"])) < 0.02
    env.reset(seed=0, options={"side": "right"})
    assert not env.rests() and not np.any(env._push)


# one id of each family that make_env knows beyond gymnasium's own
PREFIXED_IDS = ["toy/reach-v0", "dmc/cheetah-run", "metaworld/reach-v3", "safe/HopperVelocity-v5", "mo/mo-hopper-2obj-v5"]


@pytest.mark.parametrize("env_id", PREFIXED_IDS)
def test_gym_make_knows_every_family(env_id):
    import gymnasium as gym

    env, reference = gym.make(env_id), make_env(env_id)
    assert env.observation_space == reference.observation_space and env.action_space == reference.action_space
    np.testing.assert_allclose(env.reset(seed=1)[0], reference.reset(seed=1)[0])
    assert env.unwrapped.spec.id == env_id


def _algorithm_classes():
    from stable_baselines3 import SAC

    from rlkit import MDPO, PARL, PEBBLE, PMOEPPO, PMOESAC, MDPOOff

    classes = (SAC, MDPO, MDPOOff, PMOESAC, PMOEPPO, PEBBLE, PARL)
    return {cls.__name__: cls for cls in classes}


ONLINE_CASES = [
    (algo, env_id)
    for algo in ("SAC", "MDPO", "MDPOOff", "PMOESAC", "PMOEPPO", "PEBBLE", "PARL")
    for env_id in ("toy/reach-v0", "dmc/cheetah-run", "safe/HopperVelocity-v5")
] + [("MDPO", "metaworld/reach-v3"), ("PEBBLE", "metaworld/reach-v3")]


@pytest.mark.parametrize(("algo", "env_id"), ONLINE_CASES)
def test_online_algorithms_accept_rlkit_ids(algo, env_id):
    """SB3's base calls gym.make on a string env: the rlkit ids resolve there (no NamespaceNotFound)."""
    cls = _algorithm_classes()[algo]
    kwargs = {"buffer_size": 100} if algo not in ("MDPO", "PMOEPPO") else {"n_steps": 64, "batch_size": 64}
    model = cls("MlpPolicy", env_id, seed=0, **kwargs)
    assert model.observation_space == make_env(env_id).observation_space
    assert model.get_env().envs[0].unwrapped.spec.id == env_id


def test_multi_objective_and_offline_algorithms_accept_rlkit_ids(tmp_path, monkeypatch):
    from rlkit import BC, CMORL
    from rlkit.data.generate import generate

    model = CMORL("MlpPolicy", "mo/mo-hopper-2obj-v5", ref_point=[-100, -100], seed=0, n_steps=64, batch_size=64)
    assert model.n_objectives == 2 and model.observation_space.shape == (11,)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    dataset = generate("toy/reach-v0", ["random"], size=200, progress_bar=False)["random"]
    assert BC("MlpPolicy", "toy/reach-v0", dataset=dataset, seed=0).observation_space.shape == (4,)
