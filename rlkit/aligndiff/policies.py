"""AlignDiff's networks: the attribute encoder, the DiT denoiser with adaLN-Zero, and the policies.

Architecture as in the official code's ``utils/dit_utils.py`` (Dong et al., ICLR 2024):
a 1-D diffusion transformer over the H steps of a plan, conditioned on one vector
``c = MLP(noise level) + AttrEncoder(v, m)`` through adaptive layer norms whose shift, scale and
gate start at zero (adaLN-Zero; Peebles & Xie, "Scalable Diffusion Models with Transformers",
ICCV 2023), so every block starts as the identity and the network's output as 0.
"""

from __future__ import annotations

import copy
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from rlkit.aligndiff.attributes import AttributeStrengthModel, sinusoidal_embedding

#: network sizes: the paper's (the official code's Hopper / Walker DiT and ASM) and a CPU-size one
NETWORK_SIZES: dict[str, dict[str, Any]] = {
    "paper": dict(d_model=384, n_heads=6, depth=12, attribute_embed_dim=128, asm_d_model=128, asm_layers=2, asm_ffn=512),
    "cpu": dict(d_model=64, n_heads=4, depth=2, attribute_embed_dim=32, asm_d_model=64, asm_layers=1, asm_ffn=128),
}


class AttributeEncoder(nn.Module):
    """AlignDiff's AttrEncoder: embed each strength bin, zero the masked attributes, attend across them, project.

    ``e_i = Embedding(idx_i) * m_i`` (one table of k V rows, attribute i's rows ``[i V, (i + 1) V)``),
    2-head self-attention over the k tokens, flatten, Linear to ``out_dim``. A masked attribute's
    token is the zero vector whatever its strength, so the output does not depend on it; strength 0
    is an embedded bin, not a zero, so "weak" and "don't care" differ. The all-masked condition is
    the unconditional one of classifier-free guidance: its output is the encoder's biases, a learned
    null condition (the spec's correction 7).

    :param n_attributes: k
    :param n_bins: V
    :param embed_dim: width of each attribute token (128)
    :param out_dim: width of the output (the DiT's)
    :param n_heads: attention heads across attributes (2)
    """

    def __init__(self, n_attributes: int, n_bins: int, embed_dim: int, out_dim: int, n_heads: int = 2) -> None:
        super().__init__()
        self.n_attributes, self.n_bins = n_attributes, n_bins
        self.embedding = nn.Embedding(n_attributes * n_bins, embed_dim)
        self.attention = nn.MultiheadAttention(embed_dim, n_heads, batch_first=True)
        self.out = nn.Linear(n_attributes * embed_dim, out_dim)

    def forward(self, bins: th.Tensor, mask: th.Tensor) -> th.Tensor:
        """``(N, out_dim)`` from bin indices ``(N, k)`` (with offsets, :func:`strength_bins`) and masks ``(N, k)``."""
        tokens = self.embedding(bins) * mask.unsqueeze(-1).to(self.embedding.weight.dtype)
        tokens, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return self.out(tokens.flatten(1))


def _modulate(x: th.Tensor, shift: th.Tensor, scale: th.Tensor) -> th.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class DiTBlock(nn.Module):
    """A DiT block with adaLN-Zero: ``x + g1 Attn(mod(LN(x), s1, b1))``, then ``x + g2 MLP(mod(LN(x), s2, b2))``.

    :param d_model: token width
    :param n_heads: attention heads
    :param mlp_ratio: MLP width over ``d_model`` (4)
    :param dropout: dropout of attention and MLP (0.1)
    """

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=False, eps=1e-6)
        self.attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=False, eps=1e-6)
        hidden = int(d_model * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden), nn.GELU(approximate="tanh"), nn.Dropout(dropout), nn.Linear(hidden, d_model)
        )
        modulation = nn.Linear(d_model, 6 * d_model)
        nn.init.zeros_(modulation.weight)
        nn.init.zeros_(modulation.bias)
        self.modulation = nn.Sequential(nn.SiLU(), modulation)

    def forward(self, x: th.Tensor, condition: th.Tensor) -> th.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(condition).chunk(6, dim=-1)
        h = _modulate(self.norm1(x), shift1, scale1)
        x = x + gate1.unsqueeze(1) * self.attention(h, h, h, need_weights=False)[0]
        return x + gate2.unsqueeze(1) * self.mlp(_modulate(self.norm2(x), shift2, scale2))


class DiT1d(nn.Module):
    """The raw network ``F(x_in, c_noise, v, m)`` of AlignDiff's EDM denoiser over plans ``(N, H, x_dim)``.

    Linear input projection plus sinusoidal positions, ``depth`` adaLN-Zero DiT blocks, a final
    adaptive layer norm (shift and scale from c, zero-initialised) and a zero-initialised Linear
    to ``x_dim``. ``c = MLP(sin(c_noise)) + AttrEncoder(v, m)``.

    :param x_dim: per-step size of a plan (state + action)
    :param n_attributes: k
    :param n_bins: V
    :param d_model: token width (384)
    :param n_heads: attention heads (6)
    :param depth: DiT blocks (12)
    :param attribute_embed_dim: width of the attribute tokens (128)
    :param mlp_ratio: MLP width over ``d_model`` (4)
    :param dropout: dropout (0.1)
    """

    def __init__(
        self,
        x_dim: int,
        n_attributes: int,
        n_bins: int,
        d_model: int = 384,
        n_heads: int = 6,
        depth: int = 12,
        attribute_embed_dim: int = 128,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.project = nn.Linear(x_dim, d_model)
        self.noise_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        self.attribute_encoder = AttributeEncoder(n_attributes, n_bins, attribute_embed_dim, d_model)
        self.blocks = nn.ModuleList(DiTBlock(d_model, n_heads, mlp_ratio, dropout) for _ in range(depth))
        self.final_norm = nn.LayerNorm(d_model, elementwise_affine=False, eps=1e-6)
        final_modulation, self.final = nn.Linear(d_model, 2 * d_model), nn.Linear(d_model, x_dim)
        for layer in (final_modulation, self.final):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.final_modulation = nn.Sequential(nn.SiLU(), final_modulation)

    def condition(self, c_noise: th.Tensor, bins: th.Tensor, mask: th.Tensor) -> th.Tensor:
        """The conditioning vector ``c`` ``(N, d_model)``."""
        return self.noise_mlp(sinusoidal_embedding(c_noise, self.d_model)) + self.attribute_encoder(bins, mask)

    def forward(self, x: th.Tensor, c_noise: th.Tensor, bins: th.Tensor, mask: th.Tensor) -> th.Tensor:
        condition = self.condition(c_noise, bins, mask)
        positions = th.arange(x.shape[1], device=x.device)
        h = self.project(x) + sinusoidal_embedding(positions, self.d_model)
        for block in self.blocks:
            h = block(h, condition)
        shift, scale = self.final_modulation(condition).chunk(2, dim=-1)
        return self.final(_modulate(self.final_norm(h), shift, scale))


class AlignDiffPolicy(BasePolicy):
    """AlignDiff's networks: the attribute strength model, the DiT denoiser and its EMA copy.

    Planning (``AlignDiff.plan``) uses the EMA denoiser; :meth:`_predict` (SB3's history-free
    entry point) is the first action of one unconditional plan, and the algorithm's ``predict``
    plans with the target set by ``set_target``.

    :param observation_space: observation space
    :param action_space: action space (Box)
    :param lr_schedule: learning rate schedule (unused, SB3's signature)
    :param horizon: H, steps per plan
    :param n_attributes: k
    :param n_bins: V
    :param d_model: DiT width
    :param n_heads: DiT attention heads
    :param depth: DiT blocks
    :param attribute_embed_dim: width of the attribute tokens
    :param dropout: DiT dropout
    :param asm_members: ASM ensemble size
    :param asm_d_model: ASM token width
    :param asm_heads: ASM attention heads
    :param asm_layers: ASM encoder layers
    :param asm_ffn: ASM feed-forward width
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        horizon: int = 100,
        n_attributes: int = 2,
        n_bins: int = 100,
        d_model: int = 384,
        n_heads: int = 6,
        depth: int = 12,
        attribute_embed_dim: int = 128,
        dropout: float = 0.1,
        asm_members: int = 3,
        asm_d_model: int = 128,
        asm_heads: int = 4,
        asm_layers: int = 2,
        asm_ffn: int = 512,
    ) -> None:
        super().__init__(observation_space, action_space, squash_output=True)
        self.obs_dim, self.action_dim = spaces.flatdim(observation_space), spaces.flatdim(action_space)
        self.config = dict(
            horizon=horizon,
            n_attributes=n_attributes,
            n_bins=n_bins,
            d_model=d_model,
            n_heads=n_heads,
            depth=depth,
            attribute_embed_dim=attribute_embed_dim,
            dropout=dropout,
            asm_members=asm_members,
            asm_d_model=asm_d_model,
            asm_heads=asm_heads,
            asm_layers=asm_layers,
            asm_ffn=asm_ffn,
        )
        self.horizon = horizon
        self.attribute_model = AttributeStrengthModel(
            self.obs_dim, n_attributes, asm_members, asm_d_model, asm_heads, asm_layers, asm_ffn
        )
        self.denoiser = DiT1d(
            self.obs_dim + self.action_dim, n_attributes, n_bins, d_model, n_heads, depth, attribute_embed_dim, dropout=dropout
        )
        self.ema_denoiser = copy.deepcopy(self.denoiser).requires_grad_(False)
        #: set by AlignDiff: the planner ``(normalised observations (N, obs_dim)) -> scaled actions (N, action_dim)``
        self.planner: Any = None

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(dict(lr_schedule=self._dummy_schedule, **self.config))
        return data

    def forward(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self._predict(observation, deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        """The first action of the plan of the owning algorithm (its target, one candidate per observation)."""
        if self.planner is None:
            raise ValueError("AlignDiffPolicy plans through its AlignDiff model: call AlignDiff.predict")
        assert isinstance(observation, th.Tensor)
        return self.planner(observation.reshape(len(observation), -1).float())

    def set_training_mode(self, mode: bool) -> None:
        self.denoiser.train(mode)
        self.ema_denoiser.train(False)
        self.attribute_model.train(False)
        self.training = mode


class AttributeBCPolicy(BasePolicy):
    """Goal-conditioned BC (the paper's GC baseline, RvS-style): ``pi(s, v, m)``, an MLP with a tanh output.

    The input is the normalised state, the masked target strengths ``v * m`` and the mask ``m``
    (so "don't care" and strength 0 differ), next to the same attribute strength model as AlignDiff's.

    :param observation_space: observation space
    :param action_space: action space (Box)
    :param lr_schedule: learning rate schedule (unused, SB3's signature)
    :param horizon: H, steps of the relabelled windows (and of the ASM's windows)
    :param n_attributes: k
    :param net_arch: hidden layer sizes of the MLP
    :param asm_members: ASM ensemble size
    :param asm_d_model: ASM token width
    :param asm_heads: ASM attention heads
    :param asm_layers: ASM encoder layers
    :param asm_ffn: ASM feed-forward width
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        horizon: int = 100,
        n_attributes: int = 2,
        net_arch: list[int] | None = None,
        asm_members: int = 3,
        asm_d_model: int = 128,
        asm_heads: int = 4,
        asm_layers: int = 2,
        asm_ffn: int = 512,
    ) -> None:
        super().__init__(observation_space, action_space, squash_output=True)
        self.obs_dim, self.action_dim = spaces.flatdim(observation_space), spaces.flatdim(action_space)
        self.net_arch = [256, 256] if net_arch is None else list(net_arch)
        self.config = dict(
            horizon=horizon,
            n_attributes=n_attributes,
            net_arch=self.net_arch,
            asm_members=asm_members,
            asm_d_model=asm_d_model,
            asm_heads=asm_heads,
            asm_layers=asm_layers,
            asm_ffn=asm_ffn,
        )
        self.horizon = horizon
        self.attribute_model = AttributeStrengthModel(
            self.obs_dim, n_attributes, asm_members, asm_d_model, asm_heads, asm_layers, asm_ffn
        )
        layers: list[nn.Module] = []
        in_dim = self.obs_dim + 2 * n_attributes
        for width in self.net_arch:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        layers += [nn.Linear(in_dim, self.action_dim), nn.Tanh()]
        self.actor = nn.Sequential(*layers)
        #: the target of :meth:`_predict` (set by AttributeBC.set_target)
        self.target = th.zeros(n_attributes)
        self.target_mask = th.zeros(n_attributes)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(dict(lr_schedule=self._dummy_schedule, **self.config))
        return data

    def act(self, observations: th.Tensor, target: th.Tensor, mask: th.Tensor) -> th.Tensor:
        """Actions in [-1, 1] ``(N, action_dim)`` for normalised states, targets and masks ``(N, k)``."""
        return self.actor(th.cat([observations, target * mask, mask], dim=-1))

    def forward(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self._predict(observation, deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        assert isinstance(observation, th.Tensor)
        obs = observation.reshape(len(observation), -1).float()
        n = len(obs)
        target = self.target.to(obs.device).expand(n, -1)
        return self.act(obs, target, self.target_mask.to(obs.device).expand(n, -1))

    def set_training_mode(self, mode: bool) -> None:
        self.actor.train(mode)
        self.attribute_model.train(False)
        self.training = mode
