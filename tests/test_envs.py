import numpy as np
import pytest
from gymnasium import spaces

from rlkit import make_env
from rlkit.envs import known_env_ids
from rlkit.envs.toy import PointReachEnv

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
    obs2, reward, terminated, truncated, info = env.step(action)
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
