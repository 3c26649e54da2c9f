"""Shared helpers of ``rlkit.common.utils``."""

from __future__ import annotations

import pytest
import torch as th

from rlkit import PMOEPPO, PMOESAC
from rlkit.common.utils import FlatParameters, fused_adam_kwargs, fused_like
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
        for net, optimizer in zip((reference, fused), optimizers, strict=True):
            optimizer.zero_grad()
            net(x).pow(2).mean().backward()
            optimizer.step()
    for a, b in zip(reference.parameters(), fused.parameters(), strict=True):
        assert th.allclose(a, b, atol=1e-5)
    assert (reference[0].weight - start).abs().max() > 0.1  # they moved


def _twin_nets() -> tuple[th.nn.Module, th.nn.Module]:
    th.manual_seed(0)
    reference = th.nn.Sequential(th.nn.Linear(5, 32), th.nn.Tanh(), th.nn.Linear(32, 2))
    other = th.nn.Sequential(th.nn.Linear(5, 32), th.nn.Tanh(), th.nn.Linear(32, 2))
    other.load_state_dict(reference.state_dict())
    return reference, other


def test_flat_parameters_give_the_same_values_gradients_clipping_and_updates():
    reference, net = _twin_nets()
    flat = FlatParameters(net.parameters())
    assert flat.parameter.numel() == sum(p.numel() for p in reference.parameters())
    start = reference[0].weight.detach().clone()
    reference_optimizer = th.optim.Adam(reference.parameters(), lr=1e-2, fused=True)
    flat_optimizer = th.optim.Adam([flat.parameter], lr=1e-2, fused=True)
    clipped = 0
    for _ in range(50):
        x = th.randn(64, 5)
        reference_optimizer.zero_grad()
        reference(x).pow(2).mean().backward()
        reference_norm = th.nn.utils.clip_grad_norm_(reference.parameters(), 0.05)
        reference_optimizer.step()
        flat.zero_grad()
        net(x).pow(2).mean().backward()
        # the gradients are accumulated in the flat buffer, and clipped by the same global norm
        assert th.equal(flat.grad, th.cat([p.grad.flatten() for p in net.parameters()]))
        th.testing.assert_close(flat.clip_grad_norm_(0.05), reference_norm)
        clipped += int(reference_norm > 0.05)
        flat_optimizer.step()
    assert clipped > 10  # the clipping was active
    for a, b in zip(reference.parameters(), net.parameters(), strict=True):
        th.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert (reference[0].weight - start).abs().max() > 0.1  # they moved
    assert flat.is_intact()


def test_flat_parameters_recover_from_grads_set_to_none():
    _, net = _twin_nets()
    flat = FlatParameters(net.parameters())
    net.zero_grad(set_to_none=True)  # as Module.zero_grad() and Optimizer.zero_grad() do by default
    assert all(p.grad is None for p in net.parameters())
    flat.zero_grad()
    net(th.randn(8, 5)).sum().backward()
    assert flat.grad.abs().sum() > 0
    assert th.equal(flat.grad, th.cat([p.grad.flatten() for p in net.parameters()]))


def test_flat_parameters_reject_mixed_devices_or_dtypes():
    with pytest.raises(ValueError, match="one device and one dtype"):
        FlatParameters([th.nn.Parameter(th.zeros(2)), th.nn.Parameter(th.zeros(2, dtype=th.float64))])
    with pytest.raises(ValueError, match="at least one parameter"):
        FlatParameters([])


def test_pmoe_ppo_policy_flattens_again_after_a_cast_and_keeps_the_optimizer_state():
    model = PMOEPPO("MlpPolicy", PointReachEnv(), n_steps=64, batch_size=32, n_epochs=1, device="cpu", seed=0).learn(64)
    policy = model.policy
    assert policy.flat_parameters is not None and policy.flat_parameters.is_intact()
    assert policy.optimizer.param_groups[0]["params"] == [policy.flat_parameters.parameter]
    exp_avg = policy.optimizer.state_dict()["state"][0]["exp_avg"].clone()
    policy.to(th.float64)
    assert policy.flat_parameters.is_intact() and policy.flat_parameters.parameter.dtype == th.float64
    th.testing.assert_close(policy.optimizer.state_dict()["state"][0]["exp_avg"], exp_avg.double())
    policy.to(th.float32)
    before = th.cat([p.detach().flatten() for p in policy.parameters()])
    model.learn(64)
    assert not th.equal(before, th.cat([p.detach().flatten() for p in policy.parameters()]))
    # parameters replaced by a load with assign=True are flattened again before training
    model.policy.load_state_dict({k: v.clone() for k, v in policy.state_dict().items()}, assign=True)
    assert not any(a is b for a, b in zip(policy.flat_parameters.parameters, policy.parameters(), strict=True))
    before = th.cat([p.detach().flatten() for p in policy.parameters()])
    model.learn(64)
    assert policy.optimizer.param_groups[0]["params"] == [policy.flat_parameters.parameter]
    assert all(a is b for a, b in zip(policy.flat_parameters.parameters, policy.parameters(), strict=True))
    assert policy.flat_parameters.is_intact()
    assert not th.equal(before, th.cat([p.detach().flatten() for p in policy.parameters()]))
    # an optimizer that is not elementwise (Adafactor factors the second moment of each matrix)
    # keeps the separate parameters
    adafactor = PMOEPPO(
        "MlpPolicy", PointReachEnv(), n_steps=64, batch_size=32, policy_kwargs=dict(optimizer_class=th.optim.Adafactor)
    )
    assert adafactor.policy.flat_parameters is None
    assert len(adafactor.policy.optimizer.param_groups[0]["params"]) > 1
    adafactor.learn(64)


@pytest.mark.parametrize(("loss_scale", "max_norm"), [(1e-5, 2e-6), (1.0, 1e3)], ids=["clipped", "not-clipped"])
def test_flat_clipping_leaves_the_gradients_that_torch_clip_grad_norm_leaves(loss_scale, max_norm):
    """max_norm / (norm + 1e-6), capped at 1, scales the gradient; the tiny norm (about 1e-5) makes the place of the
    1e-6 show."""
    reference, net = _twin_nets()
    flat = FlatParameters(net.parameters())
    x = th.randn(64, 5)
    (loss_scale * reference(x).pow(2).mean()).backward()
    flat.zero_grad()
    (loss_scale * net(x).pow(2).mean()).backward()
    reference_norm = th.nn.utils.clip_grad_norm_(reference.parameters(), max_norm)
    th.testing.assert_close(flat.clip_grad_norm_(max_norm), reference_norm, rtol=1e-6, atol=0)
    assert (reference_norm > max_norm) == (max_norm < 1)
    for a, b in zip(reference.parameters(), net.parameters(), strict=True):
        th.testing.assert_close(b.grad, a.grad, rtol=2e-6, atol=0)


def test_fused_like_keeps_the_parameters_and_settings_of_the_temperature_optimizer():
    log_ent_coef = th.nn.Parameter(th.zeros(1))
    plain = th.optim.Adam([log_ent_coef], lr=0.01)  # as SB3 builds SAC's temperature optimizer
    fused = fused_like(plain, {"fused": True})
    assert fused.defaults["fused"] and fused.param_groups[0]["params"] == [log_ent_coef]
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad"):
        assert fused.defaults[key] == plain.defaults[key], key
    assert fused_like(plain, None) is plain and fused_like(plain, {"eps": 1e-5}) is plain
