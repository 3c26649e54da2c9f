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


@pytest.mark.parametrize("weights", [[0.0, 1.0, 0.0, 3.0], [0.25, 0.25, 0.5, 0.0]])
def test_denoising_loss_is_the_weighted_batch_mean_of_per_sample_errors(weights):
    """FISOR's mean_i w_i ||eps_theta - eps||^2 divides by the batch size, not by the sum of the weights: weights
    summing to 1 on a batch of 4 give a quarter of the self-normalised average."""
    th.manual_seed(0)
    denoiser, schedule = Denoiser(1, 2, [8]), DiffusionSchedule(5)
    obs, actions, weights = th.zeros(4, 1), th.rand(4, 2) * 2 - 1, th.tensor(weights)
    th.manual_seed(1)
    weighted = denoising_loss(denoiser, schedule, obs, actions, weights)
    th.manual_seed(1)
    t, noise = th.randint(5, (4,)), th.randn(4, 2)
    errors = (denoiser(obs, schedule.q_sample(actions, t, noise), t) - noise).pow(2).sum(-1)
    assert weighted.item() == pytest.approx((weights * errors).mean().item(), rel=1e-6)
    if weights.sum().item() != len(weights):
        assert weighted.item() != pytest.approx((weights * errors).sum().item() / weights.sum().item(), rel=1e-3)
    weighted.backward()
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


def _hand_alpha_bars(n: int) -> list[float]:
    """alpha_bar_i = prod_{k <= i} (1 - beta_k) from the VP formula, index i = paper's t = i + 1."""
    betas = [1 - math.exp(-0.1 / n - 0.5 * 9.9 * (2 * t - 1) / n**2) for t in range(1, n + 1)]
    return list(np.cumprod(1 - np.array(betas)))


def test_q_sample_noises_with_alpha_bar_of_the_same_index():
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps with alpha_bar (not alpha) of index t (not t - 1)."""
    schedule = DiffusionSchedule(5)
    alpha_bars = _hand_alpha_bars(5)
    x0, noise = th.tensor([[0.5, -1.0]] * 5), th.tensor([[1.0, 2.0]] * 5)
    noisy = schedule.q_sample(x0, th.arange(5), noise).double().numpy()
    expected = [[math.sqrt(ab) * x + math.sqrt(1 - ab) * e for x, e in ((0.5, 1.0), (-1.0, 2.0))] for ab in alpha_bars]
    np.testing.assert_allclose(noisy, expected, rtol=1e-5, atol=1e-6)


def test_ddpm_sampler_matches_a_hand_written_reverse_chain_clipped_at_every_step():
    """The sampler against the chain written out: x_T ~ N(0, I), then for i = T-1..0 (paper t = i + 1) the denoiser
    at index i, x <- (x - (1 - alpha_i) / sqrt(1 - alpha_bar_i) eps) / sqrt(alpha_i), + sqrt(beta_i) z unless i = 0,
    clipped after every step; the same generator draws in the same order."""
    th.manual_seed(0)
    denoiser, schedule = Denoiser(3, 2, [16]), DiffusionSchedule(5)
    obs = th.randn(64, 3)
    n = 5
    betas = [1 - math.exp(-0.1 / n - 0.5 * 9.9 * (2 * t - 1) / n**2) for t in range(1, n + 1)]
    alpha_bars = _hand_alpha_bars(n)

    def chain(clip_each_step: bool) -> th.Tensor:
        generator = th.Generator().manual_seed(3)
        x = th.randn(64, 2, generator=generator)
        for i in reversed(range(n)):
            with th.no_grad():
                eps = denoiser(obs, x, th.full((64,), i, dtype=th.long))
            alpha = 1 - betas[i]
            x = (x - (1 - alpha) / math.sqrt(1 - alpha_bars[i]) * eps) / math.sqrt(alpha)
            if i > 0:
                x = x + math.sqrt(betas[i]) * th.randn(64, 2, generator=generator)
            if clip_each_step or i == 0:
                x = x.clamp(-0.5, 0.5)
        return x

    samples = ddpm_sample(denoiser, schedule, obs, clip=0.5, generator=th.Generator().manual_seed(3))
    th.testing.assert_close(samples, chain(clip_each_step=True), rtol=1e-5, atol=1e-5)
    # the check can fail: clipping only the last step gives other samples
    assert not th.allclose(samples, chain(clip_each_step=False), atol=1e-3)
