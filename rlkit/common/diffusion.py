"""Diffusion models: DDPM action sampling (FISOR) and EDM trajectory planning (AlignDiff).

DDPM part. The pieces follow DDPM (Ho et al., 2020, https://arxiv.org/abs/2006.11239) with
the discrete variance-preserving schedule of Diffusion-QL / IDQL, as FISOR uses
them (Zheng et al., ICLR 2024, https://arxiv.org/abs/2401.10700): actions live in
``[-1, 1]``, the denoiser predicts the noise ``eps`` from ``(s, a_t, t)``, and
the sampler clips every reverse step to the action bounds.

EDM part. Karras, Aittala, Aila & Laine, "Elucidating the Design Space of
Diffusion-Based Generative Models" (NeurIPS 2022, https://arxiv.org/abs/2206.00364),
as AlignDiff's released code uses it: the preconditioned denoiser
``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`` (Table 1 of Karras et al.), training
noise levels ``ln sigma ~ N(P_mean, P_std^2)`` with the loss weight
``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``, the schedule
``sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` and
Euler steps of the probability-flow ODE ``dx / dsigma = (x - D(x; sigma)) / sigma``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch as th
from torch import nn


def vp_beta_schedule(n_timesteps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> th.Tensor:
    """Variance-preserving betas: ``beta_t = 1 - exp(-b_min / T - (b_max - b_min) (2t - 1) / (2 T^2))``, t = 1..T.

    :param n_timesteps: number of diffusion steps ``T``
    :param beta_min: ``b_min`` of the continuous VP SDE
    :param beta_max: ``b_max`` of the continuous VP SDE
    :return: ``(T,)`` float32 betas, index ``i`` holding ``beta_{i+1}``
    """
    if n_timesteps < 1:
        raise ValueError(f"n_timesteps must be >= 1, got {n_timesteps}")
    t = th.arange(1, n_timesteps + 1, dtype=th.float64)
    alphas = th.exp(-beta_min / n_timesteps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / n_timesteps**2)
    return (1.0 - alphas).float()


class DiffusionSchedule(nn.Module):
    """The noise schedule of a DDPM: ``beta_t``, ``alpha_t = 1 - beta_t`` and ``alpha_bar_t = prod_{k<=t} alpha_k``.

    Timesteps are indices ``0..T-1`` (index ``i`` is the paper's ``t = i + 1``).

    :param n_timesteps: number of diffusion steps ``T``
    :param beta_min: ``b_min`` of the VP schedule
    :param beta_max: ``b_max`` of the VP schedule
    """

    betas: th.Tensor
    alphas: th.Tensor
    alpha_bars: th.Tensor

    def __init__(self, n_timesteps: int = 5, beta_min: float = 0.1, beta_max: float = 10.0) -> None:
        super().__init__()
        self.n_timesteps = n_timesteps
        betas = vp_beta_schedule(n_timesteps, beta_min, beta_max)
        self.register_buffer("betas", betas)
        self.register_buffer("alphas", 1.0 - betas)
        self.register_buffer("alpha_bars", th.cumprod(1.0 - betas, dim=0))

    def q_sample(self, x0: th.Tensor, t: th.Tensor, noise: th.Tensor) -> th.Tensor:
        """Forward noising ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``.

        :param x0: clean actions ``(batch, action_dim)``
        :param t: timestep indices ``(batch,)``
        :param noise: ``eps ~ N(0, I)``, same shape as ``x0``
        """
        alpha_bar = self.alpha_bars[t].unsqueeze(-1)
        return alpha_bar.sqrt() * x0 + (1.0 - alpha_bar).sqrt() * noise


class FourierTimeEmbedding(nn.Module):
    """Learnable Fourier features of the timestep followed by an MLP (IDQL / FISOR's ``cond`` network).

    :param embed_dim: number of Fourier features (half cosines, half sines)
    :param hidden_dim: width of the two-layer Mish MLP after the features
    """

    def __init__(self, embed_dim: int = 16, hidden_dim: int = 32) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(th.randn(embed_dim // 2))
        self.mlp = nn.Sequential(nn.Linear(2 * (embed_dim // 2), hidden_dim), nn.Mish(), nn.Linear(hidden_dim, hidden_dim))
        self.out_dim = hidden_dim

    def forward(self, t: th.Tensor) -> th.Tensor:
        angles = 2 * math.pi * t.float().unsqueeze(-1) * self.frequencies
        return self.mlp(th.cat([th.cos(angles), th.sin(angles)], dim=-1))


class _ResidualBlock(nn.Module):
    """``x + W2 act(W1 LayerNorm(dropout(x)))`` with a 4x wider hidden layer (the official FISOR code's block)."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout), nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.Mish(), nn.Linear(4 * width, width)
        )

    def forward(self, x: th.Tensor) -> th.Tensor:
        return x + self.net(x)


class Denoiser(nn.Module):
    """Noise predictor ``eps_theta(s, a_t, t)`` on ``concat(a_t, s, emb(t))``.

    With ``residual_blocks=0`` an MLP whose hidden layers are ``Linear -> LayerNorm -> Mish``;
    otherwise a projection to ``net_arch[0]`` units, that many residual blocks (dropout, LayerNorm,
    a 4x wider Mish layer, back to the width, plus the input) and ``Mish -> Linear``, as the official
    FISOR code's denoiser (3 blocks of width 1024 with dropout 0.1 there). The output is linear.

    :param obs_dim: dimension of the (flat) observations
    :param action_dim: dimension of the actions
    :param net_arch: hidden layer sizes (with residual blocks: its first entry is the width)
    :param time_embed_dim: Fourier features of the timestep
    :param time_hidden_dim: width of the time-embedding MLP
    :param residual_blocks: number of residual blocks (0: the plain MLP)
    :param dropout: dropout rate inside the residual blocks
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        net_arch: list[int],
        time_embed_dim: int = 16,
        time_hidden_dim: int = 32,
        residual_blocks: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if residual_blocks < 0 or not 0.0 <= dropout < 1.0 or (residual_blocks and not net_arch):
            raise ValueError(
                f"residual_blocks must be >= 0 (with a width in net_arch) and dropout in [0, 1), got "
                f"{residual_blocks}, {dropout}, net_arch={net_arch}"
            )
        self.action_dim = action_dim
        self.time_embedding = FourierTimeEmbedding(time_embed_dim, time_hidden_dim)
        layers: list[nn.Module] = []
        in_dim = obs_dim + action_dim + self.time_embedding.out_dim
        if residual_blocks:
            width = net_arch[0]
            layers.append(nn.Linear(in_dim, width))
            layers += [_ResidualBlock(width, dropout) for _ in range(residual_blocks)]
            layers.append(nn.Mish())
            in_dim = width
        else:
            for width in net_arch:
                layers += [nn.Linear(in_dim, width), nn.LayerNorm(width), nn.Mish()]
                in_dim = width
        layers.append(nn.Linear(in_dim, action_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: th.Tensor, noisy_actions: th.Tensor, t: th.Tensor) -> th.Tensor:
        return self.net(th.cat([noisy_actions, obs, self.time_embedding(t)], dim=-1))


def denoising_loss(
    denoiser: Denoiser,
    schedule: DiffusionSchedule,
    obs: th.Tensor,
    actions: th.Tensor,
    weights: th.Tensor | None = None,
) -> th.Tensor:
    """Weighted DDPM loss ``mean_i w_i ||eps_theta(s_i, a_t, t) - eps||^2`` (squared error summed over action dims).

    With weights ``w(s, a)`` the model learns the score of ``mu(a|s) w(s, a)``
    (FISOR, Sec. 4.3); without them plain behaviour cloning.

    :param denoiser: the noise predictor
    :param schedule: the noise schedule
    :param obs: observations ``(batch, obs_dim)``
    :param actions: clean actions in ``[-1, 1]``, ``(batch, action_dim)``
    :param weights: per-sample weights ``(batch,)``, or ``None`` for all ones
    """
    t = th.randint(schedule.n_timesteps, (len(actions),), device=actions.device)
    noise = th.randn_like(actions)
    error = (denoiser(obs, schedule.q_sample(actions, t, noise), t) - noise).pow(2).sum(dim=-1)
    return error.mean() if weights is None else (weights * error).mean()


@th.no_grad()
def ddpm_sample(
    denoiser: Denoiser,
    schedule: DiffusionSchedule,
    obs: th.Tensor,
    clip: float = 1.0,
    generator: th.Generator | None = None,
) -> th.Tensor:
    """DDPM ancestral sampling from ``x_T ~ N(0, I)``, clipped to ``[-clip, clip]`` after every step.

    ``x_{t-1} = (x_t - (1 - alpha_t) / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_t) + 1[t > 1] sqrt(beta_t) z``.

    :param denoiser: the noise predictor
    :param schedule: the noise schedule
    :param obs: observations ``(batch, obs_dim)``, one action is drawn for each
    :param clip: action bound (actions are in ``[-clip, clip]``)
    :param generator: torch generator of the noise (``None``: the global one)
    :return: actions ``(batch, action_dim)``
    """
    shape = (obs.shape[0], denoiser.action_dim)
    x = th.randn(shape, generator=generator, device=obs.device)
    for i in reversed(range(schedule.n_timesteps)):
        t = th.full((shape[0],), i, device=obs.device, dtype=th.long)
        eps = denoiser(obs, x, t)
        alpha, alpha_bar = schedule.alphas[i], schedule.alpha_bars[i]
        x = (x - (1.0 - alpha) / (1.0 - alpha_bar).sqrt() * eps) / alpha.sqrt()
        if i > 0:
            x = x + schedule.betas[i].sqrt() * th.randn(shape, generator=generator, device=obs.device)
        x = x.clamp(-clip, clip)
    return x


# --------------------------------------------------------------------------- EDM (Karras et al., 2022)


def edm_preconditioning(sigma: th.Tensor, sigma_data: float) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
    """EDM's scalings (Karras et al., 2022, Table 1): ``(c_skip, c_out, c_in, c_noise)`` of each noise level.

    ``c_skip = sigma_d^2 / (sigma_d^2 + sigma^2)``, ``c_out = sigma sigma_d / sqrt(sigma_d^2 + sigma^2)``,
    ``c_in = 1 / sqrt(sigma_d^2 + sigma^2)``, ``c_noise = ln(sigma) / 4``.

    :param sigma: noise levels (any shape, positive)
    :param sigma_data: standard deviation of the data ``sigma_d``
    """
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1.0 / total.sqrt(), sigma.log() / 4.0


def edm_loss_weight(sigma: th.Tensor, sigma_data: float) -> th.Tensor:
    """EDM's loss weight ``lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2`` (it equals ``1 / c_out^2``).

    :param sigma: noise levels
    :param sigma_data: standard deviation of the data
    """
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_denoise(
    network: Callable[..., th.Tensor], x: th.Tensor, sigma: th.Tensor, sigma_data: float, **condition: th.Tensor
) -> th.Tensor:
    """The preconditioned denoiser ``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, **condition)``.

    :param network: the raw network ``F(x_in, c_noise, **condition)``
    :param x: noisy samples ``(batch, ...)``
    :param sigma: their noise levels ``(batch,)``
    :param sigma_data: standard deviation of the data
    :param condition: further inputs of ``F`` (attribute strengths and masks)
    :return: the denoised samples, the shape of ``x``
    """
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sigma_data)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return c_skip.view(shape) * x + c_out.view(shape) * network(c_in.view(shape) * x, c_noise, **condition)


def edm_training_sigmas(
    n: int, p_mean: float = -1.2, p_std: float = 1.2, device: th.device | str = "cpu", generator: th.Generator | None = None
) -> th.Tensor:
    """Training noise levels ``sigma = exp(P_mean + P_std z)``, ``z ~ N(0, 1)``.

    :param n: number of levels
    :param p_mean: mean of ``ln sigma``
    :param p_std: standard deviation of ``ln sigma``
    :param device: device of the result
    :param generator: torch generator (``None``: the global one)
    """
    return (p_mean + p_std * th.randn(n, device=device, generator=generator)).exp()


def karras_sigmas(n_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> th.Tensor:
    """Karras et al.'s noise levels ``sigma_0 = sigma_max > ... > sigma_{N-1} = sigma_min``, then ``sigma_N = 0``.

    :param n_steps: ``N``, the number of sampling (Euler) steps
    :param sigma_min: smallest positive level
    :param sigma_max: largest level (where sampling starts)
    :param rho: curvature of the schedule (7)
    :return: ``(N + 1,)`` float32 levels
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1 sampling step, got {n_steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    ramp = th.linspace(0, 1, n_steps, dtype=th.float64) if n_steps > 1 else th.zeros(1, dtype=th.float64)
    inv_max, inv_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (inv_max + ramp * (inv_min - inv_max)) ** rho
    return th.cat([sigmas, th.zeros(1, dtype=th.float64)]).float()


@th.no_grad()
def euler_sample(
    denoise: Callable[[th.Tensor, th.Tensor], th.Tensor],
    x: th.Tensor,
    sigmas: th.Tensor,
    inpaint: Callable[[th.Tensor], th.Tensor] | None = None,
) -> th.Tensor:
    """Euler steps of the probability-flow ODE: ``x <- x + (sigma_{i+1} - sigma_i) (x - D(x; sigma_i)) / sigma_i``.

    :param denoise: ``D(x, sigma)`` with ``sigma`` of shape ``(batch,)``
    :param x: the start, ``sigma_0``-scaled Gaussian noise ``(batch, ...)``
    :param sigmas: levels from :func:`karras_sigmas` (the last one 0: the final step returns ``D``)
    :param inpaint: applied to ``x`` before the first and after every step (fixes known entries)
    :return: the samples
    """
    if inpaint is not None:
        x = inpaint(x)
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i].to(x.device)
        denoised = denoise(x, sigma.expand(x.shape[0]))
        x = x + (sigmas[i + 1].to(x.device) - sigma) * (x - denoised) / sigma
        if inpaint is not None:
            x = inpaint(x)
    return x
