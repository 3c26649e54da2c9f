"""The diffusion parts of rlkit.common.diffusion: VP schedule, weighted denoising loss, clipped DDPM sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch as th

from rlkit.common.diffusion import Denoiser, DiffusionSchedule, ddpm_sample, denoising_loss, vp_beta_schedule


def test_vp_schedule_values():
    betas = vp_beta_schedule(5).double()
    # beta_t = 1 - exp(-0.1/5 - 0.5 * 9.9 * (2t - 1) / 25), t = 1..5, computed by hand
    expected = [1 - math.exp(-0.02 - 0.198 * (2 * t - 1)) for t in range(1, 6)]
    np.testing.assert_allclose(betas.numpy(), expected, rtol=1e-6)
    assert expected[0] == pytest.approx(0.19587, abs=1e-4) and expected[-1] == pytest.approx(0.83501, abs=1e-4)
    schedule = DiffusionSchedule(5)
    np.testing.assert_allclose(schedule.alpha_bars.numpy(), np.cumprod(1 - np.array(expected)), rtol=1e-5)
    # the last step is almost pure noise: sqrt(alpha_bar_T) is small
    assert schedule.alpha_bars[-1].item() < 0.01
    with pytest.raises(ValueError, match="n_timesteps"):
        vp_beta_schedule(0)


def test_denoising_loss_is_the_weighted_mean_of_per_sample_errors():
    th.manual_seed(0)
    denoiser, schedule = Denoiser(1, 2, [8]), DiffusionSchedule(5)
    obs, actions = th.zeros(4, 1), th.rand(4, 2) * 2 - 1
    weights = th.tensor([0.0, 1.0, 0.0, 3.0])
    th.manual_seed(1)
    weighted = denoising_loss(denoiser, schedule, obs, actions, weights)
    th.manual_seed(1)
    t, noise = th.randint(5, (4,)), th.randn(4, 2)
    errors = (denoiser(obs, schedule.q_sample(actions, t, noise), t) - noise).pow(2).sum(-1)
    assert weighted.item() == pytest.approx((weights * errors).mean().item(), rel=1e-6)
    weighted.backward()  # zero-weight samples get no gradient, the others do
    assert all(p.grad is not None for p in denoiser.parameters())


def _bimodal(n: int, generator: th.Generator) -> th.Tensor:
    left = th.rand(n, generator=generator) < 0.3
    centres = th.where(left, th.tensor(-0.6), th.tensor(0.5))
    return (centres + 0.05 * th.randn(n, generator=generator)).unsqueeze(1)


def test_sampler_stays_in_bounds_and_reproduces_two_modes():
    th.manual_seed(0)
    generator = th.Generator().manual_seed(0)
    denoiser, schedule = Denoiser(1, 1, [64, 64], time_embed_dim=16), DiffusionSchedule(5)
    optimizer = th.optim.Adam(denoiser.parameters(), lr=3e-3)
    obs = th.zeros(256, 1)
    for _ in range(1000):
        loss = denoising_loss(denoiser, schedule, obs, _bimodal(256, generator), th.ones(256))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    samples = ddpm_sample(denoiser, schedule, th.zeros(4000, 1), generator=th.Generator().manual_seed(1)).squeeze(1)
    assert samples.abs().max().item() <= 1.0
    left = (samples < 0).float().mean().item()
    assert abs(left - 0.3) < 0.1, f"mass of the left mode {left:.2f}, data 0.3"
    near_modes = ((samples + 0.6).abs() < 0.25) | ((samples - 0.5).abs() < 0.25)
    assert near_modes.float().mean().item() > 0.6, "samples concentrate on the two modes"


def test_sampler_clips_every_step_even_with_a_wild_denoiser():
    denoiser, schedule = Denoiser(3, 2, [8]), DiffusionSchedule(5)
    with th.no_grad():
        denoiser.net[-1].bias.fill_(-50.0)  # a noise prediction far outside the bounds
    samples = ddpm_sample(denoiser, schedule, th.randn(100, 3), clip=0.5)
    assert samples.shape == (100, 2)
    assert samples.abs().max().item() <= 0.5
