"""The off-policy family's fast path (``rlkit.common.utils.FastPath``, ``rlkit.common.fast_sac.FastSAC``): the same
numbers as SB3."""

from __future__ import annotations

import copy
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.utils import polyak_update

from rlkit.a2pr import A2PR
from rlkit.common.fast_sac import FastSAC
from rlkit.common.utils import FastPath, relu_in_place
from rlkit.envs.toy import PointReachEnv
from rlkit.iql import IQL
from rlkit.mdpo import MDPOOff
from rlkit.pmoe import PMOESAC
from rlkit.td3bc import TD3BC
from toy_data import reach_episodes

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


def _values_and_gradients(network: th.nn.Module, inputs: th.Tensor) -> list[th.Tensor]:
    network.zero_grad(set_to_none=True)
    inputs = inputs.clone().requires_grad_(True)
    output = network(inputs)
    (output**2).sum().backward()
    return [output.detach(), inputs.grad, *(param.grad for param in network.parameters())]


def test_relu_in_place_gives_the_same_values_and_gradients_bit_for_bit():
    th.manual_seed(0)
    network = th.nn.Sequential(*create_mlp(7, 1, [64, 64]))
    reference = copy.deepcopy(network)
    assert relu_in_place(network) == 2
    assert [layer.inplace for layer in network if isinstance(layer, th.nn.ReLU)] == [True, True]
    inputs = th.randn(256, 7)
    for value, expected in zip(_values_and_gradients(network, inputs), _values_and_gradients(reference, inputs), strict=True):
        assert th.equal(value, expected)


def test_relu_in_place_leaves_a_relu_that_does_not_only_follow_linear_layers():
    th.manual_seed(0)
    shared = th.nn.ReLU()
    # after a Tanh, an in-place ReLU would overwrite the output that Tanh's backward reads
    network = th.nn.Sequential(th.nn.Linear(5, 8), th.nn.Tanh(), th.nn.ReLU(), th.nn.Linear(8, 8), shared,
                               th.nn.Tanh(), shared, th.nn.Linear(8, 1))  # fmt: skip
    reference = copy.deepcopy(network)
    hooked = th.nn.Sequential(th.nn.Linear(5, 8), th.nn.ReLU())
    kept = []
    hooked[0].register_forward_hook(lambda module, args, output: kept.append(output))
    assert relu_in_place(network) == 0 and relu_in_place(hooked) == 0
    assert not network[2].inplace and not shared.inplace and not hooked[1].inplace
    inputs = th.randn(32, 5)
    for value, expected in zip(_values_and_gradients(network, inputs), _values_and_gradients(reference, inputs), strict=True):
        assert th.equal(value, expected)


def test_fast_path_computes_the_update_networks_relus_in_place(tmp_path):
    model = FastSAC("MlpPolicy", PointReachEnv(), policy_kwargs=dict(net_arch=[16, 16]), seed=0, device="cpu")

    def flags(algo: FastSAC) -> list[bool]:
        networks = (algo.actor, algo.critic, algo.critic_target)
        return [module.inplace for network in networks for module in network.modules() if isinstance(module, th.nn.ReLU)]

    # two hidden layers in the actor and in each Q-network of the critic and of its target
    assert flags(model) == [True] * 10
    model.save(tmp_path / "model")
    assert flags(FastSAC.load(tmp_path / "model", device="cpu")) == [True] * 10


@pytest.mark.parametrize(
    "make",
    [
        lambda data: TD3BC("MlpPolicy", None, dataset=data, policy_kwargs=dict(net_arch=[16, 16]), seed=0, device="cpu"),
        lambda data: IQL("MlpPolicy", None, dataset=data, policy_kwargs=dict(net_arch=[16, 16]), seed=0, device="cpu"),
        lambda data: A2PR("MlpPolicy", None, dataset=data, policy_kwargs=dict(net_arch=[16, 16]), seed=0, device="cpu"),
        lambda data: MDPOOff("MlpPolicy", PointReachEnv(), policy_kwargs=dict(net_arch=[16, 16]), seed=0, device="cpu"),
        lambda data: PMOESAC("MlpPolicy", PointReachEnv(), policy_kwargs=dict(net_arch=[16, 16]), seed=0, device="cpu"),
    ],
    ids=["TD3BC", "IQL", "A2PR", "MDPOOff", "PMOESAC"],
)
def test_every_relu_of_the_off_policy_familys_policies_computes_in_place(make):
    data = reach_episodes("toy/reach-v0", 3, lambda episode, rng: episode == 0, seed=0, dataset_id="toy/reach/mixed-v0")
    model = make(data)
    relus = [module for module in model.policy.modules() if isinstance(module, th.nn.ReLU)]
    # every network of the update is on the fast path: the actor, critics, targets, value networks, A2PR's VAE
    assert len(relus) >= 8 and all(relu.inplace for relu in relus)


def test_fast_sac_bootstraps_with_the_n_step_buffers_discounts_as_sb3_sac():
    """With SB3's n-step replay buffer the target discounts each transition by its own gamma^k."""
    sac, fast = _sac_pair(optimizer_kwargs={}, n_steps=3)
    np.random.seed(0)
    discounts = sac.replay_buffer.sample(256).discounts
    assert discounts is not None and (discounts < sac.gamma - 1e-6).any()
    _train_both(sac, fast, calls=2, gradient_steps=2)
    _assert_same_parameters(sac, fast, atol=0.0)
