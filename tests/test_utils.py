"""Shared helpers of ``rlkit.common.utils``."""

from __future__ import annotations

import torch as th

from rlkit import PMOEPPO, PMOESAC
from rlkit.common.utils import fused_adam_kwargs
from rlkit.envs.toy import PointReachEnv


def test_fused_adam_is_the_default_and_user_arguments_are_kept():
    assert fused_adam_kwargs(th.optim.Adam, None) == {"fused": True}
    assert fused_adam_kwargs(th.optim.Adam, None, eps=1e-5) == {"eps": 1e-5, "fused": True}
    assert fused_adam_kwargs(th.optim.Adam, {}) == {}
    assert fused_adam_kwargs(th.optim.SGD, None) is None
    ppo = PMOEPPO("MlpPolicy", PointReachEnv(), n_steps=64, batch_size=32, device="cpu")
    assert ppo.policy.optimizer.defaults["fused"] and ppo.policy.optimizer.defaults["eps"] == 1e-5
    sac = PMOESAC("MlpPolicy", PointReachEnv(), policy_kwargs=dict(optimizer_kwargs={"eps": 1e-3}), device="cpu")
    assert not sac.actor.optimizer.defaults["fused"] and sac.actor.optimizer.defaults["eps"] == 1e-3


def test_fused_adam_follows_the_same_update_rule():
    th.manual_seed(0)
    reference = th.nn.Sequential(th.nn.Linear(5, 32), th.nn.Tanh(), th.nn.Linear(32, 2))
    fused = th.nn.Sequential(th.nn.Linear(5, 32), th.nn.Tanh(), th.nn.Linear(32, 2))
    fused.load_state_dict(reference.state_dict())
    start = reference[0].weight.detach().clone()
    optimizers = [th.optim.Adam(reference.parameters(), lr=1e-2), th.optim.Adam(fused.parameters(), lr=1e-2, fused=True)]
    for _ in range(50):
        x = th.randn(64, 5)
        for net, optimizer in zip((reference, fused), optimizers):
            optimizer.zero_grad()
            net(x).pow(2).mean().backward()
            optimizer.step()
    for a, b in zip(reference.parameters(), fused.parameters()):
        assert th.allclose(a, b, atol=1e-5)
    assert (reference[0].weight - start).abs().max() > 0.1  # they moved
