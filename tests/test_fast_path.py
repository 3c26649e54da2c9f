"""The off-policy family's fast path (``rlkit.common.utils.FastPath``, ``rlkit.common.fast_sac.FastSAC``): the same
numbers as SB3."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import polyak_update

from rlkit.common.fast_sac import FastSAC
from rlkit.common.utils import FastPath
from rlkit.envs.toy import PointReachEnv

th.set_num_threads(1)


def _sac_pair(optimizer_kwargs: dict | None, **kwargs) -> tuple[SAC, FastSAC]:
    """SB3's SAC and FastSAC with the same networks and replay buffer (random warm-up transitions only)."""
    common = dict(learning_starts=10_000, batch_size=32, seed=0, device="cpu", **kwargs)
    sac = SAC("MlpPolicy", PointReachEnv(), policy_kwargs=dict(net_arch=[32, 32], optimizer_kwargs={}), **common)
    policy_kwargs: dict = dict(net_arch=[32, 32])
    if optimizer_kwargs is not None:
        policy_kwargs["optimizer_kwargs"] = optimizer_kwargs
    fast = FastSAC("MlpPolicy", PointReachEnv(), policy_kwargs=policy_kwargs, **common)
    sac.learn(300)
    fast.policy.load_state_dict(sac.policy.state_dict())
    with th.no_grad():
        # the target away from the online critic, so that a bypassed or skipped target update shows
        for param in sac.critic_target.parameters():
            param.add_(0.05 * th.randn_like(param))
        fast.critic_target.load_state_dict(sac.critic_target.state_dict())
    fast.replay_buffer = sac.replay_buffer
    for algo in (sac, fast):
        algo.set_logger(configure(None, []))
    return sac, fast


def _train_both(sac: SAC, fast: FastSAC, calls: int, gradient_steps: int) -> list[list[float]]:
    keys = ("train/actor_loss", "train/critic_loss", "train/ent_coef_loss", "train/ent_coef")
    logged = []
    for call in range(calls):
        for algo in (sac, fast):
            np.random.seed(call)
            th.manual_seed(call)
            algo.train(gradient_steps=gradient_steps, batch_size=32)
            logged.append([algo.logger.name_to_value[key] for key in keys])
    return logged


def _assert_same_parameters(sac: SAC, fast: FastSAC, atol: float) -> None:
    fast_params = fast.policy.state_dict()
    for name, param in sac.policy.state_dict().items():
        th.testing.assert_close(fast_params[name], param, atol=atol, rtol=0, msg=name)
    th.testing.assert_close(fast.log_ent_coef, sac.log_ent_coef, atol=atol, rtol=0)


def test_fast_sac_update_is_sb3_sacs_bit_for_bit_with_the_same_optimizers():
    sac, fast = _sac_pair(optimizer_kwargs={}, target_update_interval=2)
    logged = _train_both(sac, fast, calls=3, gradient_steps=3)
    for call in range(3):
        assert logged[2 * call][:3] == pytest.approx(logged[2 * call + 1][:3], rel=1e-6), f"call {call}"
    _assert_same_parameters(sac, fast, atol=0.0)
    assert not th.equal(sac.critic_target.state_dict()["qf0.0.weight"], sac.critic.state_dict()["qf0.0.weight"])


def test_fast_sac_with_fused_adam_stays_within_1e_6_of_sb3_sac():
    sac, fast = _sac_pair(optimizer_kwargs=None)
    assert fast.actor.optimizer.defaults["fused"] and fast.critic.optimizer.defaults["fused"]
    assert fast.ent_coef_optimizer is not None and fast.ent_coef_optimizer.defaults["fused"]
    start = {name: param.clone() for name, param in fast.policy.state_dict().items()}
    _train_both(sac, fast, calls=5, gradient_steps=1)
    _assert_same_parameters(sac, fast, atol=1e-6)
    assert (fast.policy.state_dict()["actor.mu.weight"] - start["actor.mu.weight"]).abs().max() > 1e-3  # it moved


def test_fast_path_backward_fills_only_the_named_network():
    th.manual_seed(0)
    actor, critic = th.nn.Linear(3, 2), th.nn.Linear(5, 1)
    fast_path = FastPath(actor=actor, critic=critic)
    obs = th.randn(8, 3)

    def loss() -> th.Tensor:
        return -critic(th.cat([obs, th.tanh(actor(obs))], dim=1)).mean()

    loss().backward()
    expected = [param.grad.clone() for param in actor.parameters()]
    actor.zero_grad(set_to_none=True)
    critic.zero_grad(set_to_none=True)
    fast_path.backward(loss(), "actor")
    for param, grad in zip(actor.parameters(), expected, strict=True):
        assert th.equal(param.grad, grad)
    assert all(param.grad is None for param in critic.parameters())


def test_soft_update_is_sb3s_polyak_update():
    th.manual_seed(0)
    online, target = th.nn.Linear(4, 3), th.nn.Linear(4, 3)
    reference = th.nn.Linear(4, 3)
    reference.load_state_dict(target.state_dict())
    FastPath(online=online, target=target).soft_update("online", "target", 0.3)
    polyak_update(online.parameters(), reference.parameters(), 0.3)
    for param, expected in zip(target.parameters(), reference.parameters(), strict=True):
        assert th.equal(param, expected)
    assert not th.equal(target.weight, online.weight)
    with pytest.raises(ValueError, match="at least one network"):
        FastPath()
